"""MLA decode (``attn_mla``): DeepSeek-V3/R1 multi-head latent attention over a paged latent cache.

With W_UK absorbed into the queries, every query head attends over the same cache: one row of
kv_lora_rank + rope_dim = 512 + 64 values per token, shared by all 128 heads. Scores use all 576
values, the output is the attention-weighted sum of the first 512 (the latent part), so one cache
tile serves as K and V of every head at once:

* q: [batch, heads, q_len, D_V + D_ROPE]; out: [batch, heads, q_len, D_V];
* cache: [num_blocks, page_size, D_V + D_ROPE] with block_table [batch, max_blocks_per_seq] int32
  (FlashMLA's layout without its singleton head dim); kv_lens as in ``attn_decode``.

Query t of sequence b sees positions < kv_lens[b] − q_len + 1 + t (multi-token prediction, q_len ≤ 16).

Design for Hopper bandwidth (FlashMLA ≈ 3,000 GB/s on H800): the (head, token) rows are the rows of
the tile, BLOCK_H = 64 of them per program (FlashMLA's block), so the cache is read once per 64 heads —
the two programs of one sequence's 128 heads run side by side and share each tile through L2. Each
step loads a [BLOCK_N, 512 + 64] tile once and uses it for q·cᵀ (two dots: 512 latent + 64 rope) and
p·c (the 512). Split-KV and the merge are ``attn_decode``'s, so short batches still fill the SMs.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from kernels.attn_decode import _sm_count, check_lengths, check_paged, gather_sequence
from kernels.attn_split import DecodeWorkspace, merge_splits, plan_splits
from kernels.attn_ref import CausalAlign, attention_reference
from kernels.attn_tiles import LOG2E
from kernels.targets import is_blackwell
from kernels.tuning import Limits, Vendor, autotune, device_limits

MAX_Q_LEN = 16  # multi-token prediction; attn_decode's query chunks (≤ 256) are not wired into the latent kernel
MAX_BLOCK_H = 64  # (head, token) rows per program: FlashMLA's block; 128 would need 256 fp32 acc registers/thread


def mla_configs() -> list[triton.Config]:
    """BLOCK_N (positions per tile) × stages, 8 warps (4 spill at every tile compiled for sm_90a);
    the first one is what the interpreter runs."""
    return [
        triton.Config({"BLOCK_N": block_n}, num_warps=8, num_stages=stages)
        for block_n in (32, 64)
        for stages in (2, 3)
    ]


def mla_candidates(width: int, itemsize: int, block_h: int, limits: Limits) -> tuple[triton.Config, ...]:
    """Cache stages and the q tile within shared memory; 64-wide position tiles only for row blocks
    under 64 (64 rows hold a [64, 512] fp32 accumulator and the q tile: with 64 positions of scores
    sm_90a builds spill, with 32 they take ≈ 230 registers and do not). ``width``: a cache row's
    channels (576); ``itemsize``: the cache's."""
    configs = mla_configs()

    def keep(c: triton.Config) -> bool:
        smem = (c.num_stages * c.kwargs["BLOCK_N"] + block_h) * width * itemsize
        return smem <= limits.smem_per_block and (c.kwargs["BLOCK_N"] == 32 or block_h < MAX_BLOCK_H)

    smallest = min(configs, key=lambda c: (c.kwargs["BLOCK_N"], c.num_stages, c.num_warps))
    return tuple(c for c in configs if keep(c)) or (smallest,)


def prune_mla_configs(configs, named_args, **kwargs):
    """The autotuner's pruner: an adapter over :func:`mla_candidates` on the cache's device."""
    args = {**named_args, **kwargs}
    kv = args["kv_ptr"]
    return list(mla_candidates(args["D_V"] + args["D_ROPE"], kv.element_size(), args["BLOCK_H"],
                               device_limits(kv.device)))


@triton.jit
def _attn_mla_kernel(
    q_ptr, kv_ptr, lens_ptr, table_ptr,  # in: q, latent cache pages, kv_lens [batch], block table
    o_ptr, part_m_ptr, part_l_ptr, part_acc_ptr,  # out: o (one pass) or partials (split)
    qk_scale,  # sm_scale · log2(e)
    chunk, num_splits, heads,
    batch,  # autotune key only
    stride_qb, stride_qh, stride_qt,
    stride_ob, stride_oh, stride_ot,
    stride_cp, stride_cs,  # cache: page, slot (channels contiguous)
    stride_tb,
    Q_LEN: tl.constexpr,
    D_V: tl.constexpr,  # latent channels: the output width and the first D_V channels of a cache row
    D_ROPE: tl.constexpr,  # rope channels after them (scores only)
    PAGE_SIZE: tl.constexpr,
    SPLIT: tl.constexpr,
    BLOCK_H: tl.constexpr,  # (head, token) rows per program
    BLOCK_N: tl.constexpr,
):
    """Grid (batch, ⌈heads·Q_LEN / BLOCK_H⌉, num_splits). Row r = head·Q_LEN + t.

    s = q[:, :D_V]·c[:, :D_V]ᵀ + q[:, D_V:]·c[:, D_V:]ᵀ; o = softmax(s·sm_scale)·c[:, :D_V]; the online
    softmax and the split partials are attn_decode's (m starts at −1e30: an empty split weighs 0).
    """
    b = tl.program_id(0).to(tl.int64)
    rows = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    split = tl.program_id(2)
    row_ok = rows < heads * Q_LEN
    head = (rows // Q_LEN).to(tl.int64)
    t = rows % Q_LEN
    offs_v = tl.arange(0, D_V)
    offs_r = tl.arange(0, D_ROPE)
    offs_n = tl.arange(0, BLOCK_N)
    q_rows = q_ptr + b * stride_qb + head[:, None] * stride_qh + t[:, None] * stride_qt
    q_nope = tl.load(q_rows + offs_v[None, :], mask=row_ok[:, None], other=0.0)
    q_rope = tl.load(q_rows + D_V + offs_r[None, :], mask=row_ok[:, None], other=0.0)

    seq_len = tl.load(lens_ptr + b)
    start = split * chunk
    end = tl.minimum(start + chunk, seq_len)
    row_end = tl.minimum(seq_len - Q_LEN + 1 + t, end)  # exclusive, per row
    acc = tl.zeros([BLOCK_H, D_V], dtype=tl.float32)
    l_i = tl.zeros([BLOCK_H], dtype=tl.float32)
    m_i = tl.full([BLOCK_H], -1.0e30, dtype=tl.float32)
    for start_n in range(start, end, BLOCK_N):
        pos = start_n + offs_n
        in_range = pos < end
        page = tl.load(table_ptr + b * stride_tb + pos // PAGE_SIZE, mask=in_range, other=0)
        c_rows = kv_ptr + page.to(tl.int64)[:, None] * stride_cp + (pos % PAGE_SIZE)[:, None] * stride_cs
        c_nope = tl.load(c_rows + offs_v[None, :], mask=in_range[:, None], other=0.0)  # [BLOCK_N, D_V]: K and V
        c_rope = tl.load(c_rows + D_V + offs_r[None, :], mask=in_range[:, None], other=0.0)
        qk = tl.dot(q_nope, tl.trans(c_nope))
        qk = tl.dot(q_rope, tl.trans(c_rope), acc=qk) * qk_scale
        qk = tl.where(pos[None, :] < row_end[:, None], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        p = tl.exp2(qk - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(c_nope.dtype), c_nope)
        m_i = m_new

    if SPLIT:
        part = ((b * heads + head) * Q_LEN + t) * num_splits + split  # [batch, heads, q_len, splits]
        written = row_ok & (start + 0 * rows < seq_len)
        tl.store(part_m_ptr + part, m_i, mask=written)
        tl.store(part_l_ptr + part, l_i, mask=written)
        tl.store(part_acc_ptr + part[:, None] * D_V + offs_v[None, :], acc, mask=written[:, None])
    else:
        out = acc / l_i[:, None]
        o_ptrs = o_ptr + b * stride_ob + head[:, None] * stride_oh + t[:, None] * stride_ot + offs_v[None, :]
        tl.store(o_ptrs, out.to(o_ptr.dtype.element_ty), mask=row_ok[:, None])


_attn_mla_tuned = autotune(mla_configs(), key=["batch", "chunk", "heads", "Q_LEN", "D_V", "D_ROPE", "PAGE_SIZE",
                                               "SPLIT", "BLOCK_H"],
                           prune=prune_mla_configs)(_attn_mla_kernel)


# ---------------------------------------------------------------------------------------------
# Launcher
# ---------------------------------------------------------------------------------------------


def block_h(heads: int, q_len: int, limits: Limits | None = None) -> int:
    """Rows per program: all (head, token) rows up to 64, at least 16 (tl.dot); with ``limits`` given,
    up to 32 on Blackwell and 16 on AMD CDNA (under Triton 3.6, 64 rows spilled 40–48 B on sm_100a, also
    with 16-position tiles; on gfx942 64 rows took 372 B of scratch and 32 rows 32 B)."""
    most = MAX_BLOCK_H
    if limits is not None and limits.vendor is Vendor.AMD:
        most = 16
    elif limits is not None and is_blackwell(limits):
        most = 32
    return min(most, max(16, triton.next_power_of_2(heads * q_len)))


def _power_of_two(n: int) -> bool:
    return n >= 16 and n & (n - 1) == 0


def _check_mla(q, kv_cache, kv_lens, block_table, out, v_dim: int) -> int:
    """Shape/dtype/device checks; returns the capacity in positions per sequence."""
    if q.dim() != 4 or kv_cache.dim() != 3:
        raise ValueError(f"attn_mla takes q [batch, heads, q_len, d] and a cache [num_blocks, page_size, d]; got q "
                         f"{tuple(q.shape)}, cache {tuple(kv_cache.shape)}")
    batch, heads, q_len, width = q.shape
    if kv_cache.shape[2] != width or not (_power_of_two(v_dim) and _power_of_two(width - v_dim)):
        raise ValueError(f"q and cache rows must be v_dim + rope_dim wide, both powers of two ≥ 16; got q {width}, "
                         f"cache {kv_cache.shape[2]}, v_dim {v_dim}")
    if not 1 <= batch <= 65535 or not 1 <= q_len <= MAX_Q_LEN or heads < 1:
        raise ValueError(f"batch {batch} must be in [1, 65535], q_len {q_len} in [1, {MAX_Q_LEN}], heads ≥ 1")
    if q.dtype not in (torch.float16, torch.bfloat16) or kv_cache.dtype != q.dtype:
        raise ValueError(f"q and the cache must share one dtype, float16 or bfloat16; got {q.dtype}, {kv_cache.dtype}")
    if out.shape != (batch, heads, q_len, v_dim) or out.dtype != q.dtype:
        raise ValueError(f"out must be {(batch, heads, q_len, v_dim)} {q.dtype}; got {tuple(out.shape)} {out.dtype}")
    if block_table is None:
        raise ValueError("attn_mla needs a block_table (the latent cache is paged)")
    check_paged(kv_lens, block_table, batch)
    if len({t.device for t in (q, kv_cache, kv_lens, block_table, out)}) != 1:
        raise ValueError("q, cache, kv_lens, block_table and out must be on one device")
    if any(t.stride(-1) != 1 for t in (q, kv_cache, out)):
        raise ValueError("q, cache and out need contiguous channels")
    return block_table.shape[1] * kv_cache.shape[1]


def attn_mla(
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    kv_lens: torch.Tensor,
    block_table: torch.Tensor,
    *,
    v_dim: int = 512,
    sm_scale: float | None = None,
    num_splits: int | None = None,
    out: torch.Tensor | None = None,
    workspace: DecodeWorkspace | None = None,
    check_values: bool = True,
) -> torch.Tensor:
    """MLA decode over a paged latent cache; ``sm_scale`` defaults to 1/√(q's width). Other arguments
    as :func:`kernels.attn_decode.attn_decode`'s."""
    batch, heads, q_len, width = q.shape
    if out is None:
        out = torch.empty((batch, heads, q_len, v_dim), dtype=q.dtype, device=q.device)
    capacity = _check_mla(q, kv_cache, kv_lens, block_table, out, v_dim)
    page_size = kv_cache.shape[1]
    if check_values:
        check_lengths(kv_lens, block_table, q_len, capacity, kv_cache.shape[0], page_size)
    rows_per_program = block_h(heads, q_len, device_limits(q.device))
    row_blocks = triton.cdiv(heads * q_len, rows_per_program)
    plan = plan_splits(batch * row_blocks, capacity, _sm_count(q.device), num_splits)
    split = plan.num_splits > 1
    rows = batch * heads * q_len
    if split and workspace is None:
        workspace = DecodeWorkspace.allocate(rows, plan.num_splits, v_dim, q.device)
    if split:
        workspace.check(rows, plan.num_splits, v_dim)
    parts = workspace.tensors if split else (out, out, out)  # unused when not split
    scale = (1.0 / math.sqrt(width) if sm_scale is None else sm_scale) * LOG2E
    _attn_mla_tuned[(batch, row_blocks, plan.num_splits)](
        q, kv_cache, kv_lens, block_table, out, *parts,
        scale, plan.chunk, plan.num_splits, heads, batch,
        *q.stride()[:3], *out.stride()[:3], kv_cache.stride(0), kv_cache.stride(1), block_table.stride(0),
        Q_LEN=q_len, D_V=v_dim, D_ROPE=width - v_dim, PAGE_SIZE=page_size, SPLIT=split, BLOCK_H=rows_per_program,
    )
    if split:
        merge_splits(workspace, kv_lens, out, plan)
    return out


def mla_reference(q, kv_cache, kv_lens, block_table, v_dim: int = 512, sm_scale: float | None = None) -> torch.Tensor:
    """Float32 MLA decode: :func:`attention_reference`'s latent form (one kv head, k = c, v = c[..., :v_dim]),
    bottom-right causal over each sequence's gathered pages."""
    parts = []
    for b, length in enumerate(kv_lens.tolist()):
        latent = gather_sequence(kv_cache, block_table, b, length)[None, None]  # [1, 1, length, d]
        parts.append(attention_reference(q[b:b + 1], latent, latent[..., :v_dim], causal=True, sm_scale=sm_scale,
                                         align=CausalAlign.BOTTOM_RIGHT))
    return torch.cat(parts)
