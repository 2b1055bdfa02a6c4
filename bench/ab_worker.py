"""One side of ``rooflab ab``: a worker process that measures with this checkout's harness and one
revision's kernels (``python -m bench.ab_worker CONFIG_JSON``; started by :mod:`bench.ab`).

The harness (``bench/``: the gate's driver, the sampler, the row format) is the checkout running the
command, so both sides are timed by the same code; the ``kernels`` package is loaded from the
revision's worktree before anything imports it, so each side runs its own kernels. The worker is
pinned to one GPU by ``CUDA_VISIBLE_DEVICES`` (set by the coordinator).

Protocol: JSON lines. The coordinator writes requests on stdin; the worker answers on the stdout it
was started with (anything the kernels or libraries print goes to stderr instead):

    → {"op": "prepare", "key": [...]}   skip rules, gate, warm-up  ← {"status": ok|failed|skipped, "error"}
    → {"op": "repeat"}                  one short sample set  ← {"median_s", "samples", "ci_rel"} or {"error"}
    → {"op": "finish", "why": ...}      the point's row (its repeats pooled; untimed: skipped, why) written
    → {"op": "stop"}                    sidecar finished, exit 0

At start it answers {"event": "ready", "keys": [...], "device": {...}} with the keys of the points it
selected (the coordinator judges the points both sides have), or {"event": "error", "error": ...}.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPEAT_MIN_SAMPLES = 6  # the fewest samples the median's confidence interval is defined for
REPEAT_WARMUP_RUNS = 2  # per repeat; the point is warmed up once, fully, when prepared
NOMINAL_REPEATS = 8  # a single run's minimum measured time is shared out over about this many repeats


def install_kernels(root: Path) -> None:
    """Make ``import kernels`` (and its submodules) load from ``root/kernels``, this side's revision."""
    package = root / "kernels"
    init = package / "__init__.py"
    if not init.is_file():
        raise ImportError(f"{root} has no kernels/ package at this revision")
    for name in [n for n in sys.modules if n == "kernels" or n.startswith("kernels.")]:
        del sys.modules[name]
    spec = importlib.util.spec_from_file_location("kernels", init, submodule_search_locations=[str(package)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["kernels"] = module
    spec.loader.exec_module(module)


def repeat_policy(policy, threshold: float):
    """One repeat's stopping rule: a short sample set whose median is known to within the threshold
    (the blocks' average narrows it further), a share of the point's minimum samples and time (at least
    the 6 samples the median's interval needs), a short warm-up."""
    import dataclasses

    least = max(REPEAT_MIN_SAMPLES, policy.min_samples // NOMINAL_REPEATS)
    return dataclasses.replace(policy, min_samples=least, max_noise=max(policy.max_noise, threshold),
                               min_time_s=policy.min_time_s / NOMINAL_REPEATS,
                               timeout_s=max(policy.timeout_s / NOMINAL_REPEATS, 0.05),
                               warmup_runs=REPEAT_WARMUP_RUNS, warmup_s=0.0)


def policy_from(record: dict):
    from bench.timing import FlushMode, GraphMode, L2Mode, SamplingPolicy

    kinds = {"l2": L2Mode, "graph": GraphMode, "flush": FlushMode}
    return SamplingPolicy(**{k: kinds[k](v) if k in kinds else v for k, v in record.items()})


@dataclass
class Prepared:
    """A point between prepare and finish: its row so far and, when timed, what each repeat needs."""

    point: Any
    row: dict
    done: bool = False  # skipped, failed, or (interpreter) nothing to time
    run: Callable[[], object] | None = None
    copies: Any = None
    after: Callable | None = None
    figure: Any = None
    policy: Any = None
    measurements: list = field(default_factory=list)
    clocks: list = field(default_factory=list)
    throttle: set = field(default_factory=set)
    error: str = ""
    in_use: int = 1  # rotating copies the current repeat's closure runs


class Worker:
    def __init__(self, config: dict, send: Callable[[dict], None]):
        from bench import device as devices
        from bench.results import ResultWriter, write_sidecar
        from bench.sweep import Runner, SweepOptions, base_row, columns_of, new_metadata, point_key

        self.config, self.send = config, send
        self.interpret = bool(config["interpret"])
        self.policy = policy_from(config["policy"])
        self.threshold = float(config["threshold"])
        self.target = devices.detect(interpret=self.interpret)
        self.points = select(config["selection"])
        self.keys = [list(point_key(p, self.policy)) for p in self.points]
        self.seed = int(config["seed"])
        self.runner = Runner(self.target, self.policy, self.seed)
        out = Path(config["out"])
        options = SweepOptions(out=out, suite=config["selection"].get("suite") or "", interpret=self.interpret,
                               seed=self.seed, policy=self.policy, progress=False, command=config["command"])
        self.metadata = new_metadata(out, options, self.target, self.seed)
        for told in ("git_commit_source", "git_commit_seen", "git_dirty_seen"):  # about the harness, not the side
            self.metadata.pop(told, None)
        self.metadata.update(config["revision"])  # the revision measured, not the harness's checkout
        self.base = base_row(out.stem, options.suite, self.target)
        self.out = out
        self.writer = ResultWriter(out, columns_of(self.points))
        write_sidecar(out, self.metadata)
        self.current: Prepared | None = None

    def ready(self) -> dict:
        from bench import device as devices

        meta = self.target.metadata
        return {"event": "ready", "keys": self.keys, "gpu": devices.gpu_label(self.target),
                "names": [f"{p.case.label()} {p.impl}" + (f" ({p.label})" if p.label else "") for p in self.points],
                "device": {k: meta.get(k) for k in ("name", "slug", "sm_count", "memory_bytes", "capability")}}

    def prepare(self, key: list) -> dict:
        from bench.results import Status
        from bench.sweep import describe, skip_reason

        point = self.points[self.keys.index(key)]
        policy = self.policy.with_overrides(point.timing)
        row = {**self.base, **describe(point, policy, self.target.caps.l2_bytes)}
        self.current = state = Prepared(point, row, policy=policy)
        reason = skip_reason(point, self.target.caps)
        if reason:
            state.row.update(status=Status.SKIPPED, error=reason)
            state.done = True
        elif self.interpret:
            state.row = self.runner.row(point, self.base)  # the gate alone: correctness is the verdict here
            state.done = True
        else:
            self._gate(state)
        status = Status(state.row.get("status", Status.OK)).value
        return {"status": status, "error": str(state.row.get("error") or "")}

    def _gate(self, state: Prepared) -> None:
        import torch

        from bench.results import Status
        from bench.sweep import _first_line, _seed_for
        from bench.timeline import TimeFigure
        from kernels import registry
        from kernels.check import Recorded, after_timing, changed_inputs, check_point

        point = state.point
        spec = registry.get(point.kernel)
        impl = spec.impl(point.impl)
        try:
            checked = check_point(spec, impl, point.case, self.target.torch_device, _seed_for(point, self.seed))
            state.row.update(rel_err=checked.rel_err, max_elem_err=checked.element.ratio,
                             config=checked.launch.config(), tune_s=checked.first_call_s)
            if not checked.ok:
                state.row.update(status=Status.FAILED, error=checked.message())
                state.done = True
                return
            timed = [Recorded(checked.inputs, checked.launch)]
            made = self.runner._copies(impl, point, checked, state.row["footprint_bytes"], timed)

            def make(count: int):  # the rotating copies, cloned once per point, not once per repeat
                if len(timed) < count:
                    made.make(count - len(timed) + 1)
                state.in_use = count
                return [copy.run for copy in timed[:count]]

            expected = spec.reference(checked.inputs, point.case)

            def after(replay) -> str:  # only the copies this repeat's closure runs: R may differ between repeats
                moved = changed_inputs(checked.inputs, checked.fingerprint)
                if moved:
                    return f"after timing: the runs changed input {moved!r}"
                return after_timing(timed[:state.in_use], replay, expected, spec.tolerance[point.case.dtype],
                                    self.target.torch_device)

            state.copies = type(made)(make, least=made.least, most=made.most)
            state.run, state.after = timed[0].run, after
            state.figure = TimeFigure.EVENT if "latency" in spec.tags else TimeFigure.KERNEL
            self._warm_up(state)
            state.row["status"] = Status.OK
        except torch.cuda.OutOfMemoryError:
            state.row.update(status=Status.FAILED, error="out of memory")
            state.done = True
        except Exception as exc:  # a compile error or a bad config fails this point on this side
            state.row.update(status=Status.FAILED, error=_first_line(exc))
            state.done = True

    def _warm_up(self, state: Prepared) -> None:
        """The point's warm-up, once: the warm-up runs and half a single run's warm-up time per side, so the
        two sides together spend what one run does (the gate has compiled it; from here the sides
        alternate and keep the GPU busy, its clocks up)."""
        import time

        backend, policy = self.runner.backend, state.policy
        began, runs = time.perf_counter(), 0
        while runs < policy.warmup_runs or time.perf_counter() - began < policy.warmup_s / 2:
            state.run()
            backend.synchronize()
            runs += 1
            if runs >= 10_000:
                break

    def repeat(self) -> dict:
        from bench import timing
        from bench.sweep import _first_line

        state = self.current
        if state is None or state.done or state.error:
            return {"error": "no timed point prepared"}
        policy = repeat_policy(state.policy, self.threshold)
        state.in_use = 1  # one launch per sample unless the sampler asks for copies
        monitor = self.runner._monitor() if self.runner._monitor else None
        try:
            if monitor is not None:
                with monitor:
                    m = timing.measure(state.run, self.runner.backend, policy, state.copies, state.figure, state.after)
                reading = monitor.reading
                if reading.min_sm_mhz is not None:
                    state.clocks.append(reading.min_sm_mhz)
                state.throttle.update(reading.throttle)
            else:
                m = timing.measure(state.run, self.runner.backend, policy, state.copies, state.figure, state.after)
        except Exception as exc:
            state.error = _first_line(exc)
            return {"error": state.error}
        state.measurements.append(m)
        if m.after_check:
            state.error = m.after_check
            return {"error": m.after_check}
        return {"median_s": m.median_s, "samples": m.samples * m.launches_per_sample, "ci_rel": _json_float(m.ci_rel)}

    def finish(self, why: str = "") -> dict:
        from bench.results import Status

        state, self.current = self.current, None
        if state is None:
            return {"error": "no point prepared"}
        row = state.row
        if not state.done and not state.measurements and not state.error:  # gated, then abandoned untimed
            row.update(status=Status.SKIPPED, error=f"not timed: {why or 'the A/B stopped before timing it'}"[:300])
        elif state.measurements:
            row.update(pooled(state.measurements))
            row["tflops"] = (row["flops"] or 0) / row["median_s"] / 1e12
            row["gbps"] = (row["bytes"] or 0) / row["median_s"] / 1e9
            row["sm_clock_mhz"] = min(state.clocks) if state.clocks else None
            row["throttle"] = " ".join(sorted(state.throttle))
        if state.error:
            row.update(status=Status.FAILED, error=state.error)
        self.writer.write(row)
        return {"status": Status(row["status"]).value, "error": str(row.get("error") or ""),
                **{k: row.get(k) for k in ("kernel", "dtype", "flops", "bytes", "median_s")}}

    def stop(self) -> None:
        import datetime as dt

        from bench.results import write_sidecar

        self.writer.close()
        self.metadata["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        write_sidecar(self.out, self.metadata)


def pooled(measurements: list) -> dict:
    """One side's row figures from its repeats: medians of the repeats' figures, samples summed."""
    from bench.stats import median_ci_rel

    def med(name: str) -> float | None:
        values = [getattr(m, name) for m in measurements if math.isfinite(getattr(m, name))]
        return statistics.median(values) if values else None

    medians = [m.median_s for m in measurements]
    spread = median_ci_rel(medians)
    first = measurements[0]
    warnings = sorted({m.warning for m in measurements if m.warning})
    return {"median_s": statistics.median(medians), "p20_s": med("p20_s"), "p80_s": med("p80_s"), "cv": med("cv"),
            "ci_rel": _json_float(spread if math.isfinite(spread) else max(m.ci_rel for m in measurements)),
            "samples": sum(m.samples for m in measurements), "converged": all(m.converged for m in measurements),
            "launches_per_sample": first.launches_per_sample, "launch": first.launch, "timer": first.timer,
            "event_s": med("event_s"), "kernel_s": med("kernel_s"), "overhead_s": med("overhead_s"),
            "gap_s": med("gap_s"), "error": "; ".join(warnings)[:300]}


def _json_float(value: float) -> float | None:
    return value if math.isfinite(value) else None


def select(selection: dict) -> list:
    """The points of ``--suite`` or ``--kernel/--impl/--dtype/--axis``, built with this side's kernels."""
    import argparse

    from bench.options import adhoc_points, suite_selection
    from bench.suites import expand, get_suite

    args = argparse.Namespace(**selection)
    if args.suite:
        return suite_selection(args, expand(get_suite(args.suite).sweeps), args.suite)
    return adhoc_points(args)


def serve(config: dict, requests, send: Callable[[dict], None]) -> None:
    worker = Worker(config, send)
    send(worker.ready())
    for line in requests:
        request = json.loads(line)
        op = request["op"]
        if op == "stop":
            break
        if op == "prepare":
            send(worker.prepare(request["key"]))
        elif op == "repeat":
            send(worker.repeat())
        elif op == "finish":
            send(worker.finish(request.get("why", "")))
    worker.stop()


def main(argv: list[str] | None = None, setup: Callable[[], None] | None = None) -> None:
    """Entry point; ``setup`` runs after this side's kernels are installed (the tests' fake GPU)."""
    config = json.loads((argv if argv is not None else sys.argv[1:])[0])
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # library prints go to stderr, not into the protocol

    def send(message: dict) -> None:
        answers.write(json.dumps(message) + "\n")
        answers.flush()

    if config["interpret"]:
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        install_kernels(Path(config["root"]))
        if setup is not None:
            setup()
        serve(config, sys.stdin, send)
    except Exception as exc:  # said to the coordinator, which names the side and stops with exit 2
        text = str(exc).strip().splitlines()
        send({"event": "error", "error": f"{type(exc).__name__}: {text[0] if text else ''}"[:400]})
        sys.exit(3)


if __name__ == "__main__":
    main()
