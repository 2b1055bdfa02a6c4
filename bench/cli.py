"""The ``rooflab`` command (also ``python -m bench``)."""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import os
import shlex
import sys
from pathlib import Path

from kernels.errors import UsageError

DEFAULT_RESULTS = Path("results")
DEFAULT_REPORT = Path("results") / "report"
MAIN_SUITES = ("ceilings", "linear", "attention", "quant")
NO_GPU = ("no CUDA device found: use `rooflab sweep --interpret …` to check kernels on the CPU, "
          "or `rooflab report` to build the report from results/")


def _csv_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _policy(args):
    from bench.timing import GraphMode, L2Mode, SamplingPolicy

    return SamplingPolicy(max_noise=args.max_noise, timeout_s=args.timeout, min_samples=args.min_samples,
                          min_time_s=args.min_time, l2=L2Mode(args.l2), graph=GraphMode(args.graph))


def _adhoc_points(args):
    """--kernel/--impl/--dtype/--axis: the cartesian product, validated against the spec."""
    from bench.suites import Point
    from kernels import registry
    from kernels.spec import DType

    spec = registry.get(args.kernel)
    impls = [spec.impl(name).name for name in (_csv_list(args.impl) if args.impl else [i.name for i in spec.impls])]
    dtypes = [spec.check_dtype(DType.parse(d)) for d in (_csv_list(args.dtype) if args.dtype else ["fp16"])]
    grid: dict[str, list] = {}
    for item in args.axis or []:
        name, sep, values = item.partition("=")
        if not sep or not values:
            raise UsageError(f"--axis {item!r}: expected NAME=v1,v2 (axes of {spec.name}: "
                             f"{', '.join(a.name for a in spec.axes)})")
        axis = spec.axis(name.strip())
        grid[axis.name] = [axis.parse(v) for v in _csv_list(values)]
    names = list(grid)
    points = []
    for combo in itertools.product(*grid.values()):
        for dtype in dtypes:
            case = spec.case(dtype, **dict(zip(names, combo)))
            points += [Point(case, impl) for impl in impls]
    return points


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


def cmd_suites(args) -> int:
    from bench.suites import expand, get_suite, suite_names

    for name in suite_names():
        suite = get_suite(name)
        points = expand(suite.sweeps)
        print(f"{name}: {suite.summary} ({len(points)} points)")
    return 0


def cmd_devices(args) -> int:
    from bench import device

    if not device.cuda_available():
        print("no CUDA device found (sweeps can still run with --interpret; reports need no GPU)")
        return 0
    for row in device.list_devices():
        print(f"cuda:{row['index']}  {row['name']}  sm_{row['capability'].replace('.', '')}  "
              f"{row['sm_count']} SMs  L2 {row['l2_mib']:.0f} MiB  {row['memory_gib']:.1f} GiB  "
              f"results/{row['slug']}/")
    return 0


def _target(args):
    from bench import device

    if args.interpret:
        return device.detect(interpret=True)
    if not device.cuda_available():
        raise UsageError(NO_GPU)
    return device.detect(interpret=False)


def _sweep(points, args, suite: str, target) -> tuple[int, Path]:
    from bench.sweep import Shard, SweepOptions, new_run_id, run_sweep

    if args.out:
        out = Path(args.out)
    else:
        now = dt.datetime.now(dt.timezone.utc)
        out = Path(args.results) / target.slug / f"{new_run_id(now, suite or points[0].kernel)}.csv"
    options = SweepOptions(
        out=out, suite=suite, interpret=args.interpret, seed=args.seed, resume=args.resume,
        shard=Shard.parse(args.shard) if args.shard else None, policy=_policy(args),
        progress=not args.no_progress, command=shlex.join(["rooflab", *sys.argv[1:]]))
    summary = run_sweep(points, options, target)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(summary.counts.items())) or "nothing to do"
    note = " (interpreter: correctness only, no timings)" if args.interpret else ""
    print(f"{summary.out}: {counts}{note}")
    return (1 if summary.counts.get("failed") else 0), summary.out


def cmd_sweep(args) -> int:
    if bool(args.kernel) == bool(args.suite):
        raise UsageError("give exactly one of --kernel (with --impl/--dtype/--axis) or --suite")
    target = _target(args)
    if args.suite:
        from bench.suites import expand, get_suite

        points = expand(get_suite(args.suite).sweeps)
    else:
        points = _adhoc_points(args)
    return _sweep(points, args, args.suite or "", target)[0]


def cmd_ceilings(args) -> int:
    """The ceilings suite, then its ceilings table beside the run."""
    from analysis.ceilings import write_ceilings

    args.suite, args.kernel = "ceilings", None
    target = _target(args)
    from bench.suites import expand, get_suite

    status, out = _sweep(expand(get_suite("ceilings").sweeps), args, "ceilings", target)
    print(f"ceilings: {write_ceilings(out)}")
    return status


def _report(results: Path, out: Path) -> int:
    from analysis.report import build_report

    print(f"report: {build_report(results, out)}")
    return 0


def cmd_report(args) -> int:
    return _report(Path(args.results), Path(args.out))


def cmd_compare(args) -> int:
    """Exit 0 pass, 1 the gate failed, 2 bad input or an internal error (never 1 for a crash)."""
    from bench.compare import run_compare

    try:
        return run_compare(args.base, args.new, threshold=args.threshold, k=args.noise_k, noise_cap=args.noise_cap,
                           normalize=args.normalize, allow_different_devices=args.allow_different_devices,
                           allow_missing=args.allow_missing, allow_inconclusive=args.allow_inconclusive,
                           json_path=args.json)
    except UsageError:
        raise
    except Exception as exc:  # a crash must not read as "regression" (exit 1) to a CI script
        print(f"rooflab: internal error in compare: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
              " (exit 2; please report it)", file=sys.stderr)
        return 2


def cmd_run(args) -> int:
    """The main job: on a GPU, every main suite then the report; without one, the report alone."""
    from bench import device

    status = 0
    if device.cuda_available():
        for suite in MAIN_SUITES:
            sweep_args = argparse.Namespace(**{**vars(args), "suite": suite, "kernel": None, "out": None,
                                               "interpret": False, "resume": False, "shard": None})
            status = max(status, (cmd_ceilings if suite == "ceilings" else cmd_sweep)(sweep_args))
    else:
        print(f"no CUDA device: building the report from the results in {args.results}/")
    return max(status, _report(Path(args.results), Path(args.report)))


def _add_timing_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("timing")
    g.add_argument("--l2", choices=("cold", "warm"), default="cold", help="flush L2 before each sample (cold)")
    g.add_argument("--graph", choices=("auto", "always", "never"), default="auto",
                   help="CUDA-graph replay: auto = for kernels under 100 µs")
    g.add_argument("--max-noise", type=float, default=0.005, help="stop at this robust CV (default 0.5%%)")
    g.add_argument("--timeout", type=float, default=3.0, help="seconds of sampling per point at most")
    g.add_argument("--min-samples", type=int, default=10)
    g.add_argument("--min-time", type=float, default=0.02, help="seconds of measured kernel time at least")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", help="results CSV (default results/<device>/<run_id>.csv)")
    p.add_argument("--results", default=str(DEFAULT_RESULTS), help="results directory")
    p.add_argument("--interpret", action="store_true",
                   help="Triton interpreter on CPU tensors: correctness only, timings not measured")
    p.add_argument("--shard", help="i/n: run every n-th point starting at the i-th (1-based)")
    p.add_argument("--resume", action="store_true", help="append to --out, skipping points already in it")
    p.add_argument("--seed", type=int, help="input seed (default: fresh, recorded in the sidecar)")
    p.add_argument("--no-progress", action="store_true")
    _add_timing_options(p)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rooflab", description="GPU kernel microbenchmarks against the roofline")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("kernels", help="kernel families: axes, dtypes, impls").set_defaults(fn=cmd_kernels)
    sub.add_parser("suites", help="named suites and their sizes").set_defaults(fn=cmd_suites)
    sub.add_parser("devices", help="CUDA devices and their results directories").set_defaults(fn=cmd_devices)

    s = sub.add_parser("sweep", help="measure points: a suite, or one kernel's axis product")
    s.add_argument("--kernel", help="family name (see `rooflab kernels`)")
    s.add_argument("--impl", help="comma list (default: all of the family's impls)")
    s.add_argument("--dtype", help="comma list (default: fp16)")
    s.add_argument("--axis", action="append", metavar="NAME=v1,v2", help="axis values; repeat per axis")
    s.add_argument("--suite", help="named suite (see `rooflab suites`)")
    _add_run_options(s)
    s.set_defaults(fn=cmd_sweep)

    e = sub.add_parser("ceilings", help="measure the device's ceilings (suite `ceilings`) and store the "
                                        "ceilings table beside the run")
    _add_run_options(e)
    e.set_defaults(fn=cmd_ceilings)

    r = sub.add_parser("report", help="Markdown report and plots from result files (no GPU needed)")
    r.add_argument("--results", default=str(DEFAULT_RESULTS))
    r.add_argument("--out", default=str(DEFAULT_REPORT))
    r.set_defaults(fn=cmd_report)

    c = sub.add_parser(
        "compare", help="regression gate: NEW against BASE point by point, noise-aware; exit 0 pass, 1 fail, 2 bad input",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="A slowdown counts when new/base − 1 > max(threshold, k × √(noise_base² + noise_new²)); "
                    "improvements likewise.\nThe gate fails (exit 1) on a regression, a point ok in BASE and failed "
                    "in NEW, points ok in BASE but missing or skipped in NEW (beyond --allow-missing), and points "
                    "too noisy to judge (bound above --noise-cap; pass them with --allow-inconclusive).\n"
                    "Exit 2: bad input or an internal error, never a verdict.",
        epilog="example:\n  rooflab compare results/baselines/h100 results/h100-80gb-hbm3 --json verdict.json\n"
               "  rooflab compare base.csv new.csv --threshold 3% --allow-missing 5% --normalize dram")
    c.add_argument("base", help="baseline: a results CSV (with its .json sidecar) or a directory of them, "
                                "e.g. results/baselines/h100")
    c.add_argument("new", help="the run to judge: a results CSV or a directory of them, e.g. results/h100-80gb-hbm3")
    c.add_argument("--threshold", default="5%", help="smallest change that counts, e.g. 5%% or 0.05 (default 5%%)")
    c.add_argument("-k", "--noise-k", type=float, default=3.0,
                   help="a change must also exceed k × the points' combined noise, e.g. -k 3 (default 3)")
    c.add_argument("--noise-cap", default="15%",
                   help="widest noise bound a point may have and still be judged; noisier points are "
                        "inconclusive, e.g. --noise-cap 10%% (default 15%%)")
    c.add_argument("--allow-missing", default="0%", metavar="N%",
                   help="let up to N%% of BASE's timed points be missing or skipped in NEW, e.g. --allow-missing 5%% "
                        "(default 0%%: every point must be there; failed points always fail)")
    c.add_argument("--allow-inconclusive", action="store_true",
                   help="pass the gate although some points are too noisy to judge (they are still listed)")
    c.add_argument("--normalize", choices=("none", "dram", "tensor", "roofline"), default="none",
                   help="scale each run by its own measured ceilings (two nodes of one SKU): dram = by DRAM "
                        "bandwidth, tensor = by tensor-core FLOP/s, roofline = DRAM below the ridge, tensor above; "
                        "launch latency is never scaled, fma only by the CUDA-core ceiling; e.g. --normalize dram")
    c.add_argument("--allow-different-devices", action="store_true",
                   help="compare runs from different devices (name, SM count, memory, capability)")
    c.add_argument("--json", metavar="FILE", help="write every point's verdict to FILE as JSON, e.g. --json verdict.json")
    c.set_defaults(fn=cmd_compare)

    m = sub.add_parser("run", help="main job: the main suites on a GPU, then the report; "
                                   "without a GPU, the report from results/")
    m.add_argument("--results", default=str(DEFAULT_RESULTS), help="results directory")
    m.add_argument("--report", default=str(DEFAULT_REPORT), help="report directory")
    m.add_argument("--seed", type=int, help="input seed (default: fresh, recorded in the sidecar)")
    m.add_argument("--no-progress", action="store_true")
    _add_timing_options(m)
    m.set_defaults(fn=cmd_run)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "interpret", False):
        # Triton reads this when a kernel is decorated: set it before any kernel module is imported
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        return args.fn(args)
    except UsageError as exc:
        print(f"rooflab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rooflab: interrupted; rows already written are kept (continue with --resume)", file=sys.stderr)
        return 130
