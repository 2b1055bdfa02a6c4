"""Derived tables for the report: per-point efficiency, quantized speed-ups, device ratios, failures."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.ceilings import DeviceRoofs
from analysis.sweeps import SweepFit
from analysis.frames import QUANT_KERNELS, axis_columns, unsteady
from analysis.roofline import efficiency

QUANT_BASELINE = "torch"  # for quant families: fp16 cuBLAS on the unquantized weight
QUANT_IMPLS = ("triton", "torch_dequant")


def point_efficiency(sweeps: list[SweepFit], roofs: DeviceRoofs) -> pd.DataFrame:
    """Every fitted sweep's points with ``efficiency`` = roofline time / measured time (1.0 = on the roof)."""
    frames = []
    for sweep in sweeps:
        roof = roofs.roof(sweep.kernel, sweep.dtype)
        rows = sweep.rows
        frames.append(pd.DataFrame({
            "kernel": sweep.kernel, "impl": sweep.impl, "dtype": sweep.dtype, "shape": sweep.shape,
            "axis": sweep.batch or "", "batch": rows[sweep.batch].to_numpy() if sweep.batch else np.nan,
            "in_fit": rows["in_fit"].to_numpy(),
            "efficiency": efficiency(rows["flops"], rows["bytes"], rows["median_s"], roof.peak, roof.bandwidth)}))
    if not frames:
        return pd.DataFrame(columns=["kernel", "impl", "dtype", "shape", "axis", "batch", "in_fit", "efficiency"])
    return pd.concat(frames, ignore_index=True)


def efficiency_grid(points: pd.DataFrame, axes=("M", "batch")) -> pd.DataFrame:
    """(kernel impl dtype) × batch, median efficiency over shapes, for sweeps along a batch axis
    (not the size sweeps of the stream kernels); L2-resident points left out."""
    points = points[points["in_fit"] & points["batch"].notna() & points["axis"].isin(axes)]
    if points.empty:
        return pd.DataFrame()
    points = points.assign(row=points["kernel"] + " " + points["impl"] + " " + points["dtype"])
    grid = points.pivot_table(index="row", columns="batch", values="efficiency", aggfunc="median")
    grid.columns = [int(c) if float(c).is_integer() else c for c in grid.columns]
    return grid


def crossover(batches, speedups) -> float:
    """First batch where the speed-up falls below 1.0, log2-interpolated; inf if it never does, NaN if it
    starts below."""
    batches = np.asarray(batches, dtype=float)
    speedups = np.asarray(speedups, dtype=float)
    below = np.flatnonzero(speedups < 1.0)
    if not len(below):
        return float("inf")
    first = below[0]
    if first == 0:
        return float("nan")
    x0, x1 = np.log2(batches[first - 1]), np.log2(batches[first])
    y0, y1 = speedups[first - 1], speedups[first]
    return float(2 ** (x0 + (1.0 - y0) * (x1 - x0) / (y1 - y0)))


def _unsteady_column(rows: pd.DataFrame) -> pd.Series:
    if {"converged", "throttle"} <= set(rows.columns):
        return unsteady(rows)
    return pd.Series(False, index=rows.index, dtype=bool)


SPEEDUP_COLUMNS = ["series", "batch", "speedup", "ideal", "unsteady"]


def quant_speedups(points: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Speed-up of quantized kernels over the fp16 baseline row of the same point, and crossovers per series.

    ``ideal`` is the bytes ratio (baseline bytes / quantized bytes at the point): the speed-up a purely
    memory-bound kernel would reach. ``unsteady``: either side's row was not converged or throttled."""
    rows = points[points["kernel"].isin(QUANT_KERNELS)]
    if rows.empty or "M" not in rows:
        return pd.DataFrame(columns=SPEEDUP_COLUMNS), {}
    rows = rows.assign(unsteady=_unsteady_column(rows).astype(float))
    keys = ["kernel", "dtype", "label", *[a for a in axis_columns(rows) if a != "unsteady" and rows[a].notna().any()]]
    grouped = rows.groupby([*keys, "impl"], dropna=False)
    medians = grouped["median_s"].median().unstack("impl")
    if QUANT_BASELINE not in medians:
        return pd.DataFrame(columns=SPEEDUP_COLUMNS), {}
    nbytes = (grouped["bytes"].median() if "bytes" in rows else grouped["median_s"].median() * np.nan
              ).unstack("impl").reset_index()
    shaky = grouped["unsteady"].max().unstack("impl").reset_index()
    medians = medians.reset_index()
    shape = medians["label"].fillna("").astype(str)
    if {"N", "K"} <= set(medians.columns):
        sizes = "N=" + medians["N"].astype("Int64").astype(str) + " K=" + medians["K"].astype("Int64").astype(str)
        shape = shape.where(shape != "", sizes)
    for extra in ("group_size", "format"):
        if extra in medians:
            prefix = "g" if extra == "group_size" else ""
            shape = prefix + medians[extra].astype(str).str.replace(r"\.0$", "", regex=True) + " " + shape
    frames = []
    for impl in (i for i in QUANT_IMPLS if i in medians):
        frame = medians[keys].assign(
            batch=medians["M"], speedup=medians[QUANT_BASELINE] / medians[impl],
            ideal=nbytes[QUANT_BASELINE] / nbytes[impl].where(nbytes[impl] > 0),
            unsteady=(shaky[QUANT_BASELINE].fillna(0) + shaky[impl].fillna(0)) > 0,
            series=medians["kernel"] + " " + impl + " " + medians["dtype"] + " " + shape)
        frames.append(frame[frame["speedup"].notna()])
    table = pd.concat(frames, ignore_index=True).sort_values(["series", "batch"]) if frames else pd.DataFrame(
        columns=SPEEDUP_COLUMNS)
    crossings = {s: crossover(g["batch"], g["speedup"]) for s, g in table.groupby("series", sort=False)}
    return table, crossings


def point_keys(rows: pd.DataFrame) -> pd.Series:
    """One string per measured point: kernel, impl, dtype, label, l2, launch and every axis value."""
    columns = ["kernel", "impl", "dtype", "label", "l2", "launch", *axis_columns(rows)]
    text = rows[columns].apply(lambda column: column.map(lambda v: "" if pd.isna(v) else str(v)))
    return text.agg("|".join, axis=1)


def device_ratios(slow: pd.DataFrame, fast: pd.DataFrame, batch_of) -> pd.DataFrame:
    """Per point measured on both devices: median time on ``slow`` / on ``fast`` (> 1: ``fast`` is faster);
    ``unsteady`` where either device's row was not converged or throttled."""
    def medians(rows):
        rows = rows.assign(key=point_keys(rows), sweep_batch=batch_of(rows), shaky=_unsteady_column(rows))
        return rows.groupby("key").agg(median_s=("median_s", "median"), kernel=("kernel", "first"),
                                       impl=("impl", "first"), dtype=("dtype", "first"),
                                       batch=("sweep_batch", "first"), unsteady=("shaky", "max"))
    slow, fast = medians(slow), medians(fast)
    both = slow.join(fast[["median_s", "unsteady"]].rename(columns={"median_s": "median_s_fast",
                                                                    "unsteady": "unsteady_fast"}), how="inner")
    both["ratio"] = both["median_s"] / both["median_s_fast"]
    both["unsteady"] = both["unsteady"].astype(bool) | both.pop("unsteady_fast").astype(bool)
    both["series"] = both["kernel"] + " " + both["impl"] + " " + both["dtype"]
    return both.reset_index(drop=True)


def failures(frame: pd.DataFrame) -> pd.DataFrame:
    """Counts of failed and skipped points by status, kernel, impl, dtype and reason."""
    bad = frame[frame["status"] != "ok"]
    if bad.empty:
        return pd.DataFrame(columns=["status", "kernel", "impl", "dtype", "reason", "count"])
    bad = bad.assign(reason=bad["error"].astype(str).str.slice(0, 140).replace("", "(no reason given)"))
    return (bad.groupby(["status", "kernel", "impl", "dtype", "reason"]).size().rename("count").reset_index()
            .sort_values(["status", "count"], ascending=[True, False]))
