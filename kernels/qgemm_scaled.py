"""``qgemm``'s scaled variant: y = x·Wᵀ on the hardware's block-scaled FP4 MMA through ``tl.dot_scaled``.

W (mxfp4 or nvfp4, :mod:`kernels.quant_formats`) stays packed and its block scales go to the MMA
(tcgen05 kind::mxf4 / mxf4nvf4 on sm_100, v_mfma_scale on gfx950). That MMA takes no fp16/bf16
operand, so each x tile is quantised in registers onto the weight format's e2m1 grid with one
power-of-two scale per block (:func:`fp4_activation_tile`, bit for bit
:func:`kernels.quant_formats.quantize_activations`). :func:`kernels.qgemm.qgemm_variant` says where
it runs; :mod:`kernels.qgemm` launches it.
"""

from __future__ import annotations

import triton
import triton.language as tl

from kernels.quant_formats import MX_BLOCK, NVFP4_BLOCK, QuantFormat
from kernels.targets import min_mma_rows
from kernels.tuning import Limits, autotune, device_limits

MAX_X_PER_THREAD = 64  # fp32 x values a thread quantises per K step (see scaled_candidates)


def qgemm_scaled_configs() -> list[triton.Config]:
    """128-row tiles first (tcgen05's block-scaled MMA takes nothing shorter), K steps of 128–256 FP4
    elements (64 bytes of packed W per row and more); shorter rows for gfx950 at small M."""
    shapes = ((128, 128, 128, 8, 3), (128, 256, 128, 8, 3), (128, 128, 256, 8, 2), (128, 64, 128, 4, 4),
              (64, 128, 128, 4, 3), (32, 128, 128, 4, 3), (16, 64, 128, 4, 2))
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}, num_warps=w, num_stages=s)
            for bm, bn, bk, w, s in shapes]


def scaled_smem_bytes(config: triton.Config, act_size: int, group: int) -> int:
    """Pipeline buffers: the x tile as loaded (fp16/bf16), packed W and its scale bytes, per stage."""
    k = config.kwargs
    per_stage = k["BLOCK_M"] * k["BLOCK_K"] * act_size + k["BLOCK_N"] * (k["BLOCK_K"] // 2 + k["BLOCK_K"] // group)
    return config.num_stages * per_stage


def scaled_candidates(M: int, group: int, act_size: int, limits: Limits) -> tuple[triton.Config, ...]:
    """Row blocks from the target's smallest block-scaled MMA (128 on Blackwell) up to what M needs;
    at most MAX_X_PER_THREAD fp32 x values per thread (each K step quantises a [BLOCK_M, BLOCK_K] x
    tile in registers; the accumulator lives in tensor memory on Blackwell); within shared memory."""
    m_min = min_mma_rows(limits, scaled=True)
    m_cap = max(m_min, triton.next_power_of_2(M))
    kept = [c for c in qgemm_scaled_configs()
            if m_min <= c.kwargs["BLOCK_M"] <= m_cap
            and c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_K"] <= MAX_X_PER_THREAD * limits.warp_size * c.num_warps
            and scaled_smem_bytes(c, act_size, group) <= limits.smem_per_block]
    return tuple(kept) or (min(qgemm_scaled_configs(), key=lambda c: scaled_smem_bytes(c, act_size, group)),)


def prune_qgemm_scaled_configs(configs, named_args, **kwargs):
    """The autotuner's pruner: an adapter over :func:`scaled_candidates` on x's device."""
    args = {**named_args, **kwargs}
    x = args["x_ptr"]
    group = MX_BLOCK if args["FMT"] == QuantFormat.MXFP4.value else NVFP4_BLOCK
    return list(scaled_candidates(args["M"], group, x.element_size(), device_limits(x.device)))


@triton.jit
def _e2m1_codes(v):
    """fp32 → e2m1 codes (int32 0 … 15): nearest of ±{0, .5, 1, 1.5, 2, 3, 4, 6}, ties to the even
    code, saturating at 6, the sign of ±0 kept (quant_formats.e2m1_encode)."""
    m = tl.abs(v)
    code = ((m > 0.25).to(tl.int32) + (m >= 0.75).to(tl.int32) + (m > 1.25).to(tl.int32)
            + (m >= 1.75).to(tl.int32) + (m > 2.5).to(tl.int32) + (m >= 3.5).to(tl.int32) + (m > 5.0).to(tl.int32))
    return code | ((v.to(tl.int32, bitcast=True) >> 28) & 0x8)


@triton.jit
def fp4_activation_tile(x, FMT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """x [BLOCK_M, BLOCK_K] fp32 → (packed e2m1 [BLOCK_M, BLOCK_K/2] uint8, scale bytes [BLOCK_M, BLOCK_K/G])
    exactly as quant_formats.quantize_activations: per block of G, s = floor(log2 amax) − 2 clamped to
    what the scale byte holds (E8M0 for mxfp4, G = 32; e4m3 for nvfp4, G = 16)."""
    G: tl.constexpr = 32 if FMT == "mxfp4" else 16
    LOW: tl.constexpr = -127 if FMT == "mxfp4" else -9
    HIGH: tl.constexpr = 127 if FMT == "mxfp4" else 8
    blocks = tl.reshape(x, (BLOCK_M, BLOCK_K // G, G))
    amax = tl.max(tl.abs(blocks), axis=2)
    biased = (amax.to(tl.int32, bitcast=True) >> 23) & 0xFF  # fp32 exponent field: floor(log2 amax) + 127
    shared = tl.minimum(tl.maximum(biased - 129, LOW), HIGH)  # a zero or subnormal amax gets LOW
    inverse = ((127 - shared) << 23).to(tl.float32, bitcast=True)  # 2^−s, a normal fp32
    codes = tl.reshape(_e2m1_codes(blocks * inverse[:, :, None]), (BLOCK_M, BLOCK_K // 2, 2))
    lo, hi = tl.split(codes)
    packed = (lo | (hi << 4)).to(tl.uint8)
    if FMT == "mxfp4":
        scale = (shared + 127).to(tl.uint8)
    else:  # 2^s as e4m3 (bias 7): normal for s ≥ −6, subnormal m·2^−9 below
        scale = tl.where(shared >= -6, (shared + 7) << 3, 1 << tl.maximum(shared + 9, 0)).to(tl.uint8)
    return packed, scale


@autotune(qgemm_scaled_configs(), key=["M", "N", "K", "FMT"], prune=prune_qgemm_scaled_configs)
@triton.jit
def _qgemm_scaled_kernel(
    x_ptr,  # in:  [M, K] fp16/bf16
    w_ptr, s_ptr, t_ptr,  # in: packed e2m1 W [N, K/2] (uint8), block scales [K/G, N] (bytes), nvfp4 tensor scale
    out_ptr,  # out: [M, N], x's dtype
    M, N, K,
    stride_xm, stride_wn, stride_sg, stride_om,
    FMT: tl.constexpr,  # "mxfp4" (E8M0 scales per 32) or "nvfp4" (e4m3 scales per 16, fp32 tensor scale)
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """out[m, n] = t · Σ_k xq[m, k]·sx[m, k/G] · e2m1(W[n, k])·sw[k/G, n] (fp32), xq·sx = x on the e2m1 grid."""
    G: tl.constexpr = 32 if FMT == "mxfp4" else 16
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
    mask_m, mask_n = offs_m < M, offs_n < N
    x_rows = x_ptr + offs_m.to(tl.int64)[:, None] * stride_xm
    w_rows = w_ptr + offs_n.to(tl.int64)[:, None] * stride_wn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for step in range(0, tl.cdiv(K, BLOCK_K)):
        # K is a multiple of G, not of BLOCK_K: past K, x and W load as zeros (code 0, any scale)
        offs_k = step * BLOCK_K + tl.arange(0, BLOCK_K)
        x = tl.load(x_rows + offs_k[None, :], mask=mask_m[:, None] & (offs_k < K)[None, :], other=0.0)
        xq, xs = fp4_activation_tile(x.to(tl.float32), FMT, BLOCK_M, BLOCK_K)
        offs_b = step * (BLOCK_K // 2) + tl.arange(0, BLOCK_K // 2)
        w = tl.load(w_rows + offs_b[None, :], mask=mask_n[:, None] & (offs_b < K // 2)[None, :], other=0)
        offs_g = step * (BLOCK_K // G) + tl.arange(0, BLOCK_K // G)
        ws = tl.load(s_ptr + offs_g[None, :] * stride_sg + offs_n[:, None],
                     mask=mask_n[:, None] & (offs_g < K // G)[None, :], other=0)
        if FMT == "nvfp4":
            xs = xs.to(tl.float8e4nv, bitcast=True)
            ws = ws.to(tl.float8e4nv, bitcast=True)
        acc = tl.dot_scaled(xq, xs, "e2m1", tl.trans(w), ws, "e2m1", acc)
    if FMT == "nvfp4":
        acc *= tl.load(t_ptr)
    out = out_ptr + offs_m.to(tl.int64)[:, None] * stride_om + offs_n[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])
