"""Which part of a sweep one process runs: ``--shard i/n``, or ``--shard auto`` from the scheduler.

Shards split the points by position in the suite's deterministic expansion order, so they are
disjoint and together complete; ``rooflab merge`` joins their files (bench/merge.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from bench.suites import Point
from kernels.errors import UsageError


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based), e.g. 2/4: every 4th point starting at the 2nd."""

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
        # by position in the deterministic expansion order: shards are disjoint and together complete
        chosen = [p for i, p in enumerate(points) if i % self.count == self.index - 1]
        if not chosen:
            raise UsageError(f"--shard {self}: empty — the selection has {len(points)} points, fewer than "
                             f"{self.index}; use at most {len(points)} shards")
        return chosen

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"
