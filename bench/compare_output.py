"""What ``rooflab compare`` prints and writes: the table of points, the summary, the JSON verdict file."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analysis.scaling import Normalize
from bench.compare_rule import Term, Verdict
from kernels.errors import UsageError

if TYPE_CHECKING:
    from bench.compare import Comparison, PointVerdict

MISSING_LISTED = 10  # missing points named one by one; the rest counted


ORDER = {Verdict.FAILED: 0, Verdict.REGRESSION: 1, Verdict.INCONCLUSIVE: 2, Verdict.MISSING: 3,
         Verdict.IMPROVEMENT: 4, Verdict.UNCHANGED: 5}


def _time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.2f} µs"
    return f"{seconds * 1e3:.3f} ms" if seconds < 1 else f"{seconds:.3f} s"


def _set_by(p: PointVerdict) -> str:
    """The deciding term, with the unsteady side's reason where that decided it."""
    return (p.decided_by or "-") + (f" ({p.error})" if p.error and p.ratio is not None else "")


def _table(points: list[PointVerdict]) -> list[str]:
    header = ("verdict", "kernel", "impl", "dtype", "point", "base", "new", "ratio", "bound", "set by")
    lines = [header]
    for p in sorted(points, key=lambda p: (ORDER[p.verdict], -(p.ratio or math.inf))):
        ratio = f"{p.ratio:.3f} ({p.ratio - 1:+.1%})" if p.ratio is not None else p.error or "failed"
        bound = f"±{p.bound:.1%}" if p.bound is not None else "-"
        lines.append((p.verdict.value, p.kernel, p.impl, p.dtype, p.point(), _time(p.base_s), _time(p.new_s),
                      ratio, bound, _set_by(p)))
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


