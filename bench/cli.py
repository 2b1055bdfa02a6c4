"""The ``rooflab`` command (also ``python -m bench``)."""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import sys
from pathlib import Path

from bench.commands import (
    cmd_ceilings,
    cmd_devices,
    cmd_kernels,
    cmd_merge,
    cmd_run,
    cmd_suites,
    cmd_sweep,
)
from bench.reporting import write_report
from kernels.errors import UsageError

DEFAULT_RESULTS = Path("results")
DEFAULT_REPORT = Path("results") / "report"


def cmd_report(args) -> int:
    return write_report(Path(args.results), Path(args.out))


def cmd_compare(args) -> int:
    """Exit 0 pass, 1 the gate failed, 2 bad input or an internal error (never 1 for a crash)."""
    from bench.compare import run_compare

    try:
        return run_compare(args.base, args.new, threshold=args.threshold, k=args.noise_k, noise_cap=args.noise_cap,
                           normalize=args.normalize, allow_different_devices=args.allow_different_devices,
                           allow_missing=args.allow_missing, allow_inconclusive=args.allow_inconclusive,
                           json_path=args.json, drift=args.drift)
    except UsageError:
        raise
    except Exception as exc:  # a crash must not read as "regression" (exit 1) to a CI script
        print(f"rooflab: internal error in compare: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
              " (exit 2; please report it)", file=sys.stderr)
        return 2


def cmd_compile(args) -> int:
    from bench.static import run_compile

    return run_compile(args.arch, Path(args.out) if args.out else None, args.check, args.jobs,
                       kernels=args.kernel, points=args.points)


def _add_timing_options(p: argparse.ArgumentParser) -> None:
    from bench.options import fraction, nonnegative_float, positive_float, positive_int

    g = p.add_argument_group("timing (see README: How a point is measured)")
    g.add_argument("--l2", choices=("cold", "warm"), default="cold",
                   help="cold: flush L2 before every sample (DRAM figures); warm: no flush, for cache studies "
                        "(default cold), e.g. --l2 warm")
    g.add_argument("--flush", choices=("clean", "zero"), default="clean",
                   help="how cold mode flushes: clean = zero a 2×L2 buffer then read another, so L2 holds clean "
                        "lines; zero = zero only (dirty lines written back inside the next sample) (default clean)")
    g.add_argument("--graph", choices=("auto", "always", "never"), default="auto",
                   help="CUDA-graph replay: auto = for kernels under 100 µs (default auto), e.g. --graph never")
    g.add_argument("--max-noise", type=fraction, default=0.005, metavar="FRACTION",
                   help="stop once the median's 95%% confidence interval is within ± this fraction of it "
                        "(default 0.5%%), e.g. --max-noise 1%%")
    g.add_argument("--timeout", type=positive_float, default=3.0, metavar="SECONDS",
                   help="host seconds of sampling per point at most (default 3), e.g. --timeout 1.5")
    g.add_argument("--min-samples", type=positive_int, default=10, metavar="N",
                   help="samples per point at least (default 10), e.g. --min-samples 30")
    g.add_argument("--min-time", type=nonnegative_float, default=0.02, metavar="SECONDS",
                   help="seconds of measured kernel time per point at least (default 0.02), e.g. --min-time 0.1")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    from bench.options import csv_out, positive_int

    p.add_argument("--out", type=csv_out, metavar="FILE.csv",
                   help="results CSV (default results/<device-slug>/<run_id>.csv), e.g. --out /tmp/x.csv")
    p.add_argument("--results", default=str(DEFAULT_RESULTS), metavar="DIR",
                   help="results directory for the default --out (default results)")
    p.add_argument("--interpret", action="store_true",
                   help="run on CPU tensors under Triton's interpreter: correctness only, no timings")
    p.add_argument("--shard", metavar="i/n|auto",
                   help="run part i of n (1-based): whole cases, balanced by the time model, e.g. --shard 2/4; auto: from Slurm "
                        "(SLURM_ARRAY_TASK_*), torchrun (RANK/WORLD_SIZE) or a Kubernetes Indexed Job "
                        "(JOB_COMPLETION_INDEX, with --shard-count); shards need one --seed")
    p.add_argument("--shard-count", type=positive_int, metavar="N",
                   help="shards in all, for --shard auto on a Kubernetes Indexed Job (its completions), e.g. 8")
    p.add_argument("--gpus", metavar="all|i,j",
                   help="every GPU of the node (all) or these CUDA indices, one worker process each, pulling points "
                        "from one queue longest first; results merged into one run, e.g. --gpus all")
    p.add_argument("--resume", action="store_true",
                   help="continue --out: skip points already in it, keep its seed and timing policy")
    p.add_argument("--seed", type=int, help="input seed (default: fresh, recorded in the sidecar), e.g. --seed 7")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it goes to stderr on a terminal)")
    _add_timing_options(p)


def parser() -> argparse.ArgumentParser:
    from bench.options import OneLineParser, fraction, positive_float

    p = OneLineParser(prog="rooflab", description="Triton GPU kernel microbenchmarks measured against the roofline",
                      formatter_class=argparse.RawDescriptionHelpFormatter,
                      epilog="start here:\n  rooflab run            the main job (on a GPU: the budgeted headline plan; "
                             "without one: the report)\n  rooflab run --dry-run --device h200   what a rental "
                             "would run, and for how long\n  rooflab <command> --help")
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser, metavar="COMMAND")

    def command(name: str, summary: str, example: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=summary, description=summary, epilog=f"example:\n  {example}",
                              formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)

    command("kernels", "kernel families: axes (defaults, choices), dtypes and impls",
            "rooflab kernels").set_defaults(fn=cmd_kernels)
    u = command("suites", "named suites: points and estimated GPU-machine minutes on a device",
                "rooflab suites --device h200")
    u.add_argument("--device", help="device of the datasheet table to estimate for (default: the GPU here, else "
                                    "h100), e.g. --device h200")
    _add_timing_options(u)
    u.set_defaults(fn=cmd_suites)
    command("devices", "CUDA devices rooflab sees and their results directories",
            "rooflab devices").set_defaults(fn=cmd_devices)

    s = command("sweep", "measure points: a named suite, or one kernel's product of axis values",
                "rooflab sweep --kernel copy --impl triton,torch --dtype fp16 --axis N=1,4097,268435456\n"
                "  rooflab sweep --suite smoke --interpret --out /tmp/smoke.csv")
    s.add_argument("--kernel", help="family name (see `rooflab kernels`), e.g. --kernel gemv")
    s.add_argument("--impl", help="comma list (default: all of the family's impls), e.g. --impl triton,torch")
    s.add_argument("--dtype", help="comma list (default: fp16), e.g. --dtype fp16,bf16")
    s.add_argument("--axis", action="append", metavar="NAME=v1,v2",
                   help="axis values; repeat per axis (repeats of one axis add up), e.g. --axis M=1,16 --axis N=4096")
    s.add_argument("--suite", help="named suite (see `rooflab suites`), e.g. --suite linear")
    s.add_argument("--dry-run", action="store_true",
                   help="list the points it would run (after --shard/--resume) with estimated GPU time; no GPU needed")
    s.add_argument("--device", help="device to estimate for with --dry-run (default h100), e.g. --device h200")
    _add_run_options(s)
    s.set_defaults(fn=cmd_sweep)

    e = command("ceilings", "measure the device's ceilings (suite `ceilings`) and store the ceilings table "
                            "beside the run; with --gpus, on every GPU, and flag the ones behind their siblings",
                "rooflab ceilings\n  rooflab ceilings --gpus all --margin 5%   # node health check")
    _add_run_options(e)
    e.add_argument("--margin", type=fraction, default=0.05, metavar="FRACTION",
                   help="with --gpus: flag a GPU this far below the median of its same-SKU siblings (default 5%%), "
                        "e.g. --margin 3%%")
    e.set_defaults(fn=cmd_ceilings)

    g = command("merge", "join shard files of one run (same suite, seed, commit, GPU kind) into one results file",
                "rooflab merge results/h100-80gb-hbm3/linear.csv shards/linear-*.csv")
    g.add_argument("out", help="the merged results file to write (must not exist), e.g. results/h100/linear.csv")
    g.add_argument("files", nargs="+", help="shard results files (each with its .json sidecar)")
    g.set_defaults(fn=cmd_merge)

    r = sub.add_parser(
        "report", help="Markdown report and plots from result files (no GPU needed)",
        description="Build the report from result files alone: per device, measured ceilings, rooflines, fits "
                    "(and fits.csv), fraction of the roof vs batch; the predicted section from the device table "
                    "(every preset layer and attention shape per device, measured points overlaid); decode economics "
                    "(tokenomics.md and .csv). Files that cannot be read are named and skipped; files the previous "
                    "report wrote are replaced, nothing else in --out is touched.",
        epilog="example:\n  rooflab report --results results --out results/report",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("--results", default=str(DEFAULT_RESULTS),
                   help="results CSV or directory of runs (default results/), e.g. --results results/h100-80gb-hbm3")
    r.add_argument("--out", default=str(DEFAULT_REPORT),
                   help="report directory, created if missing (default results/report), e.g. --out /tmp/report")
    r.set_defaults(fn=cmd_report)

    c = sub.add_parser(
        "compare", help="regression gate: NEW against BASE point by point, noise-aware; exit 0 pass, 1 fail, 2 bad input",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="A slowdown counts when new/base − 1 > max(threshold, k × √(noise_base² + noise_new² + drift²)); "
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
    c.add_argument("-k", "--noise-k", type=positive_float, default=3.0,
                   help="a change must also exceed k × the points' combined noise (finite, > 0), e.g. -k 3 "
                        "(default 3)")
    c.add_argument("--noise-cap", default="15%",
                   help="widest noise bound a point may have and still be judged; noisier points are "
                        "inconclusive, e.g. --noise-cap 10%% (default 15%%)")
    c.add_argument("--drift", metavar="FRACTION",
                   help="run-to-run drift of a point's median, added to the noise: bound = max(threshold, k × "
                        "√(noise_base² + noise_new² + drift²)), e.g. --drift 4%% (default: estimated from points "
                        "measured twice, e.g. the headline-repeat stage, else 2%%; the output says which)")
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

    k = command("compile", "compile every family's candidate configs for a GPU target without a GPU: registers, "
                           "spills, shared memory (LDS), occupancy, tensor-core instructions, TMA, 16-byte loads per "
                           "config",
                "rooflab compile\n  rooflab compile --arch all   (every target)\n"
                "  rooflab compile --check   (the CI gate: exit 1 on a finding)")
    k.add_argument("--arch", default="sm_90a",
                   help="target: sm_90a (H100/H200, the default), sm_100a (B200), sm_103a (B300), sm_120a (RTX PRO "
                        "6000 Blackwell), gfx942 (MI300X/MI325X), gfx950 (MI355X), or all, e.g. --arch gfx942")
    k.add_argument("--out", metavar="FILE.csv",
                   help="the CSV to write, or with --check the committed one to judge against "
                        "(default results/static/<arch>.csv), e.g. --out /tmp/sm_90a.csv")
    k.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 on a compile error, shared memory over the limit, a spill in a "
                        "memory-bound family or an unexplained one, or a streaming kernel that lost the 16-byte "
                        "loads --out has, e.g. --check")
    k.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1), metavar="N",
                   help="compiler processes, 1 to the CPU count (default: the CPU count, at most 4), e.g. --jobs 2")
    k.add_argument("--kernel", metavar="NAME[,NAME]",
                   help="only these families (default: every one), e.g. --kernel copy,gemv; needs --out unless "
                        "--check")
    k.add_argument("--points", choices=("headline", "all", "gate"), default="all",
                   help="headline: the headline plan's points only; all: those and the extra shapes (default all); "
                        "gate: the first and last point of each family, dtype and format (CI's subset beyond sm_90a)")
    k.set_defaults(fn=cmd_compile)

    from bench.options import duration

    m = command("run", "the main job: on a GPU, the budgeted headline plan (ceilings, GEMV at batch 1, one "
                       "layer's knee, GEMM, attention, weight-only formats, ragged sizes, a noise repeat, then the "
                       "suites as time remains) and the report; without a GPU, the report from results/",
                "rooflab run                          # on a GPU: 8 minutes of the plan, then the report\n"
                "  rooflab run --dry-run --device h200  # what it would run there, and for how long\n"
                "  rooflab run --budget 30m --resume 20261130T060000Z   # continue a plan")
    m.add_argument("--budget", type=duration, default=None, metavar="DURATION",
                   help="GPU time for the plan, 1 s to 7 days, e.g. --budget 8m, 90s, 1.5h (default 8m); the point "
                        "that would overrun it is not started; not with --full")
    m.add_argument("--full", action="store_true", help="no budget: every stage of the plan and every suite")
    m.add_argument("--resume", metavar="STAMP",
                   help="continue the plan of that stamp (its files results/<device>/STAMP-*.csv), "
                        "e.g. --resume 20261130T060000Z")
    m.add_argument("--dry-run", action="store_true",
                   help="print the plan's points with estimated GPU time, run nothing (no GPU needed)")
    m.add_argument("--device", help="device to estimate for with --dry-run (default: the GPU here, else h100), "
                                    "e.g. --device h200")
    m.add_argument("--results", default=str(DEFAULT_RESULTS), metavar="DIR", help="results directory (default results)")
    m.add_argument("--report", default=str(DEFAULT_REPORT), metavar="DIR",
                   help="report directory (default results/report)")
    m.add_argument("--seed", type=int, help="input seed (default: fresh, recorded in the sidecar), e.g. --seed 7")
    m.add_argument("--gpus", metavar="all|i,j", help="run the plan on every GPU of the node, e.g. --gpus all")
    m.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_timing_options(m)
    m.set_defaults(fn=cmd_run)

    from bench.ab_cli import add_parser as add_ab  # `rooflab ab`: paired A/B of two revisions (bench/ab.py)

    add_ab(sub, _add_timing_options)
    return p


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad command line, already said in one line (2)
        return exc.code if isinstance(exc.code, int) else 2
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
    except BrokenPipeError:  # `rooflab run --dry-run | head`: the reader left; nothing more to say
        _silence_stdout()
        return 0
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # a full disk or quota: the file and the room left
            print(f"rooflab: error: {_full_disk(exc)}", file=sys.stderr)
            return 2
        return _internal(exc)
    except Exception as exc:  # a bug, not bad input: still one line, and never exit 1 (= "regression")
        return _internal(exc)


def _internal(exc: Exception) -> int:
    if os.environ.get("ROOFLAB_DEBUG"):
        raise exc
    text = str(exc).strip().splitlines()
    print(f"rooflab: internal error: {type(exc).__name__}: {text[0] if text else ''} "
          "(rerun with ROOFLAB_DEBUG=1 for the traceback)", file=sys.stderr)
    return 2


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _full_disk(exc: OSError) -> str:
    """``OUT: no space left on device (1.2 MiB free on its filesystem)``: which file, how much room."""
    name = exc.filename or ""
    what = "quota exceeded" if exc.errno == errno.EDQUOT else "no space left on device"
    where = Path(os.path.abspath(name)) if name else Path.cwd()
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        free = f"{_size(shutil.disk_usage(where).free)} free on its filesystem"
    except OSError:
        free = "free space unknown"
    return (f"{name or '(a file)'}: {what} ({free}); rows already written are kept: free space, then continue "
            "with --resume")
