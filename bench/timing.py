"""The only timing code: warm-up, cold-L2 sampling with device events, adaptive stopping, statistics.

The sampler talks to a :class:`Backend` (events, an L2 flush, a host clock, graph capture), so the
same loop runs on a GPU (:class:`CudaBackend`) and, in the tests, on a simulated device with a fake
clock. Per sample: flush L2 (untimed) → start event → the kernel → end event; the flush also keeps
the GPU busy while the host enqueues the next launch, so host launch overhead stays out of the time.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Iterable, Protocol

import numpy as np


class L2Mode(str, Enum):
    COLD = "cold"  # flush L2 before every sample: DRAM figures for DRAM-sized problems
    WARM = "warm"  # no flush: for L2-bandwidth ceilings and cache-resident studies


class GraphMode(str, Enum):
    AUTO = "auto"  # replay a CUDA graph when the kernel is shorter than SamplingPolicy.graph_below_s
    ALWAYS = "always"
    NEVER = "never"


class Marker(Protocol):
    def record(self) -> None: ...

    def elapsed_s(self, end: "Marker") -> float: ...


class Backend(Protocol):
    """What the sampler needs from a device."""

    def event(self) -> Marker: ...

    def flush_l2(self) -> None: ...

    def synchronize(self) -> None: ...

    def host_time(self) -> float: ...

    def capture(self, fn: Callable[[], object]) -> Callable[[], object] | None:
        """A replayable graph of ``fn``, or None where it cannot be captured."""


@dataclass(frozen=True)
class SamplingPolicy:
    """When to stop sampling (nvbench-style: noise target, minimums, timeout)."""

    warmup_runs: int = 3  # at least this many untimed runs …
    warmup_s: float = 0.02  # … and at least this much host time, before any sample counts
    min_samples: int = 10
    min_time_s: float = 0.02  # summed measured kernel time
    max_noise: float = 0.005  # stop once the robust CV is at or below this
    timeout_s: float = 3.0  # host time for sampling one point, whatever the noise
    max_samples: int = 20_000
    l2: L2Mode = L2Mode.COLD
    graph: GraphMode = GraphMode.AUTO
    graph_below_s: float = 100e-6

    def with_overrides(self, overrides: Iterable[tuple[str, str]]) -> "SamplingPolicy":
        """This policy with a sweep's l2/graph settings applied."""
        kinds = {"l2": L2Mode, "graph": GraphMode}
        values = {}
        for name, value in overrides:
            if name not in kinds:
                raise ValueError(f"timing override {name!r} is not one of: {', '.join(kinds)}")
            values[name] = kinds[name](value)
        return dataclasses.replace(self, **values) if values else self

    def __post_init__(self):
        if self.min_samples < 1 or self.max_samples < self.min_samples:
            raise ValueError("need 1 ≤ min_samples ≤ max_samples")
        if self.max_noise <= 0 or self.timeout_s <= 0:
            raise ValueError("max_noise and timeout_s must be positive")


@dataclass(frozen=True)
class Measurement:
    median_s: float
    p20_s: float
    p80_s: float
    cv: float  # robust coefficient of variation, 1.4826·MAD / median
    samples: int
    converged: bool  # the noise target was met before the timeout / sample cap
    launch: str  # "graph" or "stream"
    warmup_runs: int


def robust_cv(samples: list[float] | np.ndarray) -> float:
    """1.4826·MAD/median: the relative standard deviation for normal noise, blind to rare outliers."""
    values = np.asarray(samples, dtype=np.float64)
    if values.size < 2:
        return math.inf
    median = float(np.median(values))
    if median <= 0:
        return math.inf
    return 1.4826 * float(np.median(np.abs(values - median))) / median


def summarize(samples: list[float], *, converged: bool, launch: str, warmup_runs: int) -> Measurement:
    values = np.asarray(samples, dtype=np.float64)
    p20, median, p80 = np.percentile(values, [20, 50, 80])
    return Measurement(float(median), float(p20), float(p80), robust_cv(values), int(values.size),
                       converged, launch, warmup_runs)


def _sample(run: Callable[[], object], backend: Backend, count: int, flush: bool) -> list[float]:
    """``count`` timed runs, each after an untimed L2 flush; one synchronisation at the end."""
    pairs = []
    for _ in range(count):
        if flush:
            backend.flush_l2()
        start, end = backend.event(), backend.event()
        start.record()
        run()
        end.record()
        pairs.append((start, end))
    backend.synchronize()
    return [start.elapsed_s(end) for start, end in pairs]


def _warm_up(run: Callable[[], object], backend: Backend, policy: SamplingPolicy) -> tuple[int, float]:
    """Untimed-for-the-result runs until both warm-up minimums hold; returns (runs, typical time)."""
    flush = policy.l2 is L2Mode.COLD
    began = backend.host_time()
    times: list[float] = []
    while len(times) < policy.warmup_runs or backend.host_time() - began < policy.warmup_s:
        times += _sample(run, backend, 1, flush)
        if len(times) >= 10_000:
            break
    return len(times), float(np.median(times))


def measure(run: Callable[[], object], backend: Backend, policy: SamplingPolicy = SamplingPolicy()) -> Measurement:
    """Time ``run`` (already compiled and autotuned) until the noise target or the timeout."""
    warmups, typical = _warm_up(run, backend, policy)
    launch = "stream"
    wants_graph = policy.graph is GraphMode.ALWAYS or (
        policy.graph is GraphMode.AUTO and typical < policy.graph_below_s)
    if wants_graph:
        replay = backend.capture(run)
        if replay is not None:
            run, launch = replay, "graph"
            _sample(run, backend, 1, policy.l2 is L2Mode.COLD)  # first replay uploads the graph

    flush = policy.l2 is L2Mode.COLD
    began = backend.host_time()
    samples: list[float] = []
    batch = policy.min_samples
    converged = False
    while True:
        samples += _sample(run, backend, batch, flush)
        enough = len(samples) >= policy.min_samples and sum(samples) >= policy.min_time_s
        if enough and robust_cv(samples) <= policy.max_noise:
            converged = True
            break
        elapsed = backend.host_time() - began
        if elapsed >= policy.timeout_s or len(samples) >= policy.max_samples:
            break
        # grow geometrically, but never far past the time budget or the sample cap
        per_sample = max(elapsed / len(samples), 1e-9)
        budget = int((policy.timeout_s - elapsed) / per_sample) + 1
        batch = max(1, min(len(samples), budget, policy.max_samples - len(samples)))
    return summarize(samples, converged=converged, launch=launch, warmup_runs=warmups)


# ---------------------------------------------------------------------------------------------
# The CUDA backend
# ---------------------------------------------------------------------------------------------


class _CudaMarker:
    def __init__(self, torch_module):
        self._event = torch_module.cuda.Event(enable_timing=True)

    def record(self) -> None:
        self._event.record()

    def elapsed_s(self, end: "_CudaMarker") -> float:
        return self._event.elapsed_time(end._event) * 1e-3


class CudaBackend:
    """CUDA events on the current stream; L2 flushed by zeroing a buffer twice the L2 size."""

    def __init__(self, l2_bytes: int):
        import torch

        self._torch = torch
        size = max(2 * l2_bytes, 64 << 20)
        self._flush = torch.empty(size // 4, dtype=torch.int32, device="cuda")

    def event(self) -> _CudaMarker:
        return _CudaMarker(self._torch)

    def flush_l2(self) -> None:
        self._flush.zero_()

    def synchronize(self) -> None:
        self._torch.cuda.synchronize()

    def host_time(self) -> float:
        return time.perf_counter()

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
