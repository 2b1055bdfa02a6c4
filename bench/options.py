"""Command-line values: argument types that refuse nonsense in one line, and the ad-hoc point selection.

argparse calls the types below while parsing; their ``ArgumentTypeError`` becomes the one-line
``rooflab <command>: error: …`` of :class:`OneLineParser` (exit 2), never a traceback.
"""

from __future__ import annotations

import argparse
import itertools
import math
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


def duration(text: str) -> float:
    """Seconds from '90', '90s', '8m' or '1.5h'."""
    stripped = text.strip().lower()
    scale = {"s": 1.0, "m": 60.0, "h": 3600.0}.get(stripped[-1:], None)
    number = stripped[:-1] if scale else stripped
    value = _number(number) * (scale or 1.0)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a positive duration, e.g. 8m, 90s or 1.5h")
    return value


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
