"""Continuing a results file (``--resume``): what it already holds, a cut-off last row, conflicting options.

A sweep writes one row per ``write`` call, so a crash (kill -9, a full disk, a partial copy) leaves at
most one partial line at the end. Resume cuts that line off — saying so — before appending, so a new
row is never glued onto it; any other damage is refused with one line. The run continued keeps its
seed, suite, shard, mode and timing policy: options that contradict the sidecar are refused by name.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from bench.results import read_sidecar, sidecar_path
from kernels import registry
from kernels.errors import UsageError


@dataclass(frozen=True)
class Recorded:
    """What an existing results file holds: point keys, and a note when its last line was cut off."""

    keys: frozenset[tuple[str, ...]]
    note: str = ""


def point_key_text(kernel: str, impl: str, dtype: str, axis_values: Iterable[object], l2: str,
                   graph: str) -> tuple[str, ...]:
    """A point's identity as the CSV stores it (all text), for --resume."""
    return (kernel, impl, dtype, *(str(v) for v in axis_values), l2, graph)


def _text(path: Path) -> str:
    if path.is_dir():
        raise UsageError(f"--out {path} is a directory: give a results file, e.g. {path / 'run.csv'}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"--out {path}: cannot read it ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"--resume {path}: not a text CSV (binary data); write to a new --out") from None


def repair_partial_line(path: Path) -> str:
    """Cut a partial last line (no trailing newline) off ``path``; returns a one-line note, or ""."""
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return ""
    keep = data.rfind(b"\n") + 1
    lost = data[keep:]
    with path.open("r+b") as f:
        f.truncate(keep)
    return (f"{path}: dropped a partial last row ({len(lost)} bytes, cut off by an interrupted run); "
            "that point runs again")


def recorded(path: Path, repair: bool = True) -> Recorded:
    """The point keys already in ``path`` (a rooflab results CSV), after cutting a partial last line."""
    if not path.exists() or path.stat().st_size == 0:
        return Recorded(frozenset())
    text = _text(path)  # a directory, unreadable or binary: one line, before anything is cut
    note = repair_partial_line(path) if repair else ""
    rows = list(csv.reader(io.StringIO(_text(path) if note else text)))
    if not rows:
        return Recorded(frozenset(), note)
    header = rows[0]
    needed = ("kernel", "impl", "dtype", "l2", "graph")
    missing = [c for c in needed if c not in header]
    if missing:
        raise UsageError(f"--resume {path}: not a rooflab results file (no {', '.join(missing)} column); "
                         "write to a new --out")
    column = {name: i for i, name in enumerate(header)}
    keys = set()
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise UsageError(f"--resume {path}: line {number} has {len(row)} fields, the header {len(header)}: "
                             "the file is damaged; write to a new --out")
        spec = registry.get(row[column["kernel"]])
        axes = [row[column[a.name]] if a.name in column else "" for a in spec.axes]
        keys.add(point_key_text(row[column["kernel"]], row[column["impl"]], row[column["dtype"]], axes,
                                row[column["l2"]], row[column["graph"]]))
    return Recorded(frozenset(keys), note)


def _plain(value: Any) -> Any:
    return value.value if hasattr(value, "value") else value


def conflicts(metadata: dict, *, seed: int | None, suite: str, mode: str, shard: str,
              timing: dict[str, Any]) -> list[str]:
    """``name: was X, now Y`` for every requested option that contradicts the run being continued."""
    found = []
    if seed is not None and metadata.get("seed") is not None and int(metadata["seed"]) != seed:
        found.append(f"seed: was {metadata['seed']}, now {seed}")
    for name, now in (("suite", suite), ("mode", mode), ("shard", shard)):
        was = metadata.get(name)
        if was is not None and str(was) != str(now):
            found.append(f"{name}: was {was or '(none)'}, now {now or '(none)'}")
    recorded_timing = metadata.get("timing") or {}
    for name, now in timing.items():
        if name in recorded_timing and str(recorded_timing[name]) != str(_plain(now)):
            found.append(f"{name}: was {recorded_timing[name]}, now {_plain(now)}")
    return found


def continued_run(out: Path, *, seed: int | None, suite: str, mode: str, shard: str,
                  timing: dict[str, Any]) -> dict:
    """The sidecar of the run ``out`` continues, after refusing contradicting options in one line."""
    if not sidecar_path(out).exists():
        raise UsageError(f"--resume {out}: its sidecar {sidecar_path(out).name} is missing, so the run's seed and "
                         "timing policy are unknown; write to a new --out")
    metadata = read_sidecar(out)
    clash = conflicts(metadata, seed=seed, suite=suite, mode=mode, shard=shard, timing=timing)
    if clash:
        raise UsageError(f"--resume {out}: options contradict the run it continues ({'; '.join(clash)}); "
                         "drop them or write to a new --out")
    return metadata
