"""Paired A/B statistics for ``rooflab ab``: ABBA blocks, the interval on the paired log-ratio, the verdict.

Both revisions run on one GPU in one job, interleaved per point as blocks of four repeats in the order
BASE HEAD HEAD BASE or HEAD BASE BASE HEAD, drawn at random per block (a drift that oscillates in step
with a fixed order would bias every block the same way; a random order turns it into spread); each
repeat is a short sample set under the stopping rule and gives its median. One block's contrast is

    d = ½·(log h₁ + log h₂ − log b₁ − log b₂)

which a drift linear in time cancels exactly (the two sides sit symmetrically in the block) and a slow
drift almost exactly; a step or a fast wobble inside a block shows up as spread between blocks, which
the interval then carries. Blocks are the unit of the analysis: repeats within one block are not
independent once the device drifts, blocks (nearly) are.

Interval: Student's t on the block contrasts, mean ± t(1 − α; n − 1)·s/√n. Why t, not a bootstrap: a
point gets 3 to 16 blocks (more would overrun the budget of ≈ 2 single runs), and a bootstrap percentile
interval from so few values is too narrow (it cannot reach past the observed extremes; with 4 blocks its
coverage is far below nominal), while each contrast is an average of medians of several samples, close
to normal, which is what t needs. ``s`` is never taken below two floors: what the repeats' own sampling
error implies (their medians' confidence intervals), and the block's built-in A/A — the cubic contrast of
its four repeats in running order, which neither the change (in either order) nor a linear drift moves,
so it measures the noise and the curved drift the contrast is exposed to. Without them a few blocks that
agree by chance (or a drift in step with the blocks) produce confident false verdicts. (Google
Benchmark's compare.py runs a Mann-Whitney U test on unpaired repetitions; asv's ``continuous``
interleaves rounds of both commits. Unpaired tests see drift as a difference; pairing within a block
removes it.)

Verdict against the threshold θ (3 %: the smallest change that must be caught), on the interval [lo, hi]
of HEAD/BASE − 1 (log-symmetric: faster by θ means ratio 1/(1 + θ)):

    slower        lo > 0 and hi ≥ θ      slower beyond doubt, and a θ slowdown is within the interval
    faster        hi < 0 and lo ≤ −θ     the mirror image
    no change     −θ < lo and hi < θ     whatever the change is, it is smaller than θ either way
    inconclusive  otherwise              the interval spans no change and a θ change (the reason says how wide)

Sequential: after ``min_blocks`` blocks the verdict is taken after every block, and sampling stops at the
first decisive one (slower, faster, no change) or at ``max_blocks``. The looks cost error rate; the
one-sided level (99.5 %: a 99 % interval), the floors on ``s`` and 16 blocks at most are set by
simulation (tests/ab_sim.py: 2 % sample noise, ±4 % drift between runs and over time): A/A false alarms
0.3 % of points, a 3 % slowdown found in 99.3 %, ≈ 1.9–2.05 single runs' worth of GPU time.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Sequence

import numpy as np


class Side(str, Enum):
    BASE = "base"
    HEAD = "head"


ORDERS = ((Side.BASE, Side.HEAD, Side.HEAD, Side.BASE), (Side.HEAD, Side.BASE, Side.BASE, Side.HEAD))
Z95 = 1.96  # a repeat's ci_rel is the half-width of its median's 95 % interval


class Verdict(str, Enum):
    FAILED = "failed"  # HEAD fails the correctness gate where BASE passes: a regression, however fast
    SLOWER = "slower"
    NOT_JUDGED = "not judged"  # BASE failed, a side is missing or skipped, a worker died: named in ``why``
    INCONCLUSIVE = "inconclusive"
    FASTER = "faster"
    NO_CHANGE = "no change"
    SKIPPED = "skipped"  # on both sides (the device cannot take it): nothing to judge, nothing lost

    @property
    def regression(self) -> bool:
        return self in (Verdict.FAILED, Verdict.SLOWER)


SEVERITY = {v: i for i, v in enumerate(Verdict)}  # the summary lists points in this order: worst first


@dataclass(frozen=True)
class Repeat:
    """One short sample set of one side: its median (s per launch), samples taken, and the median's
    95 % half-width relative to it (inf when it had too few samples to say)."""

    median_s: float
    samples: int
    ci_rel: float = math.inf


@dataclass(frozen=True)
class AbRule:
    threshold: float = 0.03
    confidence: float = 0.995  # one-sided, for each end of the interval (a 99 % two-sided interval)
    min_blocks: int = 3
    max_blocks: int = 16

    def __post_init__(self):
        if not (0 < self.threshold < 1 and 0.5 < self.confidence < 1 and 2 <= self.min_blocks <= self.max_blocks):
            raise ValueError("need 0 < threshold < 1, 0.5 < confidence < 1 and 2 ≤ min_blocks ≤ max_blocks")


@dataclass(frozen=True)
class Estimate:
    """HEAD/BASE over the blocks so far: the ratio, its interval, the verdict and why."""

    blocks: int
    ratio: float  # exp(mean contrast)
    low: float  # interval on the ratio
    high: float
    spread: float  # standard deviation of the block contrasts used (relative, floor included)
    verdict: Verdict
    why: str = ""
    aa: float = math.nan  # the built-in A/A: rms of the blocks' same-revision residuals (relative)

    @property
    def half_width(self) -> float:
        """The interval's half-width in relative terms: the smallest change this point could resolve."""
        return (math.log(self.high) - math.log(self.low)) / 2


def t_quantile(p: float, df: int) -> float:
    """Student's t quantile (p > ½) for ``df`` ≥ 1 degrees of freedom, by bisection on its CDF."""
    if df < 1 or not 0.5 < p < 1:
        raise ValueError("t_quantile needs df ≥ 1 and ½ < p < 1")
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(t: float) -> float:  # ½ + ∫₀ᵗ density, Simpson's rule
        x = np.linspace(0.0, t, 2001)
        f = np.exp(log_norm - (df + 1) / 2 * np.log1p(x * x / df))
        h = t / 2000
        return 0.5 + h / 3 * float(f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())

    low, high = 0.0, 1.0
    while cdf(high) < p:
        high *= 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if cdf(mid) < p else (low, mid)
    return (low + high) / 2


_T_CACHE: dict[tuple[float, int], float] = {}


def _t(p: float, df: int) -> float:
    key = (p, df)
    if key not in _T_CACHE:
        _T_CACHE[key] = t_quantile(p, df)
    return _T_CACHE[key]


Block = Sequence[tuple[Side, Repeat]]  # four repeats in the order they ran


def contrast(block: Block) -> float:
    """½·(log h₁ + log h₂ − log b₁ − log b₂) of one block."""
    total = 0.0
    for side, repeat in block:
        total += (1 if side is Side.HEAD else -1) * math.log(repeat.median_s)
    return total / 2


CUBIC = np.array([-1.0, 3.0, -3.0, 1.0]) / math.sqrt(20)  # orthogonal to level, trend and either order's contrast


def residual(block: Block) -> float:
    """The block's within-block A/A: the cubic contrast of its four log-medians in running order, which
    neither the change (either order) nor a linear drift moves; scaled to the contrast's variance under
    noise, it measures the noise and the non-linear drift the contrast itself is exposed to."""
    return float(CUBIC @ np.log([r.median_s for _, r in block]))


def sampling_sd(block: Block) -> float:
    """The standard deviation a block's contrast has from the repeats' own sampling error alone."""
    variances = [(r.ci_rel / Z95) ** 2 if math.isfinite(r.ci_rel) else 0.0 for _, r in block]
    return math.sqrt(sum(variances)) / 2


def estimate(blocks: Sequence[Block], rule: AbRule) -> Estimate:
    """The interval and verdict from the blocks so far (at least two)."""
    n = len(blocks)
    if n < 2:
        raise ValueError("an interval needs at least two blocks")
    d = np.array([contrast(b) for b in blocks])
    r = np.array([residual(b) for b in blocks])
    mean = float(d.mean())
    floor = float(np.sqrt(np.mean([sampling_sd(b) ** 2 for b in blocks])))
    spread = max(float(d.std(ddof=1)), float(np.sqrt(np.mean(r ** 2))), floor)
    half = _t(rule.confidence, n - 1) * spread / math.sqrt(n)
    lo, hi = mean - half, mean + half
    edge = math.log1p(rule.threshold)
    if lo > 0 and hi >= edge:
        verdict, why = Verdict.SLOWER, ""
    elif hi < 0 and lo <= -edge:
        verdict, why = Verdict.FASTER, ""
    elif -edge < lo and hi < edge:
        verdict, why = Verdict.NO_CHANGE, ""
    else:
        verdict = Verdict.INCONCLUSIVE
        why = (f"after {n} blocks the interval {math.expm1(lo):+.1%}…{math.expm1(hi):+.1%} spans both no change "
               f"and a {rule.threshold:.0%} change: block contrasts spread {spread:.1%} "
               "(noise or drift between repeats)")
    return Estimate(n, math.exp(mean), math.exp(lo), math.exp(hi), spread, verdict, why,
                    float(np.sqrt(np.mean(r ** 2))))


def judge(measure: Callable[[Side], Repeat], rule: AbRule, rng: random.Random) -> Estimate:
    """Blocks of ``measure(side)``, each ABBA or BAAB at random (``rng``), until a decisive verdict
    (from ``min_blocks`` on) or ``max_blocks``. ``measure`` may raise to abandon the point (a failed side)."""
    blocks: list[list[tuple[Side, Repeat]]] = []
    while True:
        blocks.append([(side, measure(side)) for side in rng.choice(ORDERS)])
        if len(blocks) >= rule.min_blocks:
            result = estimate(blocks, rule)
            if result.verdict is not Verdict.INCONCLUSIVE or len(blocks) >= rule.max_blocks:
                return result


def noise_floor(estimates: Sequence[Estimate]) -> tuple[float, float] | None:
    """The run's noise floor: the median half-width of the points' intervals, and the median built-in A/A
    spread per block (None without timed points)."""
    widths = [e.half_width for e in estimates if math.isfinite(e.half_width)]
    if not widths:
        return None
    return float(np.median(widths)), float(np.median([e.aa for e in estimates if math.isfinite(e.aa)] or [math.nan]))
