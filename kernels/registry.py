"""The one registry of kernel families.

Families are named here and imported on first use, not at import time: Triton decides at
``@triton.jit`` time whether to interpret a kernel, so ``--interpret`` must be settled before a
kernel module is imported.
"""

from __future__ import annotations

import importlib

from kernels.spec import KernelSpec, UsageError

# family name -> (module, attribute); the order is the order `rooflab kernels` lists them in
FAMILIES: dict[str, tuple[str, str]] = {
    "copy": ("kernels.stream", "COPY"),
    "triad": ("kernels.stream", "TRIAD"),
    "gemv": ("kernels.gemv", "GEMV"),
    "gemm": ("kernels.gemm", "GEMM"),
    "read": ("kernels.ceilings", "READ"),
    "write": ("kernels.ceilings", "WRITE"),
    "fma": ("kernels.ceilings", "FMA"),
    "launch": ("kernels.ceilings", "LAUNCH"),
    "attn_prefill": ("kernels.attn_prefill", "ATTN_PREFILL"),
    "attn_decode": ("kernels.attn_decode_spec", "ATTN_DECODE"),
    "attn_mla": ("kernels.attn_mla_spec", "ATTN_MLA"),
    "dequant": ("kernels.dequant", "DEQUANT"),
    "qgemv": ("kernels.qgemv", "QGEMV"),
    "qgemm": ("kernels.qgemm", "QGEMM"),
    "moe": ("kernels.moe_spec", "MOE"),
}


def names() -> list[str]:
    return list(FAMILIES)


def get(name: str) -> KernelSpec:
    try:
        module_name, attribute = FAMILIES[name]
    except KeyError:
        raise UsageError(f"unknown kernel {name!r}; valid: {', '.join(FAMILIES)}") from None
    from kernels.tuning import interpreting, patch_interpreter  # imports triton: only once a family is used

    if interpreting():
        patch_interpreter()
    spec = getattr(importlib.import_module(module_name), attribute)
    assert spec.name == name, f"registry entry {name!r} points at spec {spec.name!r}"
    return spec


def all_specs() -> list[KernelSpec]:
    return [get(name) for name in FAMILIES]
