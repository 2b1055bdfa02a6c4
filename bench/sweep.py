"""Run points: skip rules → correctness gate → timing → one result row each, appended as it finishes.

A point that fails (wrong answer, OOM, compile error, bad config) is recorded as ``failed`` with its
error and the sweep goes on; a point that must not run is recorded as ``skipped`` with the reason.
"""

from __future__ import annotations

import csv
import datetime as dt
import random
import sys
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch

from bench import device as devices
from bench.results import (
    SCHEMA_VERSION,
    Mode,
    ResultWriter,
    Status,
    columns_for,
    read_sidecar,
    sidecar_path,
    write_sidecar,
)
from bench.suites import Point
from bench.timing import Backend, CudaBackend, SamplingPolicy, measure
from kernels import registry
from kernels.check import check_point
from kernels.spec import UsageError


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based), e.g. 2/4: every 4th point starting at the 2nd."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> "Shard":
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise UsageError(f"--shard {text!r}: expected i/n with integers, e.g. 1/4") from None
        if not 1 <= index <= count:
            raise UsageError(f"--shard {text!r}: need 1 ≤ i ≤ n")
        return cls(index, count)

    def select(self, points: list[Point]) -> list[Point]:
        # by position in the deterministic expansion order: shards are disjoint and together complete
        return [p for i, p in enumerate(points) if i % self.count == self.index - 1]


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


@dataclass(frozen=True)
class Summary:
    out: Path
    counts: dict[str, int]
    run_id: str


def point_key_text(kernel: str, impl: str, dtype: str, axis_values: Iterable[object], l2: str,
                   graph: str) -> tuple[str, ...]:
    """A point's identity as the CSV stores it (all text), for --resume."""
    return (kernel, impl, dtype, *(str(v) for v in axis_values), l2, graph)


def _recorded_keys(path: Path) -> set[tuple[str, ...]]:
    if not path.exists() or path.stat().st_size == 0:
        return set()
    keys = set()
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            spec = registry.get(row["kernel"])
            keys.add(point_key_text(row["kernel"], row["impl"], row["dtype"], (row[a.name] for a in spec.axes),
                                    row["l2"], row["graph"]))
    return keys


def _seed_for(point: Point, run_seed: int) -> int:
    return (zlib.crc32(repr(point.key()).encode()) ^ run_seed) & 0x7FFFFFFF


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


MEMORY_FRACTION = 0.85  # of device memory one point may hold: room for the allocator, graphs, the L2 flush

# Errors after which the CUDA context is unusable: every later point in this process would fail too.
_STICKY_CUDA_ERRORS = ("illegal memory access", "unspecified launch failure", "illegal instruction",
                       "misaligned address", "device-side assert")


def sticky_cuda_error(message: str) -> bool:
    return any(text in message for text in _STICKY_CUDA_ERRORS)


class ContextLost(UsageError):
    """The CUDA context died; the rows so far are kept and --resume continues after the bad point."""


def new_run_id(now: dt.datetime, label: str) -> str:
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{label or 'adhoc'}"


class Runner:
    """Runs points on one target and turns each into a result row."""

    def __init__(self, target: devices.Target, policy: SamplingPolicy, run_seed: int,
                 backend: Backend | None = None):
        self.target = target
        self.policy = policy
        self.run_seed = run_seed
        self.mode = Mode.INTERPRET if target.caps.interpret else Mode.CUDA
        self.backend = backend
        self._last_error = ""
        if backend is None and self.mode is Mode.CUDA:
            self.backend = CudaBackend(target.caps.l2_bytes)

    def key_text(self, point: Point) -> tuple[str, ...]:
        policy = self.policy.with_overrides(point.timing)
        return point_key_text(point.kernel, point.impl, point.case.dtype.value, (v for _, v in point.case.values),
                              policy.l2.value, policy.graph.value)

    def row(self, point: Point, base: dict) -> dict:
        spec = registry.get(point.kernel)
        policy = self.policy.with_overrides(point.timing)
        impl = spec.impl(point.impl)
        case = point.case
        flops = spec.flops(case)
        nbytes = spec.bytes_for(case, impl)
        footprint = spec.footprint_bytes(case, impl)
        row = {
            **base,
            "kernel": case.kernel, "impl": impl.name, "dtype": case.dtype.value, "label": point.label,
            **case.as_dict(),
            "flops": flops, "bytes": nbytes, "intensity": flops / nbytes if nbytes else None,
            "footprint_bytes": footprint,
            "l2_resident": bool(self.target.caps.l2_bytes and footprint < self.target.caps.l2_bytes),
            "l2": policy.l2.value, "graph": policy.graph.value,
            "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        reason = point.skip or spec.skip_reason(case, impl, self.target.caps)
        memory = self.target.caps.memory_bytes
        if not reason and memory and footprint > MEMORY_FRACTION * memory:
            reason = (f"needs {footprint / 2**30:.1f} GiB resident, more than {MEMORY_FRACTION:.0%} of the "
                      f"device's {memory / 2**30:.1f} GiB")
        if reason:
            return {**row, "status": Status.SKIPPED, "error": reason}
        return {**row, **self._run(spec, impl, point, policy)}

    def _run(self, spec, impl, point: Point, policy: SamplingPolicy) -> dict:
        checked = None
        self._last_error = ""
        try:
            checked = check_point(spec, impl, point.case, self.target.torch_device, _seed_for(point, self.run_seed))
            result = {"rel_err": checked.rel_err, "config": checked.launch.config()}
            if not checked.ok:
                return {**result, "status": Status.FAILED, "error": checked.message()}
            if self.mode is Mode.INTERPRET:
                return {**result, "status": Status.OK}
            m = measure(checked.launch.run, self.backend, policy)
            clock, throttle = devices.clock_and_throttle(self.target.torch_device.index or 0)
            flops, nbytes = spec.flops(point.case), spec.bytes_for(point.case, impl)
            return {
                **result, "status": Status.OK,
                "median_s": m.median_s, "p20_s": m.p20_s, "p80_s": m.p80_s, "cv": m.cv, "samples": m.samples,
                "tflops": flops / m.median_s / 1e12, "gbps": nbytes / m.median_s / 1e9,
                "launch": m.launch, "sm_clock_mhz": clock, "throttle": throttle,
                "error": "" if m.converged else f"noise {m.cv:.2%} above target at timeout",
            }
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


def _progress(points: list[Point], enabled: bool):
    if not enabled:
        return points
    from tqdm import tqdm

    return tqdm(points, unit="pt", dynamic_ncols=True, file=sys.stderr, disable=not sys.stderr.isatty())


def run_sweep(points: list[Point], options: SweepOptions, target: devices.Target,
              backend: Backend | None = None, on_row: Callable[[dict], None] | None = None) -> Summary:
    """Measure ``points`` on ``target`` into ``options.out``; rows are flushed one by one."""
    out = options.out
    if options.shard:
        points = options.shard.select(points)
    specs = {p.kernel: registry.get(p.kernel) for p in points}
    columns = columns_for(a.name for spec in specs.values() for a in spec.axes)
    if out.exists() and out.stat().st_size > 0 and not options.resume:
        raise UsageError(f"{out} exists: pass --resume to continue it, or choose another --out")
    now = dt.datetime.now(dt.timezone.utc)
    done = _recorded_keys(out) if options.resume else set()
    if options.resume and sidecar_path(out).exists():
        metadata = read_sidecar(out)
        metadata.setdefault("resumed", []).append(now.isoformat(timespec="seconds"))
        run_seed = int(metadata["seed"])
    else:
        run_seed = options.seed if options.seed is not None else random.SystemRandom().randrange(2**31)
        metadata = {
            "run_id": out.stem,  # results/<device-slug>/<run_id>.csv
            "started": now.isoformat(timespec="seconds"),
            "mode": (Mode.INTERPRET if target.caps.interpret else Mode.CUDA).value,
            "suite": options.suite, "seed": run_seed, "command": options.command,
            "shard": f"{options.shard.index}/{options.shard.count}" if options.shard else "",
            "device": target.metadata, "software": devices.software(), **devices.git_commit(),
            "timing": {k: (v.value if hasattr(v, "value") else v) for k, v in vars(options.policy).items()},
        }
    run_id = metadata["run_id"]
    runner = Runner(target, options.policy, run_seed, backend)
    todo = [p for p in points if runner.key_text(p) not in done]
    base = {"schema_version": SCHEMA_VERSION, "run_id": run_id, "suite": options.suite, "device": target.slug,
            "mode": runner.mode.value}
    counts: Counter[str] = Counter()
    with ResultWriter(out, columns) as writer:
        write_sidecar(out, metadata)
        for point in _progress(todo, options.progress):
            row = runner.row(point, base)
            writer.write(row)
            counts[Status(row["status"]).value] += 1
            if on_row:
                on_row(row)
            if runner.mode is Mode.CUDA and sticky_cuda_error(str(row.get("error", ""))):
                raise ContextLost(f"CUDA context lost at {point.case.label()} {point.impl} ({row['error']}); "
                                  f"rows so far are in {out}: rerun with --out {out} --resume")
    metadata["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    if runner.mode is Mode.CUDA:
        metadata["device_after"] = devices.nvml_snapshot(target.torch_device.index or 0)
    write_sidecar(out, metadata)
    return Summary(out, dict(counts), run_id)
