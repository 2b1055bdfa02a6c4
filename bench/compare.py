"""Regression gate: NEW against BASE, point by point, with a noise-aware rule (``rooflab compare``).

A point is (kernel, impl, dtype, label, every axis value, l2, graph). One file holding a point twice is
refused (exit 2, naming the point); where a directory's files hold it twice (a rerun) the latest row wins.
BASE and NEW sharing files (``compare a.csv a.csv``) is said in a note. Per point timed in both: ratio = new/base (each side × its own ceiling with
--normalize, see :mod:`analysis.scaling`), noise = √(n_base² + n_new²) with n from :func:`spread`,
bound = max(threshold, k·√(noise² + drift²)). Slower beyond the bound: regression; faster: improvement; a
bound above the cap with the change inside it: inconclusive (too noisy to judge). cv is the spread of one
sample, not the median's error: what moves between runs (clocks, placement, node) is larger, and that is the
drift term: --drift, else estimated from points measured twice (the ``headline-repeat`` stage re-measures
headline points in the same run; a baseline directory may hold reruns) as the robust spread of the
log-ratios between repeats of one point, else DEFAULT_DRIFT. Each point names the term that set its bound.

The gate fails (exit 1) on a regression, a point ok in BASE and failed in NEW, points ok in BASE but
missing or skipped in NEW beyond --allow-missing, and inconclusive points unless
--allow-inconclusive. Exit 2 is bad input or an internal error, never a verdict.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import asdict, dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from analysis.scaling import Normalize, Scaler
from bench.results import ID_COLUMNS, METRIC_COLUMNS, Mode, Status, load_csv, read_sidecar, result_files
from kernels.errors import UsageError

DEFAULT_THRESHOLD = "5%"
DEFAULT_K = 3.0
DEFAULT_CAP = "15%"
DEFAULT_DRIFT = 0.02  # run-to-run drift of a point's median when the runs hold no repeats to estimate it from
MIN_REPEATS = 3  # repeated points needed before the drift is estimated rather than defaulted
P80_Z = 0.8416  # standard normal quantile at 0.8: p80 − p20 = 2·0.8416·σ for normal noise
TIMER_RESOLUTION_S = 0.5e-6  # CUDA events resolve ≈ 0.5 µs
IDENTITY = ("name", "sm_count", "memory_bytes", "capability")  # must match unless allowed
VERSIONS = ("driver", "cuda", "torch", "triton")  # a difference is worth a warning
_NOT_AXES = {*ID_COLUMNS, *METRIC_COLUMNS, "source"}
MISSING_LISTED = 10  # missing points named one by one; the rest counted


class Verdict(str, Enum):
    FAILED = "failed"  # ok in base, failed in new
    REGRESSION = "regression"
    MISSING = "missing"  # ok in base; absent, skipped or untimed in new
    INCONCLUSIVE = "inconclusive"  # noise beyond the cap: cannot be judged
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


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------


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
        if _timed(row):
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


# ---------------------------------------------------------------------------------------------
# The comparison
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PointVerdict:
    kernel: str
    impl: str
    dtype: str
    label: str
    axes: dict[str, str]
    l2: str
    graph: str
    verdict: Verdict
    base_s: float
    new_s: float | None = None
    ratio: float | None = None  # new / base, normalised where asked
    noise: float | None = None  # √(n_base² + n_new²): the two rows' sample noise
    bound: float | None = None
    drift: float | None = None
    decided_by: str = ""  # the term that set the bound: "threshold", "sample noise" or "drift"
    normalized_by: str = ""  # "dram", "tensor", "vector" or "" (raw times)
    error: str = ""  # why the point failed or is missing in new

    def point(self) -> str:
        text = " ".join([self.label] * bool(self.label) + [f"{k}={v}" for k, v in self.axes.items()])
        if self.l2 != "cold":
            text += f" l2={self.l2}"
        if self.graph != "auto":
            text += f" graph={self.graph}"
        return text.strip() or "-"


@dataclass(frozen=True)
class Allowances:
    missing: float = 0.0  # fraction of BASE's timed points that may be missing or skipped in NEW
    inconclusive: bool = False  # whether inconclusive points may pass the gate


@dataclass
class Comparison:
    base: Run
    new: Run
    rule: Rule
    normalize: Normalize
    points: list[PointVerdict]
    only_in_new: int
    warnings: list[str]
    allow: Allowances = Allowances()
    drift: Drift = Drift()

    def count(self, verdict: Verdict) -> int:
        return sum(p.verdict is verdict for p in self.points)

    @property
    def base_timed(self) -> int:
        return len(self.points)

    @property
    def missing_fraction(self) -> float:
        return self.count(Verdict.MISSING) / self.base_timed if self.base_timed else 0.0

    def reasons(self) -> list[str]:
        """Why the gate fails; empty when it passes."""
        out = []
        if self.count(Verdict.REGRESSION):
            out.append(f"{self.count(Verdict.REGRESSION)} regressions")
        if self.count(Verdict.FAILED):
            out.append(f"{self.count(Verdict.FAILED)} points failed in new")
        if self.count(Verdict.MISSING) and self.missing_fraction > self.allow.missing:
            out.append(f"{self.count(Verdict.MISSING)} of {self.base_timed} points missing in new "
                       f"({self.missing_fraction:.1%} > --allow-missing {self.allow.missing:.1%})")
        if self.count(Verdict.INCONCLUSIVE) and not self.allow.inconclusive:
            out.append(f"{self.count(Verdict.INCONCLUSIVE)} inconclusive points (noise beyond the "
                       f"{self.rule.cap:.0%} cap; --allow-inconclusive to pass them)")
        return out

    @property
    def exit_code(self) -> int:
        return 1 if self.reasons() else 0


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


def _missing_reason(row: dict | None) -> str:
    if row is None:
        return "not in new"
    if row["status"] == Status.SKIPPED.value:
        return f"skipped in new: {row.get('error') or 'no reason given'}"
    return f"not timed in new (mode {row['mode']})"


def compare(base: Run, new: Run, rule: Rule = Rule(), normalize: Normalize = Normalize.NONE,
            allow_different_devices: bool = False, allow: Allowances = Allowances(),
            drift: Drift | None = None) -> Comparison:
    warnings = check_devices(base, new, allow_different_devices)
    base_rows, new_rows = _keyed(base.rows), _keyed(new.rows)
    base_ok = {k: r for k, r in base_rows.items() if _timed(r)}
    if not base_ok:
        raise UsageError(f"{base.path}: no timed rows (status ok, timed on CUDA) to compare against")
    scaler = Scaler(normalize, {"base": (str(base.path), base.rows), "new": (str(new.path), new.rows)})
    points = []
    for key, b in base_ok.items():
        n = new_rows.get(key)
        common = dict(kernel=key[0], impl=key[1], dtype=key[2], label=key[3], axes=dict(key[4]), l2=key[5],
                      graph=key[6], base_s=float(b["median_s"]))
        if n is not None and n["status"] == Status.FAILED.value:
            points.append(PointVerdict(**common, verdict=Verdict.FAILED, error=n["error"] or "failed"))
        elif n is None or not _timed(n):
            points.append(PointVerdict(**common, verdict=Verdict.MISSING, error=_missing_reason(n)))
        else:
            kind = scaler.kind(b)
            base_factor, new_factor = scaler.factors(kind, key[2])
            ratio = (n["median_s"] * new_factor) / (b["median_s"] * base_factor)
            noise = math.hypot(spread(b), spread(n))
            points.append(PointVerdict(**common, verdict=rule.verdict(ratio, noise), new_s=float(n["median_s"]),
                                       ratio=ratio, noise=noise, bound=rule.bound(noise), drift=rule.drift,
                                       decided_by=rule.decided_by(noise).value, normalized_by=kind))
    only_in_new = sum(1 for k, r in new_rows.items() if _timed(r) and k not in base_ok)
    if all(p.verdict is Verdict.MISSING for p in points) and not any(k in base_ok for k in new_rows):
        apart = _apart(base_ok, new_rows)
        raise UsageError(f"no points in common between {base.path} and {new.path} "
                         f"({len(base_ok)} timed in base, {len(new_rows)} rows in new): "
                         + (f"their points' keys differ in {apart}" if apart else "is NEW a run of the same suite?"))
    return Comparison(base, new, rule, normalize, points, only_in_new, warnings, allow, drift or Drift(rule.drift))


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------

ORDER = {Verdict.FAILED: 0, Verdict.REGRESSION: 1, Verdict.INCONCLUSIVE: 2, Verdict.MISSING: 3,
         Verdict.IMPROVEMENT: 4, Verdict.UNCHANGED: 5}


def _time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.2f} µs"
    return f"{seconds * 1e3:.3f} ms" if seconds < 1 else f"{seconds:.3f} s"


def _table(points: list[PointVerdict]) -> list[str]:
    header = ("verdict", "kernel", "impl", "dtype", "point", "base", "new", "ratio", "bound", "set by")
    lines = [header]
    for p in sorted(points, key=lambda p: (ORDER[p.verdict], -(p.ratio or math.inf))):
        ratio = f"{p.ratio:.3f} ({p.ratio - 1:+.1%})" if p.ratio is not None else p.error or "failed"
        bound = f"±{p.bound:.1%}" if p.bound is not None else "-"
        lines.append((p.verdict.value, p.kernel, p.impl, p.dtype, p.point(), _time(p.base_s), _time(p.new_s),
                      ratio, bound, p.decided_by or "-"))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header) - 1)]
    return ["  ".join([*(str(c).ljust(w) for c, w in zip(line, widths)), str(line[-1])]).rstrip()
            for line in lines]


def render(c: Comparison) -> str:
    lines = [f"base: {c.base.path} ({c.base.describe()})", f"new:  {c.new.path} ({c.new.describe()})"]
    lines += [f"warning: {w}" for w in c.warnings]
    if c.normalize is not Normalize.NONE:
        lines.append(f"ratios normalised by each run's own ceilings ({c.normalize.value})")
    shown = [p for p in c.points if p.verdict not in (Verdict.UNCHANGED, Verdict.MISSING)]
    missing = [p for p in c.points if p.verdict is Verdict.MISSING]
    shown += missing[:MISSING_LISTED]
    lines += ([""] + _table(shown) + [""]) if shown else []
    if len(missing) > MISSING_LISTED:
        lines.append(f"… and {len(missing) - MISSING_LISTED} more missing points (all in --json)")
    compared = len(c.points) - len(missing)
    lines.append(f"{c.base_timed} points timed in base, {compared} compared: {c.count(Verdict.REGRESSION)} "
                 f"regressions, {c.count(Verdict.FAILED)} failed in new, {len(missing)} missing in new, "
                 f"{c.count(Verdict.INCONCLUSIVE)} inconclusive, {c.count(Verdict.IMPROVEMENT)} improvements, "
                 f"{c.count(Verdict.UNCHANGED)} within noise")
    if c.only_in_new:
        lines.append(f"{c.only_in_new} points only in new (not judged)")
    decided = [p.decided_by for p in c.points if p.decided_by]
    if decided:
        lines.append("bound set by: " + ", ".join(f"{term.value} {decided.count(term.value)}" for term in Term))
    lines.append(f"rule: {c.rule.describe()}")
    lines.append(c.drift.describe())
    reasons = c.reasons()
    lines.append("verdict: " + (f"FAIL ({'; '.join(reasons)})" if reasons else "pass"))
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
        "rule": {"threshold": c.rule.threshold, "k": c.rule.k, "noise_cap": c.rule.cap, "drift": c.rule.drift,
                 "text": c.rule.describe()},
        "drift": {"value": c.drift.value, "source": c.drift.source, "repeats": c.drift.repeats,
                  "text": c.drift.describe()},
        "allow": {"missing": c.allow.missing, "inconclusive": c.allow.inconclusive},
        "normalize": c.normalize.value, "warnings": c.warnings,
        "summary": {v.value: c.count(v) for v in Verdict}, "base_timed": c.base_timed, "only_in_new": c.only_in_new,
        "exit_code": c.exit_code, "reasons": c.reasons(),
        "points": [{k: _plain(v) for k, v in asdict(p).items()} for p in c.points],
    }


def _check_writable(path: Path) -> None:
    """One line now, before any work, for a --json path that cannot be written."""
    if path.is_dir():
        raise UsageError(f"--json {path}: is a directory; give a file name")
    if not path.parent.is_dir():
        raise UsageError(f"--json {path}: directory {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"--json {path}: not writable")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
        tmp.replace(path)  # never a half-written verdict file
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"--json {path}: cannot write ({exc.strerror or exc})") from None


def run_compare(base: str | Path, new: str | Path, *, threshold: str = DEFAULT_THRESHOLD, k: float = DEFAULT_K,
                noise_cap: str = DEFAULT_CAP, normalize: str = "none", allow_different_devices: bool = False,
                allow_missing: str = "0%", allow_inconclusive: bool = False, json_path: str | Path | None = None,
                drift: str | None = None, out: Callable[[str], None] = print) -> int:
    """``rooflab compare``: prints the table and summary; 1 when the gate fails, 0 when it passes.

    ``drift`` None: estimated from the runs' repeated points, else DEFAULT_DRIFT (the output says which)."""
    given = Drift(parse_fraction(drift, "--drift")) if drift is not None else None
    rule = Rule(parse_fraction(threshold), k, parse_fraction(noise_cap, "--noise-cap"))
    allow = Allowances(parse_fraction(allow_missing, "--allow-missing"), allow_inconclusive)
    if json_path:
        _check_writable(Path(json_path))
    base_run, new_run = load_run(base), load_run(new)
    chosen = given or estimate_drift(base_run.rows, new_run.rows)
    rule = replace(rule, drift=chosen.value)
    result = compare(base_run, new_run, rule, Normalize(normalize), allow_different_devices, allow, chosen)
    notes = _shared(base_run, new_run)
    if json_path:
        data = to_json(result)
        _write_json(Path(json_path), {**data, "warnings": data["warnings"] + notes})
    for note in notes:
        print(f"rooflab: note: {note}", file=sys.stderr)
    out(render(result))
    return result.exit_code


def _shared(base: Run, new: Run) -> list[str]:
    """A note when BASE and NEW hold the same files: their points are compared with themselves."""
    same = {f.resolve() for f in base.files} & {f.resolve() for f in new.files}
    if not same:
        return []
    if len(base.files) == len(new.files) == 1:
        return [f"base and new are the same file ({base.files[0]}): every point is compared with itself"]
    return [f"{len(same)} files are in both base and new (e.g. {min(same)}): their points are compared with "
            "themselves"]
