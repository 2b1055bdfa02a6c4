"""Node health: the ceilings of every GPU of a node side by side, and the ones that fall behind.

``rooflab ceilings --gpus all`` measures the ceilings suite on each GPU into its own run; this
module derives each GPU's ceilings (``analysis.ceilings``) and flags a GPU whose DRAM or L2
bandwidth or tensor peak is more than ``margin`` below the median of its siblings of the same SKU
(launch latency: above), or whose rows saw clock throttling. A slow GPU on a rented node is a real,
common problem: better known before a benchmark than after. The table goes to
``<stem>.health.csv`` beside the runs, where the report finds it.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.results import load_csv, read_sidecar

HIGHER_IS_BETTER = ("dram_bw", "l2_bw", "tensor_flops", "vector_flops")
LOWER_IS_BETTER = ("launch_stream_s", "launch_graph_s")
HEALTH_COLUMNS = ("gpu", "name", "metric", "dtype", "value", "median", "ratio", "flagged", "reason", "source")


@dataclass
class Health:
    table: pd.DataFrame
    flagged: list[str] = field(default_factory=list)  # GPU labels
    lines: list[str] = field(default_factory=list)
    path: Path | None = None


def _gpu_ceilings(path: Path) -> tuple[str, str, list[dict], int]:
    from analysis.ceilings import best, derive_ceilings

    frame = load_csv(path)
    meta = read_sidecar(path)
    device = meta.get("device") or {}
    label = device.get("uuid") or f"{path.stem}"
    table = derive_ceilings(frame, device.get("l2_bytes"))
    values = []
    for metric in table["ceiling"].unique():
        if metric not in HIGHER_IS_BETTER + LOWER_IS_BETTER:
            continue
        per_dtype = metric in ("tensor_flops", "vector_flops")
        dtypes = sorted(table.loc[table["ceiling"] == metric, "dtype"].unique()) if per_dtype else [""]
        values += [{"metric": metric, "dtype": d, "value": best(table, metric, d or None)} for d in dtypes]
    timed = frame[(frame["status"] == "ok") & (frame["mode"] == "cuda")]
    throttled = int((timed["throttle"].astype(str).str.strip() != "").sum())
    return label, device.get("name", ""), values, throttled


def health_check(files: list[Path], margin: float = 0.05) -> Health:
    """Per-GPU ceilings against the median of same-SKU siblings; writes ``<stem>.health.csv``."""
    gpus = [(path, *_gpu_ceilings(path)) for path in files]
    rows = []
    for path, label, name, values, throttled in gpus:
        for value in values:
            siblings = [v["value"] for _, _, other, vals, _ in gpus if other == name for v in vals
                        if v["metric"] == value["metric"] and v["dtype"] == value["dtype"]]
            median = statistics.median(siblings)
            ratio = value["value"] / median if median else float("nan")
            low = value["metric"] in HIGHER_IS_BETTER and ratio < 1 - margin
            high = value["metric"] in LOWER_IS_BETTER and ratio > 1 + margin
            reason = (f"{(1 - ratio):.1%} below the median of {len(siblings)} {name}" if low else
                      f"{(ratio - 1):.1%} slower than the median of {len(siblings)} {name}" if high else "")
            rows.append(dict(gpu=label, name=name, metric=value["metric"], dtype=value["dtype"], value=value["value"],
                             median=median, ratio=ratio, flagged=low or high, reason=reason, source=path.name))
        if throttled:
            rows.append(dict(gpu=label, name=name, metric="throttled_rows", dtype="", value=throttled, median=0,
                             ratio=float("nan"), flagged=True, reason=f"{throttled} rows saw clock throttling",
                             source=path.name))
    table = pd.DataFrame(rows, columns=list(HEALTH_COLUMNS))
    flagged = sorted(set(table.loc[table["flagged"].astype(bool), "gpu"])) if len(table) else []
    health = Health(table, flagged)
    if files:
        stem = files[0].name.split(".gpu")[0]
        health.path = files[0].with_name(f"{stem}.health.csv")
        table.to_csv(health.path, index=False)
    health.lines = _lines(health, margin)
    return health


def _lines(health: Health, margin: float) -> list[str]:
    lines = [f"node health ({len(set(health.table['gpu']))} GPUs, margin {margin:.0%}): "
             + (f"FLAGGED {', '.join(health.flagged)}" if health.flagged else "every GPU within the margin")]
    for gpu, rows in health.table.groupby("gpu", sort=False):
        parts = []
        for row in rows.itertuples():
            if row.metric == "throttled_rows":
                continue
            scale, unit = (1e-9, "GB/s") if row.metric.endswith("_bw") else (1e-12, "TFLOP/s") \
                if row.metric.endswith("flops") else (1e6, "µs")
            parts.append(f"{row.metric}{'/' + row.dtype if row.metric == 'tensor_flops' else ''} "
                         f"{row.value * scale:.4g} {unit} ({row.ratio:.1%} of median)")
        bad = "; ".join(r.reason for r in rows.itertuples() if r.flagged)
        lines.append(f"  {gpu}: " + ", ".join(parts) + (f" — {bad}" if bad else ""))
    if health.path is not None:
        lines.append(f"  table: {health.path}")
    return lines
