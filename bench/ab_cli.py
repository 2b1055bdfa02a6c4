"""The ``rooflab ab`` command line: its options and the command (see :mod:`bench.ab`)."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import sys
from pathlib import Path

from kernels.errors import UsageError

DEFAULT_OUT = Path("results-ab")  # not results/: the report reads every run there
GPU_SUITE, CPU_SUITE = "ci", "smoke"  # the default points on a GPU, and under --interpret


def add_parser(sub, add_timing_options) -> None:
    from bench.options import fraction, positive_int

    a = sub.add_parser(
        "ab", help="paired A/B of two git revisions on one GPU: exit 0 no regression, 1 regression, 2 could not judge",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Both revisions are checked out in their own worktrees and measured by their own worker "
                    "processes on the same GPU (same points, inputs and seed), interleaved per point in ABBA blocks "
                    "of short repeats until the interval on HEAD/BASE decides: slower, faster, no change, or "
                    "inconclusive. A point HEAD fails the correctness gate on is a regression, however fast. "
                    "Writes base.csv and head.csv (each a run for `rooflab report`) and summary.md (markdown, "
                    "worst first) into --out.\nExit 0: no regression; 1: a regression; 2: could not judge (bad "
                    "input, a point missing or skipped on one side, BASE failing the gate, a worker that cannot "
                    "start), named. Under --interpret the verdict is on correctness alone.",
        epilog="example:\n  rooflab ab origin/main                      # the working tree against origin/main, "
               "suite ci\n  rooflab ab $(git merge-base origin/main HEAD) HEAD --summary \"$GITHUB_STEP_SUMMARY\"\n"
               "  rooflab ab HEAD HEAD --kernel copy --axis N=4097 --interpret   # A/A on the CPU: exit 0")
    a.add_argument("base", help="the revision to compare against (commit, branch or tag), e.g. origin/main")
    a.add_argument("head", nargs="?", help="the revision to judge (default: the working tree, uncommitted changes "
                                           "included), e.g. HEAD")
    a.add_argument("--suite", help=f"named suite (default {GPU_SUITE}; {CPU_SUITE} with --interpret), e.g. --suite ci")
    a.add_argument("--kernel", help="one family instead of a suite (with --impl/--dtype/--axis), e.g. --kernel gemv")
    a.add_argument("--impl", help="comma list, e.g. --impl triton")
    a.add_argument("--dtype", help="comma list, e.g. --dtype fp16,bf16")
    a.add_argument("--axis", action="append", metavar="NAME=v1,v2", help="axis values, as in sweep, e.g. --axis M=1,16")
    a.add_argument("--threshold", type=fraction, default=0.03, metavar="FRACTION",
                   help="smallest change that must be caught (default 3%%), e.g. --threshold 5%%")
    a.add_argument("--max-blocks", type=positive_int, default=16, metavar="N",
                   help="ABBA blocks per point at most (at least 3; default 16), e.g. --max-blocks 20")
    a.add_argument("--out", metavar="DIR", help=f"new or empty folder for the results (default {DEFAULT_OUT}/<UTC "
                                                "stamp>), e.g. --out /tmp/ab")
    a.add_argument("--summary", metavar="FILE", help="also append the markdown summary to FILE, e.g. --summary "
                                                     "\"$GITHUB_STEP_SUMMARY\"")
    a.add_argument("--gpu", type=int, default=0, metavar="INDEX", help="the CUDA device both sides run on (default 0)")
    a.add_argument("--interpret", action="store_true",
                   help="no GPU: Triton's interpreter on the CPU, the verdict on correctness alone")
    a.add_argument("--seed", type=int, help="input seed for both sides (default: fresh, printed), e.g. --seed 7")
    add_timing_options(a)
    a.set_defaults(fn=cmd_ab)


def _gpu(index: int) -> str:
    """The CUDA_VISIBLE_DEVICES entry for CUDA index ``index`` as this process sees it."""
    import torch

    count = torch.cuda.device_count()
    if not 0 <= index < count:
        raise UsageError(f"--gpu {index}: give a CUDA index in 0…{count - 1}")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return visible.split(",")[index].strip() if visible else str(index)


def cmd_ab(args) -> int:
    from bench import device
    from bench.ab import AbOptions, run_ab
    from bench.ab_report import exit_code, summary, write_aside
    from bench.ab_stats import AbRule
    from bench.commands import _check_tune_cache, _points, _policy
    from bench.sweep import timing_record

    if args.kernel and args.suite:
        raise UsageError("give --suite or --kernel (with --impl/--dtype/--axis), not both")
    if not args.kernel and not args.suite:
        args.suite = CPU_SUITE if args.interpret else GPU_SUITE
    if args.max_blocks < 3:
        raise UsageError(f"--max-blocks {args.max_blocks}: at least 3 (an interval needs a few blocks)")
    if args.summary and not Path(args.summary).parent.is_dir():
        raise UsageError(f"--summary {args.summary}: its folder does not exist")
    _check_tune_cache()
    _points(args)  # a selection this checkout's kernels refuse is one line now, before any worktree
    gpu = "0"
    if not args.interpret:
        if not device.cuda_available():
            raise UsageError("no CUDA device found: `rooflab ab … --interpret` judges correctness alone on the CPU")
        gpu = _gpu(args.gpu)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out) if args.out else DEFAULT_OUT / stamp
    selection = {k: getattr(args, k) for k in ("suite", "kernel", "impl", "dtype", "axis")}
    options = AbOptions(base=args.base, head=args.head, selection=selection, out=out,
                        policy_record=timing_record(_policy(args)),
                        rule=AbRule(threshold=args.threshold, max_blocks=args.max_blocks), seed=args.seed,
                        interpret=args.interpret, gpu=gpu, command=shlex.join(["rooflab", *sys.argv[1:]]))
    outcomes, facts = run_ab(options, say=lambda line: print(line, flush=True))
    code = exit_code(outcomes, options.rule.threshold)
    text = summary(outcomes, facts, code)
    write_aside(out / "summary.md", text)
    print(text)
    if args.summary:
        with open(args.summary, "a") as f:
            f.write(text + "\n")
    print(f"rooflab ab: {out / 'base.csv'}, {out / 'head.csv'}, {out / 'summary.md'} (exit {code})")
    return code
