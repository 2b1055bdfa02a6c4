"""The only timing code: warm-up, cold-L2 sampling with device events, the stopping rule, statistics.

The sampler talks to a :class:`Backend` (events, an L2 flush, a run-ahead hold, a host clock, graph
capture), so the same loop runs on a GPU (:class:`CudaBackend`) and, in the tests, on a simulated
device with a fake clock, event resolution and host submission latency.

One sample: [L2 flush (untimed)] → start event → R launches → end event; the time is divided by R.
R = 1 unless one launch is shorter than ``short_below_s``: then R launches over R rotating copies
of the inputs (together past 2× L2 in cold mode, so every launch still finds nothing in L2) are
replayed from one CUDA graph per sample, so the 0.5 µs event resolution and the launch gaps stay
out of the figure. Each batch of samples starts behind a device-side hold long enough for the host
to enqueue the whole batch, so host submission latency never enters a sample (nvbench's blocking
kernel, as a timed spin).

Stopping rule: sample in growing batches until the median's 95 % confidence interval (order
statistics) is within ``max_noise`` of the median and the first and second halves of the samples
agree (no drift, e.g. throttling), after the minimum samples and time — or until the timeout.
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


class FlushMode(str, Enum):
    CLEAN = "clean"  # zero a 2×L2 buffer, then read another: L2 ends holding clean lines
    ZERO = "zero"  # zero a 2×L2 buffer only: L2 ends dirty, written back during the next sample


HOLD_MARGIN_S = 20e-6  # device time a hold adds beyond the batch's measured enqueue time
MAX_HOLD_S = 0.05  # a batch is cut so that one hold of at most this covers its enqueueing


class Marker(Protocol):
    def record(self) -> None: ...

    def elapsed_s(self, end: "Marker") -> float: ...


class Backend(Protocol):
    """What the sampler needs from a device."""

    def event(self) -> Marker: ...

    def flush_l2(self) -> None: ...

    def hold(self, seconds: float) -> None:
        """Keep the device busy for ``seconds`` (enqueued, returns at once): work enqueued behind it
        runs back to back however slowly the host submits it."""

    def synchronize(self) -> None: ...

    def host_time(self) -> float: ...

    def capture(self, fn: Callable[[], object]) -> Callable[[], object] | None:
        """A replayable graph of ``fn``, or None where it cannot be captured."""


@dataclass(frozen=True)
class SamplingPolicy:
    """When to stop sampling: a target on the median's confidence interval, minimums, a timeout."""

    warmup_runs: int = 3  # at least this many untimed runs …
    warmup_s: float = 0.02  # … and at least this much host time, before any sample counts
    min_samples: int = 10
    min_time_s: float = 0.02  # summed measured kernel time
    max_noise: float = 0.005  # stop once the median's 95 % CI half-width is within this fraction of it
    timeout_s: float = 3.0  # host time for sampling one point, whatever the noise
    max_samples: int = 20_000
    l2: L2Mode = L2Mode.COLD
    graph: GraphMode = GraphMode.AUTO
    graph_below_s: float = 100e-6
    short_below_s: float = 20e-6  # one launch shorter than this is timed R at a time
    sample_target_s: float = 100e-6  # R makes a sample at least this long (0.5 % of it is one event tick)
    max_launches: int = 512  # cap on R
    flush: FlushMode = FlushMode.CLEAN

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
        if not 1 <= self.min_samples <= self.max_samples:
            raise ValueError("need 1 ≤ min_samples ≤ max_samples")
        finite = (self.max_noise, self.timeout_s, self.min_time_s, self.warmup_s)
        if not all(math.isfinite(v) for v in finite):
            raise ValueError("max_noise, timeout, min_time and warm-up time must be finite numbers")
        if self.max_noise <= 0 or self.timeout_s <= 0:
            raise ValueError("max_noise and timeout_s must be positive")
        if self.min_time_s < 0 or self.warmup_s < 0 or self.warmup_runs < 0:
            raise ValueError("min_time_s, warmup_s and warmup_runs must not be negative")


@dataclass(frozen=True)
class Copies:
    """How the sampler may time R launches per sample of a short kernel.

    ``make(r)`` returns r runs over r distinct copies of the inputs (the caller's memory); ``least``
    is how many copies cold mode needs so that one launch finds none of its data in L2 (together
    past 2× L2), ``most`` how many the memory budget allows.
    """

    make: Callable[[int], list[Callable[[], object]]]
    least: int = 1
    most: int = 1


@dataclass(frozen=True)
class Measurement:
    median_s: float  # per launch
    p20_s: float
    p80_s: float
    cv: float  # robust spread of single samples, 1.4826·MAD / median
    ci_rel: float  # half-width of the median's 95 % confidence interval / median
    samples: int
    converged: bool  # the stopping rule was met before the timeout / sample cap
    launch: str  # "graph" or "stream"
    launches_per_sample: int
    warmup_runs: int
    warning: str = ""  # why it did not converge, when it did not


def robust_cv(samples: list[float] | np.ndarray) -> float:
    """1.4826·MAD/median: the relative standard deviation for normal noise, blind to rare outliers."""
    values = np.asarray(samples, dtype=np.float64)
    if values.size < 2:
        return math.inf
    median = float(np.median(values))
    if median <= 0:
        return math.inf
    return 1.4826 * float(np.median(np.abs(values - median))) / median


def median_ci_rel(samples: list[float] | np.ndarray, z: float = 1.96) -> float:
    """Half-width of the distribution-free 95 % confidence interval of the median, over the median.

    Order statistics: the median lies between the j-th and k-th smallest of n samples with
    j, k = n/2 ∓ z·√n/2 (binomial(n, ½) by the normal approximation); inf with too few samples.
    """
    values = np.sort(np.asarray(samples, dtype=np.float64))
    n = values.size
    half = z * math.sqrt(n) / 2
    low, high = math.floor(n / 2 - half), math.ceil(n / 2 + half) - 1
    if n < 6 or low < 0 or high >= n:
        return math.inf
    median = float(np.median(values))
    return (values[high] - values[low]) / (2 * median) if median > 0 else math.inf


def drift_rel(samples: list[float] | np.ndarray) -> float:
    """|median of the first half − median of the second half| / median: clocks that changed mid-point."""
    values = np.asarray(samples, dtype=np.float64)
    if values.size < 12:
        return 0.0
    half = values.size // 2
    return abs(float(np.median(values[:half]) - np.median(values[half:]))) / float(np.median(values))


def summarize(samples: list[float], *, converged: bool, launch: str, warmup_runs: int,
              launches_per_sample: int = 1, warning: str = "") -> Measurement:
    values = np.asarray(samples, dtype=np.float64)
    p20, median, p80 = np.percentile(values, [20, 50, 80])
    return Measurement(float(median), float(p20), float(p80), robust_cv(values), median_ci_rel(values),
                       int(values.size), converged, launch, launches_per_sample, warmup_runs, warning)


def _sample(run: Callable[[], object], backend: Backend, count: int, flush: bool, hold_s: float = 0.0,
            per_sample: int = 1) -> tuple[list[float], float]:
    """``count`` timed runs, each after an untimed L2 flush, behind one hold; one sync at the end.

    Returns the device time per launch of each sample and the host seconds spent enqueueing one
    sample (what a hold must cover).
    """
    if hold_s > 0:
        backend.hold(hold_s)
    began = backend.host_time()
    pairs = []
    for _ in range(count):
        if flush:
            backend.flush_l2()
        start, end = backend.event(), backend.event()
        start.record()
        run()
        end.record()
        pairs.append((start, end))
    enqueue_s = (backend.host_time() - began) / count
    backend.synchronize()
    return [start.elapsed_s(end) / per_sample for start, end in pairs], enqueue_s


def _warm_up(run: Callable[[], object], backend: Backend, policy: SamplingPolicy) -> tuple[int, float, float]:
    """Untimed-for-the-result runs until both warm-up minimums hold.

    Returns (runs, typical device time of one run, host seconds to enqueue one sample).
    """
    flush = policy.l2 is L2Mode.COLD
    began = backend.host_time()
    times: list[float] = []
    enqueue: list[float] = []
    enqueue_s = 0.0
    while len(times) < max(1, policy.warmup_runs) or backend.host_time() - began < policy.warmup_s:
        sample, enqueue_s = _sample(run, backend, 1, flush, 1.5 * enqueue_s + HOLD_MARGIN_S)
        times += sample
        enqueue.append(enqueue_s)
        if len(times) >= 10_000:
            break
    return len(times), float(np.median(times)), float(np.median(enqueue))


def _launches(typical: float, policy: SamplingPolicy, copies: Copies | None) -> int:
    """R: 1 for long kernels; for short ones enough launches for a sample_target_s sample, and in cold
    mode enough distinct copies to exceed 2× L2, within the copies' memory budget and max_launches."""
    if copies is None or typical >= policy.short_below_s or typical <= 0:  # 0: below one event tick, unknown
        return 1
    wanted = math.ceil(policy.sample_target_s / max(typical, 1e-9))
    if policy.l2 is L2Mode.COLD:
        wanted = max(wanted, copies.least)
        wanted = min(wanted, copies.most)
    return max(1, min(wanted, policy.max_launches))


def measure(run: Callable[[], object], backend: Backend, policy: SamplingPolicy = SamplingPolicy(),
            copies: Copies | None = None) -> Measurement:
    """Time ``run`` (already compiled and autotuned) until the stopping rule or the timeout.

    ``copies`` lets a short kernel be timed R launches per sample (see :class:`Copies`); without
    it every sample is one launch.
    """
    warmups, typical, enqueue_s = _warm_up(run, backend, policy)
    flush = policy.l2 is L2Mode.COLD
    launches = _launches(typical, policy, copies)
    sample_fn = run
    if launches > 1:
        if flush:
            runs = copies.make(launches)
        else:  # warm L2 is the point: the same inputs every launch
            runs = [run] * launches

        def sample_fn():
            for each in runs:
                each()

    launch = "stream"
    wants_graph = launches > 1 or policy.graph is GraphMode.ALWAYS or (
        policy.graph is GraphMode.AUTO and typical < policy.graph_below_s)
    if wants_graph and policy.graph is not GraphMode.NEVER:
        replay = backend.capture(sample_fn)
        if replay is not None:
            sample_fn, launch = replay, "graph"
    # the first replay uploads the graph (and warms new copies); it also times one sample's enqueue
    enqueue_s = _sample(sample_fn, backend, 1, flush)[1]
    began = backend.host_time()
    samples: list[float] = []
    batch = policy.min_samples
    converged, warning = False, ""
    while True:
        hold = 1.5 * enqueue_s * batch + HOLD_MARGIN_S
        before = backend.host_time()
        times, enqueue_s = _sample(sample_fn, backend, batch, flush, hold, launches)
        samples += times
        enough = len(samples) >= policy.min_samples and sum(samples) * launches >= policy.min_time_s
        ci, drift = median_ci_rel(samples), drift_rel(samples)
        steady = drift <= max(3 * ci, policy.max_noise)
        if enough and ci <= policy.max_noise and steady:
            converged = True
            break
        elapsed = backend.host_time() - began
        if elapsed >= policy.timeout_s or len(samples) >= policy.max_samples:
            warning = (f"samples drift {drift:.1%} between the first and second half (throttling or clock "
                       "changes?)" if not steady else
                       f"median's 95 % CI ±{ci:.2%} above the {policy.max_noise:.2%} target at timeout")
            break
        # grow geometrically, but never far past the time budget, the sample cap, or what one hold covers
        spent = max(backend.host_time() - before, 1e-9) / batch
        budget = int((policy.timeout_s - elapsed) / spent) + 1
        coverable = int(MAX_HOLD_S / (1.5 * max(enqueue_s, 1e-9)))
        batch = max(1, min(len(samples), budget, coverable, policy.max_samples - len(samples)))
    return summarize(samples, converged=converged, launch=launch, warmup_runs=warmups,
                     launches_per_sample=launches, warning=warning)


def tuning_benchmark(backend: Backend, kernel_call: Callable[[], object], budget_s: float = 3e-3,
                     most: int = 25, flush: bool = True) -> list[float]:
    """The autotuner's per-config benchmark: a few cold-L2 samples, about ``budget_s`` of kernel time.

    Returns [median, p20, p80] in milliseconds, as Triton's autotuner expects.
    """
    first = _sample(kernel_call, backend, 1, flush)[0][0]  # compiles, and says how long one run takes
    count = max(3, min(most, int(budget_s / max(first, 1e-7))))
    times, enqueue_s = _sample(kernel_call, backend, count, flush)
    p20, median, p80 = np.percentile(times, [20, 50, 80]) * 1e3
    return [float(median), float(p20), float(p80)]


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
        self._cycles_per_s = self._calibrate_sleep()

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
            self._torch.sum(self._read, dtype=self._torch.int64, out=self._sum)

    def hold(self, seconds: float) -> None:
        self._torch.cuda._sleep(int(min(seconds, 0.1) * self._cycles_per_s))

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
