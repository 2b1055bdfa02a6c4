"""KV-cache decode attention (``attn_decode``): q_len ≤ 8 new tokens per sequence against a ragged
cache, bandwidth-bound (every valid K/V byte is read once per step, the FLOPs are negligible).

Layouts (``kv_lens[b]`` counts sequence b's tokens in the cache, its q_len new ones included):

* q, out: [batch, heads, q_len, head_dim].
* contiguous cache: k, v [batch, kv_heads, max_seq, head_dim].
* paged cache, vLLM's FlashAttention-backend ("NHD") layout: k, v [num_blocks, page_size, kv_heads,
  head_dim] and block_table [batch, max_blocks_per_seq] int32; token p of sequence b lives in page
  block_table[b, p // page_size], slot p % page_size. Entries past a sequence's last page are never read.

Query t (0-based) of sequence b sees cache positions < kv_lens[b] − q_len + 1 + t: the new tokens
are the last q_len of the sequence, causal among themselves (speculative decoding).

One program handles one (sequence, kv head, split): the GROUP query heads sharing that kv head and
their q_len tokens are the rows of one tile, so each K/V byte is loaded once for the whole group.
The rows are padded to ≥ 16 and fed to ``tl.dot``: decode is bandwidth-bound, so the padding only
spends idle tensor-core cycles, whereas broadcast-multiply + ``tl.sum`` would hold a
[rows, BLOCK_N, head_dim] fp32 product in registers and run on the CUDA cores.

Split-KV (flash-decoding): when batch·kv_heads programs cannot fill the GPU, each sequence's
positions are cut into ``num_splits`` chunks handled by separate programs that write partial
(max, sum, acc) rows to an fp32 workspace; a second kernel merges them. With one split the same
kernel normalises and writes ``out`` directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kernels.attn_ref import CausalAlign, attention_reference, pick_sdpa_backend
from kernels.spec import Axis, Case, DeviceCaps, DType, Impl, Inputs, KernelSpec, Launch, poisoned, scaled_randn
from kernels.tuning import HOPPER_SMEM_BYTES, autotune, describe, sm_count

HEAD_DIMS = (16, 32, 64, 128, 256)
MAX_Q_LEN = 16  # the launcher's limit; the spec's axis stops at 8
MIN_ROWS, MAX_ROWS = 16, 128  # tile rows = group·q_len padded: tl.dot needs 16, registers cap it
MAX_SPLITS = 64  # the merge kernel holds [splits, head_dim] fp32 in registers
MIN_CHUNK = 256  # positions per split worth a workspace round trip
CHUNK_ALIGN = 128  # heuristic chunks are whole tiles for every BLOCK_N
LOG2E = 1.4426950408889634
H100_SM_COUNT = 132
CACHES = ("contiguous", "paged")
PAGE_SIZES = (16, 64)


def decode_configs() -> list[triton.Config]:
    """BLOCK_N (positions per tile) × warps × stages; the first one is what the interpreter runs."""
    return [
        triton.Config({"BLOCK_N": block_n}, num_warps=warps, num_stages=stages)
        for block_n in (64, 128, 32)
        for warps in (4, 8)
        for stages in (2, 3, 4)
    ]


def prune_decode_configs(configs, named_args, **kwargs):
    """Tiles no longer than a split's chunk, K+V stages within shared memory, 8 warps only on wide tiles."""
    args = {**named_args, **kwargs}
    head_dim, itemsize = args["HEAD_DIM"], args["q_ptr"].element_size()
    max_n = max(32, triton.next_power_of_2(args["chunk"]))

    def keep(c: triton.Config) -> bool:
        block_n = c.kwargs["BLOCK_N"]
        smem = 2 * (c.num_stages - 1) * block_n * head_dim * itemsize  # K, V buffers as Triton 3.9 allocates them
        return block_n <= max_n and smem <= HOPPER_SMEM_BYTES and (c.num_warps == 4 or block_n >= 64)

    smallest = min(configs, key=lambda c: (c.kwargs["BLOCK_N"], c.num_stages, c.num_warps))
    return [c for c in configs if keep(c)] or [smallest]


@triton.jit
def _attn_decode_kernel(
    q_ptr, k_ptr, v_ptr, lens_ptr, table_ptr,  # in: q, caches, kv_lens [batch], block table (paged)
    o_ptr, part_m_ptr, part_l_ptr, part_acc_ptr,  # out: o (one pass) or partials (split)
    qk_scale,  # sm_scale · log2(e)
    chunk, num_splits, heads,
    batch,  # autotune key only: the best tile depends on how many programs share the GPU
    stride_qb, stride_qh, stride_qt,
    stride_ob, stride_oh, stride_ot,
    stride_c0, stride_c1, stride_ch,  # cache: contiguous (batch, position, head); paged (page, slot, head)
    stride_tb,
    GROUP: tl.constexpr,  # query heads per kv head
    Q_LEN: tl.constexpr,
    ROWS: tl.constexpr,  # GROUP·Q_LEN padded to a power of two ≥ 16
    HEAD_DIM: tl.constexpr,
    PAGE_SIZE: tl.constexpr,
    PAGED: tl.constexpr,
    SPLIT: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Grid (batch, kv_heads, num_splits). Row r = g·Q_LEN + t is query token t of head kv_head·GROUP + g.

    Split s covers positions [s·chunk, min((s+1)·chunk, len)); row r sees those < len − Q_LEN + 1 + t.
    m starts at −1e30 (not −inf) so a row with nothing visible in a split keeps l = 0 and acc = 0
    instead of NaN; the merge gives such a split weight exp2(−1e30 − m) = 0.
    """
    b = tl.program_id(0).to(tl.int64)
    kv_h = tl.program_id(1).to(tl.int64)
    split = tl.program_id(2)
    rows = tl.arange(0, ROWS)
    t = rows % Q_LEN
    head = kv_h * GROUP + rows // Q_LEN
    row_ok = rows < GROUP * Q_LEN
    offs_d = tl.arange(0, HEAD_DIM)
    offs_n = tl.arange(0, BLOCK_N)
    q = tl.load(q_ptr + b * stride_qb + head[:, None] * stride_qh + t[:, None] * stride_qt + offs_d[None, :],
                mask=row_ok[:, None], other=0.0)

    seq_len = tl.load(lens_ptr + b)
    start = split * chunk
    end = tl.minimum(start + chunk, seq_len)
    row_end = tl.minimum(seq_len - Q_LEN + 1 + t, end)  # exclusive, per row
    acc = tl.zeros([ROWS, HEAD_DIM], dtype=tl.float32)
    l_i = tl.zeros([ROWS], dtype=tl.float32)
    m_i = tl.full([ROWS], -1.0e30, dtype=tl.float32)
    for start_n in range(start, end, BLOCK_N):
        pos = start_n + offs_n
        in_range = pos < end
        if PAGED:
            page = tl.load(table_ptr + b * stride_tb + pos // PAGE_SIZE, mask=in_range, other=0)
            kv_row = page.to(tl.int64) * stride_c0 + (pos % PAGE_SIZE) * stride_c1
        else:
            kv_row = b * stride_c0 + pos * stride_c1
        kv_ptrs = kv_row[:, None] + kv_h * stride_ch + offs_d[None, :]  # [BLOCK_N, HEAD_DIM]
        k = tl.load(k_ptr + kv_ptrs, mask=in_range[:, None], other=0.0)
        qk = tl.dot(q, tl.trans(k)) * qk_scale
        qk = tl.where(pos[None, :] < row_end[:, None], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        p = tl.exp2(qk - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_ptr + kv_ptrs, mask=in_range[:, None], other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new

    if SPLIT:
        part = ((b * heads + head) * Q_LEN + t) * num_splits + split  # [batch, heads, q_len, splits]
        # the merge reads only splits starting inside the sequence (start broadcast by hand: the
        # interpreter rejects a mask made of a vector & a scalar comparison)
        written = row_ok & (start + 0 * rows < seq_len)
        tl.store(part_m_ptr + part, m_i, mask=written)
        tl.store(part_l_ptr + part, l_i, mask=written)
        tl.store(part_acc_ptr + part[:, None] * HEAD_DIM + offs_d[None, :], acc, mask=written[:, None])
    else:
        out = acc / l_i[:, None]
        o_ptrs = o_ptr + b * stride_ob + head[:, None] * stride_oh + t[:, None] * stride_ot + offs_d[None, :]
        tl.store(o_ptrs, out.to(o_ptr.dtype.element_ty), mask=row_ok[:, None])


_attn_decode_tuned = autotune(decode_configs(), key=["batch", "chunk", "GROUP", "Q_LEN", "HEAD_DIM", "PAGE_SIZE", "PAGED", "SPLIT"],
                              prune=prune_decode_configs)(_attn_decode_kernel)


@triton.jit
def _decode_merge_kernel(
    part_m_ptr, part_l_ptr, part_acc_ptr, lens_ptr,  # in: partials [batch·heads·q_len, num_splits(, D)]
    o_ptr,  # out: [batch, heads, q_len, head_dim]
    chunk, num_splits, heads,
    stride_ob, stride_oh, stride_ot,
    Q_LEN: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    SPLITS: tl.constexpr,  # num_splits padded to a power of two
):
    """o = Σ_s 2^(m_s − M)·acc_s / Σ_s 2^(m_s − M)·l_s over the splits starting inside the sequence."""
    row = tl.program_id(0).to(tl.int64)  # (b, head, t) flattened
    b = row // (heads * Q_LEN)
    head = (row // Q_LEN) % heads
    t = row % Q_LEN
    seq_len = tl.load(lens_ptr + b)
    s = tl.arange(0, SPLITS)
    ok = (s < (seq_len + chunk - 1) // chunk) & (s < num_splits)
    offs_d = tl.arange(0, HEAD_DIM)
    part = row * num_splits + s
    m = tl.load(part_m_ptr + part, mask=ok, other=float("-inf"))
    l_s = tl.load(part_l_ptr + part, mask=ok, other=0.0)
    acc = tl.load(part_acc_ptr + part[:, None] * HEAD_DIM + offs_d[None, :], mask=ok[:, None], other=0.0)
    weight = tl.exp2(m - tl.max(m, 0))
    out = tl.sum(acc * weight[:, None], 0) / tl.sum(l_s * weight, 0)
    tl.store(o_ptr + b * stride_ob + head * stride_oh + t * stride_ot + offs_d, out.to(o_ptr.dtype.element_ty))


# ---------------------------------------------------------------------------------------------
# Launcher
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitPlan:
    num_splits: int
    chunk: int  # positions per split


@dataclass(frozen=True)
class DecodeWorkspace:
    """fp32 partials of the split path: running max and sum [rows, splits], acc [rows, splits, head_dim]."""

    row_max: torch.Tensor
    row_sum: torch.Tensor
    acc: torch.Tensor

    @classmethod
    def allocate(cls, rows: int, num_splits: int, head_dim: int, device: torch.device) -> "DecodeWorkspace":
        row_max = torch.empty((rows, num_splits), dtype=torch.float32, device=device)
        acc = torch.empty((rows, num_splits, head_dim), dtype=torch.float32, device=device)
        return cls(row_max, torch.empty_like(row_max), acc)


def plan_splits(programs: int, capacity: int, sm_count: int, num_splits: int | None = None) -> SplitPlan:
    """Splits per sequence: forced, or enough for ~2 programs per SM with chunks of ≥ MIN_CHUNK positions."""
    if num_splits is not None:
        if not 1 <= num_splits <= min(MAX_SPLITS, capacity):
            raise ValueError(f"num_splits {num_splits} must be in [1, {min(MAX_SPLITS, capacity)}] "
                             f"(≤ {MAX_SPLITS} and ≤ the cache capacity {capacity})")
        return SplitPlan(num_splits, triton.cdiv(capacity, num_splits))
    splits = 1
    if programs < 2 * sm_count:
        splits = max(1, min(MAX_SPLITS, triton.cdiv(2 * sm_count, programs), capacity // MIN_CHUNK))
    if splits == 1:
        return SplitPlan(1, capacity)
    chunk = triton.cdiv(triton.cdiv(capacity, splits), CHUNK_ALIGN) * CHUNK_ALIGN
    return SplitPlan(triton.cdiv(capacity, chunk), chunk)


def _sm_count(device: torch.device) -> int:
    """SMs to fill; 1 off-GPU, where the interpreter runs programs one after another anyway."""
    return sm_count(device.index) if device.type == "cuda" else 1


def _check_decode(q, k_cache, v_cache, kv_lens, block_table, out) -> tuple[int, int]:
    """Shape/dtype/device checks; returns (kv_heads, capacity in positions per sequence)."""
    if q.dim() != 4 or k_cache.dim() != 4:
        raise ValueError(f"attn_decode takes q [batch, heads, q_len, head_dim] and 4-D caches; got q "
                         f"{tuple(q.shape)}, k_cache {tuple(k_cache.shape)}")
    batch, heads, q_len, head_dim = q.shape
    if not 1 <= batch <= 65535:
        raise ValueError(f"batch {batch} must be in [1, 65535]")
    paged = block_table is not None
    kv_heads = k_cache.shape[2] if paged else k_cache.shape[1]
    layout = "[num_blocks, page_size, kv_heads, head_dim]" if paged else "[batch, kv_heads, max_seq, head_dim]"
    if v_cache.shape != k_cache.shape or v_cache.stride() != k_cache.stride():
        raise ValueError(f"k_cache {tuple(k_cache.shape)} and v_cache {tuple(v_cache.shape)} need one shape and strides")
    if k_cache.shape[3] != head_dim or (not paged and k_cache.shape[0] != batch):
        raise ValueError(f"cache {tuple(k_cache.shape)} must be {layout} for q {tuple(q.shape)}")
    if head_dim not in HEAD_DIMS:
        raise ValueError(f"head_dim {head_dim} is not supported; valid: {', '.join(map(str, HEAD_DIMS))}")
    if kv_heads == 0 or heads % kv_heads:
        raise ValueError(f"kv_heads {kv_heads} must divide heads {heads}")
    if not 1 <= q_len <= MAX_Q_LEN or triton.next_power_of_2(heads // kv_heads * q_len) > MAX_ROWS:
        raise ValueError(f"q_len {q_len} must be in [1, {MAX_Q_LEN}] with (heads/kv_heads)·q_len ≤ {MAX_ROWS}")
    if q.dtype not in (torch.float16, torch.bfloat16) or k_cache.dtype != q.dtype or v_cache.dtype != q.dtype:
        raise ValueError(f"q and caches must share one dtype, float16 or bfloat16; got {q.dtype}, {k_cache.dtype}")
    if out.shape != q.shape or out.dtype != q.dtype:
        raise ValueError(f"out must be {tuple(q.shape)} {q.dtype}; got {tuple(out.shape)} {out.dtype}")
    if kv_lens.shape != (batch,) or kv_lens.dtype != torch.int32:
        raise ValueError(f"kv_lens must be int32 [{batch}]; got {kv_lens.dtype} {tuple(kv_lens.shape)}")
    if paged and (block_table.dim() != 2 or block_table.shape[0] != batch or block_table.dtype != torch.int32):
        raise ValueError(f"block_table must be int32 [{batch}, max_blocks_per_seq]; got {block_table.dtype} "
                         f"{tuple(block_table.shape)}")
    tensors = (q, k_cache, v_cache, kv_lens, out) + ((block_table,) if paged else ())
    if len({t.device for t in tensors}) != 1:
        raise ValueError("q, caches, kv_lens, block_table and out must be on one device")
    if any(t.stride(3) != 1 for t in (q, k_cache, out)) or (paged and block_table.stride(1) != 1):
        raise ValueError("q, caches and out need a contiguous head_dim; the block table contiguous rows")
    capacity = block_table.shape[1] * k_cache.shape[1] if paged else k_cache.shape[2]
    return kv_heads, capacity


def _check_lengths(kv_lens, block_table, q_len: int, capacity: int, num_blocks: int, page_size: int) -> None:
    """Value checks (one device sync): q_len ≤ kv_lens ≤ capacity, referenced pages inside the pool."""
    lens = kv_lens.tolist()
    if min(lens) < q_len:
        raise ValueError(f"kv_lens must be ≥ q_len {q_len} (the new tokens are in the cache); got {min(lens)}")
    if max(lens) > capacity:
        what = "block table too short" if block_table is not None else "cache too short"
        raise ValueError(f"{what}: a sequence has {max(lens)} tokens, capacity is {capacity}")
    if block_table is not None:
        used = torch.arange(block_table.shape[1], device=kv_lens.device)[None, :] < (
            (kv_lens[:, None] + page_size - 1) // page_size)
        if ((block_table < 0) | (block_table >= num_blocks))[used].any():
            raise ValueError(f"block_table points outside the {num_blocks} pages of the cache")


def attn_decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    kv_lens: torch.Tensor,
    block_table: torch.Tensor | None = None,
    *,
    sm_scale: float | None = None,
    num_splits: int | None = None,
    out: torch.Tensor | None = None,
    workspace: DecodeWorkspace | None = None,
    check_lengths: bool = True,
) -> torch.Tensor:
    """Decode attention over a contiguous cache, or a paged one when ``block_table`` is given.

    ``num_splits`` forces the split count (1 = one pass); ``workspace`` reuses partial buffers;
    ``check_lengths=False`` skips the value checks, which sync with the device (the benchmark does
    them once when it builds a point).
    """
    out = torch.empty_like(q) if out is None else out
    kv_heads, capacity = _check_decode(q, k_cache, v_cache, kv_lens, block_table, out)
    batch, heads, q_len, head_dim = q.shape
    paged = block_table is not None
    page_size = k_cache.shape[1] if paged else 1
    if check_lengths:
        _check_lengths(kv_lens, block_table, q_len, capacity, k_cache.shape[0], page_size)
    plan = plan_splits(batch * kv_heads, capacity, _sm_count(q.device), num_splits)
    split = plan.num_splits > 1
    rows = batch * heads * q_len
    if split and workspace is None:
        workspace = DecodeWorkspace.allocate(rows, plan.num_splits, head_dim, q.device)
    if split and (workspace.row_max.shape != (rows, plan.num_splits) or workspace.acc.shape[2] != head_dim):
        raise ValueError(f"workspace is {tuple(workspace.row_max.shape)}, this call needs {(rows, plan.num_splits)}")
    parts = (workspace.row_max, workspace.row_sum, workspace.acc) if split else (out, out, out)  # unused when not split
    scale = (1.0 / math.sqrt(head_dim) if sm_scale is None else sm_scale) * LOG2E
    cache_strides = (k_cache.stride(0), k_cache.stride(1), k_cache.stride(2)) if paged else (
        k_cache.stride(0), k_cache.stride(2), k_cache.stride(1))
    group = heads // kv_heads
    _attn_decode_tuned[(batch, kv_heads, plan.num_splits)](
        q, k_cache, v_cache, kv_lens, block_table if paged else kv_lens,
        out, *parts,
        scale, plan.chunk, plan.num_splits, heads, batch,
        *q.stride()[:3], *out.stride()[:3], *cache_strides, block_table.stride(0) if paged else 0,
        GROUP=group, Q_LEN=q_len, ROWS=max(MIN_ROWS, triton.next_power_of_2(group * q_len)), HEAD_DIM=head_dim,
        PAGE_SIZE=page_size, PAGED=paged, SPLIT=split,
    )
    if split:
        splits_p2 = triton.next_power_of_2(plan.num_splits)
        _decode_merge_kernel[(rows,)](
            *parts, kv_lens, out, plan.chunk, plan.num_splits, heads, *out.stride()[:3],
            Q_LEN=q_len, HEAD_DIM=head_dim, SPLITS=splits_p2, num_warps=4 if splits_p2 * head_dim <= 4096 else 8,
        )
    return out


# ---------------------------------------------------------------------------------------------
# Reference and torch baseline helpers
# ---------------------------------------------------------------------------------------------


def gather_sequence(cache: torch.Tensor, block_table: torch.Tensor, b: int, length: int) -> torch.Tensor:
    """Sequence b's first ``length`` positions of a paged cache as [kv_heads, length, head_dim]."""
    pages = block_table[b, :triton.cdiv(length, cache.shape[1])].long()
    return cache[pages].flatten(0, 1)[:length].transpose(0, 1)


def decode_reference(q, k_cache, v_cache, kv_lens, block_table=None) -> torch.Tensor:
    """Float32 decode attention via :func:`attention_reference`, bottom-right causal over kv_lens."""
    if block_table is None:
        return attention_reference(q, k_cache, v_cache, causal=True, kv_lens=kv_lens, align=CausalAlign.BOTTOM_RIGHT)
    parts = []
    for b, length in enumerate(kv_lens.tolist()):
        k = gather_sequence(k_cache, block_table, b, length)[None]
        v = gather_sequence(v_cache, block_table, b, length)[None]
        parts.append(attention_reference(q[b:b + 1], k, v, causal=True, align=CausalAlign.BOTTOM_RIGHT))
    return torch.cat(parts)


def gather_pages(cache: torch.Tensor, block_table: torch.Tensor, capacity: int) -> torch.Tensor:
    """A paged cache copied to the contiguous layout [batch, kv_heads, capacity, head_dim], a sequence at a time."""
    batch, (kv_heads, head_dim) = block_table.shape[0], cache.shape[2:]
    dense = torch.empty((batch, kv_heads, capacity, head_dim), dtype=cache.dtype, device=cache.device)
    for b in range(batch):
        dense[b] = gather_sequence(cache, block_table, b, capacity)
    return dense


def decode_mask(kv_lens: torch.Tensor, q_len: int, group: int, capacity: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive SDPA mask [batch, 1, group·q_len, capacity] (0 visible, −inf not) for queries folded as
    rows g·q_len + t; stored with the last dim padded to 16 so memory-efficient SDPA takes it as is."""
    padded = triton.cdiv(capacity, 16) * 16
    t = torch.arange(q_len, device=kv_lens.device).repeat(group)
    last = kv_lens.long()[:, None] - q_len + t[None, :]  # last visible position per (b, row)
    pos = torch.arange(padded, device=kv_lens.device)
    mask = torch.zeros((kv_lens.shape[0], 1, group * q_len, padded), dtype=dtype, device=kv_lens.device)
    mask.masked_fill_((pos[None, None, :] > last[:, :, None])[:, None], float("-inf"))
    return mask[..., :capacity]


# ---------------------------------------------------------------------------------------------
# Spec
# ---------------------------------------------------------------------------------------------


def decode_lengths(case: Case) -> list[int]:
    """The case's sequence lengths, a function of the shape alone so flops/bytes are exact: evenly
    spaced from context (the first) down to max(ceil(context/2), q_len). make_inputs permutes them."""
    batch, context = case["batch"], case["context"]
    low = max(context - context // 2, case["q_len"])
    if batch == 1:
        return [context]
    return [context - (context - low) * i // (batch - 1) for i in range(batch)]


def _pages(case: Case) -> list[int]:
    return [triton.cdiv(n, case["page_size"]) for n in decode_lengths(case)]


def _randn_cache(shape: tuple[int, ...], dtype: torch.dtype, device, gen: torch.Generator) -> torch.Tensor:
    """scaled_randn in slices of the leading dim: a 35 GB cache never needs a 70 GB fp32 staging copy."""
    cache = torch.empty(shape, dtype=dtype, device=device)
    per_slice = max(1, math.prod(shape[1:]))
    step = max(1, (1 << 26) // per_slice)
    for i in range(0, shape[0], step):
        rows = cache[i:i + step]
        rows.copy_(scaled_randn(rows.shape, dtype=dtype, device=device, generator=gen))
    return cache


def _inputs(case: Case, device: torch.device, gen: torch.Generator) -> Inputs:
    batch, heads, kv_heads, q_len = case["batch"], case["heads"], case["kv_heads"], case["q_len"]
    context, head_dim, page_size = case["context"], case["head_dim"], case["page_size"]
    dtype = case.dtype.torch
    order = torch.randperm(batch, generator=gen, device=gen.device).tolist()
    lengths = decode_lengths(case)
    kv_lens = torch.tensor([lengths[i] for i in order], dtype=torch.int32, device=device)
    inputs = {
        "q": scaled_randn((batch, heads, q_len, head_dim), dtype=dtype, device=device, generator=gen),
        "kv_lens": kv_lens,
        "block_table": None,
        "out": poisoned((batch, heads, q_len, head_dim), dtype=dtype, device=device),
    }
    if case["cache"] == "contiguous":
        shape = (batch, kv_heads, context, head_dim)
    else:
        pages = [triton.cdiv(n, page_size) for n in kv_lens.tolist()]
        shape = (sum(pages), page_size, kv_heads, head_dim)
        shuffled = torch.randperm(sum(pages), generator=gen, device=gen.device).to(device=device, dtype=torch.int32)
        table = torch.zeros((batch, triton.cdiv(context, page_size)), dtype=torch.int32, device=device)
        first = 0
        for b, n in enumerate(pages):
            table[b, :n] = shuffled[first:first + n]
            first += n
        inputs["block_table"] = table
    inputs["k_cache"] = _randn_cache(shape, dtype, device, gen)
    inputs["v_cache"] = _randn_cache(shape, dtype, device, gen)
    return inputs


def _build_triton(inputs: Inputs, case: Case) -> Launch:
    q, k, v, lens, table, out = (inputs[n] for n in ("q", "k_cache", "v_cache", "kv_lens", "block_table", "out"))
    capacity = _check_decode(q, k, v, lens, table, out)[1]
    _check_lengths(lens, table, case["q_len"], capacity, k.shape[0], case["page_size"])  # once, untimed
    plan = plan_splits(case["batch"] * case["kv_heads"], capacity, _sm_count(q.device))
    rows = case["batch"] * case["heads"] * case["q_len"]
    workspace = DecodeWorkspace.allocate(rows, plan.num_splits, case["head_dim"], q.device) if plan.num_splits > 1 else None
    variant = f"split-kv splits={plan.num_splits} chunk={plan.chunk}" if plan.num_splits > 1 else "one-pass"
    return Launch(
        run=lambda: attn_decode(q, k, v, lens, table, num_splits=plan.num_splits, out=out, workspace=workspace,
                                check_lengths=False),
        config=lambda: f"{variant} {describe(_attn_decode_tuned.best_config)}",
    )


def _build_torch(inputs: Inputs, case: Case) -> Launch:
    """SDPA on a contiguous cache (paged: gathered here, untimed) with an additive mask for the ragged
    lengths; GQA is folded into the query rows ([batch, kv_heads, group·q_len, d]), so K/V are never repeated."""
    import torch.nn.functional as F

    q, lens, table = inputs["q"], inputs["kv_lens"], inputs["block_table"]
    batch, heads, q_len, head_dim = q.shape
    k, v = inputs["k_cache"], inputs["v_cache"]
    if table is not None:
        k, v = gather_pages(k, table, case["context"]), gather_pages(v, table, case["context"])
    kv_heads, capacity = k.shape[1], k.shape[2]
    group = heads // kv_heads
    folded = q.reshape(batch, kv_heads, group * q_len, head_dim)
    mask = decode_mask(lens, q_len, group, capacity, q.dtype)
    call = lambda: F.scaled_dot_product_attention(folded, k, v, attn_mask=mask).view(batch, heads, q_len, head_dim)
    run, backend = pick_sdpa_backend(call)
    return Launch(run=run, config=lambda: f"sdpa {backend} {'gathered pages' if table is not None else 'contiguous'}")


def _flops(case: Case) -> int:
    """4·d per (query, visible key) pair: query t of a length-L sequence sees L − q_len + 1 + t keys."""
    q_len = case["q_len"]
    pairs = sum(q_len * n - q_len * (q_len - 1) // 2 for n in decode_lengths(case))
    return 4 * case["heads"] * case["head_dim"] * pairs


def _cache_positions(case: Case) -> int:
    """Positions whose K/V must be read: the valid lengths, or whole touched pages when paged."""
    if case["cache"] == "contiguous":
        return sum(decode_lengths(case))
    return sum(_pages(case)) * case["page_size"]


def _bytes(case: Case) -> int:
    """Q + O, K + V of the valid positions (whole pages when paged), kv_lens, and the table entries read."""
    item = case.dtype.itemsize
    q_and_o = 2 * case["batch"] * case["heads"] * case["q_len"] * case["head_dim"] * item
    kv = 2 * _cache_positions(case) * case["kv_heads"] * case["head_dim"] * item
    table = 4 * sum(_pages(case)) if case["cache"] == "paged" else 0
    return q_and_o + kv + 4 * case["batch"] + table


def _footprint(case: Case) -> int:
    """Resident bytes: the allocated caches (contiguous: full context per sequence), Q, O, the table, and
    the split workspace's bound (only splits when batch·kv_heads is below ~2 waves of 132 SMs)."""
    batch, heads, q_len, head_dim = case["batch"], case["heads"], case["q_len"], case["head_dim"]
    item = case.dtype.itemsize
    if case["cache"] == "contiguous":
        cache = 2 * batch * case["kv_heads"] * case["context"] * head_dim * item
    else:
        cache = 2 * sum(_pages(case)) * case["page_size"] * case["kv_heads"] * head_dim * item
        cache += 4 * batch * triton.cdiv(case["context"], case["page_size"])
    splits_possible = batch * case["kv_heads"] < 2 * H100_SM_COUNT  # plan_splits' rule on H100/H200
    workspace = batch * heads * q_len * MAX_SPLITS * (head_dim + 2) * 4 if splits_possible else 0
    return cache + 2 * batch * heads * q_len * head_dim * item + workspace


def _skip(case: Case, caps: DeviceCaps) -> str | None:
    if case["heads"] % case["kv_heads"]:
        return f"kv_heads {case['kv_heads']} does not divide heads {case['heads']}"
    if case["q_len"] > case["context"]:
        return f"q_len {case['q_len']} exceeds context {case['context']}"
    return None


def _torch_footprint(case: Case) -> int:
    """The baseline adds its mask and, for a paged cache, the gathered contiguous copy."""
    batch, context, item = case["batch"], case["context"], case.dtype.itemsize
    extra = batch * case["heads"] * case["q_len"] * (triton.cdiv(context, 16) * 16) * item
    if case["cache"] == "paged":
        extra += 2 * batch * case["kv_heads"] * context * case["head_dim"] * item
    return _footprint(case) + extra


ATTN_DECODE = KernelSpec(
    name="attn_decode",
    summary="KV-cache decode attention: ragged lengths, contiguous or paged cache, GQA, split-KV",
    axes=(
        Axis("batch", int, 16, "sequences", minimum=1),
        Axis("heads", int, 32, "query heads", minimum=1),
        Axis("kv_heads", int, 8, "key/value heads (divides heads)", minimum=1),
        Axis("q_len", int, 1, "new tokens per sequence (speculative decoding when > 1)", choices=tuple(range(1, 9))),
        Axis("context", int, 4096, "longest sequence; lengths run evenly from context/2 to context", minimum=1),
        Axis("head_dim", int, 128, "channels per head", choices=HEAD_DIMS),
        Axis("cache", str, "paged", "KV cache layout", choices=CACHES),
        Axis("page_size", int, 16, "tokens per page (paged cache only)", choices=PAGE_SIZES),
    ),
    dtypes=(DType.FP16, DType.BF16),
    impls=(
        Impl("triton", _build_triton, "Triton, one program per (sequence, kv head, split), GQA group as tile rows"),
        Impl("torch", _build_torch, "torch SDPA on the contiguous/gathered cache with a ragged-length mask",
             footprint=_torch_footprint),
    ),
    make_inputs=_inputs,
    reference=lambda inputs, case: decode_reference(
        inputs["q"], inputs["k_cache"], inputs["v_cache"], inputs["kv_lens"], inputs["block_table"]),
    flops=_flops,
    bytes=_bytes,
    # As attn_prefill: P rounded to fp16/bf16 before P·V, O rounded once; the split merge is fp32.
    # Measured ~2.5e-4 for fp16 under the interpreter; bf16 is 8× coarser. 4× headroom.
    tolerance={DType.FP16: 1e-3, DType.BF16: 8e-3},
    footprint=_footprint,
    skip=_skip,
    tags=("memory", "attention"),
)
