"""Regression gate: NEW against BASE, point by point, with a noise-aware rule (``rooflab compare``).

A point is (kernel, impl, dtype, label, every axis value, l2, graph). One file holding a point twice is
refused (exit 2, naming the point); where a directory's files hold it twice (a rerun) the latest row wins.
BASE and NEW sharing files (``compare a.csv a.csv``) is said in a note. Per point timed in both: ratio = new/base (each side × its own ceiling with
--normalize, see :mod:`analysis.scaling`), noise = √(n_base² + n_new²) with n from :func:`spread`,
bound = max(threshold, k·√(noise² + drift²)). Slower beyond the bound: regression; faster: improvement; a
bound above the cap with the change inside it: inconclusive (too noisy to judge). A point whose row on either
side did not converge or was throttled by heat (:func:`bench.compare_rule.unsteady_reason`) is inconclusive
whatever its ratio: never a pass, never a regression; the term that decided it is "unsteady". cv is the spread of one
sample, not the median's error: what moves between runs (clocks, placement, node) is larger, and that is the
drift term: --drift, else estimated from points measured twice (the ``headline-repeat`` stage re-measures
headline points in the same run; a baseline directory may hold reruns) as the robust spread of the
log-ratios between repeats of one point, else DEFAULT_DRIFT. Each point names the term that set its bound.

The gate fails (exit 1) on a regression, a point ok in BASE and failed in NEW, points ok in BASE but
missing or skipped in NEW beyond --allow-missing, and inconclusive points unless
--allow-inconclusive. Exit 2 is bad input or an internal error, never a verdict.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from analysis.scaling import Normalize, Scaler
from bench.compare_output import ORDER, _check_writable, _write_json, render, to_json  # noqa: F401 (public here)
from bench.compare_rule import (DEFAULT_CAP, DEFAULT_DRIFT, DEFAULT_K, DEFAULT_THRESHOLD, MIN_REPEATS,  # noqa: F401
                                TIMER_RESOLUTION_S, Drift, Rule, Term, Verdict, parse_fraction, spread,
                                unsteady_reason)
from bench.compare_runs import (IDENTITY, VERSIONS, Run, _apart, _keyed, _timed, estimate_drift,  # noqa: F401
                                load_run, repeat_log_ratios)
from bench.results import Status
from kernels.errors import UsageError



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
    error: str = ""  # why the point failed or is missing in new, or which side was unsteady

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
                       f"{self.rule.cap:.0%} cap, or not converged or throttled; --allow-inconclusive to pass them)")
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
            shaky = "; ".join(f"{side}: {why}" for side, why in (("base", unsteady_reason(b)),
                                                                 ("new", unsteady_reason(n))) if why)
            verdict, term = (Verdict.INCONCLUSIVE, Term.UNSTEADY) if shaky else (rule.verdict(ratio, noise),
                                                                                 rule.decided_by(noise))
            points.append(PointVerdict(**common, verdict=verdict, new_s=float(n["median_s"]), ratio=ratio,
                                       noise=noise, bound=rule.bound(noise), drift=rule.drift,
                                       decided_by=term.value, normalized_by=kind, error=shaky))
    only_in_new = sum(1 for k, r in new_rows.items() if _timed(r) and k not in base_ok)
    if all(p.verdict is Verdict.MISSING for p in points) and not any(k in base_ok for k in new_rows):
        apart = _apart(base_ok, new_rows)
        raise UsageError(f"no points in common between {base.path} and {new.path} "
                         f"({len(base_ok)} timed in base, {len(new_rows)} rows in new): "
                         + (f"their points' keys differ in {apart}" if apart else "is NEW a run of the same suite?"))
    return Comparison(base, new, rule, normalize, points, only_in_new, warnings, allow, drift or Drift(rule.drift))



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

