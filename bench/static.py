"""``rooflab compile``: compile every family's candidate configs for a GPU target, without a GPU.

Targets: sm_90a (H100/H200), sm_100a (B200), sm_103a (B300), sm_120a (RTX PRO 6000 Blackwell),
gfx942 (MI300X/MI325X), gfx950 (MI355X); ``--arch all`` compiles each in turn. For the headline shapes
(issue 10's first-contact plan, one ragged shape per family) each Triton impl's ``Impl.candidates``
names the kernels a point launches on the target's limits (:data:`kernels.tuning.ARCH_LIMITS`) and the
configs its autotuner would try; worker processes (:mod:`bench.static_compile`, the Triton
interpreter off) compile each config for the target and record registers, spills, shared memory (LDS),
occupancy, the tensor-core instruction family, TMA and 16-byte global accesses. The rows go to
``results/static/<arch>.csv``; ``--check`` instead judges them (:func:`violations`) against the
committed file and exits 1 on a compile error, shared memory over the limit, a spill in a
memory-bound family, an unexplained spill elsewhere, a streaming kernel that lost its 16-byte
accesses (or a streaming point none of whose configs has them), or a tensor-core family compiled
to scalar FMA.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from kernels.errors import UsageError

ARCHS = ("sm_90a", "sm_100a", "sm_103a", "sm_120a", "gfx942", "gfx950")
ALL = "all"
# the sm_90a table's first columns, unchanged; then what every target reports alike (AMD registers and
# scratch in the same columns: registers = VGPRs, spill_stores = scratch bytes per lane)
COLUMNS = ("arch", "triton", "kernel", "variant", "shape", "dtype", "config", "num_warps", "num_stages",
           "registers", "spill_stores", "spill_loads", "smem_bytes", "smem_limit", "wgmma", "tma",
           "ld_global_v4", "st_global_v4", "ld_global_bytes", "st_global_bytes", "status", "note",
           "sgprs", "agprs", "occupancy", "mma", "scaled_mma")
KEY = ("kernel", "variant", "shape", "dtype", "config")  # one compiled config
STREAMING = ("copy", "triad", "read", "write", "dequant")  # every shape streams; gemv and qgemv at M = 1
STREAMING_AT_M1 = ("gemv", "qgemv")
# families (family:variant) whose kernels are tl.dot: on any target they must compile to a tensor-core MMA;
# gemv's dot tiles (USE_DOT=True) and qgemv from M = 2 too
TENSOR_CORE = ("gemm", "qgemm", "attn_prefill", "attn_mla:mla", "attn_decode:decode")


@dataclass(frozen=True)
class Job:
    """One point to compile: a family, a dtype and the axes that differ from the spec's defaults."""

    kernel: str
    dtype: str
    axes: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        return {"kernel": self.kernel, "dtype": self.dtype, "axes": self.axes}


def _extra_sweeps():
    """Points beyond the headline plan that §3 of issue 10 asked about, or that the plan times only
    on cuBLAS/torch: every stream dtype, prefill head_dim 64 and 256, MLA decode, each weight
    format over the small batches, dequant, qgemm int8 and FP4 (the block-scaled path by target)."""
    from bench.suites import Shape, Sweep

    square = (Shape.of("square.8192", N=8192, K=8192),)
    dram, ragged = 1 << 28, (1 << 24) + 3
    formats = (("int8", 128), ("fp8", 128), ("int4", 128), ("mxfp4", 32))
    return (
        Sweep.make("copy", ("triton",), ("fp32", "fp16", "bf16"), N=(dram, ragged)),
        Sweep.make("triad", ("triton",), ("fp32", "fp16", "bf16"), N=(dram, ragged)),
        Sweep.make("read", ("triton",), ("fp32", "bf16"), N=(dram, ragged)),
        Sweep.make("write", ("triton",), ("fp32", "bf16"), N=(dram, ragged)),
        Sweep.make("fma", ("triton",), ("fp32",)),
        Sweep.make("gemm", ("triton",), ("fp8",), shapes=square, M=(64,)),
        Sweep.make("attn_prefill", ("triton",), ("bf16",), batch=(1,), heads=(32,), kv_heads=(8,), seq_q=(4096,),
                   seq_kv=(4096,), head_dim=(64, 256), causal=(True,)),
        Sweep.make("attn_mla", ("triton",), ("bf16",), batch=(1, 64)),
        *(Sweep.make("qgemv", ("triton",), ("fp16",), shapes=square, M=(1, 2, 4, 8, 16), format=(fmt,),
                     group_size=(group,)) for fmt, group in formats),
        *(Sweep.make("dequant", ("triton",), ("fp16",), shapes=square, format=(fmt,), group_size=(group,))
          for fmt, group in formats),
        Sweep.make("dequant", ("triton",), ("fp16",), shapes=(Shape.of("ragged", N=4097, K=4112),), format=("int8",)),
        Sweep.make("qgemm", ("triton",), ("fp16",), shapes=square, M=(256, 4096), format=("int8",)),
        # FP4 weights at a batch: block-scaled MMA (tl.dot_scaled) on Blackwell and gfx950, dequant elsewhere
        Sweep.make("qgemm", ("triton",), ("fp16",), shapes=square, M=(256,), format=("mxfp4",), group_size=(32,)),
        Sweep.make("qgemm", ("triton",), ("fp16",), shapes=square, M=(256,), format=("nvfp4",), group_size=(16,)),
    )


POINTS = ("headline", "all", "gate")


def compile_jobs(points: str = "all", arch: str = "sm_90a") -> tuple[Job, ...]:
    """Every Triton point of the headline plan (bench/suites/headline.py, tiers 1–8 with their
    ragged sizes) and, for ``points="all"``, :func:`_extra_sweeps`, less what a GPU of ``arch`` would
    skip; one job per case. ``points="gate"``: :func:`gate_subset` of all of them."""
    from bench.suites import expand
    from bench.suites.headline import HEADLINE
    from kernels import registry
    from kernels.spec import DeviceCaps
    from kernels.tuning import ARCH_LIMITS

    limits = ARCH_LIMITS[arch]
    caps = DeviceCaps(f"{arch} (static)", limits.capability, False, 50 << 20, limits.sm_count, 80 << 30)
    jobs: dict[tuple, Job] = {}
    for point in expand(HEADLINE.sweeps + (_extra_sweeps() if points != "headline" else ())):
        spec = registry.get(point.case.kernel)
        if point.impl != "triton" or point.skip or spec.skip_reason(point.case, spec.impl("triton"), caps):
            continue
        jobs.setdefault((point.case.kernel, point.case.dtype, point.case.values),
                        Job(point.case.kernel, point.case.dtype.value, point.case.as_dict()))
    found = tuple(jobs.values())
    return gate_subset(found) if points == "gate" else found


def gate_subset(jobs: tuple[Job, ...]) -> tuple[Job, ...]:
    """A representative few points for CI on the targets it gates beyond sm_90a: per family, dtype and
    weight format, the first and the last point of the plan (the smallest batch and the largest or
    ragged shape), so every kernel and variant compiles without the whole sweep."""
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        groups.setdefault((job.kernel, job.dtype, job.axes.get("format")), []).append(job)
    keep = {id(group[0]) for group in groups.values()} | {id(group[-1]) for group in groups.values()}
    return tuple(job for job in jobs if id(job) in keep)


# ---------------------------------------------------------------------------------------------
# Compiling (in worker processes) and the CSV
# ---------------------------------------------------------------------------------------------


def _progress_counts(outs: list[Path], plans: list[Path]) -> tuple[dict, dict | None]:
    """Configs compiled so far per family (complete lines of the workers' row files), and the totals
    per family once every worker has written its plan (else None)."""
    done: dict[str, int] = {}
    for out in outs:
        try:
            text = out.read_text()
        except OSError:
            continue
        for line in text.splitlines(keepends=True):
            if line.endswith("\n"):
                try:
                    kernel = json.loads(line)["kernel"]
                except (ValueError, KeyError, TypeError):
                    continue
                done[kernel] = done.get(kernel, 0) + 1
    totals: dict[str, int] = {}
    for plan in plans:
        try:
            part = json.loads(plan.read_text())
        except (OSError, ValueError):
            return done, None
        for kernel, n in part.items():
            totals[kernel] = totals.get(kernel, 0) + int(n)
    return done, totals


def compile_rows(arch: str, jobs: tuple[Job, ...], workers: int = 2, progress=None, poll_s: float = 0.5) -> list[dict]:
    """Compile every candidate config of ``jobs`` for ``arch``; one row per config, in job order.

    ``progress(done, totals)`` is called while the workers run: configs compiled per family, and the
    configs per family in all (None until the workers have listed them)."""
    import triton

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    with tempfile.TemporaryDirectory(prefix="rooflab-compile-") as tmp:
        job_file = Path(tmp) / "jobs.json"
        job_file.write_text(json.dumps([job.as_json() for job in jobs]))
        outs = [Path(tmp) / f"rows{i}.jsonl" for i in range(workers)]
        plans = [Path(tmp) / f"plan{i}.json" for i in range(workers)]
        logs = [(Path(tmp) / f"err{i}.txt").open("w+") for i in range(workers)]  # a file: a pipe could fill up
        procs = [subprocess.Popen([sys.executable, "-m", "bench.static_compile", str(job_file), str(out),
                                   "--arch", arch, "--shard", f"{i}/{workers}", "--plan", str(plan)],
                                  env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
                 for i, (out, plan, log) in enumerate(zip(outs, plans, logs))]
        try:
            while any(proc.poll() is None for proc in procs):
                if progress is not None:
                    progress(*_progress_counts(outs, plans))
                time.sleep(poll_s)
        except BaseException:
            for proc in procs:
                proc.kill()
            raise
        if progress is not None:
            progress(*_progress_counts(outs, plans))
        for proc, log in zip(procs, logs):
            log.seek(0)
            error = log.read()
            log.close()
            if proc.returncode:
                raise RuntimeError(f"static compiler worker failed (exit {proc.returncode}):\n{error[-4000:]}")
        rows = [json.loads(line) for out in outs for line in out.read_text().splitlines()]
    rows.sort(key=lambda row: row.pop("index"))
    return [{"arch": arch, "triton": triton.__version__, **row} for row in rows]


class ProgressLines:
    """Progress of a compile on stderr without a flood: a line when a family is done, and one every
    ``every_s`` seconds while nothing finishes (configs done / total, the families under way)."""

    def __init__(self, stream=None, every_s: float = 10.0, clock=time.monotonic):
        self.stream, self.every_s, self.clock = stream, every_s, clock
        self.began = self.last = clock()
        self.finished: set[str] = set()

    def __call__(self, done: dict, totals: dict | None) -> None:
        now = self.clock()
        stream = self.stream or sys.stderr
        count = sum(done.values())
        of = f"/{sum(totals.values())}" if totals else ""
        elapsed = f"{now - self.began:.0f} s"
        if totals:
            for kernel, total in totals.items():
                if kernel not in self.finished and done.get(kernel, 0) >= total:
                    self.finished.add(kernel)
                    print(f"compile: {kernel} done ({total} configs); {count}{of} configs in all, {elapsed}",
                          file=stream, flush=True)
                    self.last = now
        if now - self.last >= self.every_s:
            going = [f"{k} {n}/{totals[k]}" if totals and k in totals else f"{k} {n}"
                     for k, n in done.items() if k not in self.finished]
            print(f"compile: {count}{of} configs, {elapsed}" + (f" ({', '.join(going)})" if going else ""),
                  file=stream, flush=True)
            self.last = now


def write_csv(path: Path, rows: list[dict]) -> None:
    """All rows or nothing: written beside ``path`` and moved into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in COLUMNS})
    tmp.replace(path)


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------
# The gate
# ---------------------------------------------------------------------------------------------


def _flag(value) -> bool:
    return value is True or str(value).lower() == "true"


def _int(value) -> int:
    return int(value) if value not in (None, "") else 0


def _axes(shape: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in shape.split())


def streaming(row: dict) -> bool:
    """A kernel that only streams memory: it must keep its 16-byte accesses."""
    return row["kernel"] in STREAMING or (row["kernel"] in STREAMING_AT_M1 and _axes(row["shape"]).get("M") == "1")


def memory_bound(kernel: str) -> bool:
    from kernels import registry

    return "memory" in registry.get(kernel).tags


def _label(row: dict) -> str:
    return f"{row['kernel']} {row['variant']} {row['dtype']} [{row['shape']}] {row['config']}"


def aligned(row: dict) -> bool:
    """Every row length (N, K) a multiple of 16 elements: Triton can then prove 16-byte alignment, so some config
    must make 16-byte accesses (a ragged K, e.g. 4104, leaves every W row unprovable, by design)."""
    axes = _axes(row["shape"])
    return all(_int(axes[name]) % 16 == 0 for name in ("N", "K") if name in axes and axes[name].isdigit())


def tensor_core(row: dict) -> bool:
    """A config whose kernel multiplies tiles with tl.dot: it must reach the target's tensor cores."""
    if row["kernel"] in TENSOR_CORE or f"{row['kernel']}:{row['variant']}" in TENSOR_CORE:
        return True
    if row["kernel"] == "gemv":
        return "USE_DOT=True" in row["config"].split()
    return row["kernel"] == "qgemv" and _int(_axes(row["shape"]).get("M")) >= 2


def violations(rows: list[dict], baseline: list[dict]) -> list[str]:
    """What fails the gate, one line each (empty: the rows pass)."""
    committed = {tuple(row[k] for k in KEY): row for row in baseline}
    found = []
    wide: dict[tuple, bool] = {}  # streaming point -> some config makes 16-byte accesses
    for row in rows:
        label = _label(row)
        if row["status"] == "compile-error":
            found.append(f"compile error: {label}: {row['note']}")
            continue
        if row["status"] == "over-smem" or _int(row["smem_bytes"]) > _int(row["smem_limit"]):
            found.append(f"shared memory {row['smem_bytes']} B over the {row['smem_limit']} B limit: {label}")
        spill = _int(row["spill_stores"]) + _int(row["spill_loads"])
        if spill and memory_bound(row["kernel"]):
            found.append(f"spill ({row['spill_stores']} B stored, {row['spill_loads'] or 0} B loaded) in a "
                         f"memory-bound family: {label}")
        elif spill and not row["note"]:
            found.append(f"unexplained spill ({row['spill_stores']} B stored): {label}")
        if "mma" in row and tensor_core(row) and not row["mma"] and not _flag(row.get("wgmma")):
            found.append(f"a tensor-core kernel compiled to scalar FMA (no mma/wgmma/tcgen05/mfma in the "
                         f"{'AMDGCN' if row['arch'].startswith('gfx') else 'PTX'}): {label}")
        if streaming(row) and aligned(row):
            point = (row["kernel"], row["variant"], row["shape"], row["dtype"])
            wide[point] = wide.get(point, False) or _flag(row["ld_global_v4"]) or _flag(row["st_global_v4"])
        old = committed.get(tuple(row[k] for k in KEY))
        if old is not None and streaming(row):
            for access in ("ld", "st"):
                column = f"{access}_global_v4"
                if _flag(old[column]) and not _flag(row[column]):
                    found.append(f"lost its 16-byte global {'loads' if access == 'ld' else 'stores'} "
                                 f"(committed: {old[f'{access}_global_bytes']}; now: "
                                 f"{row[f'{access}_global_bytes'] or 'none'}): {label}")
    for (kernel, variant, shape, dtype), ok in wide.items():
        if not ok:
            found.append(f"a streaming kernel without 16-byte accesses in any config: {kernel} {variant} {dtype} "
                         f"[{shape}]")
    return found


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------


def default_out(arch: str) -> Path:
    return Path("results") / "static" / f"{arch}.csv"


def _check_args(arch: str, out: Path, check: bool) -> None:
    if check:
        if not out.is_file():
            raise UsageError(f"--check compares against {out}, which does not exist; run `rooflab compile` first")
        return
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory; give a file path, e.g. {default_out(arch)}")
    try:  # the file is written at the end: make sure now that it can be
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.name}."):
            pass
    except OSError as error:
        raise UsageError(f"--out {out}: cannot write there ({error.strerror})") from None


def select_jobs(jobs: tuple[Job, ...], kernels: str | None) -> tuple[Job, ...]:
    """Only the families ``--kernel a,b`` names (each must have points to compile)."""
    if kernels is None:
        return jobs
    from bench.options import selection

    names = selection(kernels, "--kernel")
    have = list(dict.fromkeys(job.kernel for job in jobs))
    for name in names:
        if name not in have:
            raise UsageError(f"--kernel {name}: no such family to compile; valid: {', '.join(have)}")
    return tuple(job for job in jobs if job.kernel in names)


def run_compile(arch: str, out: Path | None, check: bool, workers: int, kernels: str | None = None,
                points: str = "all", progress=None) -> int:
    """Compile the headline candidates for ``arch`` (or every target: ``all``); write each CSV, or
    (``check``) gate them against it. Exit 1 when any target's gate fails."""
    cpus = os.cpu_count() or 1
    if arch not in ARCHS + (ALL,):
        raise UsageError(f"unknown arch {arch!r}; valid: {', '.join(ARCHS + (ALL,))}")
    if workers < 1:
        raise UsageError(f"--jobs must be ≥ 1, got {workers}")
    if workers > cpus:
        raise UsageError(f"--jobs {workers}: more compiler processes than CPUs ({cpus}); give 1…{cpus}")
    if points not in POINTS:
        raise UsageError(f"--points {points!r}; valid: {', '.join(POINTS)}")
    archs = ARCHS if arch == ALL else (arch,)
    if arch == ALL and out is not None:
        raise UsageError(f"--arch all writes one file per target (results/static/<arch>.csv); drop --out {out}, or "
                         f"give one --arch of {', '.join(ARCHS)}")
    subset = kernels is not None or points != "all"
    if subset and out is None and not check:
        raise UsageError(f"a subset (--kernel/--points {points}) writes only its rows: give --out FILE.csv and one "
                         f"--arch, so {default_out(archs[0])} keeps every family")
    for one in archs:  # every target's file is checked before any compiling starts
        _check_args(one, out or default_out(one), check)
    failed = 0
    for one in archs:
        failed |= _compile_one(one, out or default_out(one), check, workers, kernels, points, progress)
    return failed


def _compile_one(arch: str, out: Path, check: bool, workers: int, kernels: str | None, points: str, progress) -> int:
    began = time.perf_counter()
    jobs = select_jobs(compile_jobs(points, arch), kernels)
    print(f"compile: {len(jobs)} points for {arch} with {workers} compiler processes; progress every few seconds "
          "and per family", file=sys.stderr, flush=True)
    rows = compile_rows(arch, jobs, workers, progress=progress or ProgressLines())
    seconds = time.perf_counter() - began
    statuses = {status: sum(row["status"] == status for row in rows) for status in ("ok", "over-smem", "compile-error")}
    summary = ", ".join(f"{n} {status}" for status, n in statuses.items() if n)
    print(f"{arch}: {len(rows)} configs of {len(jobs)} points compiled in {seconds:.0f} s ({summary}), "
          f"Triton {rows[0]['triton'] if rows else '?'}")
    if not check:
        write_csv(out, rows)
        print(f"wrote {len(rows)} rows to {out} ({out.resolve()})")
        return 0
    baseline = read_csv(out)
    versions = {row["triton"] for row in baseline}
    if rows and versions and versions != {rows[0]["triton"]}:
        print(f"note: {out} was compiled with Triton {', '.join(sorted(versions))}, this run with "
              f"{rows[0]['triton']}: registers and spills may differ (CI gates with the GPU image's version)")
    found = violations(rows, baseline)
    for line in found:
        print(f"FAIL {line}")
    print(f"static gate for {arch} against {out}: {'failed, ' + str(len(found)) + ' findings' if found else 'passed'}")
    return 1 if found else 0
