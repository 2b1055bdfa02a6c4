"""Helpers over the results frame (bench.results schema): timed rows, axis columns, what a sweep walks along.

A kernel's rows form series: every row of one series shares the kernel, impl, dtype, L2 mode, preset
label and every axis value except the swept one (M for the linear families, batch for decode, seq for
prefill, N for the stream kernels). Axes are read from the rows, never from a fixed list, so a family
that gains an axis is grouped by it without a change here.
"""

from __future__ import annotations

import pandas as pd

from bench.results import ID_COLUMNS, METRIC_COLUMNS, Mode, Status

# The axis a family's sweep walks along, in order of preference: the first one present in the rows with
# more than one value is swept. Names not in the rows are ignored (prefill may gain seq_q/seq_kv axes).
SWEPT_AXES = {
    "gemv": ("M",), "gemm": ("M",), "qgemv": ("M",), "qgemm": ("M",), "dequant": ("M", "N"),
    "attn_decode": ("batch", "context"), "attn_prefill": ("seq", "seq_kv", "seq_q", "batch"),
    "moe": ("tokens",), "copy": ("N",), "triad": ("N",), "read": ("N",), "write": ("N",), "fma": ("N",),
}
BATCH_AXES = ("M", "batch")  # swept axes that are a batch of tokens or sequences
QUANT_KERNELS = ("qgemv", "qgemm")
LATENCY_KERNELS = ("launch",)  # ceilings only: no bytes or FLOPs to fit a roofline to
BANDWIDTH_KERNELS = ("copy", "triad", "read", "write", "dequant")  # no FLOPs: judged in bytes/s
WARM = "warm"


def axis_columns(frame: pd.DataFrame) -> list[str]:
    known = set(ID_COLUMNS) | set(METRIC_COLUMNS) | {"source"}
    return [c for c in frame.columns if c not in known]


def timed(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows with a timing: status ok, timed on CUDA, positive median."""
    keep = (frame["status"] == Status.OK.value) & (frame["mode"] == Mode.CUDA.value) & (frame["median_s"] > 0)
    return frame[keep]


# clock reasons that make a row's time not the card's: heat and hardware slowdowns (a power cap is the
# card's steady state under sustained load, and is kept)
UNSTEADY_THROTTLE = frozenset({"hw_slowdown", "sw_thermal", "hw_thermal", "hw_power_brake", "thermal"})


def unsteady(rows: pd.DataFrame) -> pd.Series:
    """Timed rows whose figure is not to be trusted: the stopping rule was not met (two modes, drift, a
    wide interval at the timeout), or the clocks were held down by heat or a hardware slowdown."""
    if rows.empty:
        return pd.Series(False, index=rows.index, dtype=bool)
    not_converged = rows["converged"].astype("boolean").fillna(True) == False  # noqa: E712 (pandas NA)
    throttle = rows["throttle"].fillna("").astype(str).map(lambda text: bool(set(text.split()) & UNSTEADY_THROTTLE))
    return (not_converged | throttle).astype(bool)


def present_axes(rows: pd.DataFrame) -> list[str]:
    """Axis columns that hold a value in at least one of the rows."""
    return [a for a in axis_columns(rows) if rows[a].notna().any()]


def numeric(values: pd.Series) -> bool:
    """Whether every value present is a number (not text such as a format name, not True/False)."""
    present = values.dropna()
    if pd.api.types.is_bool_dtype(present) or present.map(lambda v: isinstance(v, bool)).any():
        return False
    return bool(pd.to_numeric(present, errors="coerce").notna().all())


def batch_axis(frame: pd.DataFrame, kernel: str) -> str | None:
    """The axis a kernel's rows are swept along: the family's preferred axes first, else the most varied.

    Only a numeric axis is swept (a sweep is drawn and fitted against it); a text axis such as ``format``
    names series instead."""
    rows = frame[frame["kernel"] == kernel]
    axes = [a for a in present_axes(rows) if numeric(rows[a])]
    for name in SWEPT_AXES.get(kernel, ()):
        if name in axes and rows[name].nunique(dropna=True) > 1:
            return name
    varied = sorted((a for a in axes if rows[a].nunique(dropna=True) > 1),
                    key=lambda a: -rows[a].nunique(dropna=True))
    if varied:
        return varied[0]
    preferred = [a for a in SWEPT_AXES.get(kernel, ()) if a in axes]
    return (preferred or axes or [None])[0]


def _follows(rows: pd.DataFrame, column: str, swept: str) -> bool:
    """Whether a column takes several values but is fixed by the swept axis (prefill: batch = 16384 // seq,
    label "seq2048"): it moves with the sweep, so it must not split the sweep into one-point series."""
    values = rows[[swept, column]].dropna()
    if values.empty or values[column].astype(str).nunique() < 2:
        return False
    return bool((values.groupby(swept)[column].nunique() <= 1).all())


def series_columns(rows: pd.DataFrame, swept: str | None) -> list[str]:
    """The columns (label first, then axes) that name a series of one kernel: all but the swept axis and
    the columns that move with it."""
    columns = ["label", *[a for a in present_axes(rows) if a != swept]]
    if swept is None:
        return columns
    return [c for c in columns if not _follows(rows, c, swept)]


def _format(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def display_label(label: str) -> str:
    """A preset label as a reader sees it: a point measured for several presets of one shape carries
    them all (``a+b+c``), shown as the first and a count."""
    parts = [p for p in str(label).split("+") if p]
    return parts[0] + (f" (+{len(parts) - 1} more)" if len(parts) > 1 else "") if parts else ""


def series_labels(rows: pd.DataFrame, swept: str | None) -> tuple[pd.Series, pd.Series]:
    """(key, name) per row. ``key`` identifies the series exactly (label and every non-swept axis);
    ``name`` is what a reader sees: the preset label plus the axes that still tell series apart
    under it (all varying axes when there is no label)."""
    if rows.empty:
        empty = pd.Series([], dtype=str, index=rows.index)
        return empty, empty
    columns = series_columns(rows, swept)
    text = rows[columns].apply(lambda column: column.map(lambda v: "" if pd.isna(v) else _format(v)))
    key = text.agg("|".join, axis=1)
    axes = [c for c in columns if c != "label"]
    labelled = "label" in columns and (text["label"] != "").any()
    groups = text.groupby(text["label"]) if labelled else [("", text)]
    names = pd.Series("", index=rows.index, dtype=object)
    for label, group in groups:
        varying = [a for a in axes if group[a].nunique() > 1]
        if not varying and not label:  # nothing varies: name the series by its fixed axes
            varying = [a for a in axes if (group[a] != "").any()]
        shown = display_label(label)
        names[group.index] = group.apply(
            lambda r: " ".join([shown] * bool(shown) + [f"{a}={r[a]}" for a in varying if r[a] != ""]), axis=1)
    names = names.where(names != "", "-")
    # two keys that still read alike (an axis that varies only across labels): fall back to the full key
    clash = names.groupby(names).transform(lambda n: key[n.index].nunique() > 1)
    names[clash] = key[clash].str.replace("|", " ", regex=False).str.strip()
    return key, names.astype(str)


def shape_labels(rows: pd.DataFrame, batch: str | None) -> pd.Series:
    """The reader-facing name of each row's series (see :func:`series_labels`)."""
    return series_labels(rows, batch)[1]


def l2_flags(rows: pd.DataFrame) -> pd.Series:
    """True where the point's working set fits in L2."""
    flag = rows["l2_resident"]
    if flag.dtype != bool:
        flag = flag.astype(str).str.lower().isin(("true", "1", "yes"))
    return flag.astype(bool)


def warm_in_l2(rows: pd.DataFrame) -> pd.Series:
    """True where a point ran with a warm L2 and fits in it: its bytes came from L2, not DRAM.

    A cold-L2 point (L2 flushed before every sample) was read from DRAM whatever its size."""
    return l2_flags(rows) & (rows["l2"].astype(str) == WARM)
