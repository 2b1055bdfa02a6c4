"""Run points: skip rules → correctness gate → timing → one result row each, appended as it finishes.

A point that fails (wrong answer, OOM, compile error, bad config) is recorded as ``failed`` with its
error and the sweep goes on; a point that must not run is recorded as ``skipped`` with the reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import math
import random
import sys
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from bench import device as devices
from bench.resume import continued_run, point_key_text, recorded
from bench.results import SCHEMA_VERSION, Mode, ResultWriter, Status, columns_for, write_sidecar
from bench.shards import Shard
from bench.suites import Point
from bench.cuda_backend import CudaBackend
from bench.timeline import TimeFigure
from bench.timing import Backend, Copies, SamplingPolicy, measure, tuning_benchmark
from kernels import registry
from kernels.check import Recorded, after_timing, changed_inputs, check_point
from kernels.spec import UsageError, map_tensors
from kernels.tuning import TUNER


@dataclass(frozen=True)
class SweepOptions:
    out: Path
    suite: str = ""
    interpret: bool = False
    seed: int | None = None
    resume: bool = False
    shard: Shard | None = None
    policy: SamplingPolicy = SamplingPolicy()
    progress: bool = True
    command: str = ""
    extra: dict = dataclasses.field(default_factory=dict)  # more sidecar metadata (e.g. a plan's preflight)


@dataclass(frozen=True)
class Summary:
    out: Path
    counts: dict[str, int]
    run_id: str
    note: str = ""  # e.g. a partial last row dropped on resume
    left: tuple[Point, ...] = ()  # points a stop() left unrun


def _finite(value: float) -> float | None:
    """A measured figure, or empty where it was not measured (no kernel trace, one kernel per sample)."""
    return value if math.isfinite(value) else None


def _seed_for(point: Point, run_seed: int) -> int:
    return (zlib.crc32(repr(point.key()).encode()) ^ run_seed) & 0x7FFFFFFF


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


MEMORY_FRACTION = 0.85  # of device memory one point may hold: room for the allocator, graphs, the L2 flush
COPY_BUDGET_FRACTION = 0.25  # of device memory the rotating input copies of a short kernel may take
COPY_BUDGET_BYTES = 8 << 30

# Errors after which the CUDA context is unusable: every later point in this process would fail too.
_STICKY_CUDA_ERRORS = ("illegal memory access", "unspecified launch failure", "illegal instruction",
                       "misaligned address", "device-side assert")


def sticky_cuda_error(message: str) -> bool:
    return any(text in message for text in _STICKY_CUDA_ERRORS)


class ContextLost(UsageError):
    """The CUDA context died; the rows so far are kept and --resume continues after the bad point."""


def new_run_id(now: dt.datetime, label: str) -> str:
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{label or 'adhoc'}"


def clone_inputs(value: Any) -> Any:
    """A deep copy of a point's inputs: tensors cloned (strides kept), dataclasses and containers rebuilt."""
    return map_tensors(value, lambda _, tensor: tensor.clone())


def point_key(point: Point, policy: SamplingPolicy) -> tuple[str, ...]:
    """A point's identity as its CSV row spells it (with the l2/graph policy it runs under), for --resume."""
    policy = policy.with_overrides(point.timing)
    return point_key_text(point.kernel, point.impl, point.case.dtype.value, (v for _, v in point.case.values),
                          policy.l2.value, policy.graph.value)


def describe(point: Point, policy: SamplingPolicy, l2_bytes: int) -> dict:
    """A row's identity and cost columns, from the point alone: what it is, before anything runs."""
    spec = registry.get(point.kernel)
    impl = spec.impl(point.impl)
    case = point.case
    flops, nbytes, footprint = spec.flops(case), spec.bytes_for(case, impl), spec.footprint_bytes(case, impl)
    return {
        "kernel": case.kernel, "impl": impl.name, "dtype": case.dtype.value, "label": point.label,
        **case.as_dict(),
        "flops": flops, "bytes": nbytes, "intensity": flops / nbytes if nbytes else None,
        "footprint_bytes": footprint, "l2_resident": bool(l2_bytes and footprint < l2_bytes),
        "l2": policy.l2.value, "graph": policy.graph.value,
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def base_row(run_id: str, suite: str, target: devices.Target) -> dict:
    """The columns every row of a run shares."""
    return {"schema_version": SCHEMA_VERSION, "run_id": run_id, "suite": suite, "device": target.slug,
            "mode": (Mode.INTERPRET if target.caps.interpret else Mode.CUDA).value, "gpu": devices.gpu_label(target)}


def skip_reason(point: Point, caps) -> str | None:
    """Why ``point`` must not run on a device with ``caps`` (the suite's, the spec's, or memory), or None."""
    spec = registry.get(point.kernel)
    impl = spec.impl(point.impl)
    reason = point.skip or spec.skip_reason(point.case, impl, caps)
    footprint = spec.footprint_bytes(point.case, impl)
    if not reason and caps.memory_bytes and footprint > MEMORY_FRACTION * caps.memory_bytes:
        reason = (f"needs {footprint / 2**30:.1f} GiB resident, more than {MEMORY_FRACTION:.0%} of the "
                  f"device's {caps.memory_bytes / 2**30:.1f} GiB")
    return reason or None


class Runner:
    """Runs points on one target and turns each into a result row."""

    def __init__(self, target: devices.Target, policy: SamplingPolicy, run_seed: int,
                 backend: Backend | None = None, monitor: Callable[[], devices.ClockMonitor] | None = None):
        self.target = target
        self.policy = policy
        self.run_seed = run_seed
        self.mode = Mode.INTERPRET if target.caps.interpret else Mode.CUDA
        self.backend = backend
        self.nvml_errors: Counter[str] = Counter()
        self._last_error = ""
        if backend is None and self.mode is Mode.CUDA:
            self.backend = CudaBackend(target.caps.l2_bytes, policy.flush)
        index = target.torch_device.index or 0
        self._monitor = monitor or (functools.partial(devices.ClockMonitor, index) if self.mode is Mode.CUDA
                                    else None)


    def row(self, point: Point, base: dict) -> dict:
        spec = registry.get(point.kernel)
        policy = self.policy.with_overrides(point.timing)
        impl = spec.impl(point.impl)
        row = {**base, **describe(point, policy, self.target.caps.l2_bytes)}
        reason = skip_reason(point, self.target.caps)
        if reason:
            return {**row, "status": Status.SKIPPED, "error": reason}
        return {**row, **self._run(spec, impl, point, policy, row["footprint_bytes"])}

    def _copies(self, impl, point: Point, checked, footprint: int, timed: list[Recorded]) -> Copies:
        """Rotating copies of the point's inputs for a short kernel; each built copy joins ``timed``.

        Cold mode flushes L2 before every sample, and each copy is touched once per sample, so every
        launch reads its own inputs from DRAM however small they are: distinct copies suffice, their
        total need not exceed 2× L2 (which would take thousands of copies of a tiny point).
        """
        budget = min(COPY_BUDGET_BYTES, COPY_BUDGET_FRACTION * (self.target.caps.memory_bytes or COPY_BUDGET_BYTES))
        per_copy = max(footprint, 1)

        def make(count: int) -> list[Callable[[], object]]:
            for _ in range(count - 1):
                inputs = clone_inputs(checked.inputs)
                timed.append(Recorded(inputs, impl.build(inputs, point.case)))
            return [copy.run for copy in timed[:count]]

        return Copies(make, least=1, most=max(1, int(budget // per_copy)))

    def _after(self, spec, point: Point, checked, timed: list[Recorded], replay) -> str:
        """The check after sampling: inputs as they were, and every timed copy right when replayed as timed."""
        moved = changed_inputs(checked.inputs, checked.fingerprint)
        if moved:
            return f"after timing: the runs changed input {moved!r}"
        expected = spec.reference(checked.inputs, point.case)
        return after_timing(timed, replay, expected, spec.tolerance[point.case.dtype], self.target.torch_device)

    def _timed(self, spec, impl, point: Point, policy: SamplingPolicy, checked, footprint: int) -> dict:
        timed = [Recorded(checked.inputs, checked.launch)]
        copies = self._copies(impl, point, checked, footprint, timed)
        after = functools.partial(self._after, spec, point, checked, timed)
        figure = TimeFigure.EVENT if "latency" in spec.tags else TimeFigure.KERNEL
        monitor = self._monitor() if self._monitor else None
        if monitor is not None:
            with monitor:
                m = measure(timed[0].run, self.backend, policy, copies, figure, after)
            reading = monitor.reading
            if reading.error:
                self.nvml_errors[reading.error] += 1
            clock, throttle = reading.min_sm_mhz, " ".join(reading.throttle)
        else:
            m = measure(timed[0].run, self.backend, policy, copies, figure, after)
            clock, throttle = None, ""
        if m.retaken:  # samples thrown away for throttling and taken again: counted in the row (no schema change)
            seen_only_by_discarded = set(m.throttled.split()) if m.retake_clean else set()
            kept = [name for name in throttle.split() if name not in seen_only_by_discarded]
            throttle = " ".join([*kept, f"retaken:{m.retaken}"])
        flops, nbytes = spec.flops(point.case), spec.bytes_for(point.case, impl)
        return {
            "median_s": m.median_s, "p20_s": m.p20_s, "p80_s": m.p80_s, "cv": _finite(m.cv), "ci_rel": _finite(m.ci_rel),
            "samples": m.samples, "converged": m.converged, "launches_per_sample": m.launches_per_sample,
            "tflops": flops / m.median_s / 1e12, "gbps": nbytes / m.median_s / 1e9,
            "launch": m.launch, "sm_clock_mhz": clock, "throttle": throttle,
            "status": Status.FAILED if m.after_check else Status.OK, "error": m.after_check or m.warning,
            "timer": m.timer, "event_s": m.event_s, "kernel_s": _finite(m.kernel_s),
            "overhead_s": _finite(m.overhead_s), "gap_s": _finite(m.gap_s),
        }

    def _run(self, spec, impl, point: Point, policy: SamplingPolicy, footprint: int) -> dict:
        checked = None
        self._last_error = ""
        try:
            checked = check_point(spec, impl, point.case, self.target.torch_device, _seed_for(point, self.run_seed))
            result = {"rel_err": checked.rel_err, "max_elem_err": checked.element.ratio,
                      "config": checked.launch.config(), "tune_s": checked.first_call_s}
            if not checked.ok:
                return {**result, "status": Status.FAILED, "error": checked.message()}
            if self.mode is Mode.INTERPRET:
                return {**result, "status": Status.OK}
            return {**result, "status": Status.OK, **self._timed(spec, impl, point, policy, checked, footprint)}
        except torch.cuda.OutOfMemoryError:
            return {"status": Status.FAILED, "error": "out of memory"}
        except Exception as exc:  # a compile error or bad config fails this point, not the sweep
            self._last_error = _first_line(exc)
            return {"status": Status.FAILED, "error": self._last_error}
        finally:
            del checked
            if self.target.torch_device.type == "cuda" and not sticky_cuda_error(self._last_error):
                torch.cuda.synchronize()
                torch.cuda.empty_cache()


def pending(points: list[Point], options: SweepOptions) -> list[Point]:
    """The points a sweep with ``options`` would run: its shard, less what ``--resume`` finds in ``out``.

    Reads ``out`` without repairing it (a dry run changes nothing)."""
    if options.shard:
        points = options.shard.select(points)
    done = recorded(options.out, repair=False).keys if options.resume and options.out.is_file() else frozenset()

    return [p for p in points if point_key(p, options.policy) not in done]


def _progress(points: list[Point], enabled: bool):
    if not enabled:
        return points
    from tqdm import tqdm

    return tqdm(points, unit="pt", dynamic_ncols=True, file=sys.stderr, disable=not sys.stderr.isatty())


@contextlib.contextmanager
def short_tuning(backend: Backend | None):
    """While a sweep runs, the autotuner benchmarks each config with a few cold-L2 runs on ``backend``
    (``tuning_benchmark``), not Triton's 100 ms default; the previous benchmark is restored after."""
    saved = TUNER.benchmark
    if backend is not None:
        TUNER.benchmark = functools.partial(tuning_benchmark, backend)
    try:
        yield
    finally:
        TUNER.benchmark = saved


def timing_record(policy: SamplingPolicy) -> dict:
    return {k: (v.value if hasattr(v, "value") else v) for k, v in vars(policy).items()}


def new_metadata(out: Path, options: SweepOptions, target: devices.Target, seed: int) -> dict:
    """The sidecar of a new run: identity, device, software, commit, seed, timing policy."""
    return {
        "run_id": out.stem,  # results/<device-slug>/<run_id>.csv
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "mode": (Mode.INTERPRET if target.caps.interpret else Mode.CUDA).value, "suite": options.suite,
        "seed": seed, "command": options.command, "shard": str(options.shard) if options.shard else "",
        "device": target.metadata, "software": devices.software(), **devices.git_commit(),
        "timing": timing_record(options.policy), **options.extra,
    }


def columns_of(points: list[Point]) -> list[str]:
    return columns_for(a.name for kernel in dict.fromkeys(p.kernel for p in points)
                       for a in registry.get(kernel).axes)


def run_sweep(points: list[Point], options: SweepOptions, target: devices.Target,
              backend: Backend | None = None, on_row: Callable[[dict], None] | None = None,
              stop: Callable[[Point], bool] | None = None) -> Summary:
    """Measure ``points`` on ``target`` into ``options.out``; rows are flushed one by one.

    ``stop`` is asked before each point (given it); when it says True the sweep ends there, every
    row so far kept, and ``Summary.left`` counts the points not run.
    """
    out = options.out
    if not points:
        raise UsageError("nothing selected: the sweep has no points (check --axis/--impl/--dtype values)")
    if options.shard:
        points = options.shard.select(points)
    columns = columns_of(points)
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory: give a results file, e.g. {out / 'run.csv'}")
    if out.exists() and out.stat().st_size > 0 and not options.resume:
        raise UsageError(f"{out} exists: pass --resume to continue it, or choose another --out")
    now = dt.datetime.now(dt.timezone.utc)
    mode = (Mode.INTERPRET if target.caps.interpret else Mode.CUDA).value
    shard = str(options.shard) if options.shard else ""
    note = ""
    done: frozenset = frozenset()
    if options.resume and out.exists() and out.stat().st_size > 0:
        metadata = continued_run(out, seed=options.seed, suite=options.suite, mode=mode, shard=shard,
                                 timing=timing_record(options.policy))
        previous = recorded(out)
        done, note = previous.keys, previous.note
        metadata.setdefault("resumed", []).append(now.isoformat(timespec="seconds"))
        run_seed = int(metadata["seed"])
    else:
        run_seed = options.seed if options.seed is not None else random.SystemRandom().randrange(2**31)
        metadata = new_metadata(out, options, target, run_seed)
    run_id = metadata["run_id"]
    runner = Runner(target, options.policy, run_seed, backend)
    todo = [p for p in points if point_key(p, options.policy) not in done]
    base = base_row(run_id, options.suite, target)
    counts: Counter[str] = Counter()
    left: list[Point] = []
    try:
        writer = ResultWriter(out, columns)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
    with writer, short_tuning(runner.backend):
        write_sidecar(out, metadata)
        for done_count, point in enumerate(_progress(todo, options.progress)):
            if stop is not None and stop(point):
                left = todo[done_count:]
                break
            row = runner.row(point, base)
            writer.write(row)
            counts[Status(row["status"]).value] += 1
            if on_row:
                on_row(row)
            if runner.mode is Mode.CUDA and sticky_cuda_error(str(row.get("error", ""))):
                raise ContextLost(f"CUDA context lost at {point.case.label()} {point.impl} ({row['error']}); "
                                  f"rows so far are in {out}: rerun with --out {out} --resume")
    metadata["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    if runner.nvml_errors:
        metadata["nvml_errors"] = dict(runner.nvml_errors)  # why clock columns are empty
    if runner.mode is Mode.CUDA:
        metadata["device_after"] = devices.nvml_snapshot(target.torch_device.index or 0)
    write_sidecar(out, metadata)
    return Summary(out, dict(counts), run_id, note, tuple(left))
