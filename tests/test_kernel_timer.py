"""Kernel time from device timestamps: gaps, graph start-up and event latency stay out of the row's time."""

import math

import pytest

from bench.timeline import MARK_NAME, KernelRecord, TimeFigure, closure_pass
from bench.timing import Copies, L2Mode, SamplingPolicy, measure
from tests.fake_gpu import FakeGpu

QUICK = dict(warmup_runs=3, warmup_s=0.0, min_samples=10, min_time_s=0.0, timeout_s=1.0)


def _gpu(kernel_s: float, gap_s: float, **extra) -> FakeGpu:
    """A device with Hopper-like overheads: gaps between kernels, a graph's start-up, event latency and ticks."""
    return FakeGpu(cold_s=kernel_s, warm_s=kernel_s, flush_s=40e-6, host_overhead_s=5e-6, event_host_s=1e-6,
                   event_resolution_s=0.5e-6, node_gap_s=gap_s, stream_gap_s=gap_s, graph_startup_s=2e-6,
                   event_latency_s=0.5e-6, **extra)


@pytest.mark.parametrize("kernel_s", [3.3e-6, 3.6e-6, 20e-6])
@pytest.mark.parametrize("gap_s", [0.3e-6, 0.8e-6, 1.5e-6])
@pytest.mark.parametrize("l2", [L2Mode.COLD, L2Mode.WARM])
def test_short_kernels_read_their_own_time_within_two_percent_despite_gaps(kernel_s, gap_s, l2):
    gpu = _gpu(kernel_s, gap_s)
    m = measure(gpu.kernel, gpu, SamplingPolicy(**QUICK, l2=l2), Copies(gpu.copies, least=8, most=1000))
    assert m.timer == "kernel"
    assert m.median_s == pytest.approx(kernel_s, rel=0.02)
    assert m.kernel_s == m.median_s
    # the event figure is what the old derivation reported: gaps and start-up included, ≥ 2 % off
    assert m.event_s > kernel_s * 1.02
    assert m.overhead_s == pytest.approx(m.event_s - m.kernel_s)
    if m.launches_per_sample > 1:
        assert m.gap_s == pytest.approx(gap_s, rel=0.01)


def test_without_kernel_timestamps_the_event_timer_is_used_and_said():
    gpu = _gpu(3.3e-6, 1e-6, traceable=False)
    m = measure(gpu.kernel, gpu, SamplingPolicy(**QUICK), Copies(gpu.copies, least=8, most=1000))
    assert m.timer == "event" and math.isnan(m.kernel_s)
    assert m.median_s == m.event_s and m.median_s > 3.3e-6 * 1.1  # the gaps are in it, and the row says so


def test_the_launch_ceiling_keeps_the_event_time_with_the_kernel_time_beside_it():
    gpu = _gpu(2e-6, 1.5e-6)
    m = measure(gpu.kernel, gpu, SamplingPolicy(**QUICK), None, figure=TimeFigure.EVENT)
    assert m.timer == "event" and m.median_s == m.event_s
    assert m.kernel_s == pytest.approx(2e-6, rel=0.01)
    assert m.overhead_s > 0.5e-6  # what launching costs beyond the kernel: the figure a user asks for


def test_a_trace_that_outlasts_its_events_is_not_believed():
    gpu = _gpu(10e-6, 0.5e-6)
    real = gpu.trace

    def inflated():
        class Trace:
            def __enter__(self):
                self.cm = real()
                self.records = self.cm.__enter__()
                return self.records

            def __exit__(self, *exc):
                self.cm.__exit__(*exc)
                self.records[:] = [KernelRecord(r.name, r.start_s, r.end_s + (0 if r.name == MARK_NAME else 1e-3))
                                   for r in self.records]

        return Trace()

    gpu.trace = inflated
    m = measure(gpu.kernel, gpu, SamplingPolicy(**QUICK))
    assert m.timer == "event" and math.isnan(m.kernel_s)


def _records(*spans):
    return [KernelRecord(name, start, end) for name, start, end in spans]


def test_closure_pass_charges_every_kernel_between_marks_and_nothing_outside():
    records = _records(("spin_kernel", 0, 10), ("fill", 10, 12), (MARK_NAME, 12, 13), ("fill", 14, 15),
                       ("gemm", 15, 18), (MARK_NAME, 19, 20), ("fill", 20, 22), (MARK_NAME, 22, 23),
                       ("fill", 23.5, 24.5), ("gemm", 25, 28), (MARK_NAME, 28, 29))
    traced = closure_pass(records, 2)
    assert traced.per_sample_s == (4.0, 4.0)  # the baseline's own fill is charged; the flush's fill is not
    assert traced.kernels_per_sample == 2
    assert traced.gap_s == pytest.approx(0.25) and traced.lead_s == pytest.approx(0.75)


@pytest.mark.parametrize("records, samples", [
    (_records((MARK_NAME, 0, 1), ("k", 1, 2)), 1),  # an unclosed bracket
    (_records((MARK_NAME, 0, 1), (MARK_NAME, 1, 2)), 1),  # nothing ran inside
    (_records((MARK_NAME, 0, 1), ("k", 1, 2), (MARK_NAME, 2, 3)), 2),  # fewer samples than enqueued
    ([], 1),  # the profiler saw nothing (kernels of a graph not reported)
])
def test_closure_pass_refuses_a_trace_it_cannot_read(records, samples):
    assert closure_pass(records, samples) is None


def test_the_clean_flush_runs_on_the_torch_of_the_gpu_image():
    """torch 2.11 (and 2.13) refuse sum(x, dtype=…, out=…) without a dim: every cold point failed on the
    first H200 call. The flush's own calls, on CPU tensors of the same types."""
    import torch

    from bench.cuda_backend import CudaBackend
    from bench.timing import FlushMode

    backend = object.__new__(CudaBackend)
    backend._torch, backend._flush_mode = torch, FlushMode.CLEAN
    backend._zero = torch.full((1024,), 7, dtype=torch.int32)
    backend._read = torch.ones(1024, dtype=torch.int32)
    backend._sum = torch.empty((), dtype=torch.int64)
    backend.flush_l2()
    assert int(backend._zero.abs().sum()) == 0 and int(backend._sum) == 1024


def _hold_backend(monkeypatch, launches: list, fails: bool = False):
    """A CudaBackend's hold and release on CPU tensors: the hold kernel's launches recorded, the side stream a no-op."""
    import contextlib
    import types

    import torch

    from bench import cuda_backend
    from bench.cuda_backend import CudaBackend

    class Launcher:
        def __getitem__(self, grid):
            def launch(flag, generation, timeout_ns):
                if fails:
                    raise RuntimeError("no inline PTX")
                launches.append((grid, generation, timeout_ns))
            return launch

    monkeypatch.setattr(cuda_backend, "_rooflab_hold_kernel", Launcher())
    sleeps = []
    fake_cuda = types.SimpleNamespace(stream=lambda s: contextlib.nullcontext(), _sleep=sleeps.append)
    backend = object.__new__(CudaBackend)
    backend._torch = types.SimpleNamespace(cuda=fake_cuda)
    backend._hold_flag = torch.zeros(1, dtype=torch.int32)
    backend._release_stream, backend._generation, backend._pending = None, 0, False
    backend._cycles_per_s, backend.hold_error = 1e9, ""
    return backend, sleeps


def test_the_cuda_hold_waits_for_the_hosts_release_of_its_generation(monkeypatch):
    """Issue 20 §3: the hold is the blocking kernel the host releases after enqueueing, bounded by a timeout."""
    from bench.timing import hold_timeout

    launches = []
    backend, sleeps = _hold_backend(monkeypatch, launches)
    backend.release()  # nothing pending: nothing written
    assert int(backend._hold_flag) == 0
    for expected in (1, 2):
        backend.hold(3e-3)
        assert launches[-1] == ((1,), expected, int(hold_timeout(3e-3) * 1e9))
        assert int(backend._hold_flag) == expected - 1  # the flag still holds the kernel
        backend.release()
        assert int(backend._hold_flag) == expected
    backend.release()
    assert int(backend._hold_flag) == 2 and not sleeps


def test_the_cuda_hold_falls_back_to_a_timed_spin_where_its_kernel_cannot_run(monkeypatch):
    backend, sleeps = _hold_backend(monkeypatch, [], fails=True)
    backend.hold(2e-3)
    backend.hold(2e-3)
    backend.release()
    assert "no inline PTX" in backend.hold_error and sleeps == [2_000_000, 2_000_000]
    assert int(backend._hold_flag) == 0


def test_the_cuda_backend_reports_nvml_throttle_reasons_and_violations_since_its_last_call():
    import types

    from bench.cuda_backend import CudaBackend

    state = {"mask": 0x1, "thermal_ns": 100}  # idle only, a thermal violation counter at 100 ns
    nvml = types.SimpleNamespace(
        nvmlDeviceGetCurrentClocksEventReasons=lambda handle: state["mask"],
        nvmlDeviceGetViolationStatus=lambda handle, policy: types.SimpleNamespace(
            violationTime=state["thermal_ns"] if policy == 1 else 0))
    backend = object.__new__(CudaBackend)
    backend._nvml, backend._violations = (nvml, "handle"), {}
    assert backend.throttled() == ""  # idle is no throttling; the first call only reads the counters
    state["thermal_ns"] = 5_000  # held down by heat between two calls, though the clocks are back now
    assert backend.throttled() == "thermal"
    state["mask"] = 0x1 | 0x20 | 0x4
    assert backend.throttled() == "sw_power_cap sw_thermal"
    backend._nvml = False  # NVML cannot say: nothing is retaken
    assert backend.throttled() == ""
