"""Forward flash attention for prefill (``attn_prefill``): compute-bound, O(seq²) FLOPs, O(seq) bytes.

FlashAttention-2 schedule as in Triton tutorial 06: one program per BLOCK_M query rows of one head
streams K/V in BLOCK_N tiles with an online softmax kept in base 2 (the log2(e)·sm_scale factor is
folded into one multiply so exp becomes exp2) and fp32 accumulators. Causal programs split the
key loop in two: the blocks every row of the program sees run without a mask, only the blocks the
diagonal crosses (and the ragged tail of seq_kv) pay for one, and nothing right of the diagonal is
visited, so causal does about half the work.

Layout [batch, heads, seq_q, head_dim] for q, o and [batch, kv_heads, seq_kv, head_dim] for k, v;
GQA/MQA maps query head h to kv head h // (heads // kv_heads). Any head_dim 1 … 256 runs in a tile
of the next power of two (``kernels.attn_tiles``); bytes and FLOPs count the real head_dim.

seq_q may differ from seq_kv (chunked prefill, prefix caching: the queries are the last seq_q
tokens of a seq_kv-token sequence). The causal mask is aligned bottom-right, as FlashAttention ≥ 2.1
aligns it: query i sees keys j ≤ i + seq_kv − seq_q (for seq_q = seq_kv, the usual causal mask).
When seq_q > seq_kv the first seq_q − seq_kv queries see no key; their output is zero, as
FlashAttention's.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from kernels.attn_ref import CausalAlign, attention_reference, causal_pairs, pick_sdpa_backend
from kernels.attn_tiles import LOG2E, MAX_HEAD_DIM, block_d, load_rows
from kernels.linear import interpreter_bf16_skip
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
from kernels.tuning import Limits, autotune, describe, device_limits

MAX_LIVE_PER_THREAD = 160  # fp32 acc + score values per thread; sm_90 builds above this spill registers
# … and below 128 for a 4-warp tile (one warpgroup): 128 spilled 12–20 B (head_dim 128, BLOCK_N 128)
# and 160 spilled 28 B (head_dim 256, BLOCK_N 64) on sm_90a
MAX_LIVE_ONE_WARPGROUP = 127


def prefill_configs() -> list[triton.Config]:
    """BLOCK_M × BLOCK_N × warps × stages, Hopper-sensible; the first one is what the interpreter runs."""
    return [
        triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n}, num_warps=warps, num_stages=stages)
        for block_m in (128, 64)
        for block_n in (64, 128)
        for warps in (4, 8)
        for stages in (2, 3, 4)
    ] + [triton.Config({"BLOCK_M": 64, "BLOCK_N": 32}, num_warps=4, num_stages=stages) for stages in (2, 3)]


def prefill_candidates(seq_q: int, seq_kv: int, head_dim: int, itemsize: int,
                       limits: Limits) -> tuple[triton.Config, ...]:
    """Tiles the problem can fill, that fit in shared memory (LDS) and whose live fp32 tiles fit in
    registers (``head_dim``: the padded tile). Per target: a thread's share of the live tiles counts
    the warp size (64 lanes on AMD); Blackwell's tcgen05 builds spill above one warpgroup's budget even
    with 8 warps (72–300 B at 128 × 128 on sm_100a); AMD's pipeliner keeps one K/V buffer fewer in
    LDS (64 × 64 × 128 takes 40 KiB on gfx942, not 80). 32-wide key tiles only when no wider one fits
    (head_dim 256 in gfx942's 64 KiB)."""
    configs = prefill_configs()
    max_m = max(64, triton.next_power_of_2(seq_q))
    max_n = max(64, triton.next_power_of_2(seq_kv))
    wide_budget = MAX_LIVE_ONE_WARPGROUP if limits.tensor_memory else MAX_LIVE_PER_THREAD

    def keep(c: triton.Config) -> bool:
        block_m, block_n = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]
        # Q once, K and V per stage: matches what Triton 3.9 allocates on NVIDIA
        kv_buffers = 2 * (c.num_stages - 1) if limits.amd else 2 * c.num_stages
        smem = (block_m + kv_buffers * block_n) * head_dim * itemsize
        live = block_m * (head_dim + block_n) // (limits.warp_size * c.num_warps)  # acc [M, D] + scores [M, N]
        return (block_m <= max_m and block_n <= max_n and smem <= limits.smem_per_block
                and live <= (wide_budget if c.num_warps >= 8 else MAX_LIVE_ONE_WARPGROUP)
                and not (block_m == 64 and c.num_warps == 8))  # trims the search: 4 warps suit 64 rows

    kept = [c for c in configs if keep(c)]
    wide = [c for c in kept if c.kwargs["BLOCK_N"] >= 64]
    smallest = min(configs, key=lambda c: (c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"], c.num_stages, c.num_warps))
    return tuple(wide or kept) or (smallest,)


def prune_prefill_configs(configs, named_args, **kwargs):
    """The autotuner's pruner: an adapter over :func:`prefill_candidates` on q's device."""
    args = {**named_args, **kwargs}
    q = args["q_ptr"]
    return list(prefill_candidates(args["seq_q"], args["seq_kv"], args["BLOCK_D"], q.element_size(),
                                   device_limits(q.device)))


@triton.jit
def _prefill_inner(
    acc, l_i, m_i, q,  # running state [BLOCK_M, BLOCK_D], [BLOCK_M], [BLOCK_M]; q tile
    k_base, v_base,  # this (batch, kv head)'s K and V
    offs_m, offs_d, d_ok,
    lo, hi,  # key range [lo, hi) this loop visits
    seq_kv, diagonal, stride_kn, stride_vn, qk_scale,  # diagonal = seq_kv − seq_q (bottom-right alignment)
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    MASKED: tl.constexpr,  # False: every key in [lo, hi) exists and is visible to every row
    CAUSAL: tl.constexpr,
):
    """One key range of the online softmax; scores are in log2 units (qk_scale = sm_scale·log2 e)."""
    offs_n = tl.arange(0, BLOCK_N)
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        kv_ok = cols < seq_kv
        k = load_rows(k_base + cols[:, None] * stride_kn + offs_d[None, :], kv_ok, d_ok, MASKED, HEAD_DIM, BLOCK_D)
        qk = tl.dot(q, tl.trans(k)) * qk_scale
        if MASKED:
            visible = kv_ok[None, :]
            if CAUSAL:
                visible = visible & (cols[None, :] <= offs_m[:, None] + diagonal)
            qk = tl.where(visible, qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        p = tl.exp2(qk - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = load_rows(v_base + cols[:, None] * stride_vn + offs_d[None, :], kv_ok, d_ok, MASKED, HEAD_DIM, BLOCK_D)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _attn_prefill_kernel(
    q_ptr, k_ptr, v_ptr,  # in:  q [batch, heads, seq_q, D], k/v [batch, kv_heads, seq_kv, D]
    o_ptr,  # out: [batch, heads, seq_q, D]
    qk_scale,  # sm_scale · log2(e)
    seq_q, seq_kv, heads, group,  # group = heads // kv_heads
    batch_heads,  # autotune key only: how many programs share the GPU per query block
    stride_qb, stride_qh, stride_qm,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_ob, stride_oh, stride_om,
    HEAD_DIM: tl.constexpr,  # real channels per head
    BLOCK_D: tl.constexpr,  # the tile: next power of two ≥ 16
    CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """o[b, h, i] = Σ_j softmax_j(q[b,h,i]·k[b,h/g,j]·sm_scale) v[b,h/g,j], j ≤ i + seq_kv − seq_q when causal.

    Grid (cdiv(seq_q, BLOCK_M), batch·heads); the last query block (most causal work) starts first.
    m starts at −1e30 (not −inf) so exp2(m_old − m_new) is never inf − inf; a row that sees no key
    keeps l = 0 and acc = 0 and stores 0.
    """
    start_m = tl.num_programs(0) - 1 - tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // heads).to(tl.int64)
    h = (bh % heads).to(tl.int64)
    kv_h = h // group
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    q_base = q_ptr + b * stride_qb + h * stride_qh
    k_base = k_ptr + b * stride_kb + kv_h * stride_kh
    v_base = v_ptr + b * stride_vb + kv_h * stride_vh
    row_ok = offs_m < seq_q
    q = load_rows(q_base + offs_m[:, None] * stride_qm + offs_d[None, :], row_ok, d_ok, True, HEAD_DIM, BLOCK_D)

    diagonal = seq_kv - seq_q
    if CAUSAL:
        # keys ≤ first row + diagonal are seen by every row; the last row sees up to its own diagonal
        hi = tl.maximum(tl.minimum((start_m + 1) * BLOCK_M + diagonal, seq_kv), 0)
        unmasked_end = tl.maximum(tl.minimum(start_m * BLOCK_M + diagonal + 1, seq_kv), 0) // BLOCK_N * BLOCK_N
    else:
        hi = seq_kv
        unmasked_end = seq_kv // BLOCK_N * BLOCK_N
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], -1.0e30, dtype=tl.float32)
    acc, l_i, m_i = _prefill_inner(acc, l_i, m_i, q, k_base, v_base, offs_m, offs_d, d_ok, 0, unmasked_end,
                                   seq_kv, diagonal, stride_kn, stride_vn, qk_scale,
                                   HEAD_DIM, BLOCK_D, BLOCK_N, False, CAUSAL)
    acc, l_i, m_i = _prefill_inner(acc, l_i, m_i, q, k_base, v_base, offs_m, offs_d, d_ok, unmasked_end, hi,
                                   seq_kv, diagonal, stride_kn, stride_vn, qk_scale,
                                   HEAD_DIM, BLOCK_D, BLOCK_N, True, CAUSAL)
    acc = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]  # no visible key: acc is 0, so is the output
    o_ptrs = o_ptr + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :]
    tl.store(o_ptrs, acc.to(o_ptr.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])


_attn_prefill_tuned = autotune(prefill_configs(),
                               key=["seq_q", "seq_kv", "batch_heads", "group", "HEAD_DIM", "BLOCK_D", "CAUSAL"],
                               prune=prune_prefill_configs)(_attn_prefill_kernel)


def _check_prefill(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor) -> None:
    if q.dim() != 4 or k.dim() != 4:
        raise ValueError(f"attn_prefill takes q [batch, heads, seq_q, head_dim] and k, v [batch, kv_heads, "
                         f"seq_kv, head_dim]; got q {tuple(q.shape)}, k {tuple(k.shape)}")
    batch, heads, seq_q, head_dim = q.shape
    if k.shape != v.shape or k.shape[0] != batch or k.shape[3] != head_dim:
        raise ValueError(f"k {tuple(k.shape)} and v {tuple(v.shape)} must both be [{batch}, kv_heads, seq_kv, "
                         f"{head_dim}] for q {tuple(q.shape)}")
    if not 1 <= head_dim <= MAX_HEAD_DIM:
        raise ValueError(f"head_dim {head_dim} is not supported; valid: 1 … {MAX_HEAD_DIM}")
    if k.shape[1] == 0 or heads % k.shape[1]:
        raise ValueError(f"kv_heads {k.shape[1]} must divide heads {heads}")
    if seq_q == 0 or k.shape[2] == 0:
        raise ValueError("attn_prefill needs seq_q ≥ 1 and seq_kv ≥ 1")
    if not 1 <= batch * heads <= 65535:
        raise ValueError(f"batch·heads {batch * heads} must be in [1, 65535] (the grid's second dimension)")
    if q.dtype not in (torch.float16, torch.bfloat16) or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"q, k, v must share one dtype, float16 or bfloat16; got {q.dtype}, {k.dtype}, {v.dtype}")
    if out.shape != q.shape or out.dtype != q.dtype:
        raise ValueError(f"out must be {tuple(q.shape)} {q.dtype}; got {tuple(out.shape)} {out.dtype}")
    if len({t.device for t in (q, k, v, out)}) != 1:
        raise ValueError("q, k, v and out must be on one device")
    if any(t.stride(3) != 1 for t in (q, k, v, out)):
        raise ValueError("q, k, v and out need a contiguous last (head_dim) dimension")


def attn_prefill(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    sm_scale: float | None = None,
    out: torch.Tensor | None = None,
    config: triton.Config | None = None,
) -> torch.Tensor:
    """Flash attention forward, causal masks bottom-right; ``config`` pins one tile config (tests use it)."""
    out = torch.empty_like(q) if out is None else out
    _check_prefill(q, k, v, out)
    batch, heads, seq_q, head_dim = q.shape
    scale = (1.0 / math.sqrt(head_dim) if sm_scale is None else sm_scale) * LOG2E
    args = (q, k, v, out, scale, seq_q, k.shape[2], heads, heads // k.shape[1], batch * heads,
            *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out.stride()[:3])
    dims = {"HEAD_DIM": head_dim, "BLOCK_D": block_d(head_dim), "CAUSAL": causal}
    if config is None:
        grid = lambda meta: (triton.cdiv(seq_q, meta["BLOCK_M"]), batch * heads)
        _attn_prefill_tuned[grid](*args, **dims)
    else:
        grid = (triton.cdiv(seq_q, config.kwargs["BLOCK_M"]), batch * heads)
        _attn_prefill_kernel[grid](*args, **dims, **config.kwargs, num_warps=config.num_warps,
                                   num_stages=config.num_stages)
    return out


def prefill_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    return attention_reference(q, k, v, causal=causal, align=CausalAlign.BOTTOM_RIGHT)


# ---------------------------------------------------------------------------------------------
# Spec
# ---------------------------------------------------------------------------------------------


def _candidates(case: Case, limits: Limits) -> tuple[TuneSpace, ...]:
    q_shape, kv_shape = _shapes(case)
    dtype = case.dtype.torch
    q, k, v = meta(q_shape, dtype), meta(kv_shape, dtype), meta(kv_shape, dtype)
    return launch_spaces(lambda: attn_prefill(q, k, v, causal=case["causal"]), {"prefill": _attn_prefill_tuned},
                         limits)


def _shapes(case: Case) -> tuple[tuple[int, ...], tuple[int, ...]]:
    q = (case["batch"], case["heads"], case["seq_q"], case["head_dim"])
    kv = (case["batch"], case["kv_heads"], case["seq_kv"], case["head_dim"])
    return q, kv


def _inputs(case: Case, device: torch.device, gen: torch.Generator) -> Inputs:
    q_shape, kv_shape = _shapes(case)
    dtype = case.dtype.torch
    return {
        "q": scaled_randn(q_shape, dtype=dtype, device=device, generator=gen),
        "k": scaled_randn(kv_shape, dtype=dtype, device=device, generator=gen),
        "v": scaled_randn(kv_shape, dtype=dtype, device=device, generator=gen),
        "out": poisoned(q_shape, dtype=dtype, device=device),
    }


def _build_triton(inputs: Inputs, case: Case) -> Launch:
    q, k, v, out = inputs["q"], inputs["k"], inputs["v"], inputs["out"]
    causal = case["causal"]
    return Launch(run=lambda: attn_prefill(q, k, v, causal=causal, out=out),
                  config=lambda: describe(_attn_prefill_tuned.best_config))


def _no_key_rows(case: Case) -> int:
    """Leading queries that see no key (causal with seq_q > seq_kv)."""
    return max(0, case["seq_q"] - case["seq_kv"]) if case["causal"] else 0


def _build_torch(inputs: Inputs, case: Case) -> Launch:
    """SDPA with native GQA (enable_gqa, torch ≥ 2.5; older torch: K/V repeated here, untimed).

    Causal masks are bottom-right as the kernel's: ``is_causal`` when seq_q = seq_kv (the same mask),
    else torch's own ``causal_lower_right`` bias (FlashAttention's lower-right kernel on the GPU,
    no materialised mask). With seq_q > seq_kv only the last seq_kv queries see keys: SDPA runs on
    those (where bottom-right and top-left agree) and the rest of the output is zero-padded, timed.
    """
    import torch.nn.functional as F
    from torch.nn.attention.bias import causal_lower_right

    q, k, v, causal = inputs["q"], inputs["k"], inputs["v"], case["causal"]
    empty = _no_key_rows(case)
    q_used = q[:, :, empty:]
    mask, is_causal, how = None, causal, "is_causal" if causal else "full"
    if causal and q_used.shape[2] != k.shape[2]:
        mask, is_causal, how = causal_lower_right(q_used.shape[2], k.shape[2]), False, "causal_lower_right"
    gqa = k.shape[1] != q.shape[1]
    try:  # the probe runs the mask too: torch's bias objects took enable_gqa later than SDPA did
        F.scaled_dot_product_attention(q_used[:1, :1], k[:1, :1], v[:1, :1], attn_mask=mask, is_causal=is_causal,
                                       enable_gqa=True)
        sdpa = lambda: F.scaled_dot_product_attention(q_used, k, v, attn_mask=mask, is_causal=is_causal,
                                                      enable_gqa=gqa)
        how += " enable_gqa" if gqa else ""
    except TypeError:
        group = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        sdpa = lambda: F.scaled_dot_product_attention(q_used, k, v, attn_mask=mask, is_causal=is_causal)
        how += " repeated kv" if gqa else ""
    call = (lambda: F.pad(sdpa(), (0, 0, empty, 0))) if empty else sdpa
    run, backend = pick_sdpa_backend(call)
    return Launch(run=run, config=lambda: f"sdpa {backend} {how}" + (f" zero-padded {empty} rows" if empty else ""))


def _pairs(case: Case) -> int:
    """Visible (query, key) pairs per head: the exact bottom-right triangle when causal."""
    if case["causal"]:
        return causal_pairs(case["seq_q"], case["seq_kv"])
    return case["seq_q"] * case["seq_kv"]


def _flops(case: Case) -> int:
    """4·d per visible (query, key) pair and head: 2·d for q·k, 2·d for p·v."""
    return 4 * case["batch"] * case["heads"] * case["head_dim"] * _pairs(case)


def _bytes(case: Case) -> int:
    """Q and O once per query head, K and V once per kv head (GQA groups share them), real head_dim."""
    tokens = 2 * case["heads"] * case["seq_q"] + 2 * case["kv_heads"] * case["seq_kv"]
    return tokens * case["batch"] * case["head_dim"] * case.dtype.itemsize


def _torch_bytes(case: Case) -> int:
    """What SDPA's FLASH backend (Hopper, fp16/bf16, head_dim ≤ 256) moves beyond :func:`_bytes`:

    * head_dim not a multiple of 8: torch pads q, k, v to d8 = ⌈d/8⌉·8 (reads them, writes padded
      copies) before the kernel, which then reads the copies and writes a d8-wide output;
    * causal with seq_q > seq_kv: the zero-padding copy reads the seq_kv computed rows of O and
      writes all seq_q.
    """
    batch, d, item = case["batch"], case["head_dim"], case.dtype.itemsize
    seq_q = case["seq_q"] - _no_key_rows(case)  # the rows SDPA computes
    q_rows, kv_rows = case["heads"] * seq_q * batch, 2 * case["kv_heads"] * case["seq_kv"] * batch  # Q (or O); K + V
    d8 = -(-d // 8) * 8
    if d8 == d:
        traffic = (2 * q_rows + kv_rows) * d  # the kernel reads Q, K, V and writes O
    else:
        traffic = (q_rows + kv_rows) * (d + 2 * d8) + q_rows * d8  # pad copies, the kernel on them, a d8-wide O
    if _no_key_rows(case):
        traffic += (q_rows + case["heads"] * case["seq_q"] * batch) * d
    return traffic * item


def _skip(case: Case, caps: DeviceCaps) -> str | None:
    if case["heads"] % case["kv_heads"]:
        return f"kv_heads {case['kv_heads']} does not divide heads {case['heads']}"
    return None


ATTN_PREFILL = KernelSpec(
    name="attn_prefill",
    summary="flash attention forward (prefill, chunked prefill): bottom-right causal or not, GQA, any head_dim ≤ 256",
    axes=(
        Axis("batch", int, 1, "sequences", minimum=1),
        Axis("heads", int, 32, "query heads", minimum=1),
        Axis("kv_heads", int, 32, "key/value heads (divides heads; < heads is GQA, 1 is MQA)", minimum=1),
        Axis("seq_q", int, 4096, "query tokens per sequence (the last seq_q of the sequence)", minimum=1),
        Axis("seq_kv", int, 4096, "key/value tokens per sequence (> seq_q: chunked prefill over a cached prefix)",
             minimum=1),
        Axis("head_dim", int, 128, f"channels per head, any 1 … {MAX_HEAD_DIM} (tile padded to the next power of two "
             "≥ 16, padded channels masked)", minimum=1, maximum=MAX_HEAD_DIM),
        Axis("causal", bool, True, "causal mask aligned bottom-right (FlashAttention ≥ 2.1)"),
    ),
    dtypes=(DType.FP16, DType.BF16),
    impls=(
        Impl("triton", _build_triton, "Triton FA2 forward, unmasked off-diagonal loop + masked diagonal",
             skip=interpreter_bf16_skip, candidates=_candidates),
        Impl("torch", _build_torch, "torch SDPA (FLASH, else EFFICIENT, else MATH backend), bottom-right causal",
             bytes=_torch_bytes),
    ),
    make_inputs=_inputs,
    reference=lambda inputs, case: prefill_reference(inputs["q"], inputs["k"], inputs["v"], case["causal"]),
    flops=_flops,
    bytes=_bytes,
    # Inputs are the same rounded values in both; the kernel rounds P to fp16/bf16 before P·V and O
    # once on store, ~2^-11 / 2^-8 relative each and not growing with seq (softmax weights are
    # normalised). Measured ~2.5e-4 for fp16 under the interpreter; bf16 is 8× coarser. 4× headroom.
    tolerance={DType.FP16: 1e-3, DType.BF16: 8e-3},
    footprint=_bytes,
    skip=_skip,
    tags=("compute", "attention"),
)
