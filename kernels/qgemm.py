"""``qgemm``: y = x·Wᵀ with a quantized W (any M), in the variant the target's matrix units take.

x: [M, K] fp16/bf16, W: [N, K] in a :mod:`kernels.quant_formats` format, y: [M, N] in x's dtype.

``dequant`` (every format, every target; the only one on Hopper and older): each K step decodes a
[BLOCK_N, BLOCK_K] tile to its raw values (q, q − z or the e2m1 value: all exact in fp16 and bf16),
multiplies it on the tensor cores in fp32, and scales the partial product per output channel: once
per group for int4/mxfp4 (tiles are one group wide), once at the end for int8/fp8.

``scaled`` (mxfp4 and nvfp4 on Blackwell, mxfp4 on gfx950; :func:`qgemm_variant`): W stays packed
and its block scales go to the hardware's block-scaled MMA through ``tl.dot_scaled`` (tcgen05
kind::mxf4 / mxf4nvf4 on sm_100, v_mfma_scale on gfx950). That MMA takes no fp16/bf16 operand (Triton
would upcast W), so each x tile is quantised in registers onto the weight format's own grid
(:func:`kernels.quant_formats.quantize_activations`: e2m1 with a power-of-two scale per block): W4A4,
as FP4 inference runs there. The family's inputs put x on that grid for the FP4 formats
(:func:`linear_inputs`), so every variant, target and baseline computes the same product.

The pieces shared with ``qgemv`` (inputs, baselines, byte counts, reference) live here.
"""

from __future__ import annotations

from enum import Enum

import torch
import triton
import triton.language as tl

from kernels.dequant import (
    FORMAT_AXIS,
    kernel_format,
    GROUP_AXIS,
    K_AXIS,
    N_AXIS,
    QUANT_DTYPES,
    decode_tile,
    prepare_dequantize,
    row_scale,
    tile_group,
    torch_dequant_bytes,
    block_k_for,
    kernel_args,
    meta_weight,
    quant_skip,
    quantized_weight,
    triton_fp8_skip,
    weight_bytes,
)
from kernels.qgemm_scaled import _qgemm_scaled_kernel
from kernels.quant_formats import QuantFormat, QuantizedWeight, activation_grid, dequantize
from kernels.spaces import launch_spaces, meta
from kernels.spec import (
    Axis,
    Case,
    DeviceCaps,
    DType,
    Impl,
    Inputs,
    KernelSpec,
    Launch,
    TuneSpace,
    poisoned,
    scaled_randn,
)
from kernels.targets import min_mma_rows, scaled_mma_formats
from kernels.tuning import INTERPRETER, Limits, autotune, describe, device_limits


MAX_ACC_PER_THREAD = 64  # see qgemm_candidates


class QGemmVariant(str, Enum):
    DEQUANT = "dequant"  # decode W in registers, tl.dot in fp16/bf16 (every format, every target)
    SCALED = "scaled"  # tl.dot_scaled on packed FP4 W and in-register FP4 x (Blackwell, gfx950 mxfp4)


def qgemm_variant(fmt: QuantFormat | str, limits: Limits) -> QGemmVariant:
    """The variant the target runs: hardware block-scaled MMA where it takes the format, else dequant."""
    fmt = QuantFormat.parse(fmt)
    return QGemmVariant.SCALED if fmt.value in scaled_mma_formats(limits) else QGemmVariant.DEQUANT


def qgemm_configs() -> list[triton.Config]:
    """Tensor-core tiles from the Triton matmul tutorial's set, with small-M tiles for decode batches."""
    shapes = ((128, 128, 64, 8, 3), (64, 128, 64, 4, 4), (128, 256, 64, 8, 3), (64, 256, 64, 8, 3),
              (128, 64, 64, 4, 4), (32, 128, 128, 4, 4), (16, 128, 128, 4, 4), (16, 64, 128, 4, 3),
              (64, 64, 128, 4, 4), (128, 128, 128, 8, 3))
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}, num_warps=w, num_stages=s)
            for bm, bn, bk, w, s in shapes]


def qgemm_smem(block_m: int, block_n: int, block_k: int, stages: int, bits: int) -> int:
    """Shared memory (LDS) a tile takes: stages − 1 buffers of the fp16 x tile and the packed W tile,
    plus a decoded 4-bit tile's conversion space. Fits every qgemm tile compiled for gfx942 under
    Triton 3.6 exactly for 8-bit W and from above for 4-bit (results/static/gfx942.csv)."""
    stage = block_k * (2 * block_m + block_n * bits // 8)
    return (stages - 1) * stage + (block_n * block_k if bits == 4 else 0)


def qgemm_candidates(M: int, group: int, limits: Limits = INTERPRETER, bits: int = 8) -> tuple[triton.Config, ...]:
    """Row blocks no taller than M needs, but no shorter than the target's big MMA takes (16 for
    tl.dot; 64 on Blackwell, where 16/32-row tiles fall back from tcgen05 to mma.sync); grouped
    formats use group-wide K tiles; at most MAX_ACC_PER_THREAD fp32 accumulators per thread (a warp
    is ``limits.warp_size`` threads), since the dequantised W tile is held in registers beside them
    (128 × 256 with 8 warps, 128 each, spilled 528 B on sm_90a); tiles within the block's shared
    memory (:func:`qgemm_smem`, ``bits`` per W code: MI300X's 64 KiB of LDS took 13 of them)."""
    configs = qgemm_configs()
    m_min = min_mma_rows(limits)
    m_cap = max(m_min, triton.next_power_of_2(M))
    unique = {}
    for c in configs:
        acc_per_thread = c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] // (limits.warp_size * c.num_warps)
        if not m_min <= c.kwargs["BLOCK_M"] <= m_cap or acc_per_thread > MAX_ACC_PER_THREAD:
            continue
        kwargs = {**c.kwargs, "BLOCK_K": block_k_for(group, c.kwargs["BLOCK_K"])}
        if qgemm_smem(kwargs["BLOCK_M"], kwargs["BLOCK_N"], kwargs["BLOCK_K"], c.num_stages, bits) \
                > limits.smem_per_block:
            continue
        key = (tuple(sorted(kwargs.items())), c.num_warps, c.num_stages)
        unique.setdefault(key, triton.Config(kwargs, num_warps=c.num_warps, num_stages=c.num_stages))
    return tuple(unique.values()) or tuple(configs[:1])


def prune_qgemm_configs(configs, named_args, **kwargs):
    """The autotuner's pruner: an adapter over :func:`qgemm_candidates`."""
    args = {**named_args, **kwargs}
    bits = 4 if args["FMT"] in (QuantFormat.INT4.value, QuantFormat.MXFP4.value, QuantFormat.NVFP4.value) else 8
    return list(qgemm_candidates(args["M"], args["QGROUP"], device_limits(args["x_ptr"].device), bits))


@autotune(qgemm_configs(), key=["M", "N", "K", "FMT", "QGROUP"], prune=prune_qgemm_configs)
@triton.jit
def _qgemm_kernel(
    x_ptr,  # in:  [M, K] fp16/bf16
    w_ptr, s_ptr, z_ptr, t_ptr,  # in: packed W (uint8), scales, zero points, tensor scale
    out_ptr,  # out: [M, N], x's dtype
    M, N, K,
    stride_xm, stride_wn, stride_sg, stride_zg, stride_om,
    FMT: tl.constexpr,
    QGROUP: tl.constexpr,  # K tile = this group, scaled per tile (int4, mxfp4); 0: scaled once (tile_group)
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,  # programs sharing a W column block run together (L2 reuse)
):
    """out[m, n] = Σ_g scale(n, g) · Σ_{k∈g} x[m, k]·raw(n, k) (fp32), per-channel scale once at the end."""
    pid = tl.program_id(0)
    grid_m = tl.cdiv(M, BLOCK_M)
    grid_n = tl.cdiv(N, BLOCK_N)
    width = GROUP_M * grid_n
    first_m = (pid // width) * GROUP_M
    rows_in_group = min(grid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % width) % rows_in_group
    pid_n = (pid % width) // rows_in_group

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    x_rows = x_ptr + offs_m.to(tl.int64)[:, None] * stride_xm
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for step in range(0, tl.cdiv(K, BLOCK_K)):
        k0 = step * BLOCK_K
        offs_k = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_rows + offs_k[None, :], mask=(offs_m < M)[:, None] & (offs_k < K)[None, :], other=0.0)
        raw = decode_tile(w_ptr, s_ptr, z_ptr, offs_n, k0, N, K, stride_wn, stride_sg, stride_zg, FMT, BLOCK_N,
                          BLOCK_K)
        part = tl.dot(x, tl.trans(raw.to(x_ptr.dtype.element_ty)))
        if QGROUP > 0:
            acc += part * row_scale(s_ptr, t_ptr, step, offs_n, N, stride_sg, FMT)[None, :]
        else:
            acc += part
    if QGROUP == 0:
        acc *= row_scale(s_ptr, t_ptr, 0, offs_n, N, stride_sg, FMT)[None, :]
    out = out_ptr + offs_m.to(tl.int64)[:, None] * stride_om + offs_n[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=(offs_m < M)[:, None] & (offs_n < N)[None, :])


def check_linear(x: torch.Tensor, qw: QuantizedWeight, out: torch.Tensor | None) -> torch.Tensor:
    """Validate x [M, K] against W [N, K]; return out [M, N] (allocated when None)."""
    if x.dim() != 2 or x.dtype not in (torch.float16, torch.bfloat16) or x.shape[1] != qw.k or x.stride(1) != 1:
        raise ValueError(f"x must be fp16/bf16 [M, {qw.k}] with unit column stride, "
                         f"got {x.dtype} {tuple(x.shape)} stride {x.stride()}")
    if x.device != qw.device:
        raise ValueError(f"x is on {x.device}, the weight on {qw.device}")
    shape = (x.shape[0], qw.n)
    if out is None:
        return torch.empty(shape, dtype=x.dtype, device=x.device)
    if tuple(out.shape) != shape or out.dtype != x.dtype or not out.is_contiguous() or out.device != x.device:
        raise ValueError(f"out must be contiguous {x.dtype} {list(shape)} on {x.device}, "
                         f"got {out.dtype} {tuple(out.shape)} on {out.device}")
    return out


def qgemm(x: torch.Tensor, qw: QuantizedWeight, out: torch.Tensor | None = None,
          variant: QGemmVariant | str | None = None) -> torch.Tensor:
    """y = x·Wᵀ with the tensor-core qgemm kernel (any M), in ``variant`` (default: the target's,
    :func:`qgemm_variant`). The scaled variant computes with x on the weight format's FP4 grid."""
    out = check_linear(x, qw, out)
    chosen = qgemm_variant(qw.format, device_limits(x.device)) if variant is None else QGemmVariant(variant)
    if chosen is QGemmVariant.SCALED and qw.format not in (QuantFormat.MXFP4, QuantFormat.NVFP4):
        raise ValueError(f"the scaled qgemm variant takes mxfp4 or nvfp4 weights, got {qw.format.value}")
    m = x.shape[0]
    if m == 0:
        return out
    w, s, z, t, stride_wn, stride_sg, stride_zg = kernel_args(qw)
    grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(qw.n, meta["BLOCK_N"]),)  # noqa: E731
    if chosen is QGemmVariant.SCALED:
        _qgemm_scaled_kernel[grid](x, w, s, t, out, m, qw.n, qw.k, x.stride(0), stride_wn, stride_sg, out.stride(0),
                                   FMT=qw.format.value)
        return out
    _qgemm_kernel[grid](x, w, s, z, t, out, m, qw.n, qw.k, x.stride(0), stride_wn, stride_sg, stride_zg,
                        out.stride(0), FMT=kernel_format(qw), QGROUP=tile_group(qw))
    return out


def last_config(fmt: QuantFormat | str, limits: Limits) -> str:
    """Which variant and autotuned config the last ``qgemm`` call on this format and target ran."""
    variant = qgemm_variant(fmt, limits)
    kernel = _qgemm_scaled_kernel if variant is QGemmVariant.SCALED else _qgemm_kernel
    return f"{variant.value} {describe(kernel.best_config)}"


def qlinear_reference(x: torch.Tensor, qw: QuantizedWeight) -> torch.Tensor:
    """y = x·Wᵀ in float64 on the reference-dequantized weight (one reference for qgemv and qgemm)."""
    return x.to(torch.float64) @ dequantize(qw).to(torch.float64).t()


# ---------------------------------------------------------------------------------------------
# Spec pieces shared with qgemv
# ---------------------------------------------------------------------------------------------


def linear_inputs(case: Case, device: torch.device, gen: torch.Generator) -> Inputs:
    """x ~ Normal(0, 1) [M, K], W ~ Normal(0, 1/K) quantized, so y stays O(1) for any K. For mxfp4 and
    nvfp4, x is put on the format's FP4 grid (exact in fp16/bf16), so the scaled variant's in-register
    quantisation of x loses nothing and every variant and baseline computes the same product."""
    dtype = case.dtype.torch
    x = scaled_randn((case["M"], case["K"]), dtype=torch.float32, device=device, generator=gen)
    weight = quantized_weight(case, device, gen)
    if weight.format in (QuantFormat.MXFP4, QuantFormat.NVFP4):
        x = activation_grid(x, weight.format)
    return {"x": x.to(dtype), "weight": weight, "out": poisoned((case["M"], case["N"]), dtype=dtype, device=device)}


def linear_bytes(case: Case) -> int:
    """x read once, the packed weight (bits + scales + zero points) read once, y written once."""
    act = case.dtype.itemsize
    return case["M"] * case["K"] * act + weight_bytes(case) + case["M"] * case["N"] * act


def dense_bytes(case: Case) -> int:
    """The fp16/bf16 baseline's traffic: the same x and y, a dense weight."""
    act = case.dtype.itemsize
    return (case["M"] * case["K"] + case["N"] * case["K"] + case["M"] * case["N"]) * act


def _build_dense(inputs: Inputs, case: Case) -> Launch:
    x, out = inputs["x"], inputs["out"]
    dense = dequantize(inputs["weight"]).to(x.dtype)  # set-up: the same values, stored dense
    return Launch(run=lambda: torch.matmul(x, dense.t(), out=out), config=lambda: "torch.matmul, dense weight")


def dequant_matmul_bytes(case: Case) -> int:
    """The ``torch_dequant`` baseline's traffic: the reference dequantizer's (fp32 temporaries,
    :func:`kernels.dequant.torch_dequant_bytes`), .to(dtype) reading fp32 and writing the dtype, and
    the matmul reading x, that dense weight and writing y."""
    act, weights = case.dtype.itemsize, case["N"] * case["K"]
    return torch_dequant_bytes(case) + weights * (4 + act) + dense_bytes(case)


def _build_torch_dequant(inputs: Inputs, case: Case) -> Launch:
    x, qw, out = inputs["x"], inputs["weight"], inputs["out"]
    prepare_dequantize(qw)  # constants built here, not inside the timed run
    return Launch(run=lambda: torch.matmul(x, dequantize(qw).to(x.dtype).t(), out=out),
                  config=lambda: "reference dequantize + torch.matmul")


def interpreter_bf16_dot_skip(case: Case, caps: DeviceCaps) -> str | None:
    if caps.interpret and case.dtype is DType.BF16:
        return "tl.dot on bf16 is wrong under the Triton interpreter"
    return None


def _triton_skip(case: Case, caps: DeviceCaps) -> str | None:
    return triton_fp8_skip(case, caps) or interpreter_bf16_dot_skip(case, caps)


BASELINES = (
    Impl("torch", _build_dense, "cuBLAS fp16/bf16 torch.matmul on a dense copy of the weight", bytes=dense_bytes),
    Impl("torch_dequant", _build_torch_dequant, "reference dequantize (torch ops) then torch.matmul, both timed",
         bytes=dequant_matmul_bytes),
)
LINEAR_AXES = (FORMAT_AXIS, GROUP_AXIS)
# W·x error: one rounding of y plus (baselines) one of each weight to the dtype, over O(1) sums
LINEAR_TOLERANCE = {DType.FP16: 2e-3, DType.BF16: 1.6e-2}


def _build_triton(inputs: Inputs, case: Case) -> Launch:
    x, qw, out = inputs["x"], inputs["weight"], inputs["out"]
    limits = device_limits(x.device)
    return Launch(run=lambda: qgemm(x, qw, out), config=lambda: last_config(qw.format, limits))


def _candidates(case: Case, limits: Limits) -> tuple[TuneSpace, ...]:
    x, qw = meta((case["M"], case["K"]), case.dtype.torch), meta_weight(case, limits)
    kernels = {"qgemm": _qgemm_kernel, QGemmVariant.SCALED.value: _qgemm_scaled_kernel}
    return launch_spaces(lambda: qgemm(x, qw), kernels, limits)


QGEMM = KernelSpec(
    name="qgemm",
    summary="y = x·Wᵀ, W quantized (int8/int4/fp8/mxfp4/nvfp4), dequantised in registers, tl.dot, any M",
    axes=LINEAR_AXES + (Axis("M", int, 16, "batch (rows of x)", minimum=1), N_AXIS, K_AXIS),
    dtypes=QUANT_DTYPES,
    impls=(Impl("triton", _build_triton, "Triton tensor-core tiles on dequantised weights; block-scaled FP4 "
                "MMA (tl.dot_scaled, x on the FP4 grid) for mxfp4/nvfp4 on Blackwell and mxfp4 on gfx950",
                skip=_triton_skip, candidates=_candidates),)
    + BASELINES,
    make_inputs=linear_inputs,
    reference=lambda inputs, case: qlinear_reference(inputs["x"], inputs["weight"]),
    flops=lambda case: 2 * case["M"] * case["N"] * case["K"],
    bytes=linear_bytes,
    tolerance=LINEAR_TOLERANCE,
    skip=quant_skip,
    tags=("compute", "quant"),
)
