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
