"""fp8 (e4m3) pieces of the linear families: row-wise quantisation, skip rules, cuBLAS baseline.

Scaling is per row of x ([M] fp32) and per output channel, i.e. per row of W ([N] fp32):
y[m, n] = sx[m]·sw[n]·Σ_k xq[m, k]·wq[n, k], written as bf16. fp8 needs sm_89+ and cannot run
under the interpreter; W must be K-major, as fp8 tensor cores (and cuBLAS's fp8 "TN" GEMM) need.
The e4m3 flavour is the target's (kernels.targets.fp8_dtype): e4m3fnuz (max 240) on AMD gfx942,
OCP e4m3fn (max 448) elsewhere; Triton's tl.dot takes either as it comes.
"""

from __future__ import annotations

import torch

from kernels.spec import Case, DeviceCaps, DType, Inputs, Launch
from kernels.targets import FP8_MAX as FP8_MAXIMA
from kernels.targets import fp8_dtype
from kernels.tuning import device_limits

FP8_MAX = 448.0  # largest finite e4m3fn value


def quantize_rowwise(values: torch.Tensor, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """e4m3 values and fp32 per-row scales (each row's amax maps to the dtype's largest value):
    values ≈ q·scale[:, None]. ``dtype``: e4m3fn or e4m3fnuz; None: the flavour of the values' device."""
    dtype = fp8_dtype(device_limits(values.device)) if dtype is None else dtype
    if dtype not in FP8_MAXIMA:
        raise ValueError(f"fp8 dtype must be one of {', '.join(map(str, FP8_MAXIMA))}, got {dtype}")
    top = FP8_MAXIMA[dtype]
    scale = values.abs().amax(dim=1).float().clamp(min=1e-12) / top
    quantized = (values.float() / scale[:, None]).clamp(-top, top).to(dtype)
    return quantized, scale


def fp8_skip(case: Case, caps: DeviceCaps) -> str | None:
    """Family-wide rule of gemm and gemv: where an fp8 point cannot run."""
    if case.dtype is not DType.FP8:
        return None
    if caps.interpret or caps.capability is None or caps.capability < (8, 9):
        return "fp8 needs sm_89+ (Hopper or Ada) and a GPU, not the interpreter"
    if case["w_layout"] != "nk":
        return "fp8 needs W K-major (w_layout=nk), as fp8 tensor cores and cuBLAS do"
    return None


def scaled_mm_skip(case: Case) -> str | None:
    if case.dtype is DType.FP8 and (case["K"] % 16 or case["N"] % 16):
        return "torch._scaled_mm needs K and N to be multiples of 16"
    return None


def scaled_mm_launch(inputs: Inputs) -> Launch:
    """cuBLAS/CUTLASS fp8 with row-wise scales through torch._scaled_mm (accurate accumulation,
    like our kernels' per-BLOCK_K promotion); it takes W as a column-major [K, N]: Wᵀ of [N, K]."""
    x, wt, out = inputs["x"], inputs["w"].t(), inputs["out"]
    scale_a, scale_b = inputs["x_scale"][:, None], inputs["w_scale"][None, :]  # [M, 1], [1, N]
    return Launch(run=lambda: torch._scaled_mm(x, wt, scale_a, scale_b, out_dtype=torch.bfloat16, out=out),
                  config=lambda: "torch._scaled_mm rowwise")
