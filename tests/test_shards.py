"""Shards of a suite: whole cases (every impl together), balanced by the time model, the same everywhere;
pooled runs killed outright resume into the run they started."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from bench.cli import main
from bench.estimate import TimeModel, machine
from bench.merge import merge_runs
from bench.pool import leftover_parts
from bench.resume import recorded
from bench.results import read_sidecar, sidecar_path, write_sidecar
from bench.shards import Shard
from bench.suites import expand, get_suite
from bench.sweep import SweepOptions, pending, point_key
from bench.timing import SamplingPolicy

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


# ---------------------------------------------------------------------------------------------
# Pooled runs: a shard once, killed with SIGKILL and resumed
# ---------------------------------------------------------------------------------------------

SMOKE = ["sweep", "--suite", "smoke", "--interpret", "--no-progress", "--gpus", "0,1"]


def smoke_keys(shard: Shard | None = None) -> list[tuple]:
    options = SweepOptions(out=Path("/nonexistent/rooflab.csv"), shard=shard, policy=SamplingPolicy())
    return sorted(point_key(p, options.policy) for p in pending(expand(get_suite("smoke").sweeps), options))


def file_keys(path: Path) -> list[tuple]:
    import csv

    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    found = recorded(path, repair=False).keys
    assert len(found) == len(rows), "a point twice in the file"
    return sorted(found)


def test_a_pooled_shard_runs_its_shard_once(tmp_path):
    out = tmp_path / "shard.csv"
    assert main([*SMOKE, "--seed", "3", "--shard", "2/3", "--out", str(out)]) == 0
    assert file_keys(out) == smoke_keys(Shard(2, 3))
    assert read_sidecar(out)["shard"] == "2/3"
    assert main([*SMOKE, "--shard", "2/3", "--out", str(out), "--resume"]) == 0  # nothing left, and no clash


def _kill_after_rows(out: Path, process: subprocess.Popen, rows: int) -> list[int]:
    """SIGKILL the coordinator once its workers' parts hold ``rows`` rows; the worker pids it had."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        parts = leftover_parts(out)
        if sum(max(0, len(p.read_bytes().splitlines()) - 1) for p in parts) >= rows:
            pids = [json.loads(sidecar_path(p).read_text())["worker"]["pid"] for p in parts
                    if sidecar_path(p).exists()]
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
            return pids
        time.sleep(0.05)
    pytest.fail(f"the pooled run ended or stalled before {rows} rows: {process.poll()}")


def _gone(pids: list[int], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = []
        for pid in pids:
            try:
                os.kill(pid, 0)
                alive.append(pid)
            except ProcessLookupError:
                pass
        if not alive:
            return True
        time.sleep(0.1)
    return False


def test_a_pooled_run_killed_with_sigkill_resumes_into_the_same_run(tmp_path):
    out = tmp_path / "pk.csv"
    err = tmp_path / "first.err"
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    with err.open("w") as stderr:
        first = subprocess.Popen([sys.executable, "-m", "bench", *SMOKE, "--seed", "7", "--out", str(out)], cwd=ROOT,
                                 env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        workers = _kill_after_rows(out, first, rows=6)
    assert workers and _gone(workers), "workers outlived their coordinator"
    assert "Traceback" not in err.read_text(), err.read_text()  # orphaned workers exit quietly
    assert main([*SMOKE, "--out", str(out), "--resume"]) == 0  # the documented way on: no --seed
    assert file_keys(out) == smoke_keys()
    assert read_sidecar(out)["seed"] == 7 and not leftover_parts(out)
    assert main([*SMOKE, "--out", str(out), "--resume"]) == 0  # and again: nothing stranded


def test_the_merge_command_for_missing_points_runs_them(tmp_path, capsys):
    part = tmp_path / "part.csv"
    assert main(["sweep", "--kernel", "copy", "--impl", "torch", "--dtype", "fp32", "--axis", "N=1", "--interpret",
                 "--no-progress", "--seed", "4", "--timeout", "1.5", "--out", str(part)]) == 0
    write_sidecar(part, {**read_sidecar(part), "suite": "smoke", "shard": "1/2"})  # one shard of the smoke suite
    merged = merge_runs(tmp_path / "merged.csv", [part])
    assert merged.missing == len(smoke_keys()) - 1 and "--interpret" in merged.command
    argv = shlex.split(merged.command)
    assert argv[0] == "rooflab" and main(argv[1:] + ["--no-progress"]) == 0
    assert file_keys(tmp_path / "merged.csv") == smoke_keys()
