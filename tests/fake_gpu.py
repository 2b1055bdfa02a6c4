"""A simulated device for testing the timing harness on the CPU.

The host and the device have separate clocks. Every call the host makes costs it host time
(``host_launch_s`` per kernel launch, event record or flush; a graph replay costs one launch for the
whole graph); the device runs what was enqueued in order, starting each operation no earlier than
the host enqueued it, so a host that submits slowly leaves gaps on the device. Events read the
device clock when the device reaches them, rounded down to ``event_resolution_s`` (CUDA events
resolve about 0.5 µs). A kernel is fast when its data is still in the simulated L2 (the previous
kernel touched the same data and no flush came between) and slow after a flush. The first
``slow_runs`` launches are slower still, as JIT compilation and clock ramp-up are. ``duration``
replaces the kernel's time model (e.g. bimodal or drifting clocks).

What makes a timer wrong on a real GPU is modelled too, each settable and off by default: an idle
gap before every node of a graph replay (``node_gap_s``) and before every kernel launched from the
stream (``stream_gap_s``), the graph's start-up before its first node (``graph_startup_s``), the
device time an event record takes (``event_latency_s``), dirty lines a ``dirty_flush`` leaves for the
next kernel to write back (``writeback_s``), clocks that slow down over device time
(``drift_per_s``) and a two-mode kernel (``modes``: probability, factor). ``trace()`` records
every device operation's start and end, as CUPTI does, and ``mark()`` enqueues the bracket kernel.
Throttle episodes (``throttle``: (start, end, reason, factor) in device seconds) slow every kernel that
starts inside one by its factor, and ``throttled()`` reports their reasons as NVML would: any episode the
device was in since the last call (the host's call syncs nothing, so it sees the device time reached so far).
``hold`` with ``released_by_host`` is nvbench's blocking kernel: it spins until the host calls
``release()`` (never past its timeout), instead of for a fixed time.
"""

from __future__ import annotations

import contextlib
import math
import random
from typing import Callable

from bench.timeline import MARK_NAME, KernelRecord


class _Marker:
    def __init__(self, gpu: "FakeGpu"):
        self.gpu = gpu
        self.t: float | None = None

    def record(self) -> None:
        self.gpu._enqueue(self.gpu.event_latency_s, host_cost=self.gpu.event_host_s, done=self._at)

    def _at(self, t: float) -> None:
        self.t = t

    def elapsed_s(self, end: "_Marker") -> float:
        assert self.t is not None and end.t is not None, "elapsed read before both events were recorded"
        res = self.gpu.event_resolution_s
        if res:
            return (math.floor(end.t / res) - math.floor(self.t / res)) * res
        return end.t - self.t


class FakeGpu:
    def __init__(self, *, cold_s=10e-6, warm_s=4e-6, flush_s=30e-6, noise=0.0, slow_runs=0, slow_factor=10.0,
                 host_overhead_s=2e-6, event_host_s=0.0, event_resolution_s=0.0, capturable=True, seed=1,
                 duration: Callable[["FakeGpu"], float] | None = None, node_gap_s=0.0, stream_gap_s=0.0,
                 graph_startup_s=0.0, event_latency_s=0.0, dirty_flush=False, writeback_s=0.0, drift_per_s=0.0,
                 modes: tuple[float, float] | None = None, traceable=True, mark_s=1e-6,
                 throttle: tuple[tuple[float, float, str, float], ...] = (), released_by_host: bool = False):
        self.throttle_episodes, self._reported_until = tuple(throttle), 0.0
        self.released_by_host, self._pending_hold = released_by_host, None
        self.hold_spans: list[tuple[float, float]] = []  # (start, end) of each released hold
        self.sleeps = 0
        self.node_gap_s, self.stream_gap_s, self.graph_startup_s = node_gap_s, stream_gap_s, graph_startup_s
        self.event_latency_s = event_latency_s
        self.dirty_flush, self.writeback_s, self.dirty = dirty_flush, writeback_s, False
        self.drift_per_s, self.modes = drift_per_s, modes
        self.mark_s = mark_s
        if not traceable:  # a device without kernel timestamps: the sampler must fall back to events
            self.trace = None
        self.records: list[KernelRecord] | None = None  # while a trace is on
        self._first_node = False
        self.cold_s, self.warm_s, self.flush_s = cold_s, warm_s, flush_s
        self.noise, self.slow_runs, self.slow_factor = noise, slow_runs, slow_factor
        self.host_overhead_s = host_overhead_s  # host cost of one kernel launch (or one graph replay)
        self.event_host_s = event_host_s
        self.event_resolution_s = event_resolution_s
        self.capturable = capturable
        self.duration = duration
        self.rng = random.Random(seed)
        self.device_free = 0.0  # device time at which the enqueued work ends
        self.host = 0.0
        self.last_data: object = None  # what the last kernel touched (None after a flush)
        self.runs = 0
        self.flushes = 0
        self.captured = 0
        self.holds = 0
        self._replaying = False

    @property
    def clock(self) -> float:
        return self.device_free

    def _enqueue(self, device_s: float, host_cost: float, name: str = "", idle_before: float = 0.0,
                 done: Callable[[float], None] | None = None) -> float:
        """Host pays ``host_cost``; the device starts the op once both it and the host got there (plus
        ``idle_before`` of device idle time: a node gap, a graph's start-up). Behind a pending hold the op
        waits for the hold's end (``done`` gets its end time then)."""
        self.host += host_cost
        if self._pending_hold is not None:
            self._pending_hold[2].append((device_s, self.host, name, idle_before, done))
            return math.nan
        at = self._schedule(device_s, self.host, name, idle_before)
        if done:
            done(at)
        return at

    def _schedule(self, device_s: float, host_at: float, name: str, idle_before: float) -> float:
        start = max(self.device_free, host_at) + idle_before
        self.device_free = start + device_s
        if name and self.records is not None:
            self.records.append(KernelRecord(name, start, self.device_free))
        return self.device_free

    def _idle_before_kernel(self) -> float:
        if not self._replaying:
            return self.stream_gap_s
        first, self._first_node = self._first_node, False
        return self.graph_startup_s if first else self.node_gap_s

    # the kernel under test
    def kernel(self, data: object = 0) -> None:
        if self.duration is not None:
            duration = self.duration(self)
        else:
            duration = self.warm_s if self.last_data == data else self.cold_s
            if self.runs < self.slow_runs:
                duration *= self.slow_factor
            if self.noise:
                duration *= max(0.05, 1.0 + self.rng.gauss(0.0, self.noise))
            if self.modes and self.rng.random() < self.modes[0]:
                duration *= self.modes[1]
            duration *= 1.0 + self.drift_per_s * self.device_free
        duration *= self._throttle_factor(max(self.device_free, self.host))
        if self.dirty:  # the flush's dirty lines are written back while this kernel runs
            duration += self.writeback_s
            self.dirty = False
        self._enqueue(duration, host_cost=0.0 if self._replaying else self.host_overhead_s, name="kernel",
                      idle_before=self._idle_before_kernel())
        self.last_data = data
        self.runs += 1

    def copies(self, count: int) -> list[Callable[[], None]]:
        """Runs of the kernel over ``count`` distinct copies of its data."""
        return [lambda i=i: self.kernel(("copy", i)) for i in range(count)]

    # the Backend protocol
    def event(self) -> _Marker:
        return _Marker(self)

    def flush_l2(self) -> None:
        self._enqueue(self.flush_s, host_cost=self.host_overhead_s, name="flush")
        self.last_data = None
        self.dirty = self.dirty_flush
        self.flushes += 1

    def _throttle_factor(self, at: float) -> float:
        return math.prod(f for start, end, _, f in self.throttle_episodes if start <= at < end)

    def throttled(self) -> str:
        now = max(self.device_free, self.host)
        seen = sorted({r for start, end, r, _ in self.throttle_episodes if start < now and end > self._reported_until})
        self._reported_until = now
        return " ".join(seen)

    def sleep(self, seconds: float) -> None:
        self.host += seconds
        self.sleeps += 1

    def hold(self, seconds: float) -> None:
        """A fixed spin of ``seconds``; with ``released_by_host`` a spin until ``release()`` (at most ``seconds``):
        what is enqueued behind it waits, and runs back to back from the hold's end."""
        self.holds += 1
        if not self.released_by_host:
            self._enqueue(seconds, host_cost=self.host_overhead_s, name="spin_kernel")
            return
        from bench.timing import hold_timeout

        self.host += self.host_overhead_s
        start = max(self.device_free, self.host)
        self._pending_hold = (start, start + hold_timeout(seconds), [])

    def release(self) -> None:
        self.host += self.host_overhead_s
        if self._pending_hold is not None:
            start, timeout, _ = self._pending_hold
            self._end_hold(min(max(start, self.host), timeout))

    def _end_hold(self, end: float) -> None:
        start, _, queued = self._pending_hold
        self._pending_hold = None
        self.hold_spans.append((start, end))
        if self.records is not None:
            self.records.append(KernelRecord("spin_kernel", start, end))
        self.device_free = end
        for device_s, host_at, name, idle_before, done in queued:
            at = self._schedule(device_s, host_at, name, idle_before)
            if done:
                done(at)

    def mark(self) -> None:
        self._enqueue(self.mark_s, host_cost=self.host_overhead_s, name=MARK_NAME, idle_before=self.stream_gap_s)

    @contextlib.contextmanager
    def trace(self):
        records: list[KernelRecord] = []
        self.records = records
        try:
            yield records
        finally:
            self.synchronize()
            self.records = None

    def synchronize(self) -> None:
        if self._pending_hold is not None:  # never released: the hold runs to its timeout, the device goes on
            self._end_hold(self._pending_hold[1])
        self.host = max(self.host, self.device_free)

    def host_time(self) -> float:
        return self.host

    def capture(self, fn):
        if not self.capturable:
            return None
        self.captured += 1

        def replay():
            self.host += self.host_overhead_s  # one launch for the whole graph
            self._replaying, self._first_node = True, True
            try:
                fn()
            finally:
                self._replaying = False

        return replay


class _HostMarker:
    def __init__(self):
        self.t = 0.0

    def record(self) -> None:
        import time

        self.t = time.perf_counter()

    def elapsed_s(self, end: "_HostMarker") -> float:
        return end.t - self.t


class HostClockBackend:
    """Times real (CPU) work with the host clock: lets a whole sweep run 'timed' without a GPU."""

    def __init__(self):
        self.flushes = 0

    def event(self) -> _HostMarker:
        return _HostMarker()

    def flush_l2(self) -> None:
        self.flushes += 1

    def hold(self, seconds: float) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def host_time(self) -> float:
        import time

        return time.perf_counter()

    def capture(self, fn):
        return None
