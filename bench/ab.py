"""``rooflab ab BASE [HEAD]``: both revisions measured on one GPU in one job, interleaved, judged paired.

Each revision is checked out in its own worktree (:mod:`bench.ab_git`) and measured by its own worker
process (:mod:`bench.ab_worker`: this checkout's harness, that revision's kernels), both pinned to the
same GPU, with the same point list, inputs and seed. Per point both sides pass the correctness gate
and warm up once, then repeat short sample sets in ABBA blocks until the paired log-ratio's interval
decides (:mod:`bench.ab_stats`). Each side's rows form a results file (``base.csv``, ``head.csv``,
each a run ``rooflab report`` reads); the markdown summary (:mod:`bench.ab_report`) goes to
``summary.md`` and stdout. Exit 0: no regression; 1: a regression (slower, or HEAD fails the gate
where BASE passes); 2: could not judge (bad input, points missing on a side, BASE failing the gate,
a worker that cannot start) — named. A worker that dies (a lost CUDA context) fails the point on its
side — HEAD's is a regression, BASE's is not judged — and a fresh worker takes the next point; a side
whose worker dies twice in a row is given up, its remaining points not judged.

Under ``--interpret`` (no GPU) the verdict is on correctness alone.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from bench.ab_git import Revision, checkouts, dirty, repository, resolve
from bench.ab_stats import AbRule, Estimate, Repeat, Side, Verdict, judge
from kernels.errors import UsageError

WORKER_MODULE = "bench.ab_worker"  # the tests put a fake-GPU worker here
DEATHS_ALLOWED = 2  # consecutive worker deaths on one side before that side is given up


@dataclass(frozen=True)
class AbOptions:
    base: str
    head: str | None
    selection: dict  # suite, kernel, impl, dtype, axis: as `rooflab sweep` takes them
    out: Path
    policy_record: dict
    rule: AbRule = AbRule()
    seed: int | None = None
    interpret: bool = False
    gpu: str = "0"  # what CUDA_VISIBLE_DEVICES the workers get
    command: str = ""


@dataclass(frozen=True)
class Outcome:
    """One point's result: the verdict, why, the estimate when timed, each side's row figures."""

    key: tuple
    name: str
    verdict: Verdict
    why: str = ""
    estimate: Estimate | None = None
    rows: dict = field(default_factory=dict)  # side -> {"median_s", "flops", "bytes", "kernel", "dtype", …}


class WorkerDied(Exception):
    pass


class SideWorker:
    """One side's worker process and its JSON-lines pipe."""

    def __init__(self, side: Side, config: dict, env: dict, log: Path):
        self.side, self.config, self.env, self.log = side, config, env, log
        self.process: subprocess.Popen | None = None
        self.deaths = 0
        self.ready: dict = {}

    def spawn(self) -> None:
        harness = str(Path(__file__).resolve().parent.parent)
        with self.log.open("a") as log:
            self.process = subprocess.Popen([sys.executable, "-m", WORKER_MODULE, json.dumps(self.config)],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                                            cwd=harness, env=self.env)

    def start(self) -> dict:
        """Spawn it (unless spawned already) and wait for its ready message."""
        if self.process is None or self.process.poll() is not None:
            self.spawn()
        self.ready = self._read()
        if self.ready.get("event") != "ready":
            raise WorkerDied(self.ready.get("error") or "it did not start")
        return self.ready

    def ask(self, request: dict) -> dict:
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # it died: the read below says how
        answer = self._read()
        if answer.get("event") == "error":
            raise WorkerDied(answer["error"])
        return answer

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if line:
            return json.loads(line)
        code = self.process.wait()
        raise WorkerDied(f"the {self.side.value.upper()} worker died (exit code {code}; its log: {self.log})")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"op": "stop"}) + "\n")
                self.process.stdin.flush()
                self.process.wait(timeout=60)
            except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self.process = None


def _env(options: AbOptions) -> dict:
    env = dict(os.environ)
    harness = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([harness, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    if options.interpret:
        env["TRITON_INTERPRET"] = "1"
    else:
        env["CUDA_VISIBLE_DEVICES"] = options.gpu  # both sides on one GPU
    return env


def prepare_out(out: Path) -> None:
    """The output folder: created, or an existing empty one; never over an earlier A/B's files."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file: give a folder for base.csv, head.csv and summary.md")
    if out.is_dir() and any(out.iterdir()):
        raise UsageError(f"--out {out} is not empty: give a new or empty folder (an earlier A/B is never overwritten)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot create it ({exc.strerror or exc})") from None


def run_ab(options: AbOptions, say: Callable[[str], None] = print) -> tuple[list[Outcome], dict]:
    """Run the A/B; returns the outcomes (in point order) and the run's facts for the summary."""
    repo = repository(Path.cwd())
    revisions = {Side.BASE: resolve(repo, options.base, "BASE"), Side.HEAD: resolve(repo, options.head, "HEAD")}
    prepare_out(options.out)
    seed = options.seed if options.seed is not None else random.SystemRandom().randrange(2**31)
    facts = {"base": revisions[Side.BASE].label, "head": revisions[Side.HEAD].label, "seed": seed,
             "interpret": options.interpret, "threshold": options.rule.threshold,
             "confidence": 2 * options.rule.confidence - 1, "out": str(options.out), "failed_sides": [],
             "files": {s.value: str(options.out / f"{s.value}.csv") for s in Side}}
    with checkouts(repo, [revisions[Side.BASE], revisions[Side.HEAD]]) as paths:
        workers = {}
        for side, path in zip(Side, paths):
            revision = revisions[side]
            config = {"root": str(path), "out": str((options.out / f"{side.value}.csv").resolve()),
                      "selection": options.selection, "seed": seed, "interpret": options.interpret,
                      "policy": options.policy_record, "threshold": options.rule.threshold,
                      "command": options.command,
                      "revision": {**revision.record(dirty(repo) if not revision.commit else False),
                                   "ab_side": side.value}}
            workers[side] = SideWorker(side, config, _env(options), options.out / f"{side.value}.log")
        try:
            outcomes = _run(workers, revisions, options, facts, say)
        finally:
            for worker in workers.values():
                worker.stop()
    return outcomes, facts


def _start(workers: dict, revisions: dict) -> dict:
    keys = {}
    for worker in workers.values():
        worker.spawn()  # both start at once: importing torch and the kernels takes seconds
    for side, worker in workers.items():
        try:
            ready = worker.start()
        except WorkerDied as exc:
            raise CouldNotStart(f"the {side.value.upper()} side ({revisions[side].label}) cannot run: {exc}") from None
        keys[side] = [tuple(k) for k in ready["keys"]]
    return keys


class CouldNotStart(UsageError):
    """A side whose worker cannot start (its kernels do not import, a point selection it lacks): exit 2."""


def _run(workers: dict, revisions: dict, options: AbOptions, facts: dict, say) -> list[Outcome]:
    keys = _start(workers, revisions)
    facts["device"] = workers[Side.BASE].ready.get("device", {})
    facts["gpu"] = workers[Side.BASE].ready.get("gpu", "")
    names = dict(zip(keys[Side.BASE], workers[Side.BASE].ready.get("names", [])))
    head_only = [k for k in keys[Side.HEAD] if k not in set(keys[Side.BASE])]
    order = keys[Side.BASE] + head_only
    outcomes = []
    for number, key in enumerate(order, 1):
        name = names.get(key) or " ".join(map(str, key))
        missing = [s for s in Side if key not in set(keys[s])]
        if missing:
            side = missing[0].value.upper()
            outcome = Outcome(key, name, Verdict.NOT_JUDGED, f"no such point on {side}: its kernels do not offer it")
        elif any(workers[s].deaths >= DEATHS_ALLOWED for s in Side):
            gone = next(s for s in Side if workers[s].deaths >= DEATHS_ALLOWED)
            outcome = Outcome(key, name, Verdict.NOT_JUDGED, f"the {gone.value.upper()} worker died "
                                                             f"{DEATHS_ALLOWED} times in a row; not run")
        else:
            outcome = _point(workers, key, name, options, facts)
        outcomes.append(outcome)
        say(_progress(number, len(order), outcome))
    return outcomes


def _progress(number: int, total: int, outcome: Outcome) -> str:
    text = f"[{number}/{total}] {outcome.name}: {outcome.verdict.value}"
    e = outcome.estimate
    if e is not None:
        text += f" {e.ratio:.3f} ({e.low:.3f}…{e.high:.3f}, {e.blocks} blocks)"
    return text + (f" — {outcome.why}" if outcome.why else "")


def _ask(worker: SideWorker, request: dict) -> dict:
    """A request; a worker that dies is restarted for the next point and the death raised for this one."""
    try:
        answer = worker.ask(request)
        worker.deaths = 0
        return answer
    except WorkerDied:
        worker.deaths += 1
        if worker.deaths < DEATHS_ALLOWED:
            try:
                worker.start()
            except WorkerDied:
                worker.deaths = DEATHS_ALLOWED
        raise


class SideFailed(Exception):
    def __init__(self, side: Side, why: str):
        super().__init__(why)
        self.side, self.why = side, why


def _point(workers: dict, key: tuple, name: str, options: AbOptions, facts: dict) -> Outcome:
    """Gate both sides, time them in blocks unless the gate settled it, write both rows."""
    status: dict = {}
    estimate = None
    try:
        for side in Side:
            try:
                status[side] = _ask(workers[side], {"op": "prepare", "key": list(key)})
            except WorkerDied as exc:
                raise SideFailed(side, str(exc)) from None
        verdict, why = _gate_verdict(status, options.interpret)
        if verdict is None and options.interpret:
            verdict, why = Verdict.NO_CHANGE, "correctness only (interpreter)"
        elif verdict is None:
            orders = random.Random(zlib.crc32(repr((facts["seed"], key)).encode()))  # the run's seed: reproducible
            estimate = judge(lambda side: _repeat(workers[side], side), options.rule, orders)
            verdict, why = estimate.verdict, estimate.why
            if verdict is Verdict.INCONCLUSIVE and estimate.high - 1 < options.rule.threshold:
                why += f"; a {options.rule.threshold:.0%} slowdown is ruled out"
    except SideFailed as exc:
        verdict, why = ((Verdict.FAILED, f"HEAD fails: {exc.why}") if exc.side is Side.HEAD
                        else (Verdict.NOT_JUDGED, f"BASE fails: {exc.why}"))
    rows = {}
    for side in Side:
        if side in status and workers[side].process is not None:
            try:
                rows[side.value] = _ask(workers[side], {"op": "finish", "why": why})
            except WorkerDied:
                pass
    return Outcome(key, name, verdict, why, estimate, rows)


def _repeat(worker: SideWorker, side: Side) -> Repeat:
    try:
        answer = _ask(worker, {"op": "repeat"})
    except WorkerDied as exc:
        raise SideFailed(side, str(exc)) from None
    if "error" in answer:
        raise SideFailed(side, answer["error"])
    ci = answer.get("ci_rel")
    return Repeat(float(answer["median_s"]), int(answer["samples"]), float("inf") if ci is None else float(ci))


def _gate_verdict(status: dict, interpret: bool) -> tuple[Verdict | None, str]:
    """The verdict the gate and skip rules settle before any timing (None: both sides ok, time them)."""
    base, head = status[Side.BASE], status[Side.HEAD]
    if base["status"] == "skipped" and head["status"] == "skipped":
        return Verdict.SKIPPED, f"skipped on both sides: {base['error']}"
    if base["status"] == "failed":
        return Verdict.NOT_JUDGED, f"BASE fails the gate: {base['error']}" + (
            f"; HEAD fails too: {head['error']}" if head["status"] == "failed" else "")
    if head["status"] == "failed":
        return Verdict.FAILED, f"HEAD fails the gate: {head['error']}"
    for side, answer in ((Side.BASE, base), (Side.HEAD, head)):
        if answer["status"] == "skipped":
            return Verdict.NOT_JUDGED, f"skipped on {side.value.upper()} only: {answer['error']}"
    return None, ""
