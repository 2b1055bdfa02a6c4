"""pytest-benchmark points timed by the CUDA harness (:mod:`bench.timing`), not by host wall time.

Each point passes the correctness gate, is measured by ``bench.timing.measure`` on a
``CudaBackend`` (cold L2, CUDA events, graph replay for short kernels, adaptive stopping), and its
CUDA-event samples become the benchmark's statistics, so pytest-benchmark's tables, saved runs and

    pytest tests/benchmarks --benchmark-compare --benchmark-compare-fail=median:5%

judge device time. The GPU tests are marked ``gpu`` (skipped without CUDA); the sample recorder
they rely on is checked on the CPU with the simulated device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
import torch

from bench.cuda_backend import CudaBackend
from bench.timing import Backend, SamplingPolicy, measure
from kernels import registry
from tests.fake_gpu import FakeGpu

MIB = 1 << 20


@dataclass(frozen=True)
class BenchPoint:
    family: str
    impl: str
    dtype: str
    axes: tuple[tuple[str, int], ...]
    timing: tuple[tuple[str, str], ...] = ()  # SamplingPolicy overrides (l2, graph)

    @property
    def id(self) -> str:
        return "-".join([self.family, self.impl, self.dtype, *(f"{k}{v}" for k, v in self.axes + self.timing)])


CANDIDATES = (
    BenchPoint("copy", "triton", "fp32", (("N", 256 * MIB // 4),)),  # 256 MiB per array
    BenchPoint("copy", "torch", "fp32", (("N", 256 * MIB // 4),)),
    BenchPoint("triad", "triton", "fp32", (("N", 256 * MIB // 4),)),
    BenchPoint("read", "triton", "fp32", (("N", 256 * MIB // 4),)),
    BenchPoint("gemm", "triton", "fp16", (("M", 4096), ("N", 4096), ("K", 4096))),
    BenchPoint("gemv", "triton", "fp16", (("M", 1), ("N", 14336), ("K", 4096))),
    BenchPoint("attn_decode", "triton", "fp16", (("batch", 16), ("context", 4096))),
    BenchPoint("launch", "triton", "fp32", (("count", 1),), (("l2", "warm"), ("graph", "never"))),
)
# tensor-core work even before the gemm family is registered: what a user would call
MATMUL = BenchPoint("torch.matmul", "torch", "fp16", (("M", 4096), ("N", 4096), ("K", 4096)))


def bench_points() -> list[BenchPoint]:
    """The candidates whose family is registered now (the registry names them without importing)."""
    families = set(registry.names())
    points = [p for p in CANDIDATES if p.family in families]
    return points if "gemm" in families else [*points, MATMUL]


class _RecordingMarker:
    def __init__(self, inner, times: list[float]):
        self.inner, self.times = inner, times

    def record(self) -> None:
        self.inner.record()

    def elapsed_s(self, end: "_RecordingMarker") -> float:
        elapsed = self.inner.elapsed_s(end.inner)
        self.times.append(elapsed)
        return elapsed


class RecordingBackend:
    """A Backend that keeps every elapsed time it reads. ``measure`` reads the warm-up runs first and
    its samples last, so the last ``Measurement.samples`` times are exactly the samples it summarised."""

    def __init__(self, inner: Backend):
        self.inner = inner
        self.times: list[float] = []

    def event(self) -> _RecordingMarker:
        return _RecordingMarker(self.inner.event(), self.times)

    def flush_l2(self) -> None:
        self.inner.flush_l2()

    def hold(self, seconds: float) -> None:
        self.inner.hold(seconds)

    def synchronize(self) -> None:
        self.inner.synchronize()

    def host_time(self) -> float:
        return self.inner.host_time()

    def capture(self, fn: Callable[[], object]):
        return self.inner.capture(fn)


def measure_samples(run: Callable[[], object], backend: Backend, policy: SamplingPolicy):
    """``measure`` plus the samples behind its statistics (per launch, as ``measure`` reports them)."""
    recorder = RecordingBackend(backend)
    m = measure(run, recorder, policy)
    return m, [t / m.launches_per_sample for t in recorder.times[-m.samples:]]


def record_samples(benchmark, samples: list[float]) -> None:
    """Give pytest-benchmark device-time samples: pedantic() with one empty round creates
    ``benchmark.stats``, whose host-timed datum is then replaced (its statistics are computed lazily
    from ``stats.data`` when the table, the saved JSON and --benchmark-compare-fail read them)."""
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    benchmark.stats.stats.data[:] = list(samples)


def _prepare(point: BenchPoint, seed: int):
    """A correctness-gated launch closure, its FLOPs and bytes."""
    if point is MATMUL:
        m, n, k = (dict(point.axes)[a] for a in "MNK")
        a = torch.randn(m, k, device="cuda", dtype=torch.float16)
        b = torch.randn(k, n, device="cuda", dtype=torch.float16)
        out = torch.empty(m, n, device="cuda", dtype=torch.float16)
        torch.testing.assert_close(torch.matmul(a, b, out=out).float(), a.float() @ b.float(), rtol=1e-2, atol=1.0)
        return (lambda: torch.matmul(a, b, out=out)), 2 * m * n * k, 2 * (m * k + k * n + m * n)

    from bench import device
    from kernels.check import check_point

    spec = registry.get(point.family)
    impl = spec.impl(point.impl)
    case = spec.case(point.dtype, **dict(point.axes))
    reason = spec.skip_reason(case, impl, device.detect(interpret=False).caps)
    if reason:
        pytest.skip(reason)
    checked = check_point(spec, impl, case, "cuda", seed)
    assert checked.ok, checked.message()
    return checked.launch.run, spec.flops(case), spec.bytes_for(case, impl)


@pytest.mark.gpu
@pytest.mark.parametrize("point", bench_points(), ids=lambda p: p.id)
def test_device_time(benchmark, point, seed):
    run, flops, nbytes = _prepare(point, seed)
    if not benchmark.enabled:  # --benchmark-disable, or xdist: the gate above is all that runs
        return
    from bench import device

    target = device.detect(interpret=False)
    policy = SamplingPolicy().with_overrides(point.timing)
    m, samples = measure_samples(run, CudaBackend(target.caps.l2_bytes), policy)
    benchmark.group = point.family
    benchmark.extra_info.update(
        kernel=point.family, impl=point.impl, dtype=point.dtype, **dict(point.axes), l2=policy.l2.value,
        graph=policy.graph.value, launch=m.launch, cv=m.cv, ci_rel=m.ci_rel, converged=m.converged,
        launches_per_sample=m.launches_per_sample, timer="CUDA events (bench.timing)",
        gbps=nbytes / m.median_s / 1e9, tflops=flops / m.median_s / 1e12, device=target.metadata["name"],
        sm_clock_mhz=device.clock_and_throttle(0)[0])
    record_samples(benchmark, samples)


def test_the_recorder_hands_back_exactly_the_measured_samples():
    gpu = FakeGpu(noise=0.02, slow_runs=3, slow_factor=10.0)  # slow warm-up runs must not leak in
    policy = SamplingPolicy(warmup_runs=3, warmup_s=0.0, min_samples=10, min_time_s=0.0, timeout_s=0.01)
    m, samples = measure_samples(gpu.kernel, gpu, policy)
    assert len(samples) == m.samples > 10
    assert np.median(samples) == pytest.approx(m.median_s)
    assert np.percentile(samples, 80) == pytest.approx(m.p80_s)
    assert max(samples) < 2 * gpu.cold_s


def test_bench_points_follow_the_registry(monkeypatch):
    monkeypatch.setattr(registry, "names", lambda: ["copy", "launch"])
    assert [p.family for p in bench_points()] == ["copy", "copy", "launch", "torch.matmul"]
    monkeypatch.setattr(registry, "names", lambda: ["copy", "gemm"])
    assert [p.family for p in bench_points()] == ["copy", "copy", "gemm"]
