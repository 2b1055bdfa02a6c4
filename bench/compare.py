"""Regression gate: NEW against BASE, point by point, with a noise-aware rule (``rooflab compare``).

Matching: a point is (kernel, impl, dtype, every axis value, l2, graph); rows with status ok and a
CUDA timing are compared. A point ok in BASE and failed in NEW is a regression too; points found on
one side only are counted. Where a run holds a point twice (a directory of runs), the latest row wins.

Rule, per matched point (times are the rows' medians):

    ratio = new / base                     with --normalize: each side × its own run's ceiling
    noise = √(cv_base² + cv_new²)          cv: the row's robust spread 1.4826·MAD/median; a row
                                           without one: (p80 − p20) / (2·0.8416·median)
    bound = max(threshold, k · noise)      defaults 5 % and k = 3
    regression   ratio − 1 > bound         new slower
    improvement  1/ratio − 1 > bound       new faster, by the same measure the other way round

cv is the spread of one sample, not the standard error of the median (√samples smaller): the bound
is wide on purpose, because what moves between two runs (clocks, placement, another node) is larger.

--normalize puts two nodes of one SKU on the same footing: each run's times are multiplied by that
run's own measured ceiling (the rules of :mod:`analysis.ceilings`, from the run's own timed rows: a
directory run counts every file in it, so a `rooflab ceilings` run of the same node can sit beside
the sweep), so a node with 10 % less DRAM bandwidth is not blamed on the kernels. ``dram``: points that move bytes, by DRAM bandwidth. ``tensor``: points that do FLOPs, by
the tensor-core peak (of the point's dtype where both runs measured it, else the best of any dtype).
``roofline``: per point, intensity below the base run's ridge (tensor / DRAM) → DRAM, else tensor.
Points with neither FLOPs nor bytes (launch latency) are never scaled.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from bench.results import ID_COLUMNS, METRIC_COLUMNS, Mode, Status, load_csv, read_sidecar, result_files
from kernels.errors import UsageError

DEFAULT_THRESHOLD = "5%"
DEFAULT_K = 3.0
P80_Z = 0.8416  # standard normal quantile at 0.8: p80 − p20 = 2·0.8416·σ for normal noise
IDENTITY = ("name", "sm_count", "memory_bytes", "capability")  # must match unless allowed
VERSIONS = ("driver", "cuda", "torch", "triton")  # a difference is worth a warning
_NOT_AXES = {*ID_COLUMNS, *METRIC_COLUMNS, "source"}


class Verdict(str, Enum):
    FAILED = "failed"  # ok in base, failed in new
    REGRESSION = "regression"
    IMPROVEMENT = "improvement"
    UNCHANGED = "unchanged"  # within the noise bound


class Normalize(str, Enum):
    NONE = "none"
    DRAM = "dram"
    TENSOR = "tensor"
    ROOFLINE = "roofline"


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


@dataclass(frozen=True)
class Rule:
    threshold: float = 0.05
    k: float = DEFAULT_K

    def __post_init__(self):
        if not (self.threshold >= 0 and self.k >= 0):
            raise UsageError("the threshold and k must not be negative")

    def bound(self, noise: float) -> float:
        return max(self.threshold, self.k * noise)

    def verdict(self, ratio: float, noise: float) -> Verdict:
        bound = self.bound(noise)
        if ratio - 1 > bound:
            return Verdict.REGRESSION
        if 1 / ratio - 1 > bound:
            return Verdict.IMPROVEMENT
        return Verdict.UNCHANGED

    def describe(self) -> str:
        return (f"a change counts when new/base − 1 (slower) or base/new − 1 (faster) exceeds "
                f"max({self.threshold:.1%}, {self.k:g} × √(cv_base² + cv_new²))")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def spread(row: dict) -> float:
    """A row's relative noise: its cv, else from p20/p80; 0 when neither is known."""
    if _finite(row.get("cv")) and row["cv"] >= 0:
        return float(row["cv"])
    p20, p80, median = row.get("p20_s"), row.get("p80_s"), row.get("median_s")
    if _finite(p20) and _finite(p80) and _finite(median) and median > 0:
        return max(0.0, (p80 - p20) / (2 * P80_Z * median))
    return 0.0


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One side of the comparison: a results CSV or a directory of them, with their sidecars."""

    path: Path
    rows: pd.DataFrame
    device: dict[str, str]  # fingerprint field -> value ("a | b" where the sidecars disagree)

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
    rows = pd.concat([load_csv(f) for f in files], ignore_index=True, sort=False)
    if rows.empty:
        raise UsageError(f"{path}: the run has no rows")
    if (rows["mode"] == Mode.INTERPRET.value).all():
        raise UsageError(f"{path}: an interpreter run (--interpret) carries no timings to compare")
    return Run(path, rows, _merge(path, [_fingerprint(read_sidecar(f)) for f in files]))


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # an int axis read back as float beside another family's NaNs
    return str(value)



def _keyed(rows: pd.DataFrame) -> dict[tuple, dict]:
    """Rows by point identity; the latest row wins where a point appears twice."""
    axes = sorted(c for c in rows.columns if c not in _NOT_AXES)
    out: dict[tuple, dict] = {}
    order = rows["timestamp"].fillna("").astype(str).sort_values(kind="stable").index
    for row in rows.loc[order].to_dict("records"):
        values = tuple((a, _text(row[a])) for a in axes if _text(row[a]))
        out[(row["kernel"], row["impl"], row["dtype"], values, row["l2"], row["graph"])] = row
    return out


def _timed(row: dict) -> bool:
    return row["status"] == Status.OK.value and row["mode"] == Mode.CUDA.value and _finite(row["median_s"]) \
        and row["median_s"] > 0


# ---------------------------------------------------------------------------------------------
# Ceilings (--normalize)
# ---------------------------------------------------------------------------------------------

NEEDS = {
    "dram": "a DRAM ceiling (read/write/copy/triad rows, l2 cold, footprint ≥ 4× L2)",
    "tensor": "a tensor ceiling (gemm rows at M = N = K ≥ 2048)",
}


class Scaler:
    """Each side's multiplier for a point under a --normalize mode, from each run's own ceilings."""

    def __init__(self, mode: Normalize, base: Run, new: Run):
        from analysis.ceilings import best, derive_ceilings

        self.mode = mode
        self.dram: dict[str, float] = {}
        self.tensor: dict[str, dict[str, float]] = {}  # side -> dtype -> FLOP/s; "" = best of any dtype
        needed = {Normalize.NONE: (), Normalize.ROOFLINE: ("dram", "tensor")}.get(mode, (mode.value,))
        for side, run in (("base", base), ("new", new)) if needed else ():
            table = derive_ceilings(run.rows)
            self.dram[side] = best(table, "dram_bw")
            self.tensor[side] = {d: best(table, "tensor_flops", d) for d in set(table["dtype"])}
            self.tensor[side][""] = best(table, "tensor_flops")
            for kind in needed:
                if not _finite(self.dram[side] if kind == "dram" else self.tensor[side][""]):
                    raise UsageError(
                        f"{run.path}: --normalize {mode.value} needs {NEEDS[kind]} and the run has none (give a "
                        "directory holding the run and a `rooflab ceilings` run of the same node, or --normalize none)")

    def _tensor(self, dtype: str) -> tuple[float, float]:
        """The point's dtype where both runs measured it, else the best of any dtype."""
        base, new = self.tensor["base"].get(dtype), self.tensor["new"].get(dtype)
        if _finite(base) and _finite(new):
            return base, new
        return self.tensor["base"][""], self.tensor["new"][""]

    def kind(self, row: dict) -> str:
        flops = row["flops"] if _finite(row["flops"]) else 0
        nbytes = row["bytes"] if _finite(row["bytes"]) else 0
        if self.mode is Normalize.NONE or (flops <= 0 and nbytes <= 0):
            return ""
        if self.mode is Normalize.DRAM:
            return "dram" if nbytes > 0 else ""
        if self.mode is Normalize.TENSOR:
            return "tensor" if flops > 0 else ""
        ridge = self._tensor(row["dtype"])[0] / self.dram["base"]
        return "dram" if nbytes > 0 and flops / nbytes < ridge else "tensor"

    def factors(self, kind: str, dtype: str) -> tuple[float, float]:
        if kind == "dram":
            return self.dram["base"], self.dram["new"]
        return self._tensor(dtype) if kind == "tensor" else (1.0, 1.0)


# ---------------------------------------------------------------------------------------------
# The comparison
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PointVerdict:
    kernel: str
    impl: str
    dtype: str
    axes: dict[str, str]
    l2: str
    graph: str
    verdict: Verdict
    base_s: float
    new_s: float | None = None
    ratio: float | None = None  # new / base, normalised where asked
    noise: float | None = None
    bound: float | None = None
    normalized_by: str = ""  # "dram", "tensor" or "" (raw times)
    error: str = ""  # why the point failed in new

    def point(self) -> str:
        text = " ".join(f"{k}={v}" for k, v in self.axes.items())
        if self.l2 != "cold":
            text += f" l2={self.l2}"
        if self.graph != "auto":
            text += f" graph={self.graph}"
        return text.strip() or "-"


@dataclass
class Comparison:
    base: Run
    new: Run
    rule: Rule
    normalize: Normalize
    points: list[PointVerdict]
    unmatched: dict[str, int]
    warnings: list[str]

    def count(self, verdict: Verdict) -> int:
        return sum(p.verdict is verdict for p in self.points)

    @property
    def exit_code(self) -> int:
        return 1 if self.count(Verdict.REGRESSION) or self.count(Verdict.FAILED) else 0


def check_devices(base: Run, new: Run, allow_different: bool) -> list[str]:
    """Warnings for software differences; a one-line refusal for different devices unless allowed."""
    warnings = []
    for key in (*IDENTITY, *VERSIONS):
        b, n = base.device.get(key), new.device.get(key)
        if b is None or n is None or b == n:
            continue
        text = f"{key.replace('_', ' ')} differs: base {b} vs new {n}"
        if key in IDENTITY and not allow_different:
            raise UsageError(f"different devices ({text}): timings are not comparable; "
                             "pass --allow-different-devices to compare anyway")
        warnings.append(text)
    return warnings


def compare(base: Run, new: Run, rule: Rule = Rule(), normalize: Normalize = Normalize.NONE,
            allow_different_devices: bool = False) -> Comparison:
    warnings = check_devices(base, new, allow_different_devices)
    base_rows, new_rows = _keyed(base.rows), _keyed(new.rows)
    base_ok = {k: r for k, r in base_rows.items() if _timed(r)}
    if not base_ok:
        raise UsageError(f"{base.path}: no timed rows (status ok, timed on CUDA) to compare against")
    scaler = Scaler(normalize, base, new)
    points, unmatched = [], {"only_in_base": 0, "only_in_new": 0, "skipped_in_new": 0}
    for key, b in base_ok.items():
        n = new_rows.get(key)
        common = dict(kernel=key[0], impl=key[1], dtype=key[2], axes=dict(key[3]), l2=key[4], graph=key[5],
                      base_s=float(b["median_s"]))
        if n is None:
            unmatched["only_in_base"] += 1
        elif n["status"] == Status.FAILED.value:
            points.append(PointVerdict(**common, verdict=Verdict.FAILED, error=n["error"]))
        elif not _timed(n):
            unmatched["skipped_in_new"] += 1
        else:
            kind = scaler.kind(b)
            base_factor, new_factor = scaler.factors(kind, key[2])
            ratio = (n["median_s"] * new_factor) / (b["median_s"] * base_factor)
            noise = math.hypot(spread(b), spread(n))
            points.append(PointVerdict(**common, verdict=rule.verdict(ratio, noise), new_s=float(n["median_s"]),
                                       ratio=ratio, noise=noise, bound=rule.bound(noise), normalized_by=kind))
    unmatched["only_in_new"] = sum(1 for k, r in new_rows.items() if _timed(r) and k not in base_ok)
    if not points:
        raise UsageError(f"no points in common between {base.path} and {new.path} "
                         f"({len(base_ok)} timed in base, {len(new_rows)} rows in new)")
    return Comparison(base, new, rule, normalize, points, unmatched, warnings)


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------

ORDER = {Verdict.FAILED: 0, Verdict.REGRESSION: 1, Verdict.IMPROVEMENT: 2, Verdict.UNCHANGED: 3}


def _time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.2f} µs"
    return f"{seconds * 1e3:.3f} ms" if seconds < 1 else f"{seconds:.3f} s"


def _table(points: list[PointVerdict]) -> list[str]:
    header = ("verdict", "kernel", "impl", "dtype", "point", "base", "new", "ratio", "bound")
    lines = [header]
    for p in sorted(points, key=lambda p: (ORDER[p.verdict], -(p.ratio or math.inf))):
        ratio = f"{p.ratio:.3f} ({p.ratio - 1:+.1%})" if p.ratio is not None else p.error or "failed"
        bound = f"±{p.bound:.1%}" if p.bound is not None else "-"
        lines.append((p.verdict.value, p.kernel, p.impl, p.dtype, p.point(), _time(p.base_s), _time(p.new_s),
                      ratio, bound))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header) - 1)]
    return ["  ".join([*(str(c).ljust(w) for c, w in zip(line, widths)), str(line[-1])]).rstrip()
            for line in lines]


def render(c: Comparison) -> str:
    lines = [f"base: {c.base.path} ({c.base.describe()})", f"new:  {c.new.path} ({c.new.describe()})"]
    lines += [f"warning: {w}" for w in c.warnings]
    if c.normalize is not Normalize.NONE:
        lines.append(f"ratios normalised by each run's own ceilings ({c.normalize.value})")
    changed = [p for p in c.points if p.verdict is not Verdict.UNCHANGED]
    lines += ([""] + _table(changed) + [""]) if changed else []
    lines.append(f"{len(c.points)} points compared: {c.count(Verdict.REGRESSION)} regressions, "
                 f"{c.count(Verdict.FAILED)} failed in new, {c.count(Verdict.IMPROVEMENT)} improvements, "
                 f"{c.count(Verdict.UNCHANGED)} within noise")
    if any(c.unmatched.values()):
        lines.append("unmatched: " + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in c.unmatched.items() if n))
    lines.append(f"rule: {c.rule.describe()}")
    lines.append("verdict: " + ("REGRESSION" if c.exit_code else "pass"))
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_json(c: Comparison) -> dict[str, Any]:
    return {
        "base": str(c.base.path), "new": str(c.new.path),
        "devices": {"base": c.base.device, "new": c.new.device},
        "rule": {"threshold": c.rule.threshold, "k": c.rule.k, "text": c.rule.describe()},
        "normalize": c.normalize.value, "warnings": c.warnings,
        "summary": {v.value: c.count(v) for v in Verdict}, "unmatched": c.unmatched,
        "exit_code": c.exit_code,
        "points": [{k: _plain(v) for k, v in asdict(p).items()} for p in c.points],
    }


def run_compare(base: str | Path, new: str | Path, *, threshold: str = DEFAULT_THRESHOLD, k: float = DEFAULT_K,
                normalize: str = "none", allow_different_devices: bool = False, json_path: str | Path | None = None,
                out: Callable[[str], None] = print) -> int:
    """``rooflab compare``: prints the table and summary; 1 on a regression, 0 otherwise."""
    rule = Rule(parse_fraction(threshold), k)
    result = compare(load_run(base), load_run(new), rule, Normalize(normalize), allow_different_devices)
    out(render(result))
    if json_path:
        Path(json_path).write_text(json.dumps(to_json(result), indent=2, allow_nan=False) + "\n")
    return result.exit_code
