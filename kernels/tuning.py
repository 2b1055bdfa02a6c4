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


@dataclass(frozen=True)
class Limits:
    """What the device a kernel will run on offers, as far as tuning cares.

    Every pruner, candidate function and launcher that sizes work by the device reads these
    figures from :func:`device_limits` (never from torch or the driver directly), so a plan can be
    made for a device that is not here: the static compiler pins :data:`HOPPER` while compiling
    with CPU tensors, and a time model can ask what a point would tune on an H200.
    """

    sm_count: int  # streaming multiprocessors
    smem_per_block: int  # opt-in shared memory one block may use, bytes
    registers_per_sm: int  # 32-bit registers per SM
    capability: tuple[int, int] | None  # CUDA compute capability; None under the interpreter
    warp_size: int = 32  # threads per warp (NVIDIA) or wavefront (AMD CDNA: 64); pruners must not assume 32

    @property
    def interpret(self) -> bool:
        return self.capability is None


# H100 and H200 (SXM) alike: 132 SMs, 227 KiB opt-in shared memory per block, 64 Ki registers per SM
HOPPER = Limits(sm_count=132, smem_per_block=232_448, registers_per_sm=65_536, capability=(9, 0))
# The interpreter plans as an H100 would (same SMs and shared memory), but runs nothing on tensor cores
INTERPRETER = dataclasses.replace(HOPPER, capability=None)
ARCH_LIMITS = {"sm_90a": HOPPER}  # targets the static compiler knows: arch -> limits

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
    props = torch.cuda.get_device_properties(index)
    smem = triton.runtime.driver.active.utils.get_device_properties(index)["max_shared_mem"]
    return Limits(sm_count=props.multi_processor_count, smem_per_block=smem,
                  registers_per_sm=getattr(props, "regs_per_multiprocessor", 65_536),
                  capability=(props.major, props.minor))


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
