"""Measured ceilings of one device, derived from result rows (the ``ceilings`` suite, or any run with the same kernels).

Rules (one value per ceiling × kernel × impl × dtype; a ceiling's roof value is the best of its rows):
- DRAM bandwidth (``dram_bw``): kernels read / write / copy / triad, cold L2, footprint ≥ 4× L2.
  Value: the median achieved bytes/s over the three largest qualifying footprints — the plateau,
  robust to one lucky or unlucky size.
- L2 bandwidth (``l2_bw``): the same kernels, warm L2, footprint ≤ L2/2. Sizes that fit in L2 run
  for microseconds, comparable to the launch, so the value is the slope of t = t0 + bytes/BW fitted
  over those rows (the plateau of the three largest when fewer than three rows).
- CUDA-core FLOP/s (``vector_flops``): kernel fma, the best achieved FLOP/s (a peak: every size
  and chain length that reaches it is as good as another).
- Tensor FLOP/s (``tensor_flops``): gemm rows at squares (M = N = K ≥ 2048), per impl and dtype,
  the best achieved FLOP/s (fp32 GEMMs run on tf32 tensor cores).
- Launch latency (``launch_stream_s``, ``launch_graph_s``): kernel launch, ``count`` one-element
  kernels per timed run; per impl and launch mode (back-to-back in a stream, or CUDA-graph replay)
  the median of median_s / count at the largest count (the steady state, as a serving loop sees it).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.devices import Datasheet
from analysis.fit import fit_roofline
from analysis.frames import axis_columns, l2_flags, timed, unsteady
from analysis.markdown import quantity
from analysis.roofline import Roof
from bench.results import load_csv, read_sidecar

BANDWIDTH_KERNELS = ("read", "write", "copy", "triad")
DRAM_FACTOR = 4  # footprint ≥ 4× L2: rotating through that much data leaves nothing useful cached
L2_FRACTION = 0.5  # footprint ≤ L2/2: comfortably resident
PLATEAU_SIZES = 3
MIN_SQUARE = 2048
COLUMNS = ("ceiling", "value", "unit", "kernel", "impl", "dtype", "source_rows")
UNITS = {"dram_bw": "B/s", "l2_bw": "B/s", "vector_flops": "FLOP/s", "tensor_flops": "FLOP/s",
         "launch_stream_s": "s", "launch_graph_s": "s"}
LATENCIES = ("launch_stream_s", "launch_graph_s")
DERIVED = ("achieved_bps", "achieved_flops")  # columns added here, not axes


def _plateau(rows: pd.DataFrame, metric: str) -> tuple[float, str]:
    top = rows.sort_values("footprint_bytes", ascending=False).head(PLATEAU_SIZES)
    sizes = ", ".join(quantity(b, "B") for b in top["footprint_bytes"])
    return float(np.median(top[metric])), f"{len(top)} rows, footprints {sizes}"


def _rows(rows: pd.DataFrame, ceiling: str, metric: str, picker) -> list[dict]:
    out = []
    for (kernel, impl, dtype), group in rows.groupby(["kernel", "impl", "dtype"], sort=True):
        value, source = picker(group, metric)
        runs = ", ".join(sorted(set(group["run_id"].astype(str))))
        out.append(dict(ceiling=ceiling, value=value, unit=UNITS[ceiling], kernel=kernel, impl=impl, dtype=dtype,
                        source_rows=f"{source}; run {runs}"))
    return out


def _slope(rows: pd.DataFrame, metric: str) -> tuple[float, str]:
    fit = fit_roofline(np.zeros(len(rows)), rows["bytes"], rows["median_s"])
    if not np.isfinite(fit.bandwidth):
        return _plateau(rows, metric)
    return fit.bandwidth, f"slope over {len(rows)} rows (t0 {fit.t0 * 1e6:.3g} µs, MAPE {100 * fit.mape:.2g} %)"


def _best(rows: pd.DataFrame, metric: str) -> tuple[float, str]:
    top = rows.loc[rows[metric].idxmax()]
    where = " ".join(f"{a}={int(top[a]) if float(top[a]).is_integer() else top[a]}"
                     for a in axis_columns(rows) if a not in DERIVED and pd.notna(top[a]) and not isinstance(top[a], str))
    return float(top[metric]), f"best of {len(rows)} rows ({where})"


def _per_launch(rows: pd.DataFrame, metric: str) -> tuple[float, str]:
    count = rows["count"].max() if "count" in rows else 1
    rows = rows[rows["count"] == count] if "count" in rows else rows
    return float(np.median(rows[metric] / count)), f"median_s / count over {len(rows)} rows at count={int(count)}"


def derive_ceilings(frame: pd.DataFrame, l2_bytes: float | None = None) -> pd.DataFrame:
    """Tidy table of measured ceilings (columns ``COLUMNS``) from one device's rows.

    ``l2_bytes`` defaults to the L2 size in the rows' run sidecars; without it the DRAM rule falls
    back to rows not flagged ``l2_resident`` and the L2 rule is skipped.
    """
    rows = timed(frame)
    rows = rows[~unsteady(rows)].copy()  # not converged or thermally throttled: no ceiling from them
    if l2_bytes is None and "source" in rows and len(rows):
        sizes = {read_sidecar(path).get("device", {}).get("l2_bytes") for path in rows["source"].unique()}
        sizes.discard(None)
        l2_bytes = max(sizes) if sizes else None
    rows["achieved_bps"] = rows["bytes"] / rows["median_s"]
    rows["achieved_flops"] = rows["flops"] / rows["median_s"]
    found: list[dict] = []

    bandwidth = rows[rows["kernel"].isin(BANDWIDTH_KERNELS)]
    cold = bandwidth["l2"] == "cold"
    if l2_bytes:
        dram = bandwidth[cold & (bandwidth["footprint_bytes"] >= DRAM_FACTOR * l2_bytes)]
        l2 = bandwidth[(bandwidth["l2"] == "warm") & (bandwidth["footprint_bytes"] <= L2_FRACTION * l2_bytes)]
        found += _rows(l2, "l2_bw", "achieved_bps", _slope)
    else:
        dram = bandwidth[cold & ~l2_flags(bandwidth)]
    found += _rows(dram, "dram_bw", "achieved_bps", _plateau)

    found += _rows(rows[rows["kernel"] == "fma"], "vector_flops", "achieved_flops", _best)

    gemm = rows[rows["kernel"] == "gemm"]
    if {"M", "N", "K"} <= set(gemm.columns):
        squares = gemm[(gemm["M"] == gemm["N"]) & (gemm["N"] == gemm["K"]) & (gemm["M"] >= MIN_SQUARE)]
        found += _rows(squares, "tensor_flops", "achieved_flops", _best)

    launch = rows[rows["kernel"] == "launch"]
    for mode in ("stream", "graph"):
        found += _rows(launch[launch["launch"] == mode], f"launch_{mode}_s", "median_s", _per_launch)
    return pd.DataFrame(found, columns=list(COLUMNS))


def best(table: pd.DataFrame, ceiling: str, dtype: str | None = None) -> float:
    """The roof value of a ceiling: the best row (lowest for a latency); NaN when not measured."""
    rows = table[table["ceiling"] == ceiling]
    if dtype is not None:
        rows = rows[rows["dtype"] == dtype]
    if rows.empty:
        return float("nan")
    return float(rows["value"].min() if ceiling in LATENCIES else rows["value"].max())


def ceilings_path(csv_path: Path | str) -> Path:
    path = Path(csv_path)
    return path.with_name(f"{path.stem}.ceilings.csv")


def write_ceilings(csv_path: Path | str) -> Path:
    """Derive the ceilings of one run and write ``<run_id>.ceilings.csv`` beside it."""
    frame = load_csv(csv_path)
    l2_bytes = read_sidecar(csv_path).get("device", {}).get("l2_bytes")
    out = ceilings_path(csv_path)
    derive_ceilings(frame, l2_bytes).to_csv(out, index=False)
    return out


CAP_MARGIN = 1.25  # a fitted BW_eff / P_eff above 1.25× the best known roof is not physical
VECTOR_KERNELS = ("fma",)  # kernels whose FLOPs run on CUDA cores, not tensor cores


@dataclass(frozen=True, eq=False)
class DeviceRoofs:
    """A device's roofs: measured ceilings first, the datasheet where a ceiling was not measured."""

    table: pd.DataFrame  # derive_ceilings output
    datasheet: Datasheet | None

    @cached_property
    def _best(self) -> dict[tuple[str, str | None], float]:
        """Every ceiling's roof value, looked up once (the report asks thousands of times)."""
        found = {}
        for ceiling in self.table["ceiling"].unique():
            found[(ceiling, None)] = best(self.table, ceiling)
            for dtype in self.table.loc[self.table["ceiling"] == ceiling, "dtype"].unique():
                found[(ceiling, dtype)] = best(self.table, ceiling, dtype)
        return found

    def measured(self, kernel: str, dtype: str) -> tuple[float, float]:
        """(DRAM bytes/s, FLOP/s) measured for the arithmetic a kernel × dtype uses; NaN where not measured."""
        nan = float("nan")
        peak = self._best.get(("vector_flops" if kernel in VECTOR_KERNELS else "tensor_flops", dtype), nan)
        return self._best.get(("dram_bw", None), nan), peak

    def sheet(self, kernel: str, dtype: str) -> tuple[float, float]:
        nan = float("nan")
        if self.datasheet is None:
            return nan, nan
        peak = self.datasheet.peak_for(dtype, tensor=kernel not in VECTOR_KERNELS)
        return self.datasheet.bandwidth, nan if peak is None else peak

    def roof(self, kernel: str, dtype: str) -> Roof:
        """The roof a point is judged against: each figure measured where possible, else datasheet."""
        measured, sheet = self.measured(kernel, dtype), self.sheet(kernel, dtype)
        bandwidth = measured[0] if np.isfinite(measured[0]) else sheet[0]
        peak = measured[1] if np.isfinite(measured[1]) else sheet[1]
        both = np.isfinite(measured[0]) and np.isfinite(measured[1])
        return Roof(f"{dtype} ({'measured' if both else 'measured + datasheet'})", bandwidth, peak, both)

    def caps(self, kernel: str, dtype: str) -> tuple[float | None, float | None]:
        """Upper bounds for a fit: CAP_MARGIN × the best of measured and datasheet, None when neither is known."""
        pairs = list(zip(self.measured(kernel, dtype), self.sheet(kernel, dtype)))
        known = [[v for v in pair if np.isfinite(v)] for pair in pairs]
        return tuple(CAP_MARGIN * max(values) if values else None for values in known)
