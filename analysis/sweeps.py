"""Fitted sweeps: a device's timed rows cut into series and each fitted with :func:`analysis.fit.fit_roofline`.

A series is one kernel × impl × dtype × L2 mode × preset label × every axis but the swept one
(:mod:`analysis.frames`). The launch mode (CUDA-graph replay or stream, picked per point at ~100 µs)
does not split a series: one shape's batch sweep is one fit. A point is left out of a fit when its bytes
cannot have come from DRAM (warm L2 and a footprint that fits in it) or its time is not to be trusted (not
converged, or throttled by heat: :func:`analysis.frames.unsteady`); the reason is kept per row, and the
unsteady points stay in the rows so that every figure draws them (hollow).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

import numpy as np
import pandas as pd

from analysis.fit import Fit, fit_roofline
from analysis.frames import LATENCY_KERNELS, batch_axis, series_labels, unsteady, warm_in_l2
from analysis.roofline import affine_in_batch, knee_batch

SWEEP_KEYS = ("kernel", "impl", "dtype", "l2")
POOLED = "(all shapes)"
WARM_L2_REASON = "warm L2 and the footprint fits in L2: bytes served by L2, not DRAM"
NO_WORK_REASON = "no bytes and no FLOPs"
UNSTEADY_REASON = "not converged or throttled (drawn hollow)"

Caps = Callable[[str, str], "tuple[float | None, float | None]"]  # (kernel, dtype) -> (max BW, max peak)


@dataclass(frozen=True, eq=False)
class SweepFit:
    """One fitted series: a kernel × impl × dtype × L2 mode × shape walked along its swept axis."""

    kernel: str
    impl: str
    dtype: str
    shape: str  # reader-facing series name; POOLED for a pooled fit
    l2: str
    batch: str | None  # the swept axis (M, batch, seq, N …)
    rows: pd.DataFrame = field(repr=False)  # sorted by the swept axis; in_fit, excluded (the reason) per row
    fit: Fit = field(repr=False)
    knee: float = float("nan")  # swept value where the fitted branches cross; NaN without FLOPs or a fit
    key: str = ""  # exact series identity (label and every non-swept axis)

    @property
    def launch(self) -> str:
        """The launch modes the series' points ran under, e.g. "graph+stream"."""
        modes = sorted(set(self.rows["launch"].dropna().astype(str)) - {""}) if "launch" in self.rows else []
        return "+".join(modes)

    @property
    def has_flops(self) -> bool:
        return bool((self.rows["flops"] > 0).any())

    @property
    def n_l2_excluded(self) -> int:
        return int((~self.rows["in_fit"]).sum())

    @cached_property
    def used(self) -> pd.DataFrame:
        """The rows the fit used."""
        return self.rows[self.rows["in_fit"]]

    @cached_property
    def cost_in_batch(self) -> tuple[float, float, float, float]:
        """(f0, f1, b0, b1): flops ≈ f0 + f1·x and bytes ≈ b0 + b1·x over the fitted rows (x: the swept axis)."""
        if self.batch is None or self.used.empty:
            return (float("nan"),) * 4
        return (*affine_in_batch(self.used[self.batch], self.used["flops"]),
                *affine_in_batch(self.used[self.batch], self.used["bytes"]))

    def predict_at(self, batch, predict=None):
        """Model time at swept values (anywhere: the caller decides whether to extrapolate)."""
        f0, f1, b0, b1 = self.cost_in_batch
        batch = np.asarray(batch, dtype=float)
        return (predict or self.fit.predict)(f0 + f1 * batch, b0 + b1 * batch)


def sweep_knee(rows: pd.DataFrame, batch: str | None, bandwidth: float, peak: float) -> float:
    """Where a roof's memory and compute branches cross along the sweep; NaN for a family without FLOPs."""
    if batch is None or rows.empty or not (rows["flops"] > 0).any():
        return float("nan")
    return knee_batch(rows[batch], rows["flops"], rows["bytes"], peak, bandwidth)


def roof_knee(sweep: SweepFit, bandwidth: float, peak: float) -> float:
    """The knee a roof (measured or datasheet) puts on a series' fitted points; NaN without FLOPs."""
    return sweep_knee(sweep.used, sweep.batch, bandwidth, peak)


def _exclusions(rows: pd.DataFrame) -> pd.Series:
    reason = pd.Series("", index=rows.index, dtype=object)
    reason[warm_in_l2(rows)] = WARM_L2_REASON
    reason[(rows["flops"].fillna(0) <= 0) & (rows["bytes"].fillna(0) <= 0)] = NO_WORK_REASON
    reason[unsteady_rows(rows)] = UNSTEADY_REASON
    return reason


def unsteady_rows(rows: pd.DataFrame) -> pd.Series:
    """:func:`analysis.frames.unsteady` on rows that may lack the v2 columns (a frame built by hand)."""
    defaults = {"converged": pd.array([pd.NA] * len(rows), dtype="boolean"), "throttle": ""}
    return unsteady(rows.assign(**{c: v for c, v in defaults.items() if c not in rows.columns}))


def fit_sweeps(points: pd.DataFrame, caps: Caps | None = None) -> tuple[list[SweepFit], list[SweepFit]]:
    """Fit every series in a frame of timed rows (one device): (pooled fits, per-shape fits).

    A pooled fit takes all shapes of a kernel × impl × dtype × L2 mode together (one t0 for all of them:
    read it as the family's, not any one shape's). A per-shape fit takes its own t0: shapes differ in their
    fixed cost (launch mode, grid, prologue), and a t0 borrowed from the pool biases a small shape's BW_eff
    while its ± claims precision it does not have. A shape whose bytes barely change along the sweep (GEMV: the
    weight dominates) cannot separate its t0 from BW_eff: its ± says so (see ``fit_roofline``), and a fit that
    cannot be judged at all is refused with its reason (``Fit.refused``, the ``why`` column of fits.csv).
    """
    pooled: list[SweepFit] = []
    per_shape: list[SweepFit] = []
    points = points[~points["kernel"].isin(LATENCY_KERNELS)]
    for kernel, kernel_rows in points.groupby("kernel", sort=True):
        batch = batch_axis(kernel_rows, kernel)
        key, name = series_labels(kernel_rows, batch)
        excluded = _exclusions(kernel_rows)
        rows = kernel_rows.assign(series_key=key, shape=name, excluded=excluded, in_fit=excluded == "",
                                  unsteady=excluded == UNSTEADY_REASON)
        for group_key, group in rows.groupby(list(SWEEP_KEYS[1:]), sort=True, dropna=False):
            impl, dtype, l2 = (("" if pd.isna(k) else str(k)) for k in group_key)
            max_bandwidth, max_peak = caps(str(kernel), dtype) if caps else (None, None)

            def fit_of(sweep: pd.DataFrame) -> Fit:
                used = sweep[sweep["in_fit"]]
                return fit_roofline(used["flops"], used["bytes"], used["median_s"], max_bandwidth, max_peak)

            whole = fit_of(group)
            pooled.append(SweepFit(str(kernel), impl, dtype, POOLED, l2, batch, group, whole, key=POOLED))
            for series, sweep in group.groupby("series_key", sort=False):
                if batch is not None:
                    sweep = sweep.sort_values(batch, kind="stable")
                fit = fit_of(sweep)
                knee = sweep_knee(sweep[sweep["in_fit"]], batch, fit.bandwidth, fit.peak)
                per_shape.append(SweepFit(str(kernel), impl, dtype, str(sweep["shape"].iloc[0]), l2, batch, sweep,
                                          fit, knee, str(series)))
    per_shape.sort(key=lambda s: (s.kernel, s.shape, s.impl, s.dtype, s.l2))
    return pooled, per_shape


def _why(sweep: SweepFit) -> str:
    counts = sweep.rows.loc[~sweep.rows["in_fit"], "excluded"].value_counts()
    return "; ".join(f"{n} × {reason}" for reason, n in counts.items())


def fits_table(pooled: list[SweepFit], per_shape: list[SweepFit]) -> pd.DataFrame:
    """Every fit as one row: what a reader needs to reuse it (SI-prefixed units in the column names)."""
    rows = []
    for sweep in [*pooled, *per_shape]:
        fit = sweep.fit
        swept = sweep.rows[sweep.batch] if sweep.batch else pd.Series(dtype=float)
        rows.append(dict(
            kernel=sweep.kernel, impl=sweep.impl, dtype=sweep.dtype, l2=sweep.l2, series=sweep.shape,
            pooled=sweep.shape == POOLED, swept_axis=sweep.batch or "", swept_min=swept.min(), swept_max=swept.max(),
            launch=sweep.launch, bandwidth_gbs=fit.bandwidth / 1e9, bandwidth_rse=fit.bandwidth_rse,
            peak_tflops=fit.peak / 1e12, peak_rse=fit.peak_rse, t0_us=fit.t0 * 1e6, t0_se_us=fit.t0_se * 1e6,
            knee=sweep.knee, mape=fit.mape, points_used=int(sweep.rows["in_fit"].sum()),
            points_excluded=sweep.n_l2_excluded, excluded_why=_why(sweep), refused=bool(fit.refused),
            why=fit.refused, notes="; ".join(n for n in fit.notes if n != fit.refused)))
    return pd.DataFrame(rows)
