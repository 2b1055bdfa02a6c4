"""``moe``: one routed SwiGLU expert layer, as a serving engine runs it (vLLM's fused_moe structure).

For tokens x [T, d_model], each routed to ``top_k`` experts (ids [T, k], weights [T, k] fp32) and
experts W1 [2·d_ff, d_model] (gate rows, then up rows) and W2 [d_model, d_ff] held on this GPU as
experts 0 … E_local − 1 (a pair routed elsewhere is not computed here):

1. align: the (token, k) pairs routed here sorted by expert (stable: by pair id within an expert),
   each expert's run padded to a multiple of BLOCK_M with the sentinel T·k; block j of BLOCK_M slots
   belongs to expert ``block_expert[j]``; ``padded`` holds the number of slots used. Two kernels,
   one program per local expert: count, then place (no atomics: the same order every run);
2. w1: per block, h[slot] = silu(x[token]·W1_gateᵀ) ⊙ (x[token]·W1_upᵀ) with both products in one
   K loop (two accumulators) and the SwiGLU in the epilogue; padding slots store zeros;
3. w2: per block, y[pair] = weight[pair] · h[slot]·W2ᵀ, one row per (token, k) pair;
4. combine: out[t] = Σ_i y[t·k + i] over the pairs routed here, summed in i order (+ the shared
   expert's row). Writing per-pair rows and summing them in a fixed order makes the result
   bit-identical run to run, which atomics would not (the float sum's order would vary).

The layer's launch sequence on fixed buffers is :mod:`kernels.moe_layer`'s. Grids are bounded from the shapes (no device-to-host copy; the programs of blocks past ``padded``
return at once), so the whole layer is a fixed sequence of launches a CUDA graph can capture. Only
experts with ≥ 1 pair own a block, so only their weights are read. A shared expert (DeepSeek) is
the same two GEMMs over every token with one expert and an identity alignment built once.
Quantized weights are decoded in registers with :mod:`kernels.dequant`'s helpers (see
:mod:`kernels.moe_formats` for the stacked layouts).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kernels.dequant import decode_tile, row_scale
from kernels.moe_formats import ExpertWeights, kernel_weight_args
from kernels.targets import is_blackwell
from kernels.tuning import Limits, autotune, device_limits

# fp32 accumulators per thread (both of w1's) beside the decoded W tile: 128 spilled ≈ 450 B on sm_90a
# (w1, 128 × 64 with 4 warps), as it did for qgemm
MAX_ACC_PER_THREAD = 64
BLACKWELL_DECODED_PER_THREAD = 48  # sm_100a's ptxas spilled 4 B at 64 (w1 fp8-block, 32 × 128 with 4 warps)
ALIGN_BLOCK = 256  # pairs an align program scans per step


def moe_block_m(pairs: int, experts: int) -> int:
    """Rows per block from the mean pairs per expert: 16 at decode (tl.dot's least), up to 128."""
    mean = pairs / max(experts, 1)
    for block in (16, 32, 64):
        if mean <= block:
            return block
    return 128


def max_blocks(pairs: int, experts: int, block_m: int) -> int:
    """Blocks the alignment can use: Σ_e ⌈c_e/B⌉ ≤ ⌊P/B⌋ + min(P, E) for counts c_e summing to P."""
    return pairs // block_m + min(pairs, experts)


# ---------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------


def moe_configs() -> list[triton.Config]:
    """Column × K tiles (BLOCK_M is the alignment's, chosen by the launcher), Triton-tutorial style."""
    shapes = ((64, 64, 4, 3), (128, 64, 4, 3), (64, 128, 4, 3), (128, 128, 8, 3), (256, 64, 8, 3),
              (32, 128, 4, 4), (128, 32, 4, 4), (64, 32, 4, 4), (64, 64, 8, 3), (64, 128, 8, 3), (32, 64, 4, 4))
    return [triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s) for bn, bk, w, s in shapes]


def moe_candidates(block_m: int, gates: int, fmt: str, limits: Limits) -> tuple[triton.Config, ...]:
    """Configs a device can hold: K tiles one group wide for int4/mxfp4 (scaled per tile), within one
    128-block for fp8-block; at most MAX_ACC_PER_THREAD accumulators per thread (``gates``: 2 for
    w1's gate and up) and, for decoded formats, as many decoded weights (128 spilled 4–8 B on sm_90a;
    BLACKWELL_DECODED_PER_THREAD on Blackwell);
    operands of all stages within the block's shared memory (2 B per element)."""
    group = {"int4": 128, "mxfp4": 32}.get(fmt)
    unique = {}
    for c in moe_configs():
        bn, bk, warps = c.kwargs["BLOCK_N"], group or c.kwargs["BLOCK_K"], c.num_warps
        threads = limits.warp_size * warps
        if gates * block_m * bn // threads > MAX_ACC_PER_THREAD:
            continue
        decoded_cap = BLACKWELL_DECODED_PER_THREAD if is_blackwell(limits) else MAX_ACC_PER_THREAD
        if fmt != "dense" and gates * bn * bk // threads > decoded_cap:
            continue
        if c.num_stages * (block_m + gates * bn) * bk * 2 > limits.smem_per_block:
            continue
        key = (bn, bk, warps, c.num_stages)
        unique.setdefault(key, triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=warps,
                                             num_stages=c.num_stages))
    return tuple(unique.values()) or (triton.Config({"BLOCK_N": 32, "BLOCK_K": group or 32}, num_warps=4),)


def _prune_w1(configs, named_args, **kwargs):
    """The autotuner's pruner: an adapter over :func:`moe_candidates`."""
    args = {**named_args, **kwargs}
    return list(moe_candidates(args["BLOCK_M"], 2, args["FMT"], device_limits(args["x_ptr"].device)))


def _prune_w2(configs, named_args, **kwargs):
    args = {**named_args, **kwargs}
    return list(moe_candidates(args["BLOCK_M"], 1, args["FMT"], device_limits(args["a_ptr"].device)))


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def _moe_count_kernel(ids_ptr, counts_ptr, num_pairs, BLOCK: tl.constexpr):
    """counts[e] = #{p < num_pairs : ids[p] = e} for this program's expert e."""
    e = tl.program_id(0)
    total = tl.zeros((BLOCK,), dtype=tl.int32)
    for start in range(0, num_pairs, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        ids = tl.load(ids_ptr + offs, mask=offs < num_pairs, other=-1)
        total += (ids == e).to(tl.int32)
    tl.store(counts_ptr + e, tl.sum(total, axis=0))


@triton.jit
def _moe_align_kernel(
    ids_ptr, counts_ptr,  # in: expert of each pair [P] int32, pairs per local expert [E] int32
    sorted_ptr, block_expert_ptr, padded_ptr,  # out: slots [max_slots], blocks' expert, slots used [1]
    num_pairs, num_experts, max_slots,
    BLOCK_M: tl.constexpr, BLOCK: tl.constexpr, E_BLOCK: tl.constexpr,
):
    """Expert e's pairs go, in pair order, to slots start_e … start_e + c_e − 1, where start_e =
    Σ_{j<e} ⌈c_j/BLOCK_M⌉·BLOCK_M; the rest of its run holds the sentinel num_pairs and its blocks
    name e. The last program writes the slots used and fills every slot past them with the sentinel."""
    e = tl.program_id(0)
    offs_e = tl.arange(0, E_BLOCK)
    counts = tl.load(counts_ptr + offs_e, mask=offs_e < num_experts, other=0)
    runs = (counts + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    start = tl.sum(tl.where(offs_e < e, runs, 0), axis=0)
    count = tl.sum(tl.where(offs_e == e, counts, 0), axis=0)
    run = tl.sum(tl.where(offs_e == e, runs, 0), axis=0)
    placed = start
    for first in range(0, num_pairs, BLOCK):
        offs = first + tl.arange(0, BLOCK)
        hit = tl.load(ids_ptr + offs, mask=offs < num_pairs, other=-1) == e
        rank = tl.cumsum(hit.to(tl.int32), axis=0) - 1
        tl.store(sorted_ptr + placed + rank, offs, mask=hit)
        placed += tl.sum(hit.to(tl.int32), axis=0)
    pad = start + count + tl.arange(0, BLOCK_M)
    tl.store(sorted_ptr + pad, tl.zeros((BLOCK_M,), dtype=tl.int32) + num_pairs, mask=pad < start + run)
    for block in range(start // BLOCK_M, (start + run) // BLOCK_M, BLOCK):
        offs_b = block + tl.arange(0, BLOCK)
        tl.store(block_expert_ptr + offs_b, tl.zeros((BLOCK,), dtype=tl.int32) + e,
                 mask=offs_b < (start + run) // BLOCK_M)
    if e == num_experts - 1:
        used = start + run
        tl.store(padded_ptr, used)
        for first in range(used, max_slots, BLOCK):
            offs = first + tl.arange(0, BLOCK)
            tl.store(sorted_ptr + offs, tl.zeros((BLOCK,), dtype=tl.int32) + num_pairs, mask=offs < max_slots)


@triton.jit
def _weight_tile(w_ptr, s_ptr, z_ptr, rows, k0, ROWS, K, stride_wn, stride_sg, stride_zg,
                 FMT: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """W[rows, k0 : k0 + BLOCK_K] of the stacked weight (dense) or its raw decoded values (quantized)."""
    if FMT == "dense":
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask = (rows < ROWS)[:, None] & (offs_k < K)[None, :]
        tile = tl.load(w_ptr + rows.to(tl.int64)[:, None] * stride_wn + offs_k[None, :], mask=mask, other=0.0)
    elif FMT == "fp8-block":
        tile = decode_tile(w_ptr, s_ptr, z_ptr, rows, k0, ROWS, K, stride_wn, stride_sg, stride_zg, "fp8", BLOCK_N,
                           BLOCK_K)
    else:
        tile = decode_tile(w_ptr, s_ptr, z_ptr, rows, k0, ROWS, K, stride_wn, stride_sg, stride_zg, FMT, BLOCK_N,
                           BLOCK_K)
    return tile


@triton.jit
def _tile_scale(s_ptr, t_ptr, rows, local, expert, step, k0, ROWS, ROWS_E, stride_sg, stride_se, stride_sb,
                FMT: tl.constexpr):
    """The fp32 scale of each row for K step ``step`` (per-step formats) or for the whole row."""
    if FMT == "fp8-block":
        scale = tl.load(s_ptr + expert * stride_se + (local // 128) * stride_sb + k0 // 128, mask=local < ROWS_E,
                        other=0.0)
    else:
        scale = row_scale(s_ptr, t_ptr, step, rows, ROWS, stride_sg, FMT)
    return scale


@triton.jit
def _accumulate(acc, a, w_ptr, s_ptr, z_ptr, t_ptr, rows, local, expert, step, k0, ROWS, ROWS_E, K,
                stride_wn, stride_sg, stride_zg, stride_se, stride_sb,
                FMT: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """acc + a·W[rows, K step]ᵀ; int4/mxfp4/fp8-block partial products scaled per step."""
    w = _weight_tile(w_ptr, s_ptr, z_ptr, rows, k0, ROWS, K, stride_wn, stride_sg, stride_zg, FMT, BLOCK_N, BLOCK_K)
    part = tl.dot(a, tl.trans(w.to(a.dtype)))
    if FMT == "int4" or FMT == "mxfp4" or FMT == "fp8-block":
        part = part * _tile_scale(s_ptr, t_ptr, rows, local, expert, step, k0, ROWS, ROWS_E, stride_sg, stride_se,
                                  stride_sb, FMT)[None, :]
    return acc + part


@triton.jit
def _final_scale(acc, s_ptr, t_ptr, rows, ROWS, stride_sg, FMT: tl.constexpr):
    """Per-channel fp8 and nvfp4's tensor scale apply once, after the K loop."""
    if FMT == "fp8" or FMT == "nvfp4":
        acc = acc * row_scale(s_ptr, t_ptr, 0, rows, ROWS, stride_sg, FMT)[None, :]
    return acc


@autotune(moe_configs(), key=["num_pairs", "N", "K", "FMT", "BLOCK_M"], prune=_prune_w1)
@triton.jit
def _moe_w1_kernel(
    x_ptr,  # in: [T, K] activations
    w_ptr, s_ptr, z_ptr, t_ptr,  # in: stacked W1 [E·2N, K] (dense or packed), scales, zero points, tensor scale
    h_ptr,  # out: [slots, N], one row per slot
    sorted_ptr, block_expert_ptr, padded_ptr,  # in: the alignment
    num_pairs, top_k, N, K,
    stride_xm, stride_wn, stride_sg, stride_zg, stride_se, stride_sb, stride_hm,
    FMT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """h[s, n] = silu(Σ_k x[t_s, k]·W1[e, n, k]) · Σ_k x[t_s, k]·W1[e, N + n, k] for the slots s of block
    pid_m (expert e, tokens t_s = pair_s // top_k); padding slots get 0."""
    pid = tl.program_id(0)
    grid_n = tl.cdiv(N, BLOCK_N)
    pid_m, pid_n = pid // grid_n, pid % grid_n
    if pid_m * BLOCK_M >= tl.load(padded_ptr):
        return
    expert = tl.load(block_expert_ptr + pid_m).to(tl.int64)
    slots = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pairs = tl.load(sorted_ptr + slots)
    valid = pairs < num_pairs
    a_rows = x_ptr + (pairs // top_k).to(tl.int64)[:, None] * stride_xm
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ROWS_E = 2 * N
    ROWS = (expert + 1) * ROWS_E  # rows past the expert's own belong to the next one: masked at the store
    gate, up = expert * ROWS_E + offs_n, expert * ROWS_E + N + offs_n
    acc_g = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_u = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for step in range(0, tl.cdiv(K, BLOCK_K)):
        k0 = step * BLOCK_K
        offs_k = k0 + tl.arange(0, BLOCK_K)
        a = tl.load(a_rows + offs_k[None, :], mask=valid[:, None] & (offs_k < K)[None, :], other=0.0)
        acc_g = _accumulate(acc_g, a, w_ptr, s_ptr, z_ptr, t_ptr, gate, offs_n, expert, step, k0, ROWS, ROWS_E, K,
                            stride_wn, stride_sg, stride_zg, stride_se, stride_sb, FMT, BLOCK_N, BLOCK_K)
        acc_u = _accumulate(acc_u, a, w_ptr, s_ptr, z_ptr, t_ptr, up, N + offs_n, expert, step, k0, ROWS, ROWS_E, K,
                            stride_wn, stride_sg, stride_zg, stride_se, stride_sb, FMT, BLOCK_N, BLOCK_K)
    acc_g = _final_scale(acc_g, s_ptr, t_ptr, gate, ROWS, stride_sg, FMT)
    acc_u = _final_scale(acc_u, s_ptr, t_ptr, up, ROWS, stride_sg, FMT)
    h = acc_g * tl.sigmoid(acc_g) * acc_u
    out = h_ptr + slots.to(tl.int64)[:, None] * stride_hm + offs_n[None, :]
    tl.store(out, h.to(h_ptr.dtype.element_ty), mask=(offs_n < N)[None, :])


@autotune(moe_configs(), key=["num_pairs", "N", "K", "FMT", "BLOCK_M"], prune=_prune_w2)
@triton.jit
def _moe_w2_kernel(
    a_ptr,  # in: h [slots, K], one row per slot
    w_ptr, s_ptr, z_ptr, t_ptr,  # in: stacked W2 [E·N, K], scales, zero points, tensor scale
    y_ptr,  # out: [pairs, N], one row per (token, k) pair
    weights_ptr,  # in: routing weight per pair [P] fp32 (unused without WEIGHTED)
    sorted_ptr, block_expert_ptr, padded_ptr,
    num_pairs, N, K,
    stride_am, stride_wn, stride_sg, stride_zg, stride_se, stride_sb, stride_ym,
    FMT: tl.constexpr,
    WEIGHTED: tl.constexpr,  # scale each row by its pair's routing weight (the shared expert: no)
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """y[p_s, n] = weight[p_s] · Σ_k h[s, k]·W2[e, n, k] for the pair p_s of each real slot s of block pid_m."""
    pid = tl.program_id(0)
    grid_n = tl.cdiv(N, BLOCK_N)
    pid_m, pid_n = pid // grid_n, pid % grid_n
    if pid_m * BLOCK_M >= tl.load(padded_ptr):
        return
    expert = tl.load(block_expert_ptr + pid_m).to(tl.int64)
    slots = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pairs = tl.load(sorted_ptr + slots)
    valid = pairs < num_pairs
    a_rows = a_ptr + slots.to(tl.int64)[:, None] * stride_am
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ROWS = (expert + 1) * N
    rows = expert * N + offs_n
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for step in range(0, tl.cdiv(K, BLOCK_K)):
        k0 = step * BLOCK_K
        offs_k = k0 + tl.arange(0, BLOCK_K)
        a = tl.load(a_rows + offs_k[None, :], mask=valid[:, None] & (offs_k < K)[None, :], other=0.0)
        acc = _accumulate(acc, a, w_ptr, s_ptr, z_ptr, t_ptr, rows, offs_n, expert, step, k0, ROWS, N, K,
                          stride_wn, stride_sg, stride_zg, stride_se, stride_sb, FMT, BLOCK_N, BLOCK_K)
    acc = _final_scale(acc, s_ptr, t_ptr, rows, ROWS, stride_sg, FMT)
    if WEIGHTED:
        acc = acc * tl.load(weights_ptr + pairs, mask=valid, other=0.0)[:, None]
    out = y_ptr + pairs.to(tl.int64)[:, None] * stride_ym + offs_n[None, :]
    tl.store(out, acc.to(y_ptr.dtype.element_ty), mask=valid[:, None] & (offs_n < N)[None, :])


@triton.jit
def _moe_combine_kernel(
    y_ptr, ids_ptr, shared_ptr, out_ptr,  # in: per-pair rows [T·k, N], expert per pair, shared rows; out [T, N]
    N, num_experts, stride_ym, stride_sm, stride_om,
    TOP_K: tl.constexpr, SHARED: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """out[t, n] = Σ_{i<k, ids[t·k+i] local} y[t·k + i, n] (+ shared[t, n]), summed in i order, in fp32."""
    t = tl.program_id(0).to(tl.int64)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = offs_n < N
    acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for i in tl.static_range(TOP_K):
        expert = tl.load(ids_ptr + t * TOP_K + i + 0 * offs_n)  # broadcast: the mask stays a vector
        local = mask & (expert >= 0) & (expert < num_experts)
        acc += tl.load(y_ptr + (t * TOP_K + i) * stride_ym + offs_n, mask=local, other=0.0).to(tl.float32)
    if SHARED:
        acc += tl.load(shared_ptr + t * stride_sm + offs_n, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + t * stride_om + offs_n, acc.to(out_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Alignment:
    """Slots sorted by expert: pair per slot (sentinel: pairs), expert per block, slots used [1]."""

    sorted_ids: torch.Tensor  # int32 [max_slots]
    block_expert: torch.Tensor  # int32 [max_blocks]
    padded: torch.Tensor  # int32 [1]
    counts: torch.Tensor  # int32 [experts]
    block_m: int
    pairs: int

    @property
    def max_blocks(self) -> int:
        return self.block_expert.shape[0]


def empty_alignment(pairs: int, experts: int, block_m: int, device) -> Alignment:
    blocks = max_blocks(pairs, experts, block_m)
    i32 = dict(dtype=torch.int32, device=device)
    return Alignment(torch.empty(blocks * block_m, **i32), torch.empty(max(blocks, 1), **i32),
                     torch.empty(1, **i32), torch.empty(experts, **i32), block_m, pairs)


def identity_alignment(tokens: int, block_m: int, device) -> Alignment:
    """Every token once, to expert 0, in order: the shared expert's (built once, not per layer)."""
    blocks = triton.cdiv(tokens, block_m)
    slots = torch.arange(blocks * block_m, dtype=torch.int32, device=device).clamp_(max=tokens)
    i32 = dict(dtype=torch.int32, device=device)
    return Alignment(slots, torch.zeros(blocks, **i32), torch.tensor([blocks * block_m], **i32),
                     torch.tensor([tokens], **i32), block_m, tokens)


def moe_align(ids: torch.Tensor, experts: int, alignment: Alignment) -> Alignment:
    """Fill ``alignment`` from the pairs' experts ``ids`` ([T, k] int32; ids outside [0, experts) are
    another GPU's and skipped)."""
    if ids.dtype != torch.int32 or not ids.is_contiguous() or ids.numel() != alignment.pairs:
        raise ValueError(f"ids must be contiguous int32 with {alignment.pairs} pairs, got {ids.dtype} "
                         f"{tuple(ids.shape)}")
    pairs = ids.numel()
    _moe_count_kernel[(experts,)](ids, alignment.counts, pairs, BLOCK=ALIGN_BLOCK)
    _moe_align_kernel[(experts,)](ids, alignment.counts, alignment.sorted_ids, alignment.block_expert,
                                  alignment.padded, pairs, experts, alignment.sorted_ids.shape[0],
                                  BLOCK_M=alignment.block_m, BLOCK=ALIGN_BLOCK,
                                  E_BLOCK=triton.next_power_of_2(experts))
    return alignment


def moe_w1(x: torch.Tensor, w1: ExpertWeights, alignment: Alignment, top_k: int, h: torch.Tensor) -> torch.Tensor:
    """h [slots, d_ff] = SwiGLU(x·W1ᵀ) per slot of the alignment (W1: [E, 2·d_ff, d_model])."""
    d_ff = w1.rows // 2
    if w1.rows % 2 or w1.k != x.shape[1] or h.shape[1] != d_ff or h.shape[0] < alignment.sorted_ids.shape[0]:
        raise ValueError(f"w1 [{w1.experts}, {w1.rows}, {w1.k}] does not fit x {tuple(x.shape)} and h {tuple(h.shape)}")
    w, s, z, t, stride_wn, stride_sg, stride_zg, stride_se, stride_sb = kernel_weight_args(w1)
    grid = lambda meta: (alignment.max_blocks * triton.cdiv(d_ff, meta["BLOCK_N"]),)
    _moe_w1_kernel[grid](x, w, s, z, t, h, alignment.sorted_ids, alignment.block_expert, alignment.padded,
                         alignment.pairs, top_k, d_ff, w1.k, x.stride(0), stride_wn, stride_sg, stride_zg,
                         stride_se, stride_sb, h.stride(0), FMT=w1.format.kernel, BLOCK_M=alignment.block_m)
    return h


def moe_w2(h: torch.Tensor, w2: ExpertWeights, alignment: Alignment, weights: torch.Tensor | None,
           y: torch.Tensor) -> torch.Tensor:
    """y [pairs, d_model] = weight · h·W2ᵀ per pair of the alignment (W2: [E, d_model, d_ff])."""
    if w2.k != h.shape[1] or y.shape[1] != w2.rows:
        raise ValueError(f"w2 [{w2.experts}, {w2.rows}, {w2.k}] does not fit h {tuple(h.shape)} and y {tuple(y.shape)}")
    w, s, z, t, stride_wn, stride_sg, stride_zg, stride_se, stride_sb = kernel_weight_args(w2)
    grid = lambda meta: (alignment.max_blocks * triton.cdiv(w2.rows, meta["BLOCK_N"]),)
    _moe_w2_kernel[grid](h, w, s, z, t, y, weights if weights is not None else y, alignment.sorted_ids,
                         alignment.block_expert, alignment.padded, alignment.pairs, w2.rows, w2.k, h.stride(0),
                         stride_wn, stride_sg, stride_zg, stride_se, stride_sb, y.stride(0), FMT=w2.format.kernel,
                         WEIGHTED=weights is not None, BLOCK_M=alignment.block_m)
    return y


def moe_combine(y: torch.Tensor, ids: torch.Tensor, experts: int, shared: torch.Tensor | None,
                out: torch.Tensor) -> torch.Tensor:
    tokens, top_k = ids.shape
    block = min(1024, triton.next_power_of_2(out.shape[1]))
    _moe_combine_kernel[(tokens, triton.cdiv(out.shape[1], block))](
        y, ids, shared if shared is not None else out, out, out.shape[1], experts, y.stride(0),
        shared.stride(0) if shared is not None else 0, out.stride(0), TOP_K=top_k, SHARED=shared is not None,
        BLOCK_N=block)
    return out
