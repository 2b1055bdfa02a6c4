"""Several GPUs: workers as real processes (on the CPU, under the interpreter), shards, merge, health."""

import os
import signal
import time

import pandas as pd
import pytest

from bench.cli import main
from bench.health import health_check
from bench.merge import merge_runs
from bench.pool import leftover_parts, run_pool
from bench.results import ResultWriter, columns_for, load_csv, read_sidecar, write_sidecar
from bench.suites import Point
from bench.shards import Shard
from bench.sweep import SweepOptions
from bench.timing import SamplingPolicy
from kernels.errors import UsageError
from kernels.gemm import GEMM
from kernels.stream import COPY

SEED = 11


def copy_points(n: int = 8) -> list[Point]:
    return [Point(COPY.case("fp32", N=size), impl) for size in range(1, n + 1) for impl in ("triton", "torch")]


def slow_point() -> Point:
    return Point(GEMM.case("fp16", M=33, N=65, K=130), "triton")  # a second or so under the interpreter


def options(tmp_path, name="pool.csv", resume=False) -> SweepOptions:
    return SweepOptions(out=tmp_path / name, suite="", seed=SEED, resume=resume, policy=SamplingPolicy(),
                        progress=False, interpret=True)


def keys(frame: pd.DataFrame) -> list[tuple]:
    return sorted(zip(frame["kernel"], frame["impl"], frame["N"], frame["status"]))


def test_every_point_goes_out_once_and_the_merged_run_equals_one_process(tmp_path, capsys):
    points = copy_points()
    sent: list[int] = []
    summary = run_pool(points, options(tmp_path), [0, 1], interpret=True, seed=SEED,
                       on_event=lambda kind, worker, detail: sent.append(detail[0]) if kind == "sent" and
                       detail[0] is not None else None)
    assert sorted(sent) == list(range(len(points)))  # each exactly once
    merged = load_csv(tmp_path / "pool.csv")
    assert not leftover_parts(tmp_path / "pool.csv")
    single = tmp_path / "single.csv"
    assert main(["sweep", "--kernel", "copy", "--dtype", "fp32", "--axis", "N=" + ",".join(map(str, range(1, 9))),
                 "--interpret", "--no-progress", "--seed", str(SEED), "--out", str(single)]) == 0
    assert keys(merged) == keys(load_csv(single))
    assert summary.counts == {"ok": len(points)}
    meta = read_sidecar(tmp_path / "pool.csv")
    assert meta["seed"] == SEED and len(meta["merged_from"]) == 2  # one part per worker, each with its GPU


def test_a_worker_killed_mid_point_is_replaced_and_its_point_recorded_failed(tmp_path):
    points = [slow_point()] + copy_points(3)
    killed = []

    def on_event(kind, worker, detail):
        if kind == "sent" and detail[0] == 0 and not killed:
            killed.append(worker.gpu)
            os.kill(worker.process.pid, signal.SIGKILL)

    summary = run_pool(points, options(tmp_path), [0, 1], interpret=True, seed=SEED, on_event=on_event)
    frame = load_csv(tmp_path / "pool.csv")
    assert summary.replaced == 1 and not summary.dropped
    slow = frame[frame["kernel"] == "gemm"]
    assert list(slow["status"]) == ["failed"] and "died (exit code -9)" in slow.iloc[0]["error"]
    assert (frame[frame["kernel"] == "copy"]["status"] == "ok").all() and len(frame) == len(points)


def test_a_gpu_whose_worker_dies_twice_leaves_the_pool(tmp_path):
    points = copy_points(20)
    kills = []

    def on_event(kind, worker, detail):
        if kind == "sent" and detail[0] is not None:
            if worker.gpu == 1:
                kills.append(worker.id)
                os.kill(worker.process.pid, signal.SIGKILL)
            elif len(kills) < 2:
                time.sleep(1.0)  # GPU 0 is slow until GPU 1 has failed twice: the queue cannot run dry first

    summary = run_pool(points, options(tmp_path), [0, 1], interpret=True, seed=SEED, on_event=on_event)
    assert summary.dropped == [1] and "left the pool" in summary.line()
    frame = load_csv(tmp_path / "pool.csv")
    assert len(frame) == len(points) and (frame["status"] == "failed").sum() == 2  # the two it held


def test_ctrl_c_leaves_a_valid_file_and_resume_completes_it(tmp_path):
    points = copy_points()
    done = []

    def on_event(kind, worker, detail):
        if kind == "done":
            done.append(detail[0])
            if len(done) == 3:
                raise KeyboardInterrupt

    summary = run_pool(points, options(tmp_path), [0, 1], interpret=True, seed=SEED, on_event=on_event)
    assert summary.interrupted
    first = load_csv(tmp_path / "pool.csv")
    assert 3 <= len(first) < len(points) and not leftover_parts(tmp_path / "pool.csv")
    run_pool(points, options(tmp_path, resume=True), [0, 1], interpret=True, seed=SEED)
    frame = load_csv(tmp_path / "pool.csv")
    assert len(frame) == len(points) and len(set(keys(frame))) == len(points)


def test_sweep_gpus_on_the_cli(tmp_path, capsys):
    out = tmp_path / "cli.csv"
    code = main(["sweep", "--kernel", "copy", "--dtype", "fp16", "--axis", "N=1,2,3", "--interpret", "--gpus", "0,1",
                 "--seed", "3", "--no-progress", "--out", str(out)])
    assert code == 0 and len(load_csv(out)) == 6
    assert "6 ok" in capsys.readouterr().out


@pytest.mark.parametrize("environ, count, expected", [
    ({"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "4", "SLURM_ARRAY_TASK_COUNT": "4"}, None, (4, 4)),
    ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "2"}, None, (1, 2)),
    ({"RANK": "2", "WORLD_SIZE": "3"}, None, (3, 3)),
    ({"JOB_COMPLETION_INDEX": "5"}, 8, (6, 8)),
])
def test_shard_auto_reads_the_scheduler(environ, count, expected):
    shard = Shard.from_scheduler(environ, count)
    assert (shard.index, shard.count) == expected


@pytest.mark.parametrize("environ, count, message", [
    ({}, None, "no scheduler found"),
    ({"JOB_COMPLETION_INDEX": "1"}, None, "--shard-count"),
    ({"RANK": "4", "WORLD_SIZE": "4"}, None, "outside"),
    ({"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "2"}, None, "not an integer"),
])
def test_shard_auto_errors_are_one_line(environ, count, message):
    with pytest.raises(UsageError, match=message):
        Shard.from_scheduler(environ, count)


def test_shards_need_one_seed(capsys):
    code = main(["sweep", "--kernel", "copy", "--axis", "N=1,2", "--interpret", "--shard", "1/2"])
    assert code == 2 and "--seed" in capsys.readouterr().err


def _shard_files(tmp_path, seeds=(5, 5)):
    files = []
    for i, seed in zip((1, 2), seeds):
        out = tmp_path / f"s{i}.csv"
        assert main(["sweep", "--kernel", "copy", "--dtype", "fp32", "--axis", "N=1,2,3", "--impl", "torch",
                     "--interpret", "--no-progress", "--seed", str(seed), "--shard", f"{i}/2", "--out", str(out)]) == 0
        files.append(out)
    return files


def test_merge_joins_shards_into_one_run(tmp_path, capsys):
    files = _shard_files(tmp_path)
    code = main(["merge", str(tmp_path / "all.csv"), *map(str, files)])
    assert code == 0
    frame = load_csv(tmp_path / "all.csv")
    assert sorted(frame["N"]) == [1, 2, 3]
    meta = read_sidecar(tmp_path / "all.csv")
    assert meta["shard"] == "" and {m["shard"] for m in meta["merged_from"]} == {"1/2", "2/2"}


def test_merge_refuses_mismatched_runs_and_duplicates(tmp_path, capsys):
    files = _shard_files(tmp_path, seeds=(5, 6))
    with pytest.raises(UsageError, match="seed"):
        merge_runs(tmp_path / "all.csv", files)
    assert not (tmp_path / "all.csv").exists()
    with pytest.raises(UsageError, match="in both"):
        merge_runs(tmp_path / "dup.csv", [files[0], files[0]])
    assert not (tmp_path / "dup.csv").exists()


def test_merge_lists_missing_points_with_the_command(tmp_path):
    out = tmp_path / "part.csv"
    assert main(["sweep", "--kernel", "copy", "--impl", "torch", "--dtype", "fp32", "--axis", "N=1", "--interpret",
                 "--no-progress", "--seed", "4", "--out", str(out)]) == 0
    meta = read_sidecar(out)
    write_sidecar(out, {**meta, "suite": "smoke"})  # as if it were one shard of the smoke suite
    merged = merge_runs(tmp_path / "merged.csv", [out])
    assert merged.missing > 0 and merged.command.startswith("rooflab sweep --suite smoke --seed 4 --out")


def _ceilings_run(path, name, uuid, dram_s, throttle=""):
    columns = columns_for(["N"])
    rows = []
    for n, median in ((1 << 28, dram_s), (1 << 27, dram_s / 2), (1 << 26, dram_s / 4)):
        rows.append(dict(schema_version=2, run_id=path.stem, suite="ceilings", device="h100", mode="cuda",
                         kernel="read", impl="triton", dtype="fp32", label="", N=n, flops=n, bytes=4 * n,
                         intensity=0.25, footprint_bytes=4 * n, l2_resident=False, l2="cold", median_s=median,
                         p20_s=median, p80_s=median, cv=0.01, samples=50, tflops=0, gbps=4 * n / median / 1e9,
                         status="ok", rel_err=0, error="", config="", graph="auto", launch="stream",
                         sm_clock_mhz=1980, throttle=throttle, timestamp="", ci_rel=0.001, converged=True,
                         launches_per_sample=1, tune_s=0, max_elem_err=0, gpu=uuid))
    with ResultWriter(path, columns) as writer:
        for row in rows:
            writer.write(row)
    write_sidecar(path, {"run_id": path.stem, "device": {"name": name, "uuid": uuid, "l2_bytes": 50 << 20}})


def test_health_check_flags_the_slow_gpu_and_the_throttled_one(tmp_path):
    files = []
    for i, (slowdown, throttle) in enumerate(((1.0, ""), (1.0, ""), (1.12, ""), (1.0, "hw_thermal"))):
        path = tmp_path / f"run.gpu{i}.csv"
        _ceilings_run(path, "NVIDIA H100 80GB HBM3", f"GPU-{i}", 0.4e-3 * slowdown, throttle)
        files.append(path)
    health = health_check(files, margin=0.05)
    assert health.flagged == ["GPU-2", "GPU-3"]
    assert "below the median" in " ".join(health.lines) and (tmp_path / "run.health.csv").exists()
    table = pd.read_csv(tmp_path / "run.health.csv")
    assert set(table["gpu"]) == {"GPU-0", "GPU-1", "GPU-2", "GPU-3"}


def test_gpus_without_a_gpu_is_one_line(capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr("bench.device.cuda_available", lambda: True)
    monkeypatch.setattr("bench.device.detect", lambda interpret=False: None)
    code = main(["sweep", "--kernel", "copy", "--gpus", "all", "--seed", "1", "--out", "/tmp/rooflab-never.csv"])
    assert code == 2 and "no CUDA device" in capsys.readouterr().err


def test_a_worker_whose_coordinator_is_gone_exits_quietly(tmp_path, capfd):
    import multiprocessing as mp

    from bench.pool import part_path, worker_main

    context = mp.get_context("spawn")
    ours, theirs = context.Pipe()
    out = tmp_path / "orphan.csv"
    process = context.Process(target=worker_main, args=(0, 1, part_path(out, 0, 1), copy_points(1), options(tmp_path),
                                                        SEED, True, theirs))
    process.start()
    theirs.close()
    ours.close()  # as a coordinator killed with SIGKILL: the worker's next message finds no one
    process.join(timeout=120)
    assert process.exitcode == 0 and "Traceback" not in capfd.readouterr().err
