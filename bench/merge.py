"""``rooflab merge OUT FILES…``: shard files (cluster jobs, the GPUs of a node) combined into one run.

The files must come from one run: the same suite, seed and git commit, and one kind of device
(name, SM count, memory, capability) — else one line says which field differs where. A point may
appear in one file only. The merged sidecar keeps every part's run id, shard, GPU and times; the
points of the suite still missing are listed with the command that runs them — into the merged file,
whose columns are the whole suite's, so that command can append to it.
"""

from __future__ import annotations

import csv
import shlex
from dataclasses import dataclass
from pathlib import Path

from bench.resume import point_key_text, repair_partial_line
from bench.results import ResultWriter, columns_for, load_csv, read_sidecar, write_sidecar
from kernels import registry
from kernels.errors import UsageError

SAME_RUN = ("suite", "seed", "git_commit", "mode")
SAME_DEVICE = ("name", "sm_count", "memory_bytes", "capability")
# sidecar timing field -> the sweep option that sets it (what the continue command must repeat)
TIMING_OPTIONS = {"l2": "--l2", "flush": "--flush", "graph": "--graph", "max_noise": "--max-noise",
                  "timeout_s": "--timeout", "min_samples": "--min-samples", "min_time_s": "--min-time"}


@dataclass(frozen=True)
class Merged:
    out: Path
    rows: int
    parts: int
    missing: int  # points of the suite not in any part
    command: str  # the command that runs the missing points ("" when none are)


def _rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _key(row: dict[str, str]) -> tuple[str, ...]:
    spec = registry.get(row["kernel"])
    return point_key_text(row["kernel"], row["impl"], row["dtype"], (row.get(a.name, "") for a in spec.axes),
                          row["l2"], row["graph"])


def _check_same(metas: list[tuple[Path, dict]]) -> None:
    first_path, first = metas[0]
    for path, meta in metas[1:]:
        for name in SAME_RUN:
            if str(meta.get(name)) != str(first.get(name)):
                raise UsageError(f"merge: {path.name} has {name} {meta.get(name)!r}, {first_path.name} has "
                                 f"{first.get(name)!r}: only parts of one run merge (same suite, seed, commit)")
        for name in SAME_DEVICE:
            mine, theirs = (meta.get("device") or {}).get(name), (first.get("device") or {}).get(name)
            if str(mine) != str(theirs):
                raise UsageError(f"merge: {path.name} ran on a device with {name} {mine!r}, {first_path.name} on "
                                 f"{theirs!r}: merge runs of one kind of GPU")


def _new_columns(suite: str, parts: list[tuple[Path, list[dict[str, str]]]]) -> list[str]:
    """A new merged file's columns: the suite's (what a sweep of it writes), and any axis of the parts' kernels."""
    from bench.suites import SUITES, expand, get_suite

    kernels = [p.kernel for p in expand(get_suite(suite).sweeps)] if suite in SUITES else []
    kernels += [r["kernel"] for _, rows in parts for r in rows]
    return columns_for(a.name for kernel in dict.fromkeys(kernels) for a in registry.get(kernel).axes)


def merge_runs(out: Path, files: list[Path], *, repair: bool = False, into_existing: bool = False,
               columns: list[str] | None = None, shard: str = "") -> Merged:
    """Write ``out`` (+ sidecar) from ``files``; ``repair`` cuts a partial last line first (a killed worker).

    A new ``out`` gets ``columns`` (default: see ``_new_columns``); ``shard`` is the merged run's
    (a pool's parts of one shard), "" for shards joined into the whole run."""
    out = Path(out)
    files = [Path(f) for f in files]
    if not files:
        raise UsageError("merge: give the output file and at least one results file to merge")
    if out.suffix.lower() != ".csv":
        raise UsageError(f"merge: {out} must end in .csv")
    if out.exists() and not into_existing:
        raise UsageError(f"merge: {out} exists; choose a new output file")
    for path in files:
        if not path.is_file():
            raise UsageError(f"merge: {path} is not a results file")
        if repair:
            repair_partial_line(path)
        load_csv(path)  # validates the schema, one line on a bad file
    metas = [(path, read_sidecar(path)) for path in files]
    if into_existing and out.exists():
        metas.insert(0, (out, read_sidecar(out)))
    _check_same(metas)
    seen: dict[tuple, Path] = {}
    if into_existing and out.exists():
        seen.update({_key(row): out for row in _rows(out)[1]})
    parts: list[tuple[Path, list[dict[str, str]]]] = []
    for path in files:
        header, rows = _rows(path)
        for row in rows:
            key = _key(row)
            if key in seen:
                raise UsageError(f"merge: point {' '.join(key)} is in both {seen[key].name} and {path.name}")
            seen[key] = path
        parts.append((path, rows))
    if into_existing and out.exists():
        columns = _rows(out)[0]
    elif columns is None:
        columns = _new_columns(str(metas[0][1].get("suite") or ""), parts)
    for path, rows in parts:  # every check before the first write: never a half-merged file
        lost = sorted({c for row in rows for c, v in row.items() if v not in ("", None) and c not in columns})
        if lost:
            raise UsageError(f"merge: {path.name} has columns {', '.join(lost)} that {out.name} lacks; "
                             "merge into a new file")
    count = 0
    with ResultWriter(out, columns) as writer:
        for _, rows in parts:
            for row in rows:
                writer.write({c: row.get(c, "") for c in columns})
                count += 1
    base = dict(metas[0][1])
    base.pop("schema_version", None)
    base.update(run_id=out.stem, shard=shard, started=min(str(m.get("started", "")) for _, m in metas),
                finished=max(str(m.get("finished", "")) for _, m in metas))
    base["merged_from"] = base.get("merged_from", []) + [
        {"file": p.name, "run_id": m.get("run_id"), "shard": m.get("shard", ""),
         "gpu": (m.get("device") or {}).get("uuid"), "started": m.get("started"), "finished": m.get("finished")}
        for p, m in metas if p != out]
    write_sidecar(out, base)
    missing, command = _missing(out, base, set(seen))
    return Merged(out, count, len(files), missing, command)


def _missing(out: Path, meta: dict, present: set[tuple]) -> tuple[int, str]:
    """Points of the run's suite no part holds, and the command that runs them into ``out``."""
    from bench.suites import SUITES, expand, get_suite
    from bench.timing import SamplingPolicy

    suite = meta.get("suite") or ""
    if suite not in SUITES:
        return 0, ""
    policy = SamplingPolicy()
    timing = meta.get("timing") or {}
    missing = 0
    for point in expand(get_suite(suite).sweeps):
        overrides = dict(point.timing)
        key = point_key_text(point.kernel, point.impl, point.case.dtype.value, (v for _, v in point.case.values),
                             overrides.get("l2", timing.get("l2", policy.l2.value)),
                             overrides.get("graph", timing.get("graph", policy.graph.value)))
        missing += key not in present
    return missing, _continue_command(out, meta) if missing else ""


def _continue_command(out: Path, meta: dict) -> str:
    """The sweep that runs the rest of ``meta``'s suite into ``out``: its seed, mode and timing options."""
    from bench.sweep import timing_record
    from bench.timing import SamplingPolicy

    argv = ["rooflab", "sweep", "--suite", str(meta.get("suite")), "--seed", str(meta.get("seed")),
            "--out", str(out), "--resume"]
    if meta.get("mode") == "interpret":
        argv.append("--interpret")
    defaults = timing_record(SamplingPolicy())
    for name, value in sorted((meta.get("timing") or {}).items()):
        if name in TIMING_OPTIONS and str(value) != str(defaults.get(name)):
            argv += [TIMING_OPTIONS[name], str(value)]
    return shlex.join(argv)
