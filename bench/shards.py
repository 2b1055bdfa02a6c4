"""Which part of a sweep one process runs: ``--shard i/n``, or ``--shard auto`` from the scheduler.

Shards take whole cases — every impl of one kernel, dtype, axis values and timing overrides — so a
Triton point and its baseline always run on one node, and the cases are dealt out longest first by
the time model, each to the shard whose time grows least with it (counting only the compiles that
shard has not done yet, so cases sharing Triton configs gather). The model is fixed (an H100's datasheet, the default sampling policy), never the GPU
here, and ties go to the earlier case of the suite: every shard process computes the same partition,
so shards are disjoint and together complete; ``rooflab merge`` joins their files (bench/merge.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping

from bench.suites import Point
from kernels.errors import UsageError

MODEL_DEVICE = "h100"  # the time model every shard balances by, whatever GPU it runs on


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based), e.g. 2/4: the second of four parts of equal estimated time."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> "Shard":
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise UsageError(f"--shard {text!r}: expected i/n with integers, e.g. 1/4") from None
        if not 1 <= index <= count:
            raise UsageError(f"--shard {text!r}: need 1 ≤ i ≤ n")
        return cls(index, count)

    @classmethod
    def from_scheduler(cls, environ: Mapping[str, str], count: int | None = None) -> "Shard":
        """``--shard auto``: this task's shard from the scheduler's environment.

        Slurm job arrays (SLURM_ARRAY_TASK_ID − SLURM_ARRAY_TASK_MIN, of SLURM_ARRAY_TASK_COUNT),
        torchrun (RANK of WORLD_SIZE), Kubernetes Indexed Jobs (JOB_COMPLETION_INDEX of ``count``,
        which the job spec's completions give: pass --shard-count).
        """
        def number(name: str) -> int:
            try:
                return int(environ[name])
            except ValueError:
                raise UsageError(f"--shard auto: {name}={environ[name]!r} is not an integer") from None

        if "SLURM_ARRAY_TASK_ID" in environ:
            if "SLURM_ARRAY_TASK_COUNT" not in environ:
                raise UsageError("--shard auto: SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not")
            index = number("SLURM_ARRAY_TASK_ID") - number("SLURM_ARRAY_TASK_MIN") if \
                "SLURM_ARRAY_TASK_MIN" in environ else number("SLURM_ARRAY_TASK_ID")
            return cls._checked(index + 1, number("SLURM_ARRAY_TASK_COUNT"), "Slurm")
        if "RANK" in environ and "WORLD_SIZE" in environ:
            return cls._checked(number("RANK") + 1, number("WORLD_SIZE"), "torchrun")
        if "JOB_COMPLETION_INDEX" in environ:
            if not count:
                raise UsageError("--shard auto on a Kubernetes Indexed Job needs --shard-count N (the job's "
                                 "completions)")
            return cls._checked(number("JOB_COMPLETION_INDEX") + 1, count, "Kubernetes")
        raise UsageError("--shard auto: no scheduler found (SLURM_ARRAY_TASK_ID/COUNT, RANK/WORLD_SIZE, or "
                         "JOB_COMPLETION_INDEX with --shard-count); give --shard i/n instead")

    @classmethod
    def _checked(cls, index: int, count: int, where: str) -> "Shard":
        if not 1 <= index <= count:
            raise UsageError(f"--shard auto: {where} says task {index - 1} of {count}, outside 0…{count - 1}")
        return cls(index, count)

    def select(self, points: list[Point]) -> list[Point]:
        """This shard's points, in the order of ``points``."""
        owners = partition(tuple(points), self.count)
        chosen = [p for p, owner in zip(points, owners) if owner == self.index - 1]
        if not chosen:
            cases = len(_cases(tuple(points)))
            raise UsageError(f"--shard {self}: empty — the selection has {len(points)} points in {cases} cases "
                             f"(a case's impls share a shard); use at most {cases} shards")
        return chosen

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def _case(point: Point) -> tuple:
    """What a point measures apart from the impl: its impls are compared, so they share a shard."""
    return point.kernel, point.case.dtype.value, point.case.values, point.timing


def _cases(points: tuple[Point, ...]) -> list[list[int]]:
    """Point positions grouped by case, cases in order of first appearance."""
    groups: dict[tuple, list[int]] = {}
    for i, point in enumerate(points):
        groups.setdefault(_case(point), []).append(i)
    return list(groups.values())


def _case_costs(points: tuple[Point, ...], cases: list[list[int]]) -> tuple[list[float], list[frozenset]]:
    """Per case: its seconds by the fixed time model less compiles, and the Triton configs it compiles."""
    from bench.estimate import TimeModel, machine

    model = TimeModel(machine(MODEL_DEVICE))
    seconds, configs = [], []
    for case in cases:
        costs = [model.point(points[i]) for i in case]
        seconds.append(sum(c.total - c.compile for c in costs))
        configs.append(frozenset(k for i in case for _, _, keys in model.configs(points[i]) for k in keys))
    return seconds, configs


@lru_cache(maxsize=8)
def partition(points: tuple[Point, ...], count: int) -> tuple[int, ...]:
    """The shard (0-based) of every point: whole cases, longest first, each where the shard's time grows least.

    A shard's time counts each config once, as its process compiles it once; placing a case where
    its configs are compiled already keeps the shards' compiles from repeating one another."""
    from bench.estimate import COMPILE_S

    cases = _cases(points)
    seconds, configs = _case_costs(points, cases)
    load = [0.0] * count
    compiled: list[set] = [set() for _ in range(count)]
    owners = [0] * len(points)
    for c in sorted(range(len(cases)), key=lambda c: (-seconds[c], c)):
        grown = [load[s] + seconds[c] + COMPILE_S * len(configs[c] - compiled[s]) for s in range(count)]
        shard = min(range(count), key=lambda s: (grown[s], s))
        load[shard] = grown[shard]
        compiled[shard] |= configs[c]
        for i in cases[c]:
            owners[i] = shard
    return tuple(owners)
