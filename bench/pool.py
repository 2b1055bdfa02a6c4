"""Every GPU of a node at once: one worker process per GPU, pulling points from one queue, longest first.

Each worker is pinned to its GPU with ``CUDA_VISIBLE_DEVICES`` (it sees it as device 0) and writes
its own rows file and sidecar (``<out stem>.gpu<N>.w<K>.part`` + ``.json``, with that GPU's UUID and
fingerprint); at the end the parts are merged into ``out`` — one run — and removed. Points go out
longest first by the time model, so the GPUs finish together although point costs differ 1000×.

A worker that dies (a lost CUDA context, a crash, a kill) has the point it held recorded ``failed``
with the reason in its part file, and a fresh worker takes its GPU's place; a GPU whose worker dies
twice in a row leaves the pool and is named in the summary. Ctrl-C stops every worker; the rows
written so far are merged, and ``--resume`` continues. A coordinator killed outright (kill -9) takes
its workers with it (Linux: the parent-death signal; elsewhere they end quietly at their next
message), and its parts are merged first of all on the next run — before its seed is chosen, since
they hold the run's.

``replicate=True`` gives every GPU every point instead (the node health check: ``rooflab ceilings
--gpus all``), each GPU's rows in its own run file, not merged.
"""

from __future__ import annotations

import ctypes
import dataclasses
import multiprocessing as mp
import os
import signal
import time
from multiprocessing.connection import wait as mp_wait
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from bench.merge import merge_runs
from bench.resume import repair_partial_line
from bench.results import ResultWriter, Status, sidecar_path, write_sidecar
from bench.suites import Point
from bench.sweep import SweepOptions, columns_of, describe, pending
from kernels.errors import UsageError

WORKER_FAILURES_ALLOWED = 2  # consecutive deaths before a GPU leaves the pool
POLL_S = 0.1
PR_SET_PDEATHSIG = 1  # prctl(2): the signal this process gets when its parent dies


def parse_gpus(text: str, count: int) -> list[int]:
    """``all`` or a comma list of CUDA indices, checked against the ``count`` GPUs present."""
    if count < 1:
        raise UsageError("--gpus: no CUDA device found (use --interpret for the CPU, or leave --gpus out)")
    if text.strip().lower() == "all":
        return list(range(count))
    try:
        gpus = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--gpus {text!r}: expected all or a comma list of indices, e.g. --gpus 0,1,3") from None
    bad = [g for g in gpus if not 0 <= g < count]
    if not gpus or bad or len(set(gpus)) != len(gpus):
        raise UsageError(f"--gpus {text!r}: give distinct indices in 0…{count - 1}, or all")
    return gpus


def part_path(out: Path, gpu: int, worker: int) -> Path:
    return out.with_name(f"{out.stem}.gpu{gpu}.w{worker}.part")


def leftover_parts(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f"{out.stem}.gpu*.w*.part"))


# ---------------------------------------------------------------------------------------------
# The worker (a separate process; one pipe to the coordinator, so a killed worker wedges nothing)
# ---------------------------------------------------------------------------------------------


def worker_main(gpu: int, worker: int, part: Path, points: list[Point], options: SweepOptions, seed: int,
                interpret: bool, conn) -> None:
    """Run the points the coordinator sends (``("run", index)``; ``("stop",)`` ends) into ``part``."""
    _die_with_parent()
    os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)  # before the first CUDA call: this GPU is device 0
    if interpret:
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        _work(worker, part, points, options, seed, interpret, conn)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the coordinator reports it
        os._exit(130)
    except (EOFError, BrokenPipeError, ConnectionResetError):  # the coordinator is gone: no one to tell
        os._exit(0)


def _die_with_parent() -> None:
    """On Linux, have the kernel kill this worker when its coordinator dies, even by SIGKILL."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return  # not Linux: the closed pipe ends the worker at its next message
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    parent = mp.parent_process()
    if parent is not None and os.getppid() != parent.pid:
        os._exit(0)  # it died before the signal was asked for


def _work(worker, part, points, options, seed, interpret, conn) -> None:
    from bench import device as devices
    from bench.sweep import Runner, base_row, new_metadata, short_tuning, sticky_cuda_error

    target = devices.detect(interpret=interpret)
    runner = Runner(target, options.policy, seed)
    metadata = new_metadata(part, options, target, seed)
    metadata["worker"] = {"gpu": devices.gpu_label(target), "worker": worker, "pid": os.getpid()}
    base = base_row(options.out.stem, options.suite, target)
    write_sidecar(part, metadata)
    conn.send(("ready", {"base": base, "l2_bytes": target.caps.l2_bytes}))
    with ResultWriter(part, columns_of(points)) as writer, short_tuning(runner.backend):
        while (message := conn.recv())[0] == "run":
            index = message[1]
            row = runner.row(points[index], base)
            writer.write(row)
            conn.send(("done", index, Status(row["status"]).value))
            if runner.mode.value == "cuda" and sticky_cuda_error(str(row.get("error", ""))):
                os._exit(3)  # the context is gone: a fresh process takes this GPU
    metadata["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    write_sidecar(part, metadata)


# ---------------------------------------------------------------------------------------------
# The coordinator
# ---------------------------------------------------------------------------------------------


@dataclass
class _Worker:
    id: int
    gpu: int
    process: mp.Process
    conn: object
    part: Path
    todo: list[int] | None = None  # replicate mode: this GPU's own remaining points
    holding: int | None = None  # the point index sent to it and not reported done
    info: dict = field(default_factory=dict)  # from its "ready" message: the base row, the L2 size


@dataclass
class PoolSummary:
    out: Path
    counts: Counter = field(default_factory=Counter)
    dropped: list[int] = field(default_factory=list)  # GPUs taken out of the pool
    replaced: int = 0
    files: list[Path] = field(default_factory=list)
    interrupted: bool = False
    left: tuple[Point, ...] = ()  # points neither run nor recorded (a budget, or every GPU dropped)

    def line(self) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self.counts.items())) or "nothing to do"
        extra = f"; {self.replaced} worker(s) replaced" if self.replaced else ""
        if self.dropped:
            extra += f"; GPU(s) {', '.join(map(str, self.dropped))} left the pool after failing twice in a row"
        if self.left:
            extra += f"; {len(self.left)} points not run (continue with --resume)"
        return f"{self.out}: {counts}{extra}"


class Pool:
    """Runs ``points`` on ``gpus``; ``on_event(kind, worker, detail)`` sees every worker message (tests);
    ``stop(point)`` ends the handing out of points (a budget)."""

    def __init__(self, points: list[Point], options: SweepOptions, gpus: list[int], *, interpret: bool = False,
                 seed: int, order: Callable[[Point], float] | None = None, replicate: bool = False,
                 on_event: Callable[..., None] | None = None, stop: Callable[[Point], bool] | None = None,
                 columns: list[str] | None = None):
        self.points, self.options, self.gpus = points, options, gpus
        self.columns = columns or columns_of(points)  # of a new merged file: the whole sweep's, not the rest's
        self.interpret, self.seed, self.replicate = interpret, seed, replicate
        self.on_event = on_event or (lambda *a: None)
        self.stop = stop
        self.context = mp.get_context("spawn")
        indices = list(range(len(points)))
        if order is not None:
            indices.sort(key=lambda i: order(points[i]), reverse=True)  # longest first
        self.queue = list(indices)  # shared mode: what is still to hand out, in order
        self.order = indices
        self.closed = False  # shared mode: nothing more will be handed out
        self.workers: dict[int, _Worker] = {}
        self.failures: Counter = Counter()  # consecutive deaths per GPU
        self.next_id = 0
        self.summary = PoolSummary(options.out)

    def _out_for(self, gpu: int) -> Path:
        out = self.options.out
        return out.with_name(f"{out.stem}.gpu{gpu}.csv") if self.replicate else out

    def _spawn(self, gpu: int, todo: list[int] | None = None) -> None:
        self.next_id += 1
        part = part_path(self._out_for(gpu), gpu, self.next_id)
        options = dataclasses.replace(self.options, out=self._out_for(gpu))
        ours, theirs = self.context.Pipe()
        process = self.context.Process(target=worker_main, name=f"rooflab-gpu{gpu}-w{self.next_id}", daemon=True,
                                       args=(gpu, self.next_id, part, self.points, options, self.seed, self.interpret,
                                             theirs))
        process.start()
        theirs.close()
        self.workers[self.next_id] = _Worker(self.next_id, gpu, process, ours, part, todo)

    def run(self) -> PoolSummary:
        for gpu in self.gpus:
            self._spawn(gpu, list(self.order) if self.replicate else None)
        try:
            while self.workers:
                ready = mp_wait([w.conn for w in self.workers.values()], timeout=POLL_S)
                for conn in ready:
                    worker = next((w for w in self.workers.values() if w.conn is conn), None)
                    if worker is not None:
                        self._receive(worker)
                self._reap()
        except KeyboardInterrupt:
            self.summary.interrupted = True
            for worker in self.workers.values():
                worker.process.terminate()
            for worker in self.workers.values():
                worker.process.join(timeout=10)
        self._merge()
        return self.summary

    def _next(self, worker: _Worker) -> int | None:
        """The next point for ``worker``: its own list (replicate), else the shared order, until stop()."""
        if worker.todo is not None:
            return worker.todo.pop(0) if worker.todo else None
        if self.closed or not self.queue:
            self.closed = True
            return None
        if self.stop is not None and self.stop(self.points[self.queue[0]]):
            self.closed = True
            return None
        return self.queue.pop(0)

    def _send_next(self, worker: _Worker) -> None:
        index = self._next(worker)
        worker.holding = index
        try:
            worker.conn.send(("run", index) if index is not None else ("stop",))
        except (BrokenPipeError, OSError):
            return  # it died: _reap records it
        self.on_event("sent", worker, [index])

    def _receive(self, worker: _Worker) -> None:
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            return  # it died: _reap records it
        kind, *detail = message
        if kind == "ready":
            worker.info = detail[0]
        elif kind == "done":
            worker.holding = None
            self.failures[worker.gpu] = 0
            self.summary.counts[detail[1]] += 1
        self.on_event(kind, worker, detail)
        self._send_next(worker)

    def _reap(self) -> None:
        for worker in list(self.workers.values()):
            if worker.process.is_alive():
                continue
            while worker.conn.poll():  # what it said before it died
                try:
                    kind, *detail = worker.conn.recv()
                except (EOFError, OSError):
                    break
                if kind == "done":
                    worker.holding = None
                    self.summary.counts[detail[1]] += 1
            worker.process.join()
            worker.conn.close()
            del self.workers[worker.id]
            if worker.process.exitcode != 0:
                self._record_death(worker)

    def _record_death(self, worker: _Worker) -> None:
        reason = f"worker for GPU {worker.gpu} died (exit code {worker.process.exitcode})"
        if worker.holding is not None and self._write_failed(worker, self.points[worker.holding], reason):
            self.summary.counts[Status.FAILED.value] += 1
        self.failures[worker.gpu] += 1
        if self.failures[worker.gpu] >= WORKER_FAILURES_ALLOWED:
            self.summary.dropped.append(worker.gpu)  # its share of the points goes to the other GPUs
            return
        self.summary.replaced += 1
        self._spawn(worker.gpu, worker.todo)  # replicate: this GPU's list continues after the failed point

    def _write_failed(self, worker: _Worker, point: Point, reason: str) -> bool:
        """The point a dead worker held, recorded failed in its own part file (after any partial line)."""
        if worker.part.exists():
            repair_partial_line(worker.part)
        if not worker.info or not sidecar_path(worker.part).exists():
            return False  # it died before it said which GPU it runs on: nothing to attribute a row to
        policy = self.options.policy.with_overrides(point.timing)
        row = {**worker.info["base"], **describe(point, policy, worker.info["l2_bytes"]),
               "status": Status.FAILED.value, "error": reason}
        with ResultWriter(worker.part, columns_of(self.points)) as writer:
            writer.write(row)
        return True

    def _merge(self) -> None:
        for out in sorted({self._out_for(gpu) for gpu in self.gpus}):
            merge_parts(out, self.columns, _shard_text(self.options))
            if out.exists():
                self.summary.files.append(out)


def _shard_text(options: SweepOptions) -> str:
    return str(options.shard) if options.shard else ""


def merge_parts(out: Path, columns: list[str], shard: str) -> None:
    """Worker part files of ``out`` merged into it (created with ``columns``, or appended), then removed."""
    parts = [p for p in leftover_parts(out) if p.stat().st_size > 0 and sidecar_path(p).exists()]
    if parts:
        merge_runs(out, parts, repair=True, into_existing=out.exists(), columns=columns, shard=shard)
    for part in leftover_parts(out):
        part.unlink(missing_ok=True)
        sidecar_path(part).unlink(missing_ok=True)


def merge_leftovers(points: list[Point], options: SweepOptions) -> None:
    """The parts a killed coordinator left, merged into ``options.out``: call it before reading the run's seed."""
    merge_parts(options.out, columns_of(points), _shard_text(options))


def run_pool(points: list[Point], options: SweepOptions, gpus: list[int], *, interpret: bool, seed: int,
             order: Callable[[Point], float] | None = None, replicate: bool = False,
             on_event: Callable[..., None] | None = None, stop: Callable[[Point], bool] | None = None) -> PoolSummary:
    """Merge leftovers of an interrupted run, then run what is pending on every GPU of ``gpus``.

    ``points`` are the ones to run already (a caller with ``options.shard`` selects its shard first)."""
    out = options.out
    whole = dataclasses.replace(options, shard=None)  # for pending(): the shard is selected already
    if not replicate:
        merge_leftovers(points, options)
    if out.exists() and not options.resume and not replicate:
        raise UsageError(f"{out} exists: pass --resume to continue it, or choose another --out")
    todo = pending(points, whole) if not replicate else points
    pool = Pool(todo, options, gpus, interpret=interpret, seed=seed, order=order, replicate=replicate,
                on_event=on_event, stop=stop, columns=columns_of(points))
    summary = pool.run()
    if not replicate:
        summary.left = tuple(pending(todo, dataclasses.replace(whole, resume=True)))
    return summary
