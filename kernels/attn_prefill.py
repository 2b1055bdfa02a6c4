"""Forward flash attention for prefill (``attn_prefill``): compute-bound, O(seq²) FLOPs, O(seq) bytes.

FlashAttention-2 schedule as in Triton tutorial 06: one program per BLOCK_M query rows of one head
streams K/V in BLOCK_N tiles with an online softmax kept in base 2 (the log2(e)·sm_scale factor is
folded into one multiply so exp becomes exp2) and fp32 accumulators. Causal programs split the
key loop in two: the blocks wholly left of the diagonal run without a mask, only the blocks the
diagonal crosses (and the ragged tail of seq_kv) pay for one, and nothing right of the diagonal is
visited, so causal does about half the work.

Layout [batch, heads, seq, head_dim] for q, o and [batch, kv_heads, seq_kv, head_dim] for k, v;
GQA/MQA maps query head h to kv head h // (heads // kv_heads). Causal masks are top-left aligned
(query i sees keys j ≤ i, SDPA's ``is_causal``), which for the spec's seq_q = seq_kv is the usual
causal mask; the launcher also takes seq_q ≠ seq_kv with the same alignment.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from kernels.attn_ref import attention_reference, pick_sdpa_backend
from kernels.spec import Axis, Case, DeviceCaps, DType, Impl, Inputs, KernelSpec, Launch, poisoned, scaled_randn
from kernels.tuning import HOPPER_SMEM_BYTES, autotune, describe

HEAD_DIMS = (16, 32, 64, 128, 256)  # tl.dot needs ≥ 16; 256 runs with the smaller tiles the pruner keeps
LOG2E = 1.4426950408889634
MAX_LIVE_PER_THREAD = 160  # fp32 acc + score values per thread; sm_90 builds above this spill registers


def prefill_configs() -> list[triton.Config]:
    """BLOCK_M × BLOCK_N × warps × stages, Hopper-sensible; the first one is what the interpreter runs."""
    return [
        triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n}, num_warps=warps, num_stages=stages)
        for block_m in (128, 64)
        for block_n in (64, 128)
        for warps in (4, 8)
        for stages in (2, 3, 4)
    ]


def prune_prefill_configs(configs, named_args, **kwargs):
    """Keep tiles the problem can fill, that fit in shared memory and whose live fp32 tiles fit in registers."""
    args = {**named_args, **kwargs}
    head_dim, itemsize = args["HEAD_DIM"], args["q_ptr"].element_size()
    max_m = max(64, triton.next_power_of_2(args["seq_q"]))
    max_n = max(64, triton.next_power_of_2(args["seq_kv"]))

    def keep(c: triton.Config) -> bool:
        block_m, block_n = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]
        # Q once, K and V per stage: matches what Triton 3.9 allocates
        smem = (block_m + 2 * c.num_stages * block_n) * head_dim * itemsize
        live = block_m * (head_dim + block_n) // (32 * c.num_warps)  # acc [M, D] + scores [M, N]
        return (block_m <= max_m and block_n <= max_n and smem <= HOPPER_SMEM_BYTES and live <= MAX_LIVE_PER_THREAD
                and not (block_m == 64 and c.num_warps == 8))  # trims the search: 4 warps suit 64 rows

    smallest = min(configs, key=lambda c: (c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"], c.num_stages, c.num_warps))
    return [c for c in configs if keep(c)] or [smallest]


@triton.jit
def _prefill_inner(
    acc, l_i, m_i, q,  # running state [BLOCK_M, HEAD_DIM], [BLOCK_M], [BLOCK_M]; q tile
    k_base, v_base,  # this (batch, kv head)'s K and V
    offs_m, offs_d,
    lo, hi,  # key range [lo, hi) this loop visits
    seq_kv, stride_kn, stride_vn, qk_scale,
    BLOCK_N: tl.constexpr,
    MASKED: tl.constexpr,  # False: every key in [lo, hi) is visible to every row
    CAUSAL: tl.constexpr,
):
    """One key range of the online softmax; scores are in log2 units (qk_scale = sm_scale·log2 e)."""
    offs_n = tl.arange(0, BLOCK_N)
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        k_ptrs = k_base + cols[None, :] * stride_kn + offs_d[:, None]  # [HEAD_DIM, BLOCK_N]
        v_ptrs = v_base + cols[:, None] * stride_vn + offs_d[None, :]  # [BLOCK_N, HEAD_DIM]
        if MASKED:
            k = tl.load(k_ptrs, mask=cols[None, :] < seq_kv, other=0.0)
            visible = cols[None, :] < seq_kv
            if CAUSAL:
                visible = visible & (cols[None, :] <= offs_m[:, None])
            qk = tl.where(visible, tl.dot(q, k) * qk_scale, float("-inf"))
        else:
            k = tl.load(k_ptrs)
            qk = tl.dot(q, k) * qk_scale
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        p = tl.exp2(qk - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        if MASKED:
            v = tl.load(v_ptrs, mask=cols[:, None] < seq_kv, other=0.0)
        else:
            v = tl.load(v_ptrs)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _attn_prefill_kernel(
    q_ptr, k_ptr, v_ptr,  # in:  q [batch, heads, seq_q, D], k/v [batch, kv_heads, seq_kv, D]
    o_ptr,  # out: [batch, heads, seq_q, D]
    qk_scale,  # sm_scale · log2(e)
    seq_q, seq_kv, heads, group,  # group = heads // kv_heads
    stride_qb, stride_qh, stride_qm,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_ob, stride_oh, stride_om,
    HEAD_DIM: tl.constexpr,
    CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """o[b, h, i] = Σ_j softmax_j(q[b,h,i]·k[b,h/g,j]·sm_scale) v[b,h/g,j], j ≤ i when causal (top-left).

    Grid (cdiv(seq_q, BLOCK_M), batch·heads); the last query block (most causal work) starts first.
    Rows are visible to key 0 in every mode, so the running max is finite after the first tile; the
    start value −1e30 (not −inf) keeps exp2(m_old − m_new) free of inf − inf.
    """
    start_m = tl.num_programs(0) - 1 - tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // heads).to(tl.int64)
    h = (bh % heads).to(tl.int64)
    kv_h = h // group
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    q_base = q_ptr + b * stride_qb + h * stride_qh
    k_base = k_ptr + b * stride_kb + kv_h * stride_kh
    v_base = v_ptr + b * stride_vb + kv_h * stride_vh
    row_ok = offs_m[:, None] < seq_q
    q = tl.load(q_base + offs_m[:, None] * stride_qm + offs_d[None, :], mask=row_ok, other=0.0)

    if CAUSAL:
        hi = tl.minimum((start_m + 1) * BLOCK_M, seq_kv)
        unmasked_end = tl.minimum(start_m * BLOCK_M, seq_kv) // BLOCK_N * BLOCK_N
    else:
        hi = seq_kv
        unmasked_end = seq_kv // BLOCK_N * BLOCK_N
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], -1.0e30, dtype=tl.float32)
    acc, l_i, m_i = _prefill_inner(acc, l_i, m_i, q, k_base, v_base, offs_m, offs_d, 0, unmasked_end,
                                   seq_kv, stride_kn, stride_vn, qk_scale, BLOCK_N, False, CAUSAL)
    acc, l_i, m_i = _prefill_inner(acc, l_i, m_i, q, k_base, v_base, offs_m, offs_d, unmasked_end, hi,
                                   seq_kv, stride_kn, stride_vn, qk_scale, BLOCK_N, True, CAUSAL)
    acc = acc / l_i[:, None]
    o_base = o_ptr + b * stride_ob + h * stride_oh
    tl.store(o_base + offs_m[:, None] * stride_om + offs_d[None, :], acc.to(o_ptr.dtype.element_ty), mask=row_ok)


_attn_prefill_tuned = autotune(prefill_configs(), key=["seq_q", "seq_kv", "HEAD_DIM", "CAUSAL"],
                               prune=prune_prefill_configs)(_attn_prefill_kernel)


def _check_prefill(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor) -> None:
    if q.dim() != 4 or k.dim() != 4:
        raise ValueError(f"attn_prefill takes q [batch, heads, seq_q, head_dim] and k, v [batch, kv_heads, "
                         f"seq_kv, head_dim]; got q {tuple(q.shape)}, k {tuple(k.shape)}")
    batch, heads, seq_q, head_dim = q.shape
    if k.shape != v.shape or k.shape[0] != batch or k.shape[3] != head_dim:
        raise ValueError(f"k {tuple(k.shape)} and v {tuple(v.shape)} must both be [{batch}, kv_heads, seq_kv, "
                         f"{head_dim}] for q {tuple(q.shape)}")
    if head_dim not in HEAD_DIMS:
        raise ValueError(f"head_dim {head_dim} is not supported; valid: {', '.join(map(str, HEAD_DIMS))}")
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
    """Flash attention forward; ``config`` pins one tile config instead of autotuning (tests use it)."""
    out = torch.empty_like(q) if out is None else out
    _check_prefill(q, k, v, out)
    batch, heads, seq_q, head_dim = q.shape
    scale = (1.0 / math.sqrt(head_dim) if sm_scale is None else sm_scale) * LOG2E
    args = (q, k, v, out, scale, seq_q, k.shape[2], heads, heads // k.shape[1],
            *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out.stride()[:3])
    if config is None:
        grid = lambda meta: (triton.cdiv(seq_q, meta["BLOCK_M"]), batch * heads)
        _attn_prefill_tuned[grid](*args, HEAD_DIM=head_dim, CAUSAL=causal)
    else:
        grid = (triton.cdiv(seq_q, config.kwargs["BLOCK_M"]), batch * heads)
        _attn_prefill_kernel[grid](*args, HEAD_DIM=head_dim, CAUSAL=causal, **config.kwargs,
                                   num_warps=config.num_warps, num_stages=config.num_stages)
    return out


def prefill_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    return attention_reference(q, k, v, causal=causal)


# ---------------------------------------------------------------------------------------------
# Spec
# ---------------------------------------------------------------------------------------------


def _shapes(case: Case) -> tuple[tuple[int, ...], tuple[int, ...]]:
    q = (case["batch"], case["heads"], case["seq"], case["head_dim"])
    kv = (case["batch"], case["kv_heads"], case["seq"], case["head_dim"])
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


def _build_torch(inputs: Inputs, case: Case) -> Launch:
    """SDPA with native GQA (enable_gqa, torch ≥ 2.5) or, on older torch, K/V repeated here, untimed."""
    import torch.nn.functional as F

    q, k, v, causal = inputs["q"], inputs["k"], inputs["v"], case["causal"]
    gqa = k.shape[1] != q.shape[1]
    try:
        F.scaled_dot_product_attention(q[:1, :1, :1], k[:1, :1, :1], v[:1, :1, :1], enable_gqa=True)
        call = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)
        how = "enable_gqa" if gqa else "mha"
    except TypeError:
        group = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        call = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        how = "repeated kv" if gqa else "mha"
    run, backend = pick_sdpa_backend(call)
    return Launch(run=run, config=lambda: f"sdpa {backend} {how}")


def _flops(case: Case) -> int:
    """4·b·h·d per visible (query, key) pair; causal counts the exact triangle seq·(seq+1)/2."""
    seq = case["seq"]
    pairs = seq * (seq + 1) // 2 if case["causal"] else seq * seq
    return 4 * case["batch"] * case["heads"] * case["head_dim"] * pairs


def _bytes(case: Case) -> int:
    """Q and O once, K and V once per kv head (GQA groups share them)."""
    return (2 * case["heads"] + 2 * case["kv_heads"]) * case["batch"] * case["seq"] * case["head_dim"] * (
        case.dtype.itemsize)


def _skip(case: Case, caps: DeviceCaps) -> str | None:
    if case["heads"] % case["kv_heads"]:
        return f"kv_heads {case['kv_heads']} does not divide heads {case['heads']}"
    return None


ATTN_PREFILL = KernelSpec(
    name="attn_prefill",
    summary="flash attention forward (prefill): causal or not, GQA, fp32 online softmax in exp2",
    axes=(
        Axis("batch", int, 1, "sequences", minimum=1),
        Axis("heads", int, 32, "query heads", minimum=1),
        Axis("kv_heads", int, 32, "key/value heads (divides heads; < heads is GQA, 1 is MQA)", minimum=1),
        Axis("seq", int, 4096, "tokens per sequence (seq_q = seq_kv)", minimum=1),
        Axis("head_dim", int, 128, "channels per head", choices=HEAD_DIMS),
        Axis("causal", bool, True, "top-left causal mask"),
    ),
    dtypes=(DType.FP16, DType.BF16),
    impls=(
        Impl("triton", _build_triton, "Triton FA2 forward, unmasked off-diagonal loop + masked diagonal"),
        Impl("torch", _build_torch, "torch SDPA (FLASH, else EFFICIENT, else MATH backend)"),
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
