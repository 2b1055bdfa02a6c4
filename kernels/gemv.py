"""Skinny linear layer y = x·Wᵀ for batch M = 1 … 64 (family ``gemv``): the memory-bound regime.

At M = 1 a GEMV moves 2 bytes of W per 2 FLOPs, so the whole game is streaming W at DRAM speed:
16-byte loads along W's contiguous K, an unmasked main loop (only the last K chunk of a split is
masked), W loads marked evict-first so x stays in L2, and enough CTAs in flight.

Two inner products, chosen per shape by the autotuner:

* ``fma`` (M ≤ 8): CUDA-core products of x and the W tile, accumulated elementwise in an fp32
  register tile and reduced across K once after the loop, so no tensor-core tile is padded to
  16 rows. M = 1 only ever takes this path.
* ``dot`` (M ≥ 2): ``tl.dot`` with x padded to BLOCK_M = max(16, next_pow2(M)) rows, the W tile
  software-pipelined through shared memory.

Split-K: when cdiv(N, BLOCK_N) tiles cannot fill the GPU (fewer than SPLIT_WAVES CTAs per SM),
K is split over ``SPLIT_K`` CTAs per tile. Reduction is *deterministic*: each split writes its
fp32 partial to a workspace, then takes a ticket from a per-tile counter (one atomic, acq_rel);
the CTA drawing the last ticket sums the partials in split order 0…S−1, writes y and re-arms the
counter — one launch, no zero-fill, bit-identical results run to run ("splitk4-serial").
A workspace must not be shared by launches running concurrently on different streams.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kernels.linear import (
    LINEAR_TOLERANCE,
    TORCH_IMPL,
    check_linear_args,
    interpreter_bf16_skip,
    linear_axes,
    linear_bytes,
    linear_flops,
    linear_inputs,
    linear_reference_of,
    meta_linear_operands,
    precision_note,
)
from kernels.gemm_fp8 import fp8_skip
from kernels.spec import Case, DeviceCaps, DType, Impl, Inputs, KernelSpec, Launch, TuneSpace
from kernels.spaces import launch_spaces
from kernels.targets import is_blackwell
from kernels.tuning import INTERPRETER, Limits, autotune, device_limits

MAX_M = 64  # the GEMV regime; larger batches are gemm's
FMA_MAX_M = 8  # beyond this, CUDA-core products cost more than padded tensor-core tiles
FMA_ACC_PER_THREAD = 64  # fp32 accumulator registers per thread the fma tile may use
UNALIGNED_W_PER_THREAD = 32  # W elements per thread of a dot tile when W's rows are not 16-byte aligned
SPLIT_WAVES = 2  # split K until tiles × splits reaches this many CTAs per SM
MAX_SPLIT = 16
TAIL_K = tl.constexpr(32)  # K columns per step of the dot path's ragged tail (fp8 tl.dot needs ≥ 32)
DEFAULT_SMS = INTERPRETER.sm_count  # plans under the interpreter mirror an H100
# sm_100a's ptxas spilled 4 B on a 64-row dot tile staging 4 × 256 of K (32 × 256, 4 warps) under Triton 3.6
BLACKWELL_STAGED_K = 768


def _config(use_dot: bool, bn: int, bk: int, warps: int, stages: int) -> triton.Config:
    return triton.Config({"USE_DOT": use_dot, "BLOCK_N": bn, "BLOCK_K": bk, "LOOP_STAGES": stages},
                         num_warps=warps, num_stages=stages)


def gemv_configs() -> list[triton.Config]:
    """fma tiles move 8–16 KiB of W per iteration (16-byte loads, ≥ 4 per thread); dot tiles are
    the wider, shared-memory-pipelined ones. BLOCK_M and SPLIT_K are filled in per problem."""
    fma = [(16, 512, 4, 1), (8, 512, 4, 1), (16, 256, 4, 3), (32, 256, 8, 1), (8, 1024, 8, 1),
           (4, 512, 4, 3), (8, 256, 4, 3), (4, 256, 4, 3), (8, 128, 4, 4)]
    dot = [(64, 256, 4, 3), (128, 128, 4, 4), (64, 128, 4, 4), (32, 256, 4, 4), (128, 256, 8, 3),
           (16, 512, 4, 3), (32, 128, 4, 3), (64, 64, 4, 3)]
    return [_config(False, *c) for c in fma] + [_config(True, *c) for c in dot]


def split_for(N: int, K: int, block_n: int, block_k: int, num_sms: int, request: int = 0) -> int:
    """``request`` if given, else enough K splits for SPLIT_WAVES CTAs per SM, ≥ 2 K chunks each."""
    if request:
        return request
    tiles = triton.cdiv(N, block_n)
    chunks = triton.cdiv(K, block_k)
    return max(1, min(triton.cdiv(SPLIT_WAVES * num_sms, tiles), MAX_SPLIT, chunks // 2))


@functools.lru_cache(maxsize=4096)  # the launcher sizes its workspace from these on every call
def gemv_candidates(M: int, N: int, K: int, in_size: int, num_sms: int, split_request: int = 0,
                    smem_limit: int | None = None, staged_k_limit: int | None = None) -> tuple[triton.Config, ...]:
    """The configs worth timing for one problem, completed with BLOCK_M and SPLIT_K: the path M
    allows, tiles whose registers and shared memory fit, BLOCK_K not far beyond K. Rows of W that
    are not 16-byte aligned load element by element, each element its own address: dot tiles then
    keep ≤ UNALIGNED_W_PER_THREAD W elements per thread (128 spilled 16–20 B on sm_90a under Triton
    3.6, 64 spilled 124 B under 3.9). Triton
    proves alignment from a stride divisible by 16 (elements), so K % 16 decides. ``staged_k_limit``:
    dot tiles of ≥ 64 rows keep BLOCK_K·stages within it (Blackwell: BLACKWELL_STAGED_K)."""
    chosen = []
    aligned = K % 16 == 0
    for c in gemv_configs():
        use_dot, bn, bk = c.kwargs["USE_DOT"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"]
        if (M == 1 and use_dot) or (M > FMA_MAX_M and not use_dot):
            continue
        bm = max(16, triton.next_power_of_2(M)) if use_dot else triton.next_power_of_2(M)
        if not use_dot and bm * bn * bk > FMA_ACC_PER_THREAD * 32 * c.num_warps:
            continue
        if use_dot and not aligned and bn * bk > UNALIGNED_W_PER_THREAD * 32 * c.num_warps:
            continue
        if use_dot and staged_k_limit and bm >= 64 and bk * c.num_stages > staged_k_limit:
            continue
        split = split_for(N, K, bn, bk, num_sms, split_request)
        chosen.append(triton.Config({**c.kwargs, "BLOCK_M": bm, "SPLIT_K": split},
                                    num_warps=c.num_warps, num_stages=c.num_stages))

    def smem(c):  # pipeline buffers of both operand tiles
        return c.num_stages * (c.kwargs["BLOCK_M"] + c.kwargs["BLOCK_N"]) * c.kwargs["BLOCK_K"] * in_size

    if smem_limit is not None:
        chosen = [c for c in chosen if smem(c) <= smem_limit] or [min(chosen, key=smem)]
    return tuple(c for c in chosen if c.kwargs["BLOCK_K"] <= max(128, triton.next_power_of_2(K))) \
        or (min(chosen, key=lambda c: c.kwargs["BLOCK_K"]),)


def limited_candidates(M: int, N: int, K: int, in_size: int, limits: Limits,
                       split_request: int = 0) -> tuple[triton.Config, ...]:
    """:func:`gemv_candidates` on a device's limits (what the pruner and the launcher use)."""
    return gemv_candidates(M, N, K, in_size, limits.sm_count, split_request, limits.smem_per_block,
                           BLACKWELL_STAGED_K if is_blackwell(limits) else None)


def prune_gemv_configs(configs, named_args, **kwargs):
    """The autotuner's pruner: an adapter over :func:`gemv_candidates` on x's device."""
    args = {**named_args, **kwargs}
    x = args["x_ptr"]
    return list(limited_candidates(args["M"], args["N"], args["K"], x.element_size(), device_limits(x.device),
                                   args["split_request"]))


@triton.jit
def _gemv_step(acc, x_ptrs, w_ptrs, mask_m, mask_n, offs_k, k_left, MASK_K: tl.constexpr,
               HAS_SCALES: tl.constexpr, USE_DOT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """acc += one K chunk of x [BLOCK_M, BLOCK_K] times the W tile: Wᵀ [BLOCK_K, BLOCK_N] for dot,
    W [BLOCK_N, BLOCK_K] for fma. Only the ragged last chunk masks K (``MASK_K``)."""
    x_mask = mask_m[:, None]
    w_mask = mask_n[None, :] if USE_DOT else mask_n[:, None]  # constant along K: 16-byte loads stay whole
    if MASK_K:
        x_mask = x_mask & (offs_k[None, :] < k_left)
        w_mask = w_mask & ((offs_k[:, None] if USE_DOT else offs_k[None, :]) < k_left)
    x = tl.load(x_ptrs, mask=x_mask, other=0.0, eviction_policy="evict_last")
    w = tl.load(w_ptrs, mask=w_mask, other=0.0, eviction_policy="evict_first")  # W is streamed once
    if USE_DOT:
        if HAS_SCALES:
            acc = tl.dot(x, w, acc, max_num_imprecise_acc=BLOCK_K)
        else:
            acc = tl.dot(x, w, acc, input_precision="tf32")
    elif BLOCK_M == 1:
        acc += w.to(tl.float32) * x.to(tl.float32)  # [BLOCK_N, BLOCK_K]; x's one row broadcasts
    else:
        acc += x.to(tl.float32)[:, None, :] * w.to(tl.float32)[None, :, :]  # [BLOCK_M, BLOCK_N, BLOCK_K]
    return acc


@autotune(gemv_configs(), key=["M", "N", "K", "stride_wk", "split_request"], prune=prune_gemv_configs)
@triton.jit
def _gemv_kernel(
    x_ptr, w_ptr, x_scale_ptr, w_scale_ptr,  # in: x [M, K], W [N, K], fp8 scales [M], [N] (else None)
    y_ptr,  # out: [M, N]
    partial_ptr, count_ptr,  # split-K workspace: fp32 [SPLIT_K, M, N], int32 [tiles] (zeroed once)
    M, N, K,
    stride_xm, stride_xk, stride_wn, stride_wk, stride_ym, stride_yn,
    split_request,  # read by the config pruner only
    HAS_SCALES: tl.constexpr, USE_DOT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
    LOOP_STAGES: tl.constexpr,
):
    """y[m, n] = Σ_k x[m, k]·W[n, k] for all m < M ≤ BLOCK_M and BLOCK_N columns n.

    Grid (cdiv(N, BLOCK_N), SPLIT_K). Split s covers K chunks [s·C/S, (s+1)·C/S) of C = cdiv(K,
    BLOCK_K), so splits differ by at most one chunk and only the split holding K's end is ragged.
    """
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_n = offs_n < N
    chunks = tl.cdiv(K, BLOCK_K)
    k_begin = tl.multiple_of((pid_k * chunks // SPLIT_K) * BLOCK_K, BLOCK_K)
    k_end = tl.minimum(((pid_k + 1) * chunks // SPLIT_K) * BLOCK_K, K)
    k_full = k_begin + tl.maximum(k_end - k_begin, 0) // BLOCK_K * BLOCK_K  # end of the unmasked chunks

    k_offs = k_begin + offs_k
    x_ptrs = x_ptr + offs_m[:, None] * stride_xm + k_offs[None, :] * stride_xk
    if USE_DOT:
        w_ptrs = w_ptr + k_offs[:, None] * stride_wk + offs_n[None, :].to(tl.int64) * stride_wn
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    else:
        w_ptrs = w_ptr + offs_n[:, None].to(tl.int64) * stride_wn + k_offs[None, :] * stride_wk
        if BLOCK_M == 1:
            acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
        else:
            acc = tl.zeros((BLOCK_M, BLOCK_N, BLOCK_K), dtype=tl.float32)
    for _ in tl.range(k_begin, k_full, BLOCK_K, num_stages=LOOP_STAGES):
        acc = _gemv_step(acc, x_ptrs, w_ptrs, mask_m, mask_n, offs_k, BLOCK_K, False, HAS_SCALES, USE_DOT,
                         BLOCK_M, BLOCK_K)
        x_ptrs += BLOCK_K * stride_xk
        w_ptrs += BLOCK_K * stride_wk
    if USE_DOT:
        # the ragged K tail, TAIL_K columns at a time: a masked tile is not pipelined through shared
        # memory but loaded element by element into registers, so a full [BLOCK_K, BLOCK_N] one spilled
        # (up to 9 KB at BLOCK_N=128 on sm_90a)
        offs_t = tl.arange(0, TAIL_K)
        x_ptrs = x_ptr + offs_m[:, None] * stride_xm + (k_full + offs_t)[None, :] * stride_xk
        w_ptrs = w_ptr + (k_full + offs_t)[:, None] * stride_wk + offs_n[None, :].to(tl.int64) * stride_wn
        for k_tail in range(k_full, k_end, TAIL_K):
            acc = _gemv_step(acc, x_ptrs, w_ptrs, mask_m, mask_n, offs_t, k_end - k_tail, True, HAS_SCALES, USE_DOT,
                             BLOCK_M, TAIL_K)
            x_ptrs += TAIL_K * stride_xk
            w_ptrs += TAIL_K * stride_wk
    elif k_full < k_end:
        acc = _gemv_step(acc, x_ptrs, w_ptrs, mask_m, mask_n, offs_k, k_end - k_full, True, HAS_SCALES, USE_DOT,
                         BLOCK_M, BLOCK_K)
    if USE_DOT:
        part = acc
    elif BLOCK_M == 1:
        part = tl.sum(acc, axis=1)[None, :]
    else:
        part = tl.sum(acc, axis=2)

    if HAS_SCALES:
        part *= tl.load(x_scale_ptr + offs_m, mask=mask_m, other=0.0)[:, None]
        part *= tl.load(w_scale_ptr + offs_n, mask=mask_n, other=0.0)[None, :]
    out_mask = mask_m[:, None] & mask_n[None, :]
    y_ptrs = y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn
    if SPLIT_K == 1:
        tl.store(y_ptrs, part.to(y_ptr.dtype.element_ty), mask=out_mask)
    else:
        tile = offs_m[:, None] * N + offs_n[None, :]
        tl.store(partial_ptr + pid_k * M * N + tile, part, mask=out_mask)
        tl.debug_barrier()  # every thread's partial is written before the ticket releases them
        ticket = tl.atomic_add(count_ptr + pid_n, 1, sem="acq_rel", scope="gpu")
        if ticket == SPLIT_K - 1:
            total = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            for s in range(SPLIT_K):  # fixed order: deterministic whichever split finished last
                total += tl.load(partial_ptr + s * M * N + tile, mask=out_mask, other=0.0, cache_modifier=".cg")
            tl.store(y_ptrs, total.to(y_ptr.dtype.element_ty), mask=out_mask)
            tl.atomic_xchg(count_ptr + pid_n, 0)  # re-arm for the next launch


# ---------------------------------------------------------------------------------------------
# Launcher
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GemvWorkspace:
    """Split-K scratch: fp32 partials [≥ splits·M·N] and zeroed int32 tile counters (self re-arming)."""

    partials: torch.Tensor
    counters: torch.Tensor


def _workspace_size(configs, M: int, N: int) -> tuple[int, int]:
    """(fp32 partials, tile counters) covering every config; (0, 0) when none splits K."""
    splits = max(c.kwargs["SPLIT_K"] for c in configs)
    if splits == 1:
        return 0, 0
    return splits * M * N, triton.cdiv(N, min(c.kwargs["BLOCK_N"] for c in configs))


def _configs_for(x: torch.Tensor, w: torch.Tensor, split_k: int) -> tuple[triton.Config, ...]:
    return limited_candidates(x.shape[0], w.shape[0], x.shape[1], x.element_size(), device_limits(x.device), split_k)


def gemv_workspace(x: torch.Tensor, w: torch.Tensor, split_k: int = 0) -> GemvWorkspace | None:
    """Scratch big enough for every config gemv may pick for this problem; None when none splits."""
    partials, counters = _workspace_size(_configs_for(x, w, split_k), x.shape[0], w.shape[0])
    if not partials:
        return None
    return GemvWorkspace(torch.empty(partials, dtype=torch.float32, device=x.device),
                         torch.zeros(counters, dtype=torch.int32, device=x.device))


def gemv(x: torch.Tensor, w: torch.Tensor, out: torch.Tensor | None = None, *,
         x_scale: torch.Tensor | None = None, w_scale: torch.Tensor | None = None, split_k: int = 0,
         workspace: GemvWorkspace | None = None, config: triton.Config | None = None) -> torch.Tensor:
    """y = x·Wᵀ for M ≤ 64 (W: [N, K], any strides; fp8 takes x_scale [M], w_scale [N], writes bf16).

    ``split_k`` forces that many K splits (0: choose from N and the SM count); ``workspace`` (from
    :func:`gemv_workspace`) avoids allocating scratch per call; ``config`` (one of
    :func:`gemv_candidates`) skips autotuning.
    """
    out = check_linear_args(x, w, out, x_scale, w_scale)
    M, K = x.shape
    N = w.shape[0]
    if M > MAX_M:
        raise ValueError(f"gemv takes M ≤ {MAX_M}, got M={M}; use kernels.gemm.gemm for larger batches")
    if not 0 <= split_k <= MAX_SPLIT:
        raise ValueError(f"split_k must be 0 (automatic) or 1…{MAX_SPLIT}, got {split_k}")
    if M == 0 or N == 0:
        return out
    partials, counters = _workspace_size([config] if config else _configs_for(x, w, split_k), M, N)
    if partials and workspace is None:
        workspace = GemvWorkspace(torch.empty(partials, dtype=torch.float32, device=x.device),
                                  torch.zeros(counters, dtype=torch.int32, device=x.device))
    if partials and (workspace.partials.numel() < partials or workspace.counters.numel() < counters):
        raise ValueError(f"gemv workspace too small: needs {partials} fp32 partials and {counters} counters")
    grid = lambda meta: (triton.cdiv(N, meta["BLOCK_N"]), meta["SPLIT_K"])  # noqa: E731
    args = (x, w, x_scale, w_scale, out, workspace.partials if partials else None,
            workspace.counters if partials else None, M, N, K, *x.stride(), *w.stride(), *out.stride(),
            split_k, x_scale is not None)
    if config is None:
        _gemv_kernel[grid](*args)
    else:
        _gemv_kernel.fn[grid](*args, **config.all_kwargs())
    return out


def describe_gemv(config: triton.Config | None) -> str:
    """e.g. ``fma splitk4-serial BLOCK_M=1 BLOCK_N=16 BLOCK_K=512 warps=4 stages=1``."""
    if config is None:
        return ""
    k = config.kwargs
    split = f"splitk{k['SPLIT_K']}-serial" if k["SPLIT_K"] > 1 else "no-split"
    return (f"{'dot' if k['USE_DOT'] else 'fma'} {split} BLOCK_M={k['BLOCK_M']} BLOCK_N={k['BLOCK_N']} "
            f"BLOCK_K={k['BLOCK_K']} warps={config.num_warps} stages={config.num_stages}")


# ---------------------------------------------------------------------------------------------
# Spec
# ---------------------------------------------------------------------------------------------


def _gemv_skip(case: Case, caps: DeviceCaps) -> str | None:
    if case["M"] > MAX_M:
        return f"gemv covers M ≤ {MAX_M}; larger batches are gemm's"
    return fp8_skip(case, caps)


def _gemv_candidates(case: Case, limits: Limits) -> tuple[TuneSpace, ...]:
    """The configs a case would tune on ``limits`` (see kernels.spaces)."""
    o = meta_linear_operands(case)
    launch = lambda: gemv(o["x"], o["w"], o["out"], x_scale=o["x_scale"], w_scale=o["w_scale"])  # noqa: E731
    return launch_spaces(launch, {"gemv": _gemv_kernel}, limits)


def _build_gemv_triton(inputs: Inputs, case: Case) -> Launch:
    x, w, out, xs, ws = inputs["x"], inputs["w"], inputs["out"], inputs["x_scale"], inputs["w_scale"]
    workspace = gemv_workspace(x, w)
    return Launch(run=lambda: gemv(x, w, out, x_scale=xs, w_scale=ws, workspace=workspace),
                  config=lambda: _describe_last(case), scratch=(workspace.partials,) if workspace else ())


def _describe_last(case: Case) -> str:
    config = _gemv_kernel.best_config
    return describe_gemv(config) + precision_note(case, tensor_cores=config.kwargs["USE_DOT"])


GEMV = KernelSpec(
    name="gemv",
    summary="skinny linear layer y = x·Wᵀ for M ≤ 64: streams W at DRAM speed, deterministic split-K",
    axes=linear_axes(default_m=1),
    dtypes=(DType.FP16, DType.BF16, DType.FP32, DType.FP8),
    impls=(
        Impl("triton", _build_gemv_triton, "Triton: CUDA-core (M ≤ 8) or tl.dot tiles, serial split-K",
             skip=interpreter_bf16_skip, candidates=_gemv_candidates),
        TORCH_IMPL,
    ),
    make_inputs=linear_inputs,
    reference=linear_reference_of,
    flops=linear_flops,
    bytes=linear_bytes,
    tolerance=LINEAR_TOLERANCE,
    skip=_gemv_skip,
    tags=("memory", "linear"),
)
