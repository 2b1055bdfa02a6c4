"""The regression gate's rule (``rooflab compare``): verdicts, the bound max(threshold, k·√(noise² + drift²)),
the term that set it, and a row's relative noise. See :mod:`bench.compare`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

import pandas as pd

from kernels.errors import UsageError

DEFAULT_THRESHOLD = "5%"
DEFAULT_K = 3.0
DEFAULT_CAP = "15%"
DEFAULT_DRIFT = 0.02  # run-to-run drift of a point's median when the runs hold no repeats to estimate it from
MIN_REPEATS = 3  # repeated points needed before the drift is estimated rather than defaulted
P80_Z = 0.8416  # standard normal quantile at 0.8: p80 − p20 = 2·0.8416·σ for normal noise
TIMER_RESOLUTION_S = 0.5e-6  # CUDA events resolve ≈ 0.5 µs


class Verdict(str, Enum):
    FAILED = "failed"  # ok in base, failed in new
    REGRESSION = "regression"
    MISSING = "missing"  # ok in base; absent, skipped or untimed in new
    INCONCLUSIVE = "inconclusive"  # noise beyond the cap, or an unsteady row on either side: cannot be judged
    IMPROVEMENT = "improvement"
    UNCHANGED = "unchanged"  # within the noise bound


def parse_fraction(text: str, option: str = "--threshold") -> float:
    """'5%' or '0.05' → 0.05."""
    body = str(text).strip()
    try:
        value = float(body.rstrip("%")) / (100 if body.endswith("%") else 1)
    except ValueError:
        raise UsageError(f"{option} {text!r}: expected a percentage (5%) or a fraction (0.05)") from None
    if not 0 <= value <= 1:
        raise UsageError(f"{option} {text!r}: must lie between 0 and 100%")
    return value


class Term(str, Enum):
    """Which term of max(threshold, k·√(noise² + drift²)) set a point's bound."""

    THRESHOLD = "threshold"
    NOISE = "sample noise"
    DRIFT = "drift"
    UNSTEADY = "unsteady"  # a side not converged or throttled by heat: inconclusive whatever the bound


@dataclass(frozen=True)
class Drift:
    """The run-to-run term: its value and where it came from ("option", "estimated" or "default")."""

    value: float = 0.0
    source: str = "option"
    repeats: int = 0  # repeated points it was estimated from

    def describe(self) -> str:
        if self.source == "estimated":
            return (f"drift {self.value:.1%}, estimated from {self.repeats} repeated points (robust spread of the "
                    "log-ratios between repeats of one point); --drift to set it")
        if self.source == "default":
            return (f"drift {self.value:.1%}, the default (fewer than {MIN_REPEATS} repeated points to estimate it "
                    "from: run the headline-repeat stage); --drift to set it")
        return f"drift {self.value:.1%}, from --drift"


@dataclass(frozen=True)
class Rule:
    threshold: float = 0.05
    k: float = DEFAULT_K
    cap: float = 0.15  # the widest noise bound a point may have and still be judged
    drift: float = 0.0  # run-to-run drift of a point's median (relative), beside each side's sample noise

    def __post_init__(self):
        if not (self.threshold >= 0 and self.k >= 0 and self.drift >= 0):  # also refuses NaN
            raise UsageError("the threshold, k and the drift must not be negative (nor NaN)")
        if not self.cap >= self.threshold:
            raise UsageError(f"--noise-cap {self.cap:.1%} must be at least the threshold {self.threshold:.1%}")

    def bound(self, noise: float) -> float:
        return max(self.threshold, self.k * math.hypot(noise, self.drift))

    def decided_by(self, noise: float) -> Term:
        """The term that set the bound: the threshold, else the larger of the sample noise and the drift."""
        if self.threshold >= self.k * math.hypot(noise, self.drift):
            return Term.THRESHOLD
        return Term.NOISE if noise >= self.drift else Term.DRIFT

    def verdict(self, ratio: float, noise: float) -> Verdict:
        bound = self.bound(noise)
        if ratio - 1 > bound:
            return Verdict.REGRESSION
        if 1 / ratio - 1 > bound:
            return Verdict.IMPROVEMENT
        return Verdict.INCONCLUSIVE if bound > self.cap else Verdict.UNCHANGED

    def describe(self) -> str:
        return (f"a change counts when new/base − 1 (slower) or base/new − 1 (faster) exceeds "
                f"max({self.threshold:.1%}, {self.k:g} × √(noise_base² + noise_new² + drift²)) with drift "
                f"{self.drift:.1%}; a point whose bound exceeds {self.cap:.1%} is inconclusive")


def unsteady_reason(row: dict) -> str:
    """Why a timed row's median is not to be trusted ("" when it is): the stopping rule was not met, or the clocks
    were held down by heat or a hardware slowdown (the rule of :func:`analysis.frames.unsteady`)."""
    from analysis.frames import UNSTEADY_THROTTLE

    reasons = []
    converged = row.get("converged")
    if converged is not None and not pd.isna(converged) and not bool(converged):
        why = row.get("error")  # an ok row carries why it did not converge here
        reasons.append("not converged" + (f" ({why})" if isinstance(why, str) and why else ""))
    throttle = row.get("throttle")
    held = sorted(set(throttle.split()) & UNSTEADY_THROTTLE) if isinstance(throttle, str) else []
    if held:
        reasons.append("throttled: " + " ".join(held))
    return "; ".join(reasons)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def spread(row: dict) -> float:
    """A row's relative noise: its cv, else from p20/p80; a resolution-limited row (cv 0) gets a floor.

    The floor is the row's ci_rel where recorded, at least the timer resolution relative to the time
    per launch — a kernel whose every sample reads the same tick is not noiseless, it is unresolved."""
    median = row.get("median_s")
    noise = float("nan")
    if _finite(row.get("cv")) and row["cv"] >= 0:
        noise = float(row["cv"])
    else:
        p20, p80 = row.get("p20_s"), row.get("p80_s")
        if _finite(p20) and _finite(p80) and _finite(median) and median > 0:
            noise = max(0.0, (p80 - p20) / (2 * P80_Z * median))
    if noise > 0:
        return noise
    floor = float(row["ci_rel"]) if _finite(row.get("ci_rel")) and row["ci_rel"] > 0 else 0.0
    if _finite(median) and median > 0:
        launches = row.get("launches_per_sample")
        launches = float(launches) if _finite(launches) and launches >= 1 else 1.0
        floor = max(floor, TIMER_RESOLUTION_S / (median * launches))
    return floor

