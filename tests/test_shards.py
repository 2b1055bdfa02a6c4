"""Shards of a suite: whole cases (every impl together), balanced by the time model, the same everywhere."""

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from bench.estimate import TimeModel, machine
from bench.shards import Shard
from bench.suites import expand, get_suite

ROOT = Path(__file__).resolve().parents[1]
README_SHARDS = 8  # the README's Slurm example: --array=0-7, --suite linear


def case_of(point) -> tuple:
    return point.kernel, point.case.dtype.value, point.case.values, point.timing


def shard_minutes(points, count: int) -> list[float]:
    """Each shard's time by the time model, as its own process (and compile cache) would spend it."""
    totals = []
    for index in range(1, count + 1):
        model = TimeModel(machine("h100"))
        totals.append(sum(model.point(p).total for p in Shard(index, count).select(points)) / 60)
    return totals


@pytest.fixture(scope="module")
def linear():
    return expand(get_suite("linear").sweeps)


@pytest.mark.parametrize("count", [4, README_SHARDS])
def test_linear_shards_are_balanced_by_the_time_model(linear, count):
    totals = shard_minutes(linear, count)
    mean = sum(totals) / count
    assert max(abs(t - mean) for t in totals) <= 0.15 * mean, [round(t, 2) for t in totals]


@pytest.mark.parametrize("count", [2, 4, README_SHARDS])
def test_every_impl_of_a_case_is_in_one_shard(linear, count):
    owner = {}
    for index in range(1, count + 1):
        for point in Shard(index, count).select(linear):
            assert owner.setdefault(case_of(point), index) == index, f"{point.case.label()} split across shards"
    impls = Counter(point.impl for point in Shard(1, count).select(linear))
    assert impls["triton"] == impls["torch"]  # every Triton point beside its baseline


@pytest.mark.parametrize("count", [1, 3, README_SHARDS])
def test_shards_are_disjoint_and_complete(linear, count):
    chosen = [p.key() for index in range(1, count + 1) for p in Shard(index, count).select(linear)]
    assert len(chosen) == len(set(chosen)) and set(chosen) == {p.key() for p in linear}


def test_every_shard_keeps_the_suite_order(linear):
    position = {p.key(): i for i, p in enumerate(linear)}
    chosen = [position[p.key()] for p in Shard(2, README_SHARDS).select(linear)]
    assert chosen == sorted(chosen)


PARTITION = ("from bench.shards import Shard; from bench.suites import expand, get_suite; "
             "points = expand(get_suite('linear').sweeps); "
             "print([[repr(p.key()) for p in Shard(i, 8).select(points)] for i in range(1, 9)])")


def test_the_partition_is_the_same_in_every_process():
    outputs = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run([sys.executable, "-c", PARTITION], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300, check=True)
        outputs.add(done.stdout)
    assert len(outputs) == 1


def test_more_shards_than_cases_is_one_line():
    from kernels.errors import UsageError
    from kernels.stream import COPY
    from bench.suites import Point

    points = [Point(COPY.case("fp32", N=1), impl) for impl in ("triton", "torch")]
    with pytest.raises(UsageError, match="at most 1 shards"):
        Shard(2, 2).select(points)
