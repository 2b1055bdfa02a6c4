"""The index's device comparison: the same points measured on two devices, as time ratios (MEASURED)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis import claims, plots_sweeps
from analysis.frames import BATCH_AXES, batch_axis
from analysis.markdown import number, slug, table
from analysis.sections import Device
from analysis.tables import device_ratios


def _square(frame: pd.DataFrame) -> pd.Series:
    """Square problems (M = N = K, a "square." preset): the tensor-core ceilings' sizes, not a batch."""
    if not {"M", "N", "K"} <= set(frame.columns):
        return pd.Series(False, index=frame.index)
    label = frame["label"].fillna("").astype(str) if "label" in frame else pd.Series("", index=frame.index)
    return label.str.startswith("square") & (frame["M"] == frame["N"]) & (frame["M"] == frame["K"])


def _batch_of(frame: pd.DataFrame) -> pd.Series:
    """Each row's batch (M or batch axis); NaN for size sweeps (stream kernels) and square GEMMs, which are not
    plotted by batch."""
    batch = pd.Series(np.nan, index=frame.index)
    for kernel in frame["kernel"].unique():
        axis = batch_axis(frame, kernel)
        if axis in BATCH_AXES:
            mask = frame["kernel"] == kernel
            batch[mask] = frame.loc[mask, axis]
    return batch.where(~_square(frame))


def comparison(slow: Device, fast: Device, out_dir: Path) -> str:
    ratios = device_ratios(slow.points, fast.points, _batch_of)
    title = f"### {fast.name} vs {slow.name}\n"
    if ratios.empty:
        return title + "No point was measured on both devices.\n"
    references = {}
    bw_ratio = fast.dram_bandwidth() / slow.dram_bandwidth()
    if np.isfinite(bw_ratio):
        references["DRAM bandwidth ratio (measured ceilings, else datasheet)"] = (bw_ratio, bw_ratio)
    keys = {slow.datasheet.key if slow.datasheet else None, fast.datasheet.key if fast.datasheet else None}
    hopper_pair = keys == set(claims.PAIR)
    if hopper_pair:
        references["datasheet bandwidth 4.8 / 3.35"] = (claims.BANDWIDTH_RATIO_H200_H100,) * 2
        references["MLPerf v4.1 Llama-2-70B tokens/s per GPU"] = (claims.MLPERF_V41["offline"],
                                                                 claims.MLPERF_V41["server"])
    name = slug(f"compare-{slow.slug}-vs-{fast.slug}") + ".png"
    plots_sweeps.device_ratio(ratios, references, out_dir / name, f"time on {slow.name} / time on {fast.name}")
    rows = [[series, len(g), number(g["ratio"].median()), number(g["ratio"].min()), number(g["ratio"].max())]
            for series, g in ratios.groupby("series", sort=True)]
    refs = "; ".join(f"{k}: {number(v[0])}" + (f"–{number(v[1])}" if v[1] != v[0] else "")
                     for k, v in references.items())
    out = [title, f"Ratio = median time on {slow.slug} / on {fast.slug} per point measured on both "
           f"({len(ratios)} points); > 1 means {fast.slug} is faster. References: {refs}.\n",
           table(["kernel impl dtype", "points", "median ratio", "min", "max"], rows), f"![comparison]({name})\n"]
    if hopper_pair:
        out.append(f"The memory-bound claim predicts {claims.BANDWIDTH_RATIO_H200_H100:.2f}× (bandwidth); MLPerf "
                   "measured 1.28–1.35× for whole-model serving. Compare the memory-bound rows (gemv, attn_decode, "
                   "small-batch gemm) with the first; the decode-step model's ratios are on the tokenomics page.\n")
    return "\n".join(out)
