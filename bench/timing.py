"""The only timing code: warm-up, cold-L2 sampling with device events, the stopping rule, statistics.

The sampler talks to a :class:`Backend` (events, an L2 flush, a run-ahead hold, a host clock, graph
capture), so the same loop runs on a GPU (:class:`CudaBackend`) and, in the tests, on a simulated
device with a fake clock, event resolution and host submission latency.

One sample: [L2 flush (untimed)] → start event → R launches → end event; the time is divided by R.
R = 1 unless one launch is shorter than ``short_below_s``: then R launches over R rotating copies
of the inputs (together past 2× L2 in cold mode, so every launch still finds nothing in L2) are
replayed from one CUDA graph per sample, so the 0.5 µs event resolution and the launch gaps stay
out of the figure. Each batch of samples starts behind a device-side hold that the host releases once
it has enqueued the whole batch (nvbench's blocking kernel: ``hold`` then ``release``), so host
submission latency never enters a sample however slowly the host goes; the hold ends by itself after
:func:`hold_timeout` should the release never come. A backend without ``release`` spins for the
estimated enqueue time instead.

Stopping rule: sample in growing batches until the median's 95 % confidence interval (order
statistics) is within ``max_noise`` of the median and the first and second halves of the samples
agree (no drift, e.g. throttling), after the minimum samples and time — or until the timeout. The
halves agree when their medians' difference d is what their own noise explains (d ≤ 2·ci: each
half's median has a 95 % half-width of √2·ci, their difference one of 2·ci) or small enough that the
target still holds with it: a drift that goes on at its rate moves the next run's median by 2·d (the
halves' medians sit a half-run apart), so ci + 2·d ≤ max_noise. Like nvbench, "converged" means the
figure would not move if one kept sampling, not merely that the interval is narrow. Two modes that
explain the spread are never converged.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Iterable, Protocol

import numpy as np

from bench.retake import THROTTLE_RETAKES, Retakes  # noqa: F401 (THROTTLE_RETAKES: the bound, public here)
from bench.stats import median_ci_rel, robust_cv, stopping_rule
from bench.timeline import KernelPass, TimeFigure, Timer, closure_pass


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


def hold_timeout(seconds: float) -> float:
    """How long a released hold may spin when no release comes (a lost flag write must not hang the GPU): a
    few times the batch's estimated enqueue time, at least 20 ms for a host that stalls, at most 1 s."""
    return min(max(4.0 * seconds, 0.02), 1.0)


class Marker(Protocol):
    def record(self) -> None: ...

    def elapsed_s(self, end: "Marker") -> float: ...


class Backend(Protocol):
    """What the sampler needs from a device."""

    def event(self) -> Marker: ...

    def flush_l2(self) -> None: ...

    def hold(self, seconds: float) -> None:
        """Keep the device busy (enqueued, returns at once) until ``release()``, or for ``seconds`` on a backend
        without it: work enqueued behind the hold runs back to back however slowly the host submits it."""

    def synchronize(self) -> None: ...

    def host_time(self) -> float: ...

    def capture(self, fn: Callable[[], object]) -> Callable[[], object] | None:
        """A replayable graph of ``fn``, or None where it cannot be captured."""

    # Optional (a backend without them is timed by events alone):
    # trace() -> context manager yielding a list of timeline.KernelRecord, filled when the block ends;
    # mark() -> enqueue the bracket kernel timeline.MARK_NAME.
    # Optional: release() -> end the pending hold (the batch is enqueued); hold(seconds) then waits for it, for
    # at most hold_timeout(seconds).
    # Optional (without them no sample is retaken for throttling):
    # throttled() -> the clock-lowering reasons (other than idle) the GPU reported since the last call, "" if none;
    # sleep(seconds) -> wait on the host while the clocks recover.


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
    timer: str = Timer.EVENT.value  # what median/p20/p80/cv are from: kernel timestamps or events
    event_s: float = math.nan  # per-launch median by CUDA events (R launches ÷ R, gaps included)
    kernel_s: float = math.nan  # per-launch median of the closure's summed kernel durations
    gap_s: float = math.nan  # median idle time between consecutive kernels of one traced sample
    lead_s: float = math.nan  # median time from the bracket to the first kernel (launch / graph start-up)
    after_check: str = ""  # why the timed closure, replayed once after sampling, gave a wrong answer
    retaken: int = 0  # samples discarded because the GPU reported throttling while they ran, and taken again
    throttled: str = ""  # the throttle reasons of the discarded samples
    retake_clean: bool = True  # every kept sample was taken unthrottled (False: the retakes ran out)

    @property
    def overhead_s(self) -> float:
        """Per launch, what the event timer adds to the kernels' own time (gaps, start-up, event latency)."""
        return self.event_s - self.kernel_s


def summarize(samples: list[float], *, converged: bool, launch: str, warmup_runs: int,
              launches_per_sample: int = 1, warning: str = "") -> Measurement:
    values = np.asarray(samples, dtype=np.float64)
    p20, median, p80 = np.percentile(values, [20, 50, 80])
    return Measurement(float(median), float(p20), float(p80), robust_cv(values), median_ci_rel(values),
                       int(values.size), converged, launch, launches_per_sample, warmup_runs, warning)


def _sample(run: Callable[[], object], backend: Backend, count: int, flush: bool, hold_s: float = 0.0,
            per_sample: int = 1, mark: Callable[[], None] | None = None) -> tuple[list[float], float]:
    """``count`` timed runs, each after an untimed L2 flush, behind one hold; one sync at the end.

    With ``mark``, each sample is bracketed by marks just outside its events, so a kernel trace can
    tell the run's kernels from the flush's. Returns the device time per launch of each sample and
    the host seconds spent enqueueing one sample (what a hold must cover).
    """
    if hold_s > 0:
        backend.hold(hold_s)
    began = backend.host_time()
    pairs = []
    for _ in range(count):
        if flush:
            backend.flush_l2()
        start, end = backend.event(), backend.event()
        if mark:
            mark()
        start.record()
        run()
        end.record()
        if mark:
            mark()
        pairs.append((start, end))
    enqueue_s = (backend.host_time() - began) / count
    release = getattr(backend, "release", None)
    if hold_s > 0 and callable(release):  # the whole batch is enqueued: let the hold go
        release()
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


EVENT_TICK_S = 0.5e-6  # CUDA event resolution
TRACE_MAX_KERNELS = 20_000  # kernels in one traced batch: bounds the profiler's buffers and parsing
KERNEL_OVER_EVENT = 1.05  # serial kernels cannot outlast the events around them: more means a bad trace


@dataclass
class _Traces:
    """The kernel-timestamp side of one point's sampling (empty when the backend cannot trace)."""

    on: bool
    samples: list[float] = dataclasses.field(default_factory=list)  # per launch
    gaps: list[float] = dataclasses.field(default_factory=list)
    leads: list[float] = dataclasses.field(default_factory=list)

    def mark(self) -> tuple[int, int, int]:
        return len(self.samples), len(self.gaps), len(self.leads)

    def rewind(self, to: tuple[int, int, int]) -> None:
        """Drop what the batches since ``mark()`` added (a batch discarded for throttling)."""
        if self.on:
            del self.samples[to[0]:], self.gaps[to[1]:], self.leads[to[2]:]

    def add(self, traced: KernelPass | None, launches: int) -> None:
        if traced is None:  # one unreadable trace and the whole point is timed by events: no mixed figures
            self.on, self.samples = False, []
            return
        self.samples += [t / launches for t in traced.per_sample_s]
        self.gaps.append(traced.gap_s)
        self.leads.append(traced.lead_s)


def _batch(sample_fn, backend: Backend, count: int, flush: bool, hold_s: float, launches: int,
           traces: _Traces) -> tuple[list[float], float]:
    """One batch of samples; under the backend's kernel trace while ``traces.on``."""
    if not traces.on:
        return _sample(sample_fn, backend, count, flush, hold_s, launches)
    with backend.trace() as records:
        times, enqueue_s = _sample(sample_fn, backend, count, flush, hold_s, launches, mark=backend.mark)
    traces.add(closure_pass(records, count), launches)
    return times, enqueue_s


def _judge(samples: list[float], policy: SamplingPolicy, tick: float = 0.0) -> tuple[bool, str]:
    """The stopping rule on ``samples``: (met, why not). ``tick``: the timer's resolution per launch."""
    return stopping_rule(samples, policy.max_noise, tick)


def _nanmedian(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.median(finite)) if finite else math.nan


def _figures(samples: list[float], traces: _Traces, figure: TimeFigure, policy: SamplingPolicy, enough: bool,
             after_check: str = "", **common) -> Measurement:
    """The row: kernel-timestamp statistics where the trace is sound and the family times kernels, else events."""
    event = summarize(samples, converged=False, **common)
    kernel = summarize(traces.samples, converged=False, **common) if traces.on and traces.samples else None
    resolution = EVENT_TICK_S / common["launches_per_sample"]  # one event tick, per launch
    if kernel is not None and not 0 < kernel.median_s <= KERNEL_OVER_EVENT * event.median_s + resolution:
        kernel = None
    extra = dict(event_s=event.median_s)
    if kernel is not None:
        extra.update(kernel_s=kernel.median_s, gap_s=_nanmedian(traces.gaps), lead_s=_nanmedian(traces.leads))
    reported = kernel if kernel is not None and figure is TimeFigure.KERNEL else event
    tick = 0.0 if reported is kernel else resolution
    converged, warning = _judge(traces.samples if reported is kernel else samples, policy, tick)
    if converged and not enough:
        converged, warning = False, "the minimum samples or measured time not reached at timeout"
    timer = Timer.KERNEL if reported is kernel else Timer.EVENT
    return dataclasses.replace(reported, converged=converged, warning=warning, timer=timer.value,
                               after_check=after_check, **extra)


def measure(run: Callable[[], object], backend: Backend, policy: SamplingPolicy = SamplingPolicy(),
            copies: Copies | None = None, figure: TimeFigure = TimeFigure.KERNEL,
            after: Callable[[Callable[[], object]], str] | None = None) -> Measurement:
    """Time ``run`` (already compiled and autotuned) until the stopping rule or the timeout.

    ``copies`` lets a short kernel be timed R launches per sample (see :class:`Copies`); without
    it every sample is one launch. Where the backend traces kernels, every sample also records the
    device's start and end of each kernel the run launched: ``figure`` KERNEL makes their sum per
    launch the row's time (and what the stopping rule judges); EVENT keeps the event time, as the
    launch ceiling must, with the kernels' time beside it.
    ``after`` is handed the timed closure exactly as it was sampled (the graph replay or the stream
    closure) once sampling ends, and says what is wrong with its answer ("" when nothing is).
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
    traces = _Traces(on=callable(getattr(backend, "trace", None)) and callable(getattr(backend, "mark", None)))
    began = backend.host_time()
    samples: list[float] = []
    batch = policy.min_samples
    tick = (0.0 if traces.on and figure is TimeFigure.KERNEL else EVENT_TICK_S) / launches
    throttle = Retakes(backend)
    throttle.start()
    while True:
        if traces.on:
            batch = max(1, min(batch, TRACE_MAX_KERNELS // launches))
        hold = 1.5 * enqueue_s * batch + HOLD_MARGIN_S
        before = backend.host_time()
        traced_so_far = traces.mark()
        times, enqueue_s = _batch(sample_fn, backend, batch, flush, hold, launches, traces)
        if throttle.discard(len(times)):
            if backend.host_time() - began < policy.timeout_s:
                traces.rewind(traced_so_far)
                continue
            if samples:  # out of time: the point ends on what it had before the throttled batch
                traces.rewind(traced_so_far)
                times = []
            else:  # out of time with nothing else: the throttled batch stands
                throttle.clean = False
        samples += times
        judged = traces.samples if traces.on and figure is TimeFigure.KERNEL else samples
        enough = len(samples) >= policy.min_samples and sum(samples) * launches >= policy.min_time_s
        if enough and _judge(judged, policy, tick)[0]:
            break
        elapsed = backend.host_time() - began
        if elapsed >= policy.timeout_s or len(samples) >= policy.max_samples:
            break
        # grow geometrically, but never far past the time budget, the sample cap, or what one hold covers
        spent = max(backend.host_time() - before, 1e-9) / batch
        budget = int((policy.timeout_s - elapsed) / spent) + 1
        coverable = int(MAX_HOLD_S / (1.5 * max(enqueue_s, 1e-9)))
        batch = max(1, min(len(samples), budget, coverable, policy.max_samples - len(samples)))
    checked = after(sample_fn) if after is not None else ""
    measured = _figures(samples, traces, figure, policy, enough, after_check=checked, launch=launch,
                        warmup_runs=warmups, launches_per_sample=launches)
    return dataclasses.replace(measured, retaken=throttle.discarded, throttled=" ".join(sorted(throttle.reasons)),
                               retake_clean=throttle.clean)


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
