"""The two sides of ``rooflab compare``: runs loaded from results files, points keyed by identity, and the
run-to-run drift estimated from points measured twice. See :mod:`bench.compare`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench.compare_rule import DEFAULT_DRIFT, MIN_REPEATS, Drift, _finite, unsteady_reason
from bench.results import ID_COLUMNS, METRIC_COLUMNS, Mode, Status, load_csv, read_sidecar, result_files
from kernels.errors import UsageError

IDENTITY = ("name", "sm_count", "memory_bytes", "capability")  # must match unless allowed
VERSIONS = ("driver", "cuda", "torch", "triton")  # a difference is worth a warning
_NOT_AXES = {*ID_COLUMNS, *METRIC_COLUMNS, "source"}



@dataclass
class Run:
    """One side of the comparison: a results CSV or a directory of them, with their sidecars."""

    path: Path
    rows: pd.DataFrame
    device: dict[str, str]  # fingerprint field -> value ("a | b" where the sidecars disagree)
    files: tuple[Path, ...] = ()

    def describe(self) -> str:
        return self.device.get("name") or "unknown device"


def _fingerprint(sidecar: dict) -> dict[str, str]:
    device, software = sidecar.get("device") or {}, sidecar.get("software") or {}
    values = {**{k: device.get(k) for k in (*IDENTITY, "driver", "cuda")}, "torch": software.get("torch"),
              "triton": software.get("triton")}
    if isinstance(values["capability"], list):
        values["capability"] = ".".join(map(str, values["capability"]))
    return {k: str(v) for k, v in values.items() if v not in (None, "")}


def _merge(path: Path, prints: list[dict[str, str]]) -> dict[str, str]:
    merged = {}
    for key in (*IDENTITY, *VERSIONS):
        values = sorted({p[key] for p in prints if key in p})
        if key in ("name", "sm_count") and len(values) > 1:
            raise UsageError(f"{path} holds runs from several devices ({', '.join(values)}): give one device's runs")
        if values:
            merged[key] = " | ".join(values)
    return merged


def load_run(path: Path | str) -> Run:
    path = Path(path)
    files = result_files(path)  # one line when the path does not exist
    if not files:
        raise UsageError(f"{path}: no results CSVs with their .json sidecars")
    frames = [load_csv(f) for f in files]
    for file, frame in zip(files, frames):
        _refuse_duplicates(file, frame)
    rows = pd.concat(frames, ignore_index=True, sort=False)
    if rows.empty:
        raise UsageError(f"{path}: the run has no rows")
    if (rows["mode"] == Mode.INTERPRET.value).all():
        raise UsageError(f"{path}: an interpreter run (--interpret) carries no timings to compare")
    return Run(path, rows, _merge(path, [_fingerprint(read_sidecar(f)) for f in files]), tuple(files))


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # an int axis read back as float beside another family's NaNs
    return str(value)

def _axes(rows: pd.DataFrame) -> list[str]:
    return sorted(c for c in rows.columns if c not in _NOT_AXES)


KEY_FIELDS = ("kernel", "impl", "dtype", "label", "axes", "l2", "graph")  # a point's identity, in key order


def _key(row: dict, axes: list[str]) -> tuple:
    values = tuple((a, _text(row[a])) for a in axes if _text(row[a]))
    return (_text(row["kernel"]), _text(row["impl"]), _text(row["dtype"]), _text(row.get("label")), values,
            _text(row["l2"]), _text(row["graph"]))


def _describe(key: tuple) -> str:
    kernel, impl, dtype, label, values, l2, graph = key
    return " ".join([kernel, impl, dtype, *[label] * bool(label), *[f"{a}={v}" for a, v in values],
                     f"l2={l2 or '(empty)'}", f"graph={graph or '(empty)'}"])


def _refuse_duplicates(path: Path, rows: pd.DataFrame) -> None:
    """One line for a file that holds a point twice: which of its rows is the measurement is not for the gate
    to guess."""
    axes, seen = _axes(rows), {}
    for number, row in enumerate(rows.to_dict("records"), start=1):
        key = _key(row, axes)
        if key in seen:
            raise UsageError(f"{path}: point {_describe(key)} is in rows {seen[key]} and {number}; a results file "
                             "holds each point once: keep one row (reruns belong in a file of their own)")
        seen[key] = number


def _keyed(rows: pd.DataFrame) -> dict[tuple, dict]:
    """Rows by point identity; the latest row wins where a point appears in two files (a rerun)."""
    axes = _axes(rows)
    order = rows["timestamp"].fillna("").astype(str).sort_values(kind="stable").index
    return {_key(row, axes): row for row in rows.loc[order].to_dict("records")}


def _values(keys, field: str) -> set:
    at = KEY_FIELDS.index(field)
    return {tuple(a for a, _ in k[at]) if field == "axes" else k[at] for k in keys}


def _shown(values: set) -> str:
    texts = sorted(("+".join(v) or "(none)") if isinstance(v, tuple) else (v or "(empty)") for v in values)
    return ", ".join(texts[:5]) + (f" and {len(texts) - 5} more" if len(texts) > 5 else "")


def _apart(base_keys, new_keys) -> str:
    """The key fields whose values BASE and NEW share none of: what keeps their points apart."""
    fields = [f for f in KEY_FIELDS if _values(base_keys, f).isdisjoint(_values(new_keys, f))]
    return "; ".join(f"{f} (base: {_shown(_values(base_keys, f))}; new: {_shown(_values(new_keys, f))})"
                     for f in fields)


def _timed(row: dict) -> bool:
    return row["status"] == Status.OK.value and row["mode"] == Mode.CUDA.value and _finite(row["median_s"]) \
        and row["median_s"] > 0


def repeat_log_ratios(rows: pd.DataFrame) -> list[float]:
    """log(later / earlier) between consecutive timed measurements of one point in one run: the rows of a
    ``headline-repeat`` stage beside the headline's, or reruns of a point in a directory's files."""
    if rows.empty:
        return []
    axes = _axes(rows)
    order = rows["timestamp"].fillna("").astype(str).sort_values(kind="stable").index
    times: dict[tuple, list[float]] = {}
    for row in rows.loc[order].to_dict("records"):
        if _timed(row) and not unsteady_reason(row):  # an unconverged or throttled repeat is no drift sample
            times.setdefault(_key(row, axes), []).append(float(row["median_s"]))
    return [math.log(later / earlier) for series in times.values() for earlier, later in zip(series, series[1:])]


def estimate_drift(*runs: pd.DataFrame) -> Drift:
    """The run-to-run drift from points measured twice: 1.4826 × the median |log-ratio| between repeats (a robust
    standard deviation of the ratio an unchanged point shows between two measurements); DEFAULT_DRIFT when
    fewer than MIN_REPEATS repeats exist."""
    ratios = [r for rows in runs for r in repeat_log_ratios(rows)]
    if len(ratios) < MIN_REPEATS:
        return Drift(DEFAULT_DRIFT, "default", len(ratios))
    spread_ = 1.4826 * float(pd.Series(ratios).abs().median())
    return Drift(math.expm1(spread_), "estimated", len(ratios))

