"""What each GPU target's matrix units take, read from the device's :class:`kernels.tuning.Limits`.

Families choose their variant, fp8 dtype and smallest tensor-core tile here, from the limits
:func:`kernels.tuning.device_limits` answers (never from a global), so a plan or a static compile for
a device that is not here chooses what that device would run.

How a target is told apart (the conventions torch reports on each vendor's build):

- AMD CDNA: ``vendor`` AMD, a 64-wide wavefront (``warp_size`` 64); ``capability`` is the (major, minor)
  torch's ROCm build reports, (9, 4) for gfx942 (MI300X/MI325X), (9, 5) for gfx950 (MI355X).
- NVIDIA: ``warp_size`` 32; Blackwell is capability ≥ (10, 0) (sm_100/103 datacentre, sm_120 RTX).

Facts checked against Triton 3.6 and 3.9 compiling for each target (tests/test_target_variants.py):

- sm_100: ``tl.dot`` reaches tcgen05 only for BLOCK_M ≥ 64 (16/32-row tiles fall back to mma.sync,
  fp8 even upcast to fp16); ``tl.dot_scaled`` reaches tcgen05's block-scaled MMA only with both
  operands in fp4/fp8 and BLOCK_M = 128 (a bf16 operand, or 64 rows, is upcast to kind::f16).
- gfx950: ``tl.dot_scaled`` on mxfp4 (e8m0 scales) reaches ``v_mfma_scale_f32_*_f8f6f4``; nvfp4's
  e4m3 scales do not compile there. gfx942 has no scaled MFMA (Triton upcasts to bf16).
- gfx942's fp8 is e4m3fnuz (bias 8, max 240); gfx950 and NVIDIA take OCP e4m3fn (max 448).
"""

from __future__ import annotations

import torch

from kernels.tuning import Limits, Vendor

CDNA_ARCHS = {(9, 4): "gfx942", (9, 5): "gfx950"}  # torch-on-ROCm capability -> gfx target
FP8_MAX = {torch.float8_e4m3fn: 448.0, torch.float8_e4m3fnuz: 240.0}  # largest finite value per fp8 dtype
FP8_DTYPES = tuple(FP8_MAX)
TMEM_COLUMNS = 512  # Blackwell tensor memory per SM: 128 lanes × 512 32-bit columns


def vendor(limits: Limits) -> Vendor:
    return limits.vendor


def is_blackwell(limits: Limits) -> bool:
    """NVIDIA sm_100 and newer (tcgen05, hardware FP4 with block scales)."""
    return vendor(limits) is Vendor.NVIDIA and limits.capability is not None and limits.capability >= (10, 0)


def cdna_arch(limits: Limits) -> str | None:
    """"gfx942" / "gfx950" for an AMD CDNA3/4 device, None for anything else."""
    if vendor(limits) is not Vendor.AMD or limits.capability is None:
        return None
    return CDNA_ARCHS.get(tuple(limits.capability))


def has_tma(limits: Limits) -> bool:
    """Tensor Memory Accelerator descriptors: NVIDIA Hopper and newer."""
    return vendor(limits) is Vendor.NVIDIA and limits.capability is not None and limits.capability >= (9, 0)


def fp8_dtype(limits: Limits) -> torch.dtype:
    """The e4m3 flavour the target's fp8 units take: e4m3fnuz on gfx942, OCP e4m3fn elsewhere."""
    return torch.float8_e4m3fnuz if cdna_arch(limits) == "gfx942" else torch.float8_e4m3fn


def dot_precision(limits: Limits) -> str:
    """tl.dot's input_precision for fp32 operands: tf32 where the target has it (NVIDIA, gfx942's
    xf32); gfx950 has none and Triton refuses "tf32" there, so three bf16 passes (bf16x3, ≈ tf32)."""
    if vendor(limits) is Vendor.AMD and cdna_arch(limits) != "gfx942":
        return "bf16x3"
    return "tf32"


def scaled_mma_formats(limits: Limits) -> frozenset[str]:
    """Weight formats whose block scales the target's matrix units apply in hardware (tl.dot_scaled)."""
    if is_blackwell(limits):
        return frozenset({"mxfp4", "nvfp4"})
    if cdna_arch(limits) == "gfx950":
        return frozenset({"mxfp4"})
    return frozenset()


def min_mma_rows(limits: Limits, scaled: bool = False) -> int:
    """The smallest BLOCK_M that still reaches the target's big matrix instruction (see module docstring):
    Blackwell's tcgen05 needs 64 rows (128 for block-scaled MMA); elsewhere tl.dot's minimum, 16."""
    if is_blackwell(limits):
        return 128 if scaled else 64
    return 16
