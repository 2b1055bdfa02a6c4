"""A simulated device for testing the timing harness on the CPU.

Device time advances only through the simulated operations; a kernel is fast when its data is
still in the simulated L2 (the previous operation was the kernel itself) and slow after a flush.
The first ``slow_runs`` launches are slower still, as JIT compilation and clock ramp-up are.
"""

from __future__ import annotations

import random


class _Marker:
    def __init__(self, gpu: "FakeGpu"):
        self.gpu = gpu
        self.t: float | None = None

    def record(self) -> None:
        self.t = self.gpu.clock

    def elapsed_s(self, end: "_Marker") -> float:
        assert self.t is not None and end.t is not None, "elapsed read before both events were recorded"
        return end.t - self.t


class FakeGpu:
    def __init__(self, *, cold_s=10e-6, warm_s=4e-6, flush_s=30e-6, noise=0.0, slow_runs=0, slow_factor=10.0,
                 host_overhead_s=2e-6, capturable=True, seed=1):
        self.cold_s, self.warm_s, self.flush_s = cold_s, warm_s, flush_s
        self.noise, self.slow_runs, self.slow_factor = noise, slow_runs, slow_factor
        self.host_overhead_s = host_overhead_s
        self.capturable = capturable
        self.rng = random.Random(seed)
        self.clock = 0.0  # device time
        self.host = 0.0  # host time: the host waits for the device at every synchronize
        self.cache_warm = False
        self.runs = 0
        self.flushes = 0
        self.captured = 0

    # the kernel under test
    def kernel(self) -> None:
        duration = self.warm_s if self.cache_warm else self.cold_s
        if self.runs < self.slow_runs:
            duration *= self.slow_factor
        if self.noise:
            duration *= max(0.05, 1.0 + self.rng.gauss(0.0, self.noise))
        self.clock += duration
        self.host += self.host_overhead_s
        self.cache_warm = True
        self.runs += 1

    # the Backend protocol
    def event(self) -> _Marker:
        return _Marker(self)

    def flush_l2(self) -> None:
        self.clock += self.flush_s
        self.cache_warm = False
        self.flushes += 1

    def synchronize(self) -> None:
        self.host = max(self.host, self.clock)

    def host_time(self) -> float:
        return self.host

    def capture(self, fn):
        if not self.capturable:
            return None
        self.captured += 1
        return fn


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

    def synchronize(self) -> None:
        pass

    def host_time(self) -> float:
        import time

        return time.perf_counter()

    def capture(self, fn):
        return None
