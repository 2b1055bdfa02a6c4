"""Sample statistics of the timing loop: robust spread, the median's confidence interval, drift, modes."""

from __future__ import annotations

import math

import numpy as np


def robust_cv(samples: list[float] | np.ndarray) -> float:
    """1.4826·MAD/median: the relative standard deviation for normal noise, blind to rare outliers."""
    values = np.asarray(samples, dtype=np.float64)
    if values.size < 2:
        return math.inf
    median = float(np.median(values))
    if median <= 0:
        return math.inf
    return 1.4826 * float(np.median(np.abs(values - median))) / median


def median_ci_rel(samples: list[float] | np.ndarray, z: float = 1.96) -> float:
    """Half-width of the distribution-free 95 % confidence interval of the median, over the median.

    Order statistics: the median lies between the j-th and k-th smallest of n samples with
    j, k = n/2 ∓ z·√n/2 (binomial(n, ½) by the normal approximation); inf with too few samples.
    """
    values = np.sort(np.asarray(samples, dtype=np.float64))
    n = values.size
    half = z * math.sqrt(n) / 2
    low, high = math.floor(n / 2 - half), math.ceil(n / 2 + half) - 1
    if n < 6 or low < 0 or high >= n:
        return math.inf
    median = float(np.median(values))
    return (values[high] - values[low]) / (2 * median) if median > 0 else math.inf


def drift_rel(samples: list[float] | np.ndarray) -> float:
    """|median of the first half − median of the second half| / median: clocks that changed mid-point."""
    values = np.asarray(samples, dtype=np.float64)
    if values.size < 12:
        return 0.0
    half = values.size // 2
    return abs(float(np.median(values[:half]) - np.median(values[half:]))) / float(np.median(values))


MODE_SHARE = 0.1  # each mode holds at least this share of the samples
MODE_SEPARATION = 4.0  # modes whose medians differ by this many times their own spread are two, not one


def two_modes(samples: list[float] | np.ndarray, tick: float = 0.0, min_samples: int = 20) -> tuple | None:
    """(share of the lower mode, its median, the upper mode's median) when the samples fall into two
    clusters that explain their spread — a kernel that alternates between two speeds — else None.

    The split is the one that minimises the summed squared deviation within the two halves of the
    sorted samples (1-D two-means); it counts when both halves hold ≥ MODE_SHARE of the samples and
    their medians lie MODE_SEPARATION spreads apart, and further apart than two timer ticks.
    """
    values = np.sort(np.asarray(samples, dtype=np.float64))
    n = values.size
    if n < min_samples:
        return None
    low, high = max(1, math.ceil(MODE_SHARE * n)), min(n - 1, math.floor((1 - MODE_SHARE) * n))
    if low > high:
        return None
    total, squares = np.cumsum(values), np.cumsum(values ** 2)
    splits = np.arange(low, high + 1)
    left_n, right_n = splits, n - splits
    left_sse = squares[splits - 1] - total[splits - 1] ** 2 / left_n
    right_sse = (squares[-1] - squares[splits - 1]) - (total[-1] - total[splits - 1]) ** 2 / right_n
    k = int(splits[np.argmin(left_sse + right_sse)])
    lower, upper = values[:k], values[k:]
    spread = max(1.4826 * float(np.median(np.abs(part - np.median(part)))) for part in (lower, upper))
    gap = float(np.median(upper) - np.median(lower))
    if gap > MODE_SEPARATION * spread and gap > 2 * tick:
        return k / n, float(np.median(lower)), float(np.median(upper))
    return None


DRIFT_NOISE = 2.0  # the halves' medians differ by up to 2·ci from noise alone (95 %)


def stopping_rule(samples: list[float] | np.ndarray, max_noise: float, tick: float = 0.0) -> tuple[bool, str]:
    """Whether the samples' median is known to ``max_noise``: (met, why not). ``tick``: the timer's resolution.

    Not met on two modes that explain the spread; on a drift between the halves that their noise does not explain
    (d > 2·ci) and that, going on at its rate, moves the next run's median by 2·d beyond the target
    (ci + 2·d > max_noise); on a 95 % interval of the median wider than ``max_noise``."""
    modes = two_modes(samples, tick)
    if modes is not None and (modes[2] - modes[1]) > max_noise * float(np.median(samples)):
        share, fast, slow = modes
        return False, (f"two modes: {share:.0%} of samples at {fast * 1e6:.3g} µs, {1 - share:.0%} at "
                       f"{slow * 1e6:.3g} µs (the median sits between them)")
    ci, drift = median_ci_rel(samples), drift_rel(samples)
    if drift > DRIFT_NOISE * ci and ci + 2 * drift > max_noise:
        return False, (f"samples drift {drift:.2%} between the first and second half (throttling or clock changes?): "
                       f"the next run would read {2 * drift:.2%} away, beyond the {max_noise:.2%} target")
    if not ci <= max_noise:
        return False, f"median's 95 % CI ±{ci:.2%} above the {max_noise:.2%} target at timeout"
    return True, ""
