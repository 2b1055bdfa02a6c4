"""The sweep runner end to end with a host-clock backend: rows, skips, failures, lost contexts."""

import dataclasses
import math

import pytest
import torch

from bench.device import Target
from bench.results import load_csv
from bench.suites import Point, expand, get_suite
from bench.sweep import ContextLost, SweepOptions, run_sweep
from bench.timing import SamplingPolicy
from kernels import registry
from kernels.spec import DeviceCaps, Impl, Launch
from kernels.stream import COPY
from tests.fake_gpu import HostClockBackend

FAST = SamplingPolicy(warmup_runs=1, warmup_s=0.0, min_samples=3, min_time_s=0.0, timeout_s=0.05)


def fake_target(memory_bytes=1 << 40, l2_bytes=1 << 20) -> Target:
    caps = DeviceCaps(name="Fake GPU", capability=(9, 0), interpret=False, l2_bytes=l2_bytes, sm_count=132,
                      memory_bytes=memory_bytes)
    return Target(torch.device("cpu"), caps, "fake-gpu", {"name": "Fake GPU", "slug": "fake-gpu"})


def sweep(tmp_path, points, target=None, **options):
    out = tmp_path / "run.csv"
    summary = run_sweep(points, SweepOptions(out=out, policy=FAST, progress=False, seed=7, **options),
                        target or fake_target(), backend=HostClockBackend())
    return summary, load_csv(out)


def test_timed_rows_carry_statistics_and_derived_rates(tmp_path):
    summary, frame = sweep(tmp_path, expand(get_suite("smoke").sweeps[:2]), suite="smoke")  # copy, triad
    assert summary.counts == {"ok": 10}
    assert (frame["mode"] == "cuda").all() and (frame["median_s"] > 0).all()
    assert (frame["samples"] >= 3).all()
    assert (frame["p20_s"] <= frame["median_s"]).all() and (frame["median_s"] <= frame["p80_s"]).all()
    row = frame.iloc[-1]
    assert row["gbps"] == pytest.approx(row["bytes"] / row["median_s"] / 1e9)
    assert row["tflops"] == pytest.approx(row["flops"] / row["median_s"] / 1e12)
    assert row["launch"] == "stream" and row["l2"] == "cold" and row["graph"] == "auto"
    assert (frame["run_id"] == "run").all() and (frame["suite"] == "smoke").all()


def test_l2_resident_flag_and_memory_skip(tmp_path):
    points = [Point(COPY.case("fp32", N=n), "torch") for n in (1000, 300_000, 10_000_000)]
    _, frame = sweep(tmp_path, points, target=fake_target(memory_bytes=50_000_000, l2_bytes=1 << 20))
    assert list(frame["l2_resident"]) == [True, False, False]
    assert list(frame["status"]) == ["ok", "ok", "skipped"]
    assert "GiB" in frame.loc[2, "error"]


def _with_impl(monkeypatch, build):
    spec = dataclasses.replace(COPY, impls=COPY.impls + (Impl("bad", build),))
    real_get = registry.get
    monkeypatch.setattr(registry, "get", lambda name: spec if name == "copy" else real_get(name))
    return spec


def test_an_exception_fails_the_point_not_the_sweep(tmp_path, monkeypatch):
    def build(inputs, case):
        def run():
            raise RuntimeError("triton compile error: out of resources\nlong trace")
        return Launch(run)

    spec = _with_impl(monkeypatch, build)
    points = [Point(spec.case("fp32", N=100), "bad"), Point(spec.case("fp32", N=100), "torch")]
    summary, frame = sweep(tmp_path, points)
    assert summary.counts == {"failed": 1, "ok": 1}
    assert frame.loc[0, "error"] == "RuntimeError: triton compile error: out of resources"


def test_a_lost_cuda_context_stops_the_sweep_after_writing_the_row(tmp_path, monkeypatch):
    def build(inputs, case):
        def run():
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return Launch(run)

    spec = _with_impl(monkeypatch, build)
    points = [Point(spec.case("fp32", N=100), "bad"), Point(spec.case("fp32", N=100), "torch")]
    with pytest.raises(ContextLost, match="--resume"):
        sweep(tmp_path, points)
    frame = load_csv(tmp_path / "run.csv")
    assert list(frame["status"]) == ["failed"]


def test_a_sweep_tunes_with_the_short_benchmark_and_restores_the_old_one(tmp_path, monkeypatch):
    from bench.sweep import short_tuning
    from kernels.tuning import TUNER

    before = object()
    monkeypatch.setattr(TUNER, "benchmark", before)
    with short_tuning(HostClockBackend()):
        assert TUNER.benchmark is not before and TUNER.benchmark.func.__name__ == "tuning_benchmark"
    assert TUNER.benchmark is before
    with short_tuning(None):  # the interpreter: nothing to time, nothing installed
        assert TUNER.benchmark is before


def test_a_row_counts_the_samples_retaken_for_throttling_in_its_throttle_text(tmp_path):
    """Issue 20 §3: the retakes are counted per row, in the throttle column (no schema change)."""
    class Throttling(HostClockBackend):
        reports = 1  # the first batch of the first point ran throttled

        def throttled(self):
            self.reports -= 1
            return "hw_thermal" if self.reports == -1 else ""

        def sleep(self, seconds):
            pass

    out = tmp_path / "run.csv"
    run_sweep(expand(get_suite("smoke").sweeps[:1])[:1], SweepOptions(out=out, policy=FAST, progress=False, seed=7),
              fake_target(), backend=Throttling())
    row = load_csv(out).iloc[0]
    assert row["status"] == "ok" and row["throttle"] == f"retaken:{FAST.min_samples}"


def test_a_point_with_too_few_samples_for_an_interval_is_written_with_it_empty(tmp_path, monkeypatch):
    """Under 6 samples (a long kernel at its timeout) the median's interval is unknown (inf): the row is
    written with it empty and not converged, not refused by the results writer."""
    import bench.sweep as sweep_module

    real = sweep_module.measure
    monkeypatch.setattr(sweep_module, "measure", lambda *a, **k: dataclasses.replace(
        real(*a, **k), ci_rel=math.inf, cv=math.inf, converged=False))
    _, frame = sweep(tmp_path, [Point(COPY.case("fp32", N=1000), "torch")])
    assert list(frame["status"]) == ["ok"] and frame["ci_rel"].isna().all() and frame["cv"].isna().all()
    assert not frame["converged"].any()
