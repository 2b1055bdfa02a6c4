"""What the ``rooflab`` commands that measure or plan do: sweep, ceilings, run, suites, kernels, devices, merge.

``bench/cli.py`` parses the command line and calls these; they print one line per outcome and
raise :class:`UsageError` for bad input.
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
import sys
from pathlib import Path

from kernels.errors import UsageError

NO_GPU = ("no CUDA device found: use `rooflab sweep --interpret …` to check kernels on the CPU, "
          "or `rooflab report` to build the report from results/")


def _policy(args):
    from bench.timing import FlushMode, GraphMode, L2Mode, SamplingPolicy

    return SamplingPolicy(max_noise=args.max_noise, timeout_s=args.timeout, min_samples=args.min_samples,
                          min_time_s=args.min_time, l2=L2Mode(args.l2), graph=GraphMode(args.graph),
                          flush=FlushMode(args.flush))


def cmd_kernels(args) -> int:
    from kernels import registry

    for spec in registry.all_specs():
        print(f"{spec.name}: {spec.summary}")
        axes = []
        for a in spec.axes:
            text = f"{a.name}:{a.type.__name__}={a.default}"
            if a.choices:
                text += f" {{{','.join(map(str, a.choices))}}}"
            axes.append(text)
        print(f"  axes:   {'  '.join(axes)}")
        print(f"  dtypes: {', '.join(d.value for d in spec.dtypes)}")
        for impl in spec.impls:
            print(f"  impl {impl.name}: {impl.summary}")
    return 0


def _model(args, target=None):
    """The time model for --device (datasheet), else for the GPU here, else an H100's datasheet."""
    from bench.estimate import TimeModel, machine, machine_of

    if getattr(args, "device", None):
        return TimeModel(machine(args.device), _policy(args))
    if target is not None and not target.caps.interpret:
        return TimeModel(machine_of(target.caps), _policy(args))
    return TimeModel(machine("h100"), _policy(args))


def cmd_suites(args) -> int:
    from bench.estimate import minutes
    from bench.suites import expand, get_suite, suite_names

    model = _model(args, _detected())
    print(f"estimated GPU-machine time on {model.machine.name} ({model.machine.key}, datasheet roofs; "
          "an estimate: compile + autotune + gate + sampling)")
    from bench.estimate import TimeModel

    for name in suite_names():
        suite = get_suite(name)
        points = expand(suite.sweeps)
        costs = TimeModel(model.machine, model.policy).plan(points)
        rerun = TimeModel(model.machine, model.policy, warm_cache=True).plan(points)
        skipped = sum(1 for c in costs if c.skip)
        print(f"{name}: {suite.summary} ({len(points)} points, {skipped} skipped there; "
              f"≈ {minutes(sum(c.total for c in costs))}, ≈ {minutes(sum(c.total for c in rerun))} again "
              "with warm compile and tune caches)")
    return 0


def _detected():
    from bench import device

    return device.detect(interpret=False) if device.cuda_available() else None


def cmd_devices(args) -> int:
    from bench import device

    if not device.cuda_available():
        print("no CUDA device found (sweeps can still run with --interpret; reports need no GPU)")
        return 0
    for row in device.list_devices():
        print(f"cuda:{row['index']}  {row['name']}  sm_{row['capability'].replace('.', '')}  "
              f"{row['sm_count']} SMs  L2 {row['l2_mib']:.0f} MiB  {row['memory_gib']:.1f} GiB  "
              f"{row['uuid'] or '(no uuid)'}  results/{row['slug']}/")
    return 0


def _target(args):
    from bench import device

    _check_tune_cache()
    if args.interpret:
        return device.detect(interpret=True)
    if not device.cuda_available():
        raise UsageError(NO_GPU)
    return device.detect(interpret=False)


def _check_tune_cache() -> None:
    """ROOFLAB_CACHE_DIR (or the default cache) must be a directory that can be made: never a silent no-cache."""
    from kernels.tuning import cache_dir_problem

    problem = cache_dir_problem()
    if problem:
        raise UsageError(problem)


def _shard(args):
    """--shard i/n, or auto from Slurm/torchrun/Kubernetes; shards must share a seed to merge into one run."""
    from bench.shards import Shard

    if not args.shard:
        return None
    shard = Shard.from_scheduler(os.environ, args.shard_count) if args.shard == "auto" else Shard.parse(args.shard)
    if args.seed is None and not args.resume:
        raise UsageError(f"--shard {args.shard} needs --seed N (the same on every shard, so their inputs match and "
                         "`rooflab merge` can join them into one run)")
    return shard


def _gpus(args) -> list[int] | None:
    """--gpus all / 0,1,3: CUDA indices; under --interpret they only number CPU worker processes."""
    from bench.pool import parse_gpus

    if not getattr(args, "gpus", None):
        return None
    if args.interpret:
        from bench.options import cpu_workers, gpu_indices

        if args.gpus.strip().lower() == "all":
            return parse_gpus("all", os.cpu_count() or 1)
        indices = gpu_indices(args.gpus)
        cap = cpu_workers()
        if len(indices) > cap or max(indices) >= cap:
            raise UsageError(f"--gpus {args.gpus!r} with --interpret: the indices number CPU worker processes, at most "
                             f"{cap} (the CPU count, at least 4): give indices in 0…{cap - 1}, or all")
        return indices
    import torch

    return parse_gpus(args.gpus, torch.cuda.device_count())


def _options(args, suite: str, target, points):
    from bench.sweep import SweepOptions, new_run_id

    if args.out:
        out = Path(args.out)
    else:
        now = dt.datetime.now(dt.timezone.utc)
        out = Path(args.results) / target.slug / f"{new_run_id(now, suite or points[0].kernel)}.csv"
    return SweepOptions(out=out, suite=suite, interpret=args.interpret, seed=args.seed, resume=args.resume,
                        shard=_shard(args), policy=_policy(args), progress=not args.no_progress,
                        command=shlex.join(["rooflab", *sys.argv[1:]]))


def _sweep(points, args, suite: str, target) -> tuple[int, Path]:
    from bench.sweep import run_sweep

    options = _options(args, suite, target, points)
    gpus = _gpus(args)
    if gpus:
        return _pooled(points, options, gpus, args, target)
    summary = run_sweep(points, options, target)
    if summary.note:
        print(f"rooflab: {summary.note}", file=sys.stderr)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(summary.counts.items())) or \
        "nothing to do: every point is already in the file"
    note = " (interpreter: correctness only, no timings)" if args.interpret else ""
    print(f"{summary.out}: {counts}{note}")
    return (1 if summary.counts.get("failed") else 0), summary.out


def _run_seed(options) -> int:
    """The seed a pooled run uses: the one it continues, the one asked for, or a fresh one.

    Call it after ``merge_leftovers``: the parts of a killed run hold its seed until merged into ``out``."""
    import random

    from bench.resume import continued_run
    from bench.sweep import timing_record

    out = options.out
    if options.resume and out.exists() and out.stat().st_size > 0:
        mode = "interpret" if options.interpret else "cuda"
        meta = continued_run(out, seed=options.seed, suite=options.suite, mode=mode,
                             shard=str(options.shard) if options.shard else "", timing=timing_record(options.policy))
        return int(meta["seed"])
    return options.seed if options.seed is not None else random.SystemRandom().randrange(2**31)


def _pooled(points, options, gpus: list[int], args, target, replicate: bool = False):
    """The points on every GPU of ``gpus``, one worker process each (see bench/pool.py)."""
    from bench.pool import merge_leftovers, run_pool

    if options.shard:
        points = options.shard.select(points)
    if not replicate:
        merge_leftovers(points, options)
    model = _model(args, target)
    summary = run_pool(points, options, gpus, interpret=args.interpret, seed=_run_seed(options),
                       order=lambda p: model.point(p).total, replicate=replicate)
    print(summary.line())
    if summary.interrupted:
        raise KeyboardInterrupt
    return (1 if summary.counts.get("failed") or summary.dropped else 0), options.out


def cmd_sweep(args) -> int:
    if bool(args.kernel) == bool(args.suite):
        raise UsageError("give exactly one of --kernel (with --impl/--dtype/--axis) or --suite "
                         "(--impl/--dtype/--axis then pick among its points)")
    if args.device and not args.dry_run:
        raise UsageError(f"--device only prices a --dry-run; a sweep measures the GPU here (drop --device "
                         f"{args.device}, or add --dry-run)")
    if args.dry_run:
        return _dry_sweep(args)
    target = _target(args)
    points = _points(args)
    _same_kernels(args, points)
    return _sweep(points, args, args.suite or "", target)[0]


def _points(args):
    """A suite's points (filtered by --impl/--dtype/--axis when given), or --kernel's product of axis values."""
    from bench.options import adhoc_points, suite_selection
    from bench.suites import expand, get_suite

    if args.suite:
        return suite_selection(args, expand(get_suite(args.suite).sweeps), args.suite)
    return adhoc_points(args)


def _same_kernels(args, points) -> None:
    """--resume of an ad-hoc run continues its kernels: triad rows never go into a copy run's file
    (a suite's own name is checked against the sidecar when the sweep starts)."""
    import csv

    if not (args.resume and args.out and not args.suite):
        return
    out = Path(args.out)
    try:
        with out.open(newline="") as f:
            rows = csv.DictReader(f)
            held = sorted({row.get("kernel") or "" for row in rows} - {""})
    except (OSError, UnicodeDecodeError, csv.Error):
        return  # missing or unreadable: the sweep says so itself
    wanted = sorted({p.kernel for p in points})
    if held and held != wanted:
        raise UsageError(f"--resume {out}: it holds a run of {', '.join(held)}, not {', '.join(wanted)}: a resumed "
                         f"run keeps its kernels; write {', '.join(wanted)} to a new --out")


def _dry_sweep(args) -> int:
    """The points a sweep would run (after --shard and --resume) with estimated GPU time; runs nothing."""
    from bench.plan import Stage, dry_run
    from bench.shards import Shard
    from bench.sweep import SweepOptions, pending

    points = _points(args)
    _same_kernels(args, points)
    out = Path(args.out) if args.out else Path("/nonexistent/rooflab.csv")
    options = SweepOptions(out=out, resume=args.resume, shard=Shard.parse(args.shard) if args.shard else None,
                           policy=_policy(args))
    model = _model(args, None)
    todo = pending(points, options)
    print(f"{len(todo)} of {len(points)} points to run on {model.machine.name} (time model: datasheet roofs, "
          f"estimates)")
    for line in dry_run(model, None, [Stage(args.suite or args.kernel, tuple(todo))]):
        print(line)
    return 0


def cmd_ceilings(args) -> int:
    """The ceilings suite, then its ceilings table beside the run; --gpus: on every GPU, and a health check."""
    from analysis.ceilings import write_ceilings
    from bench.suites import expand, get_suite

    args.suite, args.kernel = "ceilings", None
    target = _target(args)
    if args.interpret:
        print("rooflab ceilings --interpret: warning: the interpreter runs the 8192³ and 16384³ GEMMs and "
              "4 GiB arrays on the CPU — expect a long time (minutes to hours); --kernel/--axis picks less",
              file=sys.stderr)
    points = expand(get_suite("ceilings").sweeps)
    gpus = _gpus(args)
    if gpus:
        from bench.health import health_check

        options = _options(args, "ceilings", target, points)
        status, _ = _pooled(points, options, gpus, args, target, replicate=True)
        files = [options.out.with_name(f"{options.out.stem}.gpu{g}.csv") for g in gpus]
        for path in files:
            if path.exists():
                print(f"ceilings: {write_ceilings(path)}")
        report = health_check([f for f in files if f.exists()], margin=args.margin)
        for line in report.lines:
            print(line)
        return max(status, 1 if report.flagged else 0)
    status, out = _sweep(points, args, "ceilings", target)
    print(f"ceilings: {write_ceilings(out)}")
    return status


def cmd_merge(args) -> int:
    """Shard files of one run joined into one results file (see bench/merge.py)."""
    from bench.merge import merge_runs

    merged = merge_runs(Path(args.out), [Path(f) for f in args.files])
    print(f"{merged.out}: {merged.rows} rows from {merged.parts} files")
    if merged.missing:
        print(f"{merged.missing} points of the suite are in none of them; run them with: {merged.command}")
    return 0


def cmd_run(args) -> int:
    """The main job: on a GPU the budgeted headline plan (or --full), then the report; without one, the report."""
    from bench import device

    _check_run(args)
    if args.dry_run:
        from bench.plan import dry_run

        for line in dry_run(_model(args, _detected()), None if args.full else args.budget):
            print(line)
        return 0
    status = 0
    if device.cuda_available():
        status = _run_plan(args, device)
    else:
        print(f"no CUDA device: building the report from the results in {args.results}/ "
              "(see what a GPU run would do: rooflab run --dry-run --device h200)")
    from bench.reporting import write_report

    return max(status, write_report(Path(args.results), Path(args.report)))


DEFAULT_BUDGET_S = 480.0  # rooflab run's plan: 8 minutes of GPU time


def _check_run(args) -> None:
    """Options of `rooflab run` checked before anything decides there is no GPU (so none is ignored there)."""
    from bench.options import gpu_indices, stamp

    if args.gpus:
        gpu_indices(args.gpus)
    if args.resume:
        stamp(args.resume)
    if args.full and args.budget is not None:
        raise UsageError(f"--full runs every stage with no budget, --budget {args.budget:g}s sets one: give one or "
                         "the other")
    if args.budget is None:
        args.budget = DEFAULT_BUDGET_S


def _pooled_sweep(gpus: list[int]):
    """``run_sweep``'s contract over a worker pool, so the plan runs on every GPU of the node."""
    from bench.pool import merge_leftovers, run_pool
    from bench.sweep import Summary

    def sweep(points, options, target, backend=None, stop=None):
        merge_leftovers(points, options)
        result = run_pool(points, options, gpus, interpret=False, seed=_run_seed(options), stop=stop)
        if result.interrupted:
            raise KeyboardInterrupt
        return Summary(options.out, dict(result.counts), options.out.stem, "", result.left)

    return sweep


def _program() -> list[str]:
    """How this process was started, for commands printed to continue it: ``rooflab`` is not installed
    everywhere (a GPU image runs ``python3 -m bench`` from the checkout)."""
    return ["python3", "-m", "bench"] if Path(sys.argv[0]).name == "__main__.py" else ["rooflab"]


def _row_printer(args, model):
    """Without a progress bar (a log, a batch job), one line per finished point."""
    from bench.plan import row_line

    if not args.no_progress:
        return None
    return lambda row: print(row_line(row, model.machine), flush=True)


def _run_plan(args, device) -> int:
    from analysis.ceilings import write_ceilings
    from bench.estimate import minutes
    from bench.plan import new_stamp, run_plan

    target = device.detect(interpret=False)
    preflight = device.preflight(target)
    print(f"preflight: {preflight['line']}")
    stamp = args.resume or new_stamp()
    budget = None if args.full else args.budget
    again = [*_program(), "run", "--resume", stamp] + (["--full"] if args.full else ["--budget", f"{args.budget:.0f}s"])
    print(f"plan {stamp}: " + (f"budget {minutes(budget)}" if budget else "every stage, no budget"))
    gpus = _gpus(args)
    model = _model(args, target)
    summary = run_plan(target, budget_s=budget, results=Path(args.results), stamp=stamp, resume=bool(args.resume),
                       seed=args.seed, policy=_policy(args), progress=not args.no_progress,
                       command=shlex.join(["rooflab", *sys.argv[1:]]), continue_command=shlex.join(again),
                       extra={"preflight": preflight}, model=model,
                       **({"sweep": _pooled_sweep(gpus)} if gpus else {"on_row": _row_printer(args, model)}))
    headline = next((f for f in summary.files if f.name.endswith("-headline.csv")), None)
    if headline is not None:
        print(f"ceilings: {write_ceilings(headline)}")
    print(f"rooflab run: {summary.line()}")
    return 1 if summary.counts.get("failed") else 0


