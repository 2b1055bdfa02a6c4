"""Named suites: data saying which kernel × impl × dtype × axis values to measure.

A :class:`Sweep` is a cartesian product of axis values, optionally crossed with a list of labelled
shapes (LLM layer presets); a :class:`Suite` is a named list of sweeps. :func:`expand` turns them
into :class:`Point` s; combinations a kernel cannot take become explicit skips with a reason.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
from dataclasses import dataclass, field
from typing import Any, Iterable

from kernels import registry
from kernels.spec import Case, DType, UsageError

Values = tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Shape:
    """Fixed axis values with a label, e.g. ``llama3-8b.q`` = {N: 4096, K: 4096}."""

    label: str
    values: Values

    @classmethod
    def of(cls, label: str, **values: Any) -> "Shape":
        return cls(label, tuple(values.items()))


@dataclass(frozen=True)
class Sweep:
    kernel: str
    impls: tuple[str, ...]
    dtypes: tuple[str, ...]
    grid: Values  # axis -> tuple of values, crossed
    shapes: tuple[Shape, ...] = (Shape("", ()),)
    timing: Values = ()  # SamplingPolicy overrides for these points, e.g. (("l2", "warm"),)

    @classmethod
    def make(cls, kernel: str, impls: Iterable[str], dtypes: Iterable[str], shapes: Iterable[Shape] = (),
             timing: dict[str, str] | None = None, **grid: Iterable[Any]) -> "Sweep":
        shapes = tuple(shapes) or (Shape("", ()),)
        return cls(kernel, tuple(impls), tuple(dtypes), tuple((k, tuple(v)) for k, v in grid.items()), shapes,
                   tuple((timing or {}).items()))


@dataclass(frozen=True)
class Suite:
    name: str
    summary: str
    sweeps: tuple[Sweep, ...]


@dataclass(frozen=True)
class Point:
    """One (case, impl) to measure; ``skip`` holds the reason when it must not run."""

    case: Case
    impl: str
    label: str = ""
    skip: str = field(default="", compare=False)
    timing: Values = ()  # SamplingPolicy overrides (l2, graph) from the sweep

    @property
    def kernel(self) -> str:
        return self.case.kernel

    def key(self) -> tuple:
        """Identity of a point within a suite: kernel, impl, dtype, every axis value, timing overrides."""
        return (self.case.kernel, self.impl, self.case.dtype.value, *(v for _, v in self.case.values), *self.timing)


# suite name -> (module, attribute); imported on first use like the kernel registry
SUITES: dict[str, tuple[str, str]] = {
    "stream": ("bench.suites.stream", "STREAM"),
    "smoke": ("bench.suites.stream", "SMOKE"),
    "linear": ("bench.suites.linear", "LINEAR"),
    "ceilings": ("bench.suites.ceilings", "CEILINGS"),
    "ci": ("bench.suites.ci", "CI"),
    "attention": ("bench.suites.attention", "ATTENTION"),
    "quant": ("bench.suites.quant", "QUANT"),
    "moe": ("bench.suites.moe", "MOE"),
    "headline": ("bench.suites.headline", "HEADLINE"),
    "headline-repeat": ("bench.suites.headline", "HEADLINE_REPEAT"),
}


def suite_names() -> list[str]:
    return list(SUITES)


def get_suite(name: str) -> Suite:
    try:
        module_name, attribute = SUITES[name]
    except KeyError:
        raise UsageError(f"unknown suite {name!r}; valid: {', '.join(SUITES)}") from None
    return getattr(importlib.import_module(module_name), attribute)


def expand(sweeps: Iterable[Sweep]) -> list[Point]:
    """Every point of the sweeps, in order, without duplicates; unsupported dtypes become skips.

    Presets of one shape are measured once, under all their labels joined by ``+``."""
    points: dict[tuple, Point] = {}
    for sweep in sweeps:
        spec = registry.get(sweep.kernel)
        for impl in sweep.impls:
            spec.impl(impl)  # a suite naming a missing impl is a bug: fail loudly
        names = [name for name, _ in sweep.grid]
        for shape in sweep.shapes:
            for combo in itertools.product(*(values for _, values in sweep.grid)):
                values = {**dict(shape.values), **dict(zip(names, combo))}
                for dtype_name in sweep.dtypes:
                    dtype = DType.parse(dtype_name)
                    skip = ""
                    if dtype not in spec.dtypes:
                        skip = f"{spec.name} does not take {dtype.value}"
                        case = Case(spec.name, dtype, tuple(
                            (a.name, values.get(a.name, a.default)) for a in spec.axes))
                    else:
                        case = spec.case(dtype, **values)
                    for impl in sweep.impls:
                        point = Point(case, impl, shape.label, skip, sweep.timing)
                        seen = points.setdefault(point.key(), point)
                        if shape.label and shape.label not in seen.label.split("+"):
                            # measured once, it stands for every preset of that shape (e.g. llama3-8b.gate
                            # and a Mixtral expert's w1, both 14336×4096): keep every label
                            points[point.key()] = dataclasses.replace(
                                seen, label="+".join(filter(None, (seen.label, shape.label))))
    return list(points.values())
