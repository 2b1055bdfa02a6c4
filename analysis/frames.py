"""Helpers over the results frame (bench.results schema): timed rows, axis columns, sweeps' batch axes."""

from __future__ import annotations

import pandas as pd

from bench.results import ID_COLUMNS, METRIC_COLUMNS, Mode, Status

# The axis a family's sweep walks along, in order of preference: the first one that takes more than
# one value in a kernel's rows is its "batch" (the x of its plots and of the knee).
BATCH_AXES = {
    "gemv": ("M",), "gemm": ("M",), "qgemv": ("M",), "qgemm": ("M",), "dequant": ("M", "N"),
    "attn_decode": ("batch", "context"), "attn_prefill": ("batch", "seq_q", "seq_kv"),
    "copy": ("N",), "triad": ("N",), "read": ("N",), "write": ("N",), "fma": ("N",),
}
QUANT_KERNELS = ("qgemv", "qgemm")
LATENCY_KERNELS = ("launch",)  # ceilings only: no bytes or FLOPs to fit a roofline to


def axis_columns(frame: pd.DataFrame) -> list[str]:
    known = set(ID_COLUMNS) | set(METRIC_COLUMNS) | {"source"}
    return [c for c in frame.columns if c not in known]


def timed(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows with a timing: status ok, timed on CUDA, positive median."""
    keep = (frame["status"] == Status.OK.value) & (frame["mode"] == Mode.CUDA.value) & (frame["median_s"] > 0)
    return frame[keep]


def batch_axis(frame: pd.DataFrame, kernel: str) -> str | None:
    rows = frame[frame["kernel"] == kernel]
    names = [a for a in BATCH_AXES.get(kernel, ()) if a in rows.columns] or [
        a for a in axis_columns(rows) if rows[a].notna().any()]
    for name in names:
        if rows[name].nunique(dropna=True) > 1:
            return name
    return names[0] if names else None


def _format(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def shape_labels(rows: pd.DataFrame, batch: str | None) -> pd.Series:
    """The label of each row's shape: its preset label, else its non-batch axis values."""
    axes = [a for a in axis_columns(rows) if a != batch and rows[a].notna().any()]

    def describe(row) -> str:
        if row["label"]:
            return row["label"]
        return " ".join(f"{a}={_format(row[a])}" for a in axes if pd.notna(row[a])) or "-"

    if rows.empty:
        return pd.Series([], dtype=str, index=rows.index)
    return rows.apply(describe, axis=1).astype(str)


def l2_flags(rows: pd.DataFrame) -> pd.Series:
    """True where the point's working set fits in L2 (its DRAM figures would be inflated)."""
    flag = rows["l2_resident"]
    if flag.dtype != bool:
        flag = flag.astype(str).str.lower().isin(("true", "1", "yes"))
    return flag
