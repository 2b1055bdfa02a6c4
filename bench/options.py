"""Command-line values: argument types that refuse nonsense in one line, and the ad-hoc point selection.

argparse calls the types below while parsing; their ``ArgumentTypeError`` becomes the one-line
``rooflab <command>: error: …`` of :class:`OneLineParser` (exit 2), never a traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import math
import os
import re
import sys

from kernels.errors import UsageError


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line on stderr (exit 2), not the usage block."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _number(text: str, kind=float) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_int(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be an integer ≥ 1")
    return value


def positive_float(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a number > 0")
    return value


def nonnegative_float(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a number ≥ 0")
    return value


def fraction(text: str) -> float:
    """0.005 or 0.5%: a fraction in (0, 1)."""
    stripped = text.strip()
    value = _number(stripped[:-1]) / 100 if stripped.endswith("%") else _number(stripped)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a fraction in (0, 1), e.g. 0.005 or 0.5%")
    return value


MIN_DURATION_S = 1.0
MAX_DURATION_S = 7 * 24 * 3600.0  # a week: longer is a typo (1e9h), not a plan


def duration(text: str) -> float:
    """Seconds from '90', '90s', '8m', '1.5h' or '2d', between 1 s and 7 days."""
    stripped = text.strip().lower()
    scale = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}.get(stripped[-1:], None)
    number = stripped[:-1] if scale else stripped
    value = _number(number) * (scale or 1.0)
    if not MIN_DURATION_S <= value <= MAX_DURATION_S:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a duration from 1 s to 7 days, e.g. 8m, 90s or 1.5h")
    return value


STAMP = re.compile(r"\d{8}T\d{6}Z")


def stamp(text: str) -> str:
    """A plan's stamp, YYYYMMDDTHHMMSSZ (UTC), as `rooflab run` names its files."""
    try:
        if not STAMP.fullmatch(text):
            raise ValueError
        dt.datetime.strptime(text, "%Y%m%dT%H%M%SZ")
    except ValueError:
        raise UsageError(f"--resume {text!r}: expected a plan's stamp YYYYMMDDTHHMMSSZ (UTC), as in "
                         "results/<device>/STAMP-headline.csv, e.g. --resume 20261130T060000Z") from None
    return text


def gpu_indices(text: str) -> list[int] | None:
    """--gpus syntax alone (no device asked): None for ``all``, else distinct indices ≥ 0."""
    if text.strip().lower() == "all":
        return None
    parts = [part.strip() for part in text.split(",")]
    if not parts or not all(part.isdigit() for part in parts):
        raise UsageError(f"--gpus {text!r}: expected all or a comma list of indices, e.g. --gpus 0,1,3")
    indices = [int(part) for part in parts]
    if len(set(indices)) != len(indices):
        raise UsageError(f"--gpus {text!r}: give distinct indices, e.g. --gpus 0,1, or all")
    return indices


def cpu_workers() -> int:
    """The most worker processes a CPU-side command starts: the CPU count, at least 4."""
    return max(os.cpu_count() or 1, 4)


def csv_out(text: str) -> str:
    if not text.lower().endswith(".csv"):
        raise argparse.ArgumentTypeError(f"{text!r}: a results file must end in .csv (the report reads *.csv)")
    return text


def selection(text: str, what: str) -> list[str]:
    """A comma list that must name something: ``--impl ,`` is an error, not an empty sweep."""
    values = [part.strip() for part in text.split(",") if part.strip()]
    if not values:
        raise UsageError(f"{what} {text!r} names nothing; give one or more values, e.g. {what} a,b")
    return values


def adhoc_points(args):
    """--kernel/--impl/--dtype/--axis: the cartesian product, validated against the spec.

    An axis given twice takes the union of its values (``--axis N=5 --axis N=7`` runs both).
    """
    from bench.suites import Point
    from kernels import registry
    from kernels.spec import DType

    spec = registry.get(args.kernel)
    impl_names = selection(args.impl, "--impl") if args.impl is not None else [i.name for i in spec.impls]
    impls = [spec.impl(name).name for name in impl_names]
    dtypes = [spec.check_dtype(DType.parse(d)) for d in
              (selection(args.dtype, "--dtype") if args.dtype is not None else ["fp16"])]
    grid: dict[str, list] = {}
    for item in args.axis or []:
        name, sep, values = item.partition("=")
        if not sep:
            raise UsageError(f"--axis {item!r}: expected NAME=v1,v2 (axes of {spec.name}: "
                             f"{', '.join(a.name for a in spec.axes)})")
        axis = spec.axis(name.strip())
        parsed = [axis.parse(v) for v in selection(values, f"--axis {axis.name}=")]
        grid[axis.name] = list(dict.fromkeys(grid.get(axis.name, []) + parsed))
    names = list(grid)
    points = []
    for combo in itertools.product(*grid.values()):
        for dtype in dtypes:
            case = spec.case(dtype, **dict(zip(names, combo)))
            points += [Point(case, impl) for impl in impls]
    return points


def _axis_values(points, name: str, text: str, suite: str) -> set:
    """The values of ``--axis NAME=text``, parsed by each family of the suite that has the axis."""
    from kernels import registry

    specs = {p.kernel: registry.get(p.kernel) for p in points}
    having = [spec for spec in specs.values() if any(a.name == name for a in spec.axes)]
    if not having:
        names = sorted({a.name for spec in specs.values() for a in spec.axes})
        raise UsageError(f"--axis {name}: no point of the {suite} suite has that axis; valid: {', '.join(names)}")
    values, error = set(), None
    for text_value in selection(text, f"--axis {name}="):
        parsed = []
        for spec in having:
            try:
                parsed.append(spec.axis(name).parse(text_value))
            except UsageError as exc:
                error = exc
        if not parsed:
            raise error
        values.update(parsed)
    return values


def suite_selection(args, points, suite: str):
    """--impl/--dtype/--axis given with --suite: only the suite's points that match every one of them.

    Each value must name something the suite has (one line listing what it has); a selection that
    leaves nothing is one line too. Says on stdout how many points remain (stderr keeps to one line
    for an error that may follow)."""
    from kernels.spec import DType

    if args.impl is None and args.dtype is None and not args.axis:
        return points
    kept, said = list(points), []
    if args.impl is not None:
        impls = selection(args.impl, "--impl")
        have = sorted({p.impl for p in points})
        for impl in impls:
            if impl not in have:
                raise UsageError(f"--impl {impl}: the {suite} suite has no such impl; valid: {', '.join(have)}")
        kept = [p for p in kept if p.impl in impls]
        said.append(f"--impl {args.impl}")
    if args.dtype is not None:
        dtypes = [DType.parse(d).value for d in selection(args.dtype, "--dtype")]
        have = sorted({p.case.dtype.value for p in points})
        for dtype in dtypes:
            if dtype not in have:
                raise UsageError(f"--dtype {dtype}: the {suite} suite has no {dtype} points; valid: {', '.join(have)}")
        kept = [p for p in kept if p.case.dtype.value in dtypes]
        said.append(f"--dtype {args.dtype}")
    for item in args.axis or []:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UsageError(f"--axis {item!r}: expected NAME=v1,v2")
        wanted = _axis_values(points, name, text, suite)
        have = {dict(p.case.values)[name] for p in points if name in dict(p.case.values)}
        missing = [v for v in wanted if v not in have]
        if len(missing) == len(wanted):
            shown = ", ".join(str(v) for v in sorted(have, key=str))
            raise UsageError(f"--axis {item}: no point of the {suite} suite has {name} = "
                             f"{', '.join(str(v) for v in missing)}; valid: {shown}")
        kept = [p for p in kept if dict(p.case.values).get(name, object()) in wanted]
        said.append(f"--axis {item}")
    if not kept:
        raise UsageError(f"nothing selected: {' '.join(said)} together match none of the {len(points)} points of the "
                         f"{suite} suite (see them with: rooflab sweep --suite {suite} --dry-run)")
    print(f"selected {len(kept)} of the {len(points)} points of suite {suite} ({' '.join(said)})", flush=True)
    return kept
