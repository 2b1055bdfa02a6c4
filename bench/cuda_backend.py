"""The CUDA backend of the timing loop: events, the L2 flush, the hold, graph capture, and kernel traces.

The hold is nvbench's blocking kernel: one Triton program spinning on a device flag until the host, having
enqueued the whole batch behind it, writes the batch's generation number into the flag from a side stream
(:meth:`CudaBackend.release`). It also reads the GPU's global timer and gives up after
:func:`bench.timing.hold_timeout`, so a release that never comes cannot hang the GPU. Where the kernel cannot
be built, the hold falls back to ``torch.cuda._sleep`` for the estimated enqueue time (``hold_error`` says why).

Events time what the host sees of a sample (node gaps, graph start-up and event latency included);
``trace`` collects the device's own start and end of every kernel through torch's profiler (CUPTI
activity records, kernels replayed from a CUDA graph included), and ``mark`` launches the tiny Triton
kernel that brackets each traced sample, so bench/timeline.py can tell the closure's kernels from the
flush's and the hold's by position rather than by name.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Callable, Iterator

import triton
import triton.language as tl

from bench.timeline import KernelRecord
from bench.timing import FlushMode, hold_timeout


@triton.jit
def _rooflab_timeline_mark_kernel(flag_ptr):
    tl.store(flag_ptr, 1)


@triton.jit
def _global_time_ns():
    return tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l", [], dtype=tl.int64, is_pure=False, pack=1)


@triton.jit(do_not_specialize=["generation", "timeout_ns"])
def _rooflab_hold_kernel(flag_ptr, generation, timeout_ns):
    """Spin while flag < generation and fewer than timeout_ns of device time have passed."""
    start = _global_time_ns()
    now = start
    flag = tl.load(flag_ptr, volatile=True)
    while (flag < generation) & (now - start < timeout_ns):
        flag = tl.load(flag_ptr, volatile=True)
        now = _global_time_ns()


class _CudaMarker:
    def __init__(self, torch_module):
        self._event = torch_module.cuda.Event(enable_timing=True)

    def record(self) -> None:
        self._event.record()

    def elapsed_s(self, end: "_CudaMarker") -> float:
        return self._event.elapsed_time(end._event) * 1e-3


def _device_records(prof) -> list[KernelRecord]:
    """Every device-side activity (kernels, memsets, copies) the profiler saw, on the device's clock."""
    from torch._C._autograd import DeviceType

    try:
        events = prof.profiler.kineto_results.events()
        return [KernelRecord(e.name(), e.start_ns() * 1e-9, (e.start_ns() + e.duration_ns()) * 1e-9)
                for e in events if e.device_type() == DeviceType.CUDA]
    except AttributeError:  # an older profiler API: the parsed events carry µs floats
        return [KernelRecord(e.name, e.time_range.start * 1e-6, e.time_range.end * 1e-6)
                for e in prof.events() if e.device_type == DeviceType.CUDA]


class CudaBackend:
    """CUDA events on the current stream; the L2 flush and the hold are kernels on that stream."""

    def __init__(self, l2_bytes: int, flush: FlushMode = FlushMode.CLEAN):
        import torch

        self._torch = torch
        size = max(2 * l2_bytes, 64 << 20)
        self._zero = torch.empty(size // 4, dtype=torch.int32, device="cuda")
        self._flush_mode = FlushMode(flush)
        if self._flush_mode is FlushMode.CLEAN:
            self._read = torch.ones(size // 4, dtype=torch.int32, device="cuda")
            self._sum = torch.empty((), dtype=torch.int64, device="cuda")
        self._flag = torch.zeros(1, dtype=torch.int32, device="cuda")
        self._hold_flag = torch.zeros(1, dtype=torch.int32, device="cuda")
        self._release_stream = torch.cuda.Stream()  # the release must not queue behind the hold it ends
        self._generation = 0
        self._pending = False
        self._cycles_per_s: float | None = None  # the fallback spin's calibration, made when first needed
        self.hold_error = ""  # why the hold is a timed spin rather than released by the host
        self._nvml = None  # (module, handle) once looked up; False where NVML cannot say
        self._violations: dict[int, int] = {}
        self.trace_error = ""  # why kernel traces are unavailable, once they failed
        if os.environ.get("ROOFLAB_KERNEL_TIMER") == "0":  # events only: where the profiler misbehaves
            self.trace = self.mark = None

    def _calibrate_sleep(self) -> float:
        """torch.cuda._sleep spins for clock cycles: find how many make a second at today's clock."""
        torch = self._torch
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda._sleep(1000)  # load the kernel
        start.record()
        torch.cuda._sleep(2_000_000)
        end.record()
        torch.cuda.synchronize()
        seconds = start.elapsed_time(end) * 1e-3
        return 2_000_000 / seconds if seconds > 0 else 1.5e9

    def event(self) -> _CudaMarker:
        return _CudaMarker(self._torch)

    def flush_l2(self) -> None:
        self._zero.zero_()
        if self._flush_mode is FlushMode.CLEAN:  # evict the dirty zeros: write-backs happen here, untimed
            self._torch.sum(self._read, dim=0, dtype=self._torch.int64, out=self._sum)

    def hold(self, seconds: float) -> None:
        """The blocking kernel, released by :meth:`release` (at most ``hold_timeout(seconds)``); the timed spin
        where the kernel cannot run."""
        if not self.hold_error:
            try:
                self._generation += 1
                _rooflab_hold_kernel[(1,)](self._hold_flag, self._generation, int(hold_timeout(seconds) * 1e9))
                self._pending = True
                return
            except Exception as exc:  # no inline PTX here, say: spin for the estimate instead
                self.hold_error = f"{type(exc).__name__}: {exc}"[:200]
        if self._cycles_per_s is None:
            self._cycles_per_s = self._calibrate_sleep()
        self._torch.cuda._sleep(int(min(seconds, 0.1) * self._cycles_per_s))

    def release(self) -> None:
        """The batch is enqueued: write the hold's generation into its flag from the side stream."""
        if not self._pending:
            return
        self._pending = False
        with self._torch.cuda.stream(self._release_stream):
            self._hold_flag.fill_(self._generation)

    def throttled(self) -> str:
        """NVML's clock-lowering reasons now, and any violation counter that moved since the last call ("" when
        NVML cannot say): what the sampler retakes a batch for."""
        from bench import device

        if self._nvml is None:
            nvml = device._nvml()
            try:
                self._nvml = (nvml, device.nvml_handle(nvml, self._torch.cuda.current_device())) if nvml else False
            except Exception:
                self._nvml = False
        if not self._nvml:
            return ""
        nvml, handle = self._nvml
        reasons = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
            nvml.nvmlDeviceGetCurrentClocksThrottleReasons
        try:
            names = set(device.throttle_names(int(reasons(handle))))
        except Exception:
            return ""
        for policy, name in device._VIOLATIONS.items():
            try:
                spent = int(nvml.nvmlDeviceGetViolationStatus(handle, policy).violationTime)
            except Exception:
                continue
            if spent > self._violations.get(policy, spent):
                names.add(name)
            self._violations[policy] = spent
        return " ".join(sorted(names))

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def synchronize(self) -> None:
        self._torch.cuda.synchronize()

    def host_time(self) -> float:
        return time.perf_counter()

    def mark(self) -> None:
        _rooflab_timeline_mark_kernel[(1,)](self._flag)

    @contextlib.contextmanager
    def trace(self) -> Iterator[list[KernelRecord]]:
        """Collects the device activity enqueued inside the block (filled in when it ends)."""
        from torch.profiler import ProfilerActivity, profile

        records: list[KernelRecord] = []
        prof = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
        prof.__enter__()
        try:
            yield records
        finally:
            self._torch.cuda.synchronize()
            prof.__exit__(None, None, None)
        try:
            records += _device_records(prof)
        except Exception as exc:  # a profiler that cannot say: the event timer stands, with the reason kept
            self.trace_error = f"{type(exc).__name__}: {exc}"[:200]

    def capture(self, fn: Callable[[], object]) -> Callable[[], object] | None:
        torch = self._torch
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                fn()  # capture needs one run off the default stream first (lazy init, allocator)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                fn()
            torch.cuda.synchronize()
        except Exception:  # some ops refuse capture: time them in the stream instead
            torch.cuda.synchronize()
            return None
        return graph.replay
