"""The static compiler's worker: compiles Triton kernels for a GPU target on a machine without one.

Run as ``python -m bench.static_compile JOBS.json OUT.jsonl --arch sm_90a --shard i/n`` by
:mod:`bench.static` (never imported by it: this process swaps Triton's driver and must not inherit
``TRITON_INTERPRET``). Triton picks its target from the active driver; a :class:`StandInDriver`
reports the target (``GPUTarget("cuda", 100, 32)``, ``("hip", "gfx942", 64)`` …) and its limits, so
``JITFunction.warmup`` compiles exactly what a launch would (same argument specialisation, constexprs
and configs) and never launches anything.

Per config it records the same facts on every target: registers (ptxas; the AMDGCN metadata's VGPRs,
with SGPRs and AGPRs beside them), spills (ptxas spill bytes; scratch bytes per lane on AMD), shared
memory (LDS), the occupancy those allow, the tensor-core instruction family in the PTX/AMDGCN text
(tcgen05, wgmma, mma.sync, mfma, wmma; scaled-MMA for block-scaled FP4/FP8), TMA bulk tensor copies,
and the widths of global loads and stores.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import shutil
import sys
import traceback
from collections import Counter
from dataclasses import asdict, dataclass

# arch -> (Triton backend, its target arch): capability 90 compiles for sm_90a, 100 for sm_100a …
ARCH_TARGETS = {"sm_90a": ("cuda", 90), "sm_100a": ("cuda", 100), "sm_103a": ("cuda", 103), "sm_120a": ("cuda", 120),
                "gfx942": ("hip", "gfx942"), "gfx950": ("hip", "gfx950")}
PTXAS_REGISTERS = re.compile(r"Used (\d+) registers")
PTXAS_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
# a global load or store and its vector shape: ld.global[.qualifiers].v4.b32 …
GLOBAL_ACCESS = {"ld": re.compile(r"\bld\.global((?:\.[\w:]+)*)"), "st": re.compile(r"\bst\.global((?:\.[\w:]+)*)")}
# an asynchronous global -> shared copy and its size in bytes (Ampere-style pipelining)
CP_ASYNC = re.compile(r"\bcp\.async(?:\.\w+)*\.shared\.global\s*\[[^\]]*\],\s*\[[^\]]*\],\s*(0x[0-9a-fA-F]+|\d+)")
LANE_BITS = {"8": 8, "16": 16, "32": 32, "64": 64, "128": 128}
# tensor-core instructions, most capable first: (family, pattern in the PTX / AMDGCN text)
MMA_FAMILIES = {"ptx": (("tcgen05", re.compile(r"\btcgen05\.mma\b")), ("wgmma", re.compile(r"\bwgmma\.mma_async\b")),
                        ("mma.sync", re.compile(r"\bmma\.sync\b"))),
                "amdgcn": (("mfma", re.compile(r"\bv_mfma_")), ("wmma", re.compile(r"\bv_wmma_")))}
# block-scaled MMA (mxfp4/nvfp4/mxfp8 with per-block scales in the instruction)
SCALED_MMA = {"ptx": re.compile(r"\.block_scale\b|kind::mxf"), "amdgcn": re.compile(r"\bv_mfma_scale_")}
AMD_METADATA = {name: re.compile(rf"\.{name}:\s*(\d+)") for name in
                ("vgpr_count", "sgpr_count", "agpr_count", "private_segment_fixed_size", "vgpr_spill_count",
                 "sgpr_spill_count")}
# an AMDGCN global/buffer load or store and its size suffix: global_load_dwordx4, buffer_store_short, global_load_b128 …
AMD_ACCESS = {"ld": re.compile(r"\b(?:global|buffer)_load_(?:lds_)?(\w+)"),
              "st": re.compile(r"\b(?:global|buffer)_store_(\w+)")}
AMD_WIDTHS = {"dwordx4": 16, "b128": 16, "dwordx3": 12, "b96": 12, "dwordx2": 8, "b64": 8, "dword": 4, "b32": 4,
              "short": 2, "ushort": 2, "sshort": 2, "b16": 2, "short_d16": 2, "short_d16_hi": 2, "byte": 1,
              "ubyte": 1, "sbyte": 1, "u8": 1, "i8": 1, "b8": 1, "ubyte_d16": 1, "sbyte_d16": 1, "ubyte_d16_hi": 1,
              "sbyte_d16_hi": 1, "byte_d16_hi": 1, "u16": 2, "i16": 2}


@dataclass
class Compiled:
    """One compiled config (or its failure): a row of results/static/<arch>.csv, less the run's columns."""

    index: int  # position in the job list, so rows merge back in order
    kernel: str  # family
    variant: str  # the TuneSpace name
    shape: str
    dtype: str
    config: str
    num_warps: int
    num_stages: int
    registers: int | None = None  # per thread; AMD: arch VGPRs per lane
    spill_stores: int | None = None  # bytes; AMD: scratch (private segment) bytes per lane
    spill_loads: int | None = None  # bytes; AMD: not reported (empty)
    smem_bytes: int | None = None  # shared memory; AMD: LDS
    smem_limit: int = 0
    wgmma: bool = False  # kept for the sm_90a table's readers: mma == "wgmma"
    sgprs: int | None = None  # AMD scalar registers per wave
    agprs: int | None = None  # AMD accumulation registers per lane (MFMA results)
    occupancy: int | None = None  # resident warps (waves) per SM (CU) that registers, shared memory and the warp limit allow
    mma: str = ""  # tensor-core instruction family: tcgen05, wgmma, mma.sync, mfma, wmma; "" none (scalar FMA)
    scaled_mma: bool = False  # block-scaled MMA (FP4/FP8 with per-block scales in the instruction)
    tma: bool = False
    ld_global_v4: bool = False
    st_global_v4: bool = False  # 16-byte global stores present
    ld_global_bytes: str = ""  # bytes per global load instruction in the PTX × how many, e.g. "16x24 2x4"
    st_global_bytes: str = ""
    status: str = "ok"  # ok, compile-error, over-smem
    note: str = ""


def access_widths(ptx: str, op: str) -> Counter:
    """Bytes per global ``op`` ("ld" or "st") instruction in ``ptx`` (v4 of 32-bit lanes = 16) -> how many."""
    widths: Counter = Counter()
    for match in GLOBAL_ACCESS[op].finditer(ptx):
        parts = match.group(1).split(".")
        lanes = 1
        bits = 32
        for part in parts:
            if part in ("v2", "v4", "v8"):
                lanes = int(part[1:])
            elif part[:1] in "bufs" and part[1:] in LANE_BITS:
                bits = LANE_BITS[part[1:]]
        widths[lanes * bits // 8] += 1
    if op == "ld":  # cp.async reads global memory too: its copy size is its width
        for match in CP_ASYNC.finditer(ptx):
            widths[int(match.group(1), 0)] += 1
    return widths


def describe_widths(widths: Counter) -> str:
    return " ".join(f"{width}x{count}" for width, count in sorted(widths.items(), reverse=True))


_PTXAS_LOGS: dict[str, str] = {}  # compiled kernel hash -> its ptxas report (a cache hit prints none)


def mma_family(text: str, language: str) -> tuple[str, bool]:
    """The most capable tensor-core instruction family in PTX or AMDGCN text ("" when none), and
    whether a block-scaled MMA appears."""
    family = next((name for name, pattern in MMA_FAMILIES[language] if pattern.search(text)), "")
    return family, bool(SCALED_MMA[language].search(text))


def amd_access_widths(asm: str, op: str) -> Counter:
    """Bytes per AMDGCN global/buffer ``op`` ("ld" or "st") instruction -> how many."""
    widths: Counter = Counter()
    for match in AMD_ACCESS[op].finditer(asm):
        width = AMD_WIDTHS.get(match.group(1))
        if width is not None:
            widths[width] += 1
    return widths


def occupancy(limits, num_warps: int, registers: int | None, smem: int, extra_registers: int = 0) -> int | None:
    """Resident warps (waves) per SM (CU): whole blocks that fit by registers, shared memory (LDS) and the
    warp limit. NVIDIA allocates registers per warp in 256-register units and reserves 1 KiB of shared
    memory per block (CUDA occupancy calculator); AMD allocates a lane's VGPRs + AGPRs in units of 8
    from each SIMD's 512 (CDNA3 ISA), a workgroup's waves spread over the CU's 4 SIMDs."""
    if registers is None or num_warps < 1:
        return None
    if limits.amd:
        per_lane = -(-(registers + extra_registers) // 8) * 8
        waves_by_regs = 4 * min(limits.max_warps_per_sm // 4, 512 // max(per_lane, 1))
        by_regs = waves_by_regs // num_warps
        by_smem = limits.smem_per_sm // smem if smem else by_regs
    else:
        per_warp = -(-(registers * limits.warp_size) // 256) * 256
        by_regs = limits.registers_per_sm // (per_warp * num_warps)
        by_smem = limits.smem_per_sm // (smem + 1024)
    blocks = min(by_regs, by_smem, limits.max_warps_per_sm // num_warps, 32)
    return max(blocks, 0) * num_warps


def inspect(kernel, ptxas_log: str, row: Compiled, limits=None) -> Compiled:
    """Fill ``row`` from a compiled kernel and the ptxas log printed while compiling it (empty when
    Triton reused a binary it compiled earlier in this process for an identical specialisation)."""
    row.smem_bytes = int(kernel.metadata.shared)
    row.num_warps = int(kernel.metadata.num_warps)
    row.num_stages = int(kernel.metadata.num_stages)
    if "amdgcn" in kernel.asm:
        _inspect_amdgcn(kernel.asm["amdgcn"], row)
    else:
        _inspect_ptx(kernel, ptxas_log, row)
    if limits is not None:
        row.occupancy = occupancy(limits, row.num_warps, row.registers, row.smem_bytes, row.agprs or 0)
    if row.smem_bytes > row.smem_limit:
        row.status = "over-smem"
    return row


def _inspect_ptx(kernel, ptxas_log: str, row: Compiled) -> None:
    ptxas_log = _PTXAS_LOGS.setdefault(kernel.hash, ptxas_log) or ptxas_log
    ptx = kernel.asm["ptx"]
    registers = PTXAS_REGISTERS.search(ptxas_log)
    spills = PTXAS_SPILLS.search(ptxas_log)
    row.registers = int(registers.group(1)) if registers else None
    row.spill_stores, row.spill_loads = (int(spills.group(1)), int(spills.group(2))) if spills else (None, None)
    row.mma, row.scaled_mma = mma_family(ptx, "ptx")
    row.wgmma = row.mma == "wgmma"
    row.tma = "cp.async.bulk.tensor" in ptx
    loads, stores = access_widths(ptx, "ld"), access_widths(ptx, "st")
    row.ld_global_v4, row.st_global_v4 = loads[16] > 0, stores[16] > 0
    row.ld_global_bytes, row.st_global_bytes = describe_widths(loads), describe_widths(stores)


def _inspect_amdgcn(asm: str, row: Compiled) -> None:
    found = {name: pattern.search(asm) for name, pattern in AMD_METADATA.items()}
    value = {name: int(match.group(1)) if match else None for name, match in found.items()}
    row.registers, row.sgprs, row.agprs = value["vgpr_count"], value["sgpr_count"], value["agpr_count"]
    row.spill_stores, row.spill_loads = value["private_segment_fixed_size"], None
    row.mma, row.scaled_mma = mma_family(asm, "amdgcn")
    loads, stores = amd_access_widths(asm, "ld"), amd_access_widths(asm, "st")
    row.ld_global_v4, row.st_global_v4 = loads[16] > 0, stores[16] > 0
    row.ld_global_bytes, row.st_global_bytes = describe_widths(loads), describe_widths(stores)


# ---------------------------------------------------------------------------------------------
# The stand-in driver
# ---------------------------------------------------------------------------------------------


def install_stand_in_driver(arch: str, limits) -> None:
    """Make Triton compile for ``arch`` with ``limits`` without a GPU (nothing can be launched)."""
    import torch
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.backends.driver import DriverBase

    backend, target = ARCH_TARGETS[arch]

    class _Utils:
        @staticmethod
        def get_device_properties(device):
            return {"max_shared_mem": limits.smem_per_block, "multiprocessor_count": limits.sm_count,
                    "max_num_regs": limits.registers_per_sm, "warpSize": limits.warp_size}

    class StandInDriver(DriverBase):
        """Answers target and device questions; refuses anything that would run a kernel."""

        def __init__(self):
            self.utils = _Utils()

        @classmethod
        def is_active(cls):
            return False

        def get_current_target(self):
            return GPUTarget(backend, target, limits.warp_size)

        def get_active_torch_device(self):
            return torch.device("meta")

        def get_current_device(self):
            return 0

        def get_current_stream(self, device=None):
            return 0

        def map_python_to_cpp_type(self, ty):
            raise RuntimeError("stand-in driver: compile only, no launcher")

        def get_benchmarker(self):
            raise RuntimeError("stand-in driver: compile only, nothing can be timed")

        def get_device_interface(self):
            raise RuntimeError("stand-in driver: no device")

        def get_empty_cache_for_benchmark(self):
            raise RuntimeError("stand-in driver: no device")

        def clear_cache(self, cache):
            pass

    triton.runtime.driver.set_active(StandInDriver())
    triton.knobs.nvidia.dump_ptxas_log = True  # ptxas -v's report is printed; we capture it


# ---------------------------------------------------------------------------------------------
# Compiling jobs
# ---------------------------------------------------------------------------------------------


def compile_config(space, config, row: Compiled, limits=None) -> Compiled:
    """Compile one config of a TuneSpace as a launch would; errors become a row, not an exception."""
    from kernels.tuning import describe

    args, constexprs = space.arguments()
    row.config = describe(config)
    meta = config.all_kwargs()
    if config.pre_hook is not None:  # e.g. TMA descriptors take their block shape from the config
        names = space.kernel.arg_names
        config.pre_hook({**dict(zip(names, args)), **constexprs, **meta})
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):
            kernel = space.kernel.warmup(*args, grid=(1,), **constexprs, **meta)
    except Exception as error:  # any compiler failure is a finding, recorded and gated
        row.status = "compile-error"
        cause = error  # Triton wraps the reason (e.g. "input_precision must be one of …") in chained errors
        while (cause.__cause__ or cause.__context__) is not None and cause is not (cause.__cause__ or cause.__context__):
            cause = cause.__cause__ or cause.__context__
        lines = [line for line in str(error).strip().splitlines() if line.strip()] or [type(error).__name__]
        reason = [line for line in str(cause).strip().splitlines() if line.strip()]
        row.note = f"{type(error).__name__}: {lines[0][:120]}" + (f" {reason[-1][:160]}" if cause is not error and reason
                                                                   else "")
        return row
    return inspect(kernel, log.getvalue(), row, limits)


def expand(jobs: list[dict], limits) -> list[tuple]:
    """Every (job, case, space, config) the jobs ask for, in a fixed order; a job whose candidates
    cannot be listed gives one (job, None, None, error) item, reported as a compile error."""
    from kernels import registry

    items = []
    for job in jobs:
        try:
            spec = registry.get(job["kernel"])
            case = spec.case(job["dtype"], **job["axes"])
            hook = spec.impl("triton").candidates
            if hook is None:
                raise LookupError(f"{spec.name}'s triton impl has no Impl.candidates hook")
            items += [(job, case, space, config) for space in hook(case, limits) for config in space.configs]
        except Exception as error:  # a broken job is a finding for the gate, not a crash
            items.append((job, None, None, error))
    return items


def _specialisation(value):
    """What Triton keys a compile on for one argument (approximately: enough to group duplicates)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return ("int", value == 1, value % 16 == 0)
    if hasattr(value, "block_shape"):  # a TMA descriptor: its shape and strides are baked in
        return ("desc", str(value.base.dtype), tuple(value.shape), tuple(value.strides))
    if hasattr(value, "data_ptr"):
        return ("tensor", str(value.dtype))
    return type(value).__name__


def shards(items: list[tuple], count: int) -> list[int]:
    """A worker per item: items Triton would compile to the same binary (same kernel, config,
    constexprs and argument specialisation, e.g. one shape at two sizes) go to the same worker,
    which compiles them once; distinct binaries are dealt out in turn."""
    from kernels.tuning import describe

    owner: dict[str, int] = {}
    assigned = []
    for job, case, space, config in items:
        if case is None:
            assigned.append(len(assigned) % count)
            continue
        args, constexprs = space.arguments()
        key = repr((space.name, job["kernel"], describe(config), tuple(map(_specialisation, args)),
                    sorted((k, repr(v)) for k, v in constexprs.items())))
        assigned.append(owner.setdefault(key, len(owner) % count))
    return assigned


def run(jobs: list[dict], arch: str, shard: tuple[int, int], out, plan: str | None = None) -> int:
    import os
    import tempfile

    os.environ.pop("TRITON_INTERPRET", None)
    os.environ["ROOFLAB_NO_TUNE_CACHE"] = "1"
    # a fresh Triton cache: a cached kernel skips ptxas, whose report gives registers and spills
    os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="rooflab-static-")
    from kernels.tuning import ARCH_LIMITS, pinned_limits

    limits = ARCH_LIMITS[arch]
    install_stand_in_driver(arch, limits)
    done = 0
    try:
        with pinned_limits(limits):
            items = expand(jobs, limits)
            owners = shards(items, shard[1])
            if plan:  # this worker's configs per family, for the parent's progress lines
                mine = Counter(job["kernel"] for (job, *_), worker in zip(items, owners) if worker == shard[0])
                with open(plan + ".tmp", "w") as f:
                    json.dump(dict(mine), f)
                os.replace(plan + ".tmp", plan)
            for index, ((job, case, space, config), worker) in enumerate(zip(items, owners)):
                if worker != shard[0]:
                    continue
                if case is None:
                    shape = " ".join(f"{k}={v}" for k, v in job["axes"].items())
                    row = Compiled(index, job["kernel"], "", shape, job["dtype"], "", 0, 0, status="compile-error",
                                   note=f"{type(config).__name__}: {str(config).splitlines()[0][:200]}")
                else:
                    shape = " ".join(f"{k}={v}" for k, v in case.values)
                    row = Compiled(index, job["kernel"], space.name, shape, case.dtype.value, "", config.num_warps,
                                   config.num_stages, smem_limit=limits.smem_per_block)
                    row = compile_config(space, config, row, limits)
                out.write(json.dumps(asdict(row)) + "\n")
                out.flush()
                done += 1
    finally:
        shutil.rmtree(os.environ["TRITON_CACHE_DIR"], ignore_errors=True)
    return done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.static_compile")
    p.add_argument("jobs", help="JSON list of {kernel, dtype, axes}")
    p.add_argument("out", help="JSON lines, one compiled config each")
    p.add_argument("--arch", default="sm_90a", choices=sorted(ARCH_TARGETS))
    p.add_argument("--shard", default="0/1", help="i/n: compile every n-th config starting at the i-th (0-based)")
    p.add_argument("--plan", help="write {family: configs} of this shard here as JSON before compiling")
    args = p.parse_args(argv)
    index, count = (int(part) for part in args.shard.split("/"))
    with open(args.jobs) as f:
        jobs = json.load(f)
    try:
        with open(args.out, "w") as out:
            run(jobs, args.arch, (index, count), out, args.plan)
    except Exception:  # a broken job list or spec: the parent reports the traceback
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
