"""Autotuning shared by every family: one autotuner, a short benchmark, a disk cache, device limits.

:func:`autotune` wraps Triton's autotuner so that, whatever the Triton version (3.6 on the GPU image,
3.9 here):

* under the interpreter only the first surviving config runs and nothing is benchmarked (3.6
  benchmarks even a single config, which needs a driver);
* the per-config benchmark is whatever :data:`TUNER` holds — the sweep installs a short cold-L2
  one from ``bench/timing.py`` (a few ms per config); library users get Triton's own;
* a chosen config is kept on disk across runs, keyed by device, Triton version, kernel source,
  tuning key and the configs tried, so reruns and ``--resume`` do not retune;
* the host seconds spent tuning are counted in ``TUNER.seconds`` (a sweep records them per point).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import inspect
import json
import os
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable, Iterator

import torch
import triton
from triton.runtime.autotuner import Autotuner as _TritonAutotuner

CACHE_ENV = "ROOFLAB_CACHE_DIR"  # where tuned configs are kept (default ~/.cache/rooflab)
NO_CACHE_ENV = "ROOFLAB_NO_TUNE_CACHE"  # set to 1 to tune afresh every run

Benchmark = Callable[[Callable[[], object]], list]  # kernel_call -> [median, p20, p80] in ms


# ---------------------------------------------------------------------------------------------
# Device limits: the one place tuning asks what the device can hold
# ---------------------------------------------------------------------------------------------


class Vendor(str, Enum):
    """Whose GPU: the compiler backend and the instruction set a kernel compiles to."""

    NVIDIA = "nvidia"  # Triton's "cuda" backend: PTX, ptxas
    AMD = "amd"  # Triton's "hip" backend: AMDGCN


@dataclass(frozen=True)
class Limits:
    """What the device a kernel will run on offers, as far as tuning cares.

    Every pruner, candidate function and launcher that sizes work by the device reads these
    figures from :func:`device_limits` (never from torch or the driver directly), so a plan can be
    made for a device that is not here: the static compiler pins a target's limits (:data:`ARCH_LIMITS`)
    while compiling with CPU tensors, and a time model can ask what a point would tune on an H200.
    On AMD an "SM" is a compute unit (CU), a warp a wavefront and shared memory the LDS.
    """

    sm_count: int  # streaming multiprocessors (NVIDIA) or compute units (AMD)
    smem_per_block: int  # opt-in shared memory (LDS) one block may use, bytes
    registers_per_sm: int  # 32-bit registers per SM (per CU on AMD: 4 SIMDs' vector registers)
    capability: tuple[int, int] | None  # CUDA compute capability (torch's major.minor on ROCm); None: interpreter
    warp_size: int = 32  # threads per warp (NVIDIA) or wavefront (AMD CDNA: 64); pruners must not assume 32
    vendor: Vendor = Vendor.NVIDIA
    arch: str = ""  # the compiler target: sm_90a, sm_100a, gfx942 …; "" under the interpreter
    smem_per_sm: int = 233_472  # shared memory (LDS) one SM (CU) holds for all its resident blocks, bytes
    max_warps_per_sm: int = 64  # resident warps (wavefronts) per SM (CU)
    max_registers_per_thread: int = 255  # per thread (per lane on AMD: arch VGPRs + AGPRs = 512)

    @property
    def interpret(self) -> bool:
        return self.capability is None

    @property
    def amd(self) -> bool:
        return self.vendor is Vendor.AMD

    @property
    def tensor_memory(self) -> bool:
        """Blackwell data-centre parts (sm_100/sm_103): tcgen05 MMAs accumulate in tensor memory."""
        return self.vendor is Vendor.NVIDIA and self.capability is not None and (10, 0) <= self.capability < (11, 0)


# Sources. NVIDIA: CUDA C++ Programming Guide, "Compute Capabilities" table (docs.nvidia.com/cuda/
# cuda-c-programming-guide, §"Technical Specifications per Compute Capability": shared memory per SM
# 228 KB and per block 227 KB = 232,448 B on 9.0/10.0/10.3, 100 KB per SM and 99 KB = 101,376 B per block
# on 12.0; 64 K 32-bit registers per SM; 255 registers per thread; 64 resident warps per SM, 48 on 12.0).
# AMD: CDNA3 ISA reference and the AMD Instinct MI300 CDNA3 whitepaper (64 KB LDS per CU, 4 SIMDs per CU
# each with 512 VGPRs (arch + accumulation) of 64 lanes = 512 KB of vector registers per CU, 8 waves per
# SIMD); CDNA4 whitepaper (MI350 series: LDS grown to 160 KB per CU); ROCm docs "GPU hardware
# specifications" (rocm.docs.amd.com/en/latest/reference/gpu-arch-specs.html: CU counts 304 MI300X/MI325X,
# 256 MI355X; LDS 64 KiB gfx942, 160 KiB gfx950; wavefront 64).
# H100 and H200 (SXM) alike: 132 SMs (H100 whitepaper), 227 KiB opt-in shared memory per block, 64 Ki registers per SM
HOPPER = Limits(sm_count=132, smem_per_block=232_448, registers_per_sm=65_536, capability=(9, 0), arch="sm_90a")
# B200: 148 SMs (HGX B200, CONTEXT.md; torch multi_processor_count on B200); smem and registers as cc 10.0 above.
# tl.dot reaches tcgen05 only from 64-row tiles (16/32 rows fall back to mma.sync: Triton 3.6 and 3.9 compiled
# for sm_100a here, and the issue-24 §2 tests); block-scaled tcgen05 MMA takes 128 rows
B200 = Limits(sm_count=148, smem_per_block=232_448, registers_per_sm=65_536, capability=(10, 0), arch="sm_100a")
# B300 / GB300 (Blackwell Ultra, cc 10.3): 160 SMs per GPU (NVIDIA technical blog "Inside NVIDIA Blackwell
# Ultra", 2025; CONTEXT.md), limits otherwise as cc 10.0
B300 = dataclasses.replace(B200, sm_count=160, capability=(10, 3), arch="sm_103a")
# RTX PRO 6000 Blackwell (cc 12.0): 188 SMs (24,064 CUDA cores / 128 per SM, NVIDIA RTX PRO 6000 Blackwell
# datasheet); 99 KB per block, 100 KB per SM, 48 warps per SM (cc 12.0 above); no wgmma or tcgen05: mma.sync
RTX_PRO_6000 = Limits(sm_count=188, smem_per_block=101_376, registers_per_sm=65_536, capability=(12, 0),
                      arch="sm_120a", smem_per_sm=102_400, max_warps_per_sm=48)
# MI300X / MI325X (gfx942, CDNA3): 304 CUs, 64 KiB LDS per CU (and per workgroup), 4 × 512 × 64 vector registers
# per CU, 8 waves per SIMD = 32 per CU, wavefront 64; MFMA tiles from 16 rows (v_mfma_f32_16x16x16)
MI300X = Limits(sm_count=304, smem_per_block=65_536, registers_per_sm=131_072, capability=(9, 4), warp_size=64,
                vendor=Vendor.AMD, arch="gfx942", smem_per_sm=65_536, max_warps_per_sm=32,
                max_registers_per_thread=512)
# MI355X (gfx950, CDNA4): 256 CUs, 160 KiB LDS per CU; register file and waves as CDNA3
MI355X = dataclasses.replace(MI300X, sm_count=256, smem_per_block=163_840, smem_per_sm=163_840, capability=(9, 5),
                             arch="gfx950")
# The interpreter plans as an H100 would (same SMs and shared memory), but runs nothing on tensor cores
INTERPRETER = dataclasses.replace(HOPPER, capability=None, arch="")
ARCH_LIMITS = {limits.arch: limits for limits in (HOPPER, B200, B300, RTX_PRO_6000, MI300X, MI355X)}

_pinned: list[Limits] = []


@contextlib.contextmanager
def pinned_limits(limits: Limits) -> Iterator[Limits]:
    """Make :func:`device_limits` answer ``limits`` for every device (CPU and meta tensors included)."""
    _pinned.append(limits)
    try:
        yield limits
    finally:
        _pinned.pop()


def device_limits(device: torch.device | str | int | None = None) -> Limits:
    """The limits tuning must respect for ``device`` (a tensor's device, an index, or None: current).

    Pinned limits win; then the interpreter and non-CUDA devices get :data:`INTERPRETER`; a CUDA
    device is asked once and remembered.
    """
    if _pinned:
        return _pinned[-1]
    if isinstance(device, (str, torch.device)):
        device = torch.device(device)
        if device.type != "cuda":
            return INTERPRETER
        device = device.index
    if interpreting():
        return INTERPRETER
    return _cuda_limits(torch.cuda.current_device() if device is None else device)


@functools.lru_cache(maxsize=None)
def _cuda_limits(index: int) -> Limits:
    """The device's own counts, with what torch does not report (MMA tile, warps per SM …) from its arch."""
    props = torch.cuda.get_device_properties(index)
    smem = triton.runtime.driver.active.utils.get_device_properties(index)["max_shared_mem"]
    capability = (props.major, props.minor)
    if torch.version.hip:
        arch = str(getattr(props, "gcnArchName", "")).split(":")[0]
        base = ARCH_LIMITS.get(arch, dataclasses.replace(MI300X, arch=arch))
        warp = int(getattr(props, "warp_size", base.warp_size) or base.warp_size)
    else:
        base = arch_of_capability(capability)
        warp = 32
    return dataclasses.replace(base, sm_count=props.multi_processor_count, smem_per_block=smem,
                               registers_per_sm=getattr(props, "regs_per_multiprocessor", base.registers_per_sm),
                               capability=capability, warp_size=warp)


def arch_of_capability(capability: tuple[int, int]) -> Limits:
    """The known NVIDIA target closest below a compute capability (its MMA and per-SM limits); Hopper's
    for anything older than the targets listed, which tuning treats as it always has."""
    known = sorted((lim for lim in ARCH_LIMITS.values() if lim.vendor is Vendor.NVIDIA), key=lambda lim: lim.capability)
    below = [lim for lim in known if lim.capability <= capability and lim.capability[0] == capability[0]]
    base = below[-1] if below else HOPPER
    return base if base.capability == capability else dataclasses.replace(base, arch=f"sm_{capability[0]}{capability[1]}")


def interpreting() -> bool:
    """True when Triton runs kernels on the CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def describe(config: triton.Config | None) -> str:
    """A compact, stable text for a result row's ``config`` column."""
    if config is None:
        return ""
    parts = [f"{k}={v}" for k, v in sorted(config.kwargs.items())]
    parts.append(f"warps={config.num_warps}")
    parts.append(f"stages={config.num_stages}")
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------
# The autotuner
# ---------------------------------------------------------------------------------------------


@dataclass
class TunerState:
    """Process-wide tuning settings and counters (one per process: kernels are module-level objects)."""

    benchmark: Benchmark | None = None  # None: Triton's default benchmarker
    seconds: float = 0.0  # host time spent in fresh tuning, summed
    tuned: int = 0  # fresh tunings (configs benchmarked)
    cache_hits: int = 0  # tunings answered from the disk cache
    device_key: Callable[[], str] = field(default=lambda: _cuda_device_key())


TUNER = TunerState()


def _cuda_device_key() -> str:
    """Name, SM count and memory of the current CUDA device: configs tuned on one card are not another's."""
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return f"{props.name}|{props.multi_processor_count}|{props.total_memory}"


def cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV) or os.path.join(os.environ.get("XDG_CACHE_HOME") or
                                                     os.path.expanduser("~/.cache"), "rooflab")
    return Path(root) / "autotune"


def cache_dir_problem() -> str | None:
    """Why tuned configs could not be kept (a file where a folder must be), in one line; None: fine.

    Checked before a sweep starts, so caching never turns itself off without a word."""
    if os.environ.get(NO_CACHE_ENV):
        return None
    path = cache_dir()
    while not path.exists() and path != path.parent:
        path = path.parent
    if path.is_dir():
        return None
    source = f"{CACHE_ENV}={os.environ[CACHE_ENV]}" if os.environ.get(CACHE_ENV) else f"the tune cache {cache_dir()}"
    return (f"{source}: {path} is not a directory, so tuned configs could not be kept; point {CACHE_ENV} at a "
            f"directory, or set {NO_CACHE_ENV}=1 to tune afresh every run")


_STORE_WARNED: list[str] = []


def _config_text(config: triton.Config) -> str:
    return json.dumps([sorted(config.kwargs.items()), config.num_warps, config.num_stages, config.num_ctas,
                       config.maxnreg], default=str)


class Autotuner(_TritonAutotuner):
    """Triton's autotuner with rooflab's benchmark, interpreter rule and disk cache (see module docstring)."""

    def _key(self, nargs: dict, kwargs: dict) -> tuple:
        """Triton's tuning key: the key arguments' values, then every tensor argument's dtype."""
        everything = {**nargs, **kwargs}
        present = {k: v for k, v in everything.items() if k in self.arg_names}
        key = [present[name] for name in self.keys if name in present]
        key += [str(value.dtype) for value in present.values() if hasattr(value, "dtype")]
        return tuple(key)

    def _source_key(self) -> str:
        """The kernel's source identity: Triton's cache key (its source and its callees'), else the source."""
        jit = self.fn
        while not isinstance(jit, triton.runtime.JITFunction) and hasattr(jit, "fn"):
            jit = jit.fn
        if isinstance(jit, triton.runtime.JITFunction):
            return jit.cache_key
        return hashlib.sha256(inspect.getsource(self.base_fn).encode()).hexdigest()

    def _cache_file(self, key: tuple, configs: list[triton.Config]) -> Path:
        text = "\n".join([triton.__version__, TUNER.device_key(), self._source_key(), repr(key),
                          *map(_config_text, configs)])
        digest = hashlib.sha256(text.encode()).hexdigest()[:32]
        return cache_dir() / f"{self.base_fn.__name__}-{digest}.json"

    def prune_configs(self, kwargs: dict) -> list[triton.Config]:
        pruned = super().prune_configs(kwargs)
        self._benched = 0
        self._cache_path = None
        if interpreting():
            pruned = pruned[:1]
        self._alone = len(pruned) == 1
        if self._alone:
            return pruned
        if not os.environ.get(NO_CACHE_ENV):
            path = self._cache_file(self._key(self.nargs, kwargs), pruned)
            try:
                chosen = json.loads(path.read_text())["config"]
                hit = [c for c in pruned if _config_text(c) == chosen]
            except (OSError, ValueError, KeyError, TypeError):
                hit = []
            if hit:
                TUNER.cache_hits += 1
                self._alone = True
                return hit
            self._cache_path = path
        return pruned

    @property
    def do_bench(self) -> Benchmark:
        return self._bench_one

    def _bench_one(self, kernel_call, quantiles=(0.5, 0.2, 0.8)):
        self._benched += 1
        if self._alone:  # Triton 3.6 benchmarks even a lone config: nothing to choose, nothing to time
            return [0.0, 0.0, 0.0]
        if TUNER.benchmark is not None:
            return TUNER.benchmark(kernel_call)
        from triton.testing import do_bench

        return do_bench(kernel_call, quantiles=list(quantiles))

    def run(self, *args, **kwargs):
        began = time.perf_counter()
        self._benched = 0
        self._alone = False
        self._cache_path = None
        result = super().run(*args, **kwargs)
        if self._benched > 1:  # a fresh tuning, not a cached key or a lone config
            TUNER.seconds += time.perf_counter() - began
            TUNER.tuned += 1
            if self._cache_path is not None:
                self._store(self._cache_path, self.best_config)
        return result

    @staticmethod
    def _store(path: Path, config: triton.Config) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"config": _config_text(config), "triton": triton.__version__}))
            tmp.replace(path)
        except OSError as exc:  # a read-only cache only costs a retune next time: say so once
            if not _STORE_WARNED:
                _STORE_WARNED.append(str(path.parent))
                import sys

                print(f"rooflab: warning: tuned configs are not kept in {path.parent} "
                      f"({exc.strerror or exc}); the next run tunes afresh", file=sys.stderr)


def autotune(configs: list[triton.Config], key: list[str], prune: Callable | None = None):
    """``triton.autotune`` with rooflab's :class:`Autotuner`; ``prune`` is the early config pruner."""

    def decorator(fn):
        return Autotuner(fn, fn.arg_names, configs, key, reset_to_zero=None, restore_value=None,
                         prune_configs_by={"early_config_prune": prune} if prune else None)

    return decorator


# ---------------------------------------------------------------------------------------------
# Triton 3.6's interpreter on numpy ≥ 2.4
# ---------------------------------------------------------------------------------------------


def patch_interpreter() -> None:
    """Let Triton < 3.7's interpreter loop over runtime bounds with numpy ≥ 2.4.

    Its scalars are 1-element arrays and it converts them with ``int(array)``, which numpy 2.4
    refuses ("only 0-dimensional arrays can be converted"); Triton 3.7+ squeezes first. Called
    before kernels run under the interpreter (registry, tests); a no-op elsewhere.
    """
    try:
        from triton.runtime import interpreter
    except ImportError:
        return
    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "rooflab", False):
        return

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    patched.rooflab = True
    interpreter._patch_lang_tensor = patched
