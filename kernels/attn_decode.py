"""KV-cache decode attention kernels and launcher (``attn_decode``; the spec is
:mod:`kernels.attn_decode_spec`): q_len 1 … 256 new tokens per sequence against a ragged cache —
decode and speculative decoding (≤ 16, bandwidth-bound: every valid K/V byte is read once per step),
and the query chunks of chunked prefill over a paged cache (vLLM's unified attention runs 64 … 129
tokens a chunk through this kernel family).

Layouts (``kv_lens[b]`` counts sequence b's tokens in the cache, its q_len new ones included):

* q, out: [batch, heads, q_len, head_dim]; any head_dim 1 … 256 (tile padded, ``kernels.attn_tiles``).
* contiguous cache: k, v [batch, kv_heads, max_seq, head_dim].
* paged cache, vLLM's FlashAttention-backend ("NHD") layout: k, v [num_blocks, page_size, kv_heads,
  head_dim] and block_table [batch, max_blocks_per_seq] int32; token p of sequence b lives in page
  block_table[b, p // page_size], slot p % page_size. Any page size (1 … 256 in the sweep).
  Entries past a sequence's last page are never read.
* FP8 cache: k, v in float8_e4m3fn with fp32 scales k_scale, v_scale [kv_heads] (one per kv head):
  K = k·k_scale[h], V = v·v_scale[h]. The kernel folds k_scale into the softmax scale and v_scale
  into the final (or partial) accumulator, so the inner loop only converts e4m3 to q's dtype.

Query t (0-based) of sequence b sees cache positions < kv_lens[b] − q_len + 1 + t: the new tokens
are the last q_len of the sequence, causal among themselves (speculative decoding, chunked prefill).

One program handles one (sequence, kv head, row block, split): the GROUP query heads sharing that kv
head and their q_len tokens are the GROUP·q_len rows of the tile (token-major: row r is token
r // GROUP of head r % GROUP), so each K/V byte is loaded once for the whole group. The rows are
padded to a power of two in [16, 128] and fed to ``tl.dot``: decode is bandwidth-bound, so the
padding only spends idle tensor-core cycles, whereas broadcast-multiply + ``tl.sum`` would hold a
[rows, BLOCK_N, head_dim] fp32 product in registers and run on the CUDA cores. More than 128 rows (a
query chunk, or 16 draft tokens of a wide GQA group) run as ⌈GROUP·q_len / 128⌉ row blocks, side by
side in the grid so they share each K/V tile through L2; a block stops at the last position its
latest token sees, so the early tokens of a chunk skip the causal tail.

Split-KV (flash-decoding): when batch·kv_heads programs cannot fill the GPU, each sequence's
positions are cut into ``num_splits`` chunks handled by separate programs that write partial
(max, sum, acc) rows to an fp32 workspace; a second kernel merges them (shared with MLA decode).
With one split the same kernel normalises and writes ``out`` directly.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from kernels.attn_ref import CausalAlign, attention_reference
from kernels.attn_split import DecodeWorkspace, merge_splits, plan_splits
from kernels.attn_tiles import LOG2E, MAX_HEAD_DIM, block_d, load_rows
from kernels.tuning import Limits, autotune, device_limits

MAX_Q_LEN = 256  # 16 draft tokens (speculative decoding) … chunked-prefill query chunks (vLLM: 64 … 129)
MIN_ROWS, MAX_ROWS = 16, 128  # tile rows = group·q_len padded: tl.dot needs 16, registers cap a row block
KV_DTYPES = (torch.float16, torch.bfloat16, torch.float8_e4m3fn)


def decode_configs() -> list[triton.Config]:
    """BLOCK_N (positions per tile) × warps × stages; the first one is what the interpreter runs."""
    return [
        triton.Config({"BLOCK_N": block_n}, num_warps=warps, num_stages=stages)
        for block_n in (64, 128, 32)
        for warps in (4, 8)
        for stages in (2, 3, 4)
    ]


def decode_candidates(chunk: int, head_dim: int, itemsize: int, limits: Limits) -> tuple[triton.Config, ...]:
    """Tiles no longer than a split's chunk, K+V stages within shared memory, 8 warps only on wide
    tiles (``head_dim``: the padded tile; ``itemsize``: the cache's, 1 for fp8)."""
    configs = decode_configs()
    max_n = max(32, triton.next_power_of_2(chunk))

    def keep(c: triton.Config) -> bool:
        block_n = c.kwargs["BLOCK_N"]
        smem = 2 * (c.num_stages - 1) * block_n * head_dim * itemsize  # K, V buffers as Triton 3.9 allocates them
        return block_n <= max_n and smem <= limits.smem_per_block and (c.num_warps == 4 or block_n >= 64)

    smallest = min(configs, key=lambda c: (c.kwargs["BLOCK_N"], c.num_stages, c.num_warps))
    return tuple(c for c in configs if keep(c)) or (smallest,)


def prune_decode_configs(configs, named_args, **kwargs):
    """The autotuner's pruner: an adapter over :func:`decode_candidates` on the cache's device."""
    args = {**named_args, **kwargs}
    k = args["k_ptr"]
    return list(decode_candidates(args["chunk"], args["BLOCK_D"], k.element_size(), device_limits(k.device)))


@triton.jit
def _attn_decode_kernel(
    q_ptr, k_ptr, v_ptr, lens_ptr, table_ptr,  # in: q, caches, kv_lens [batch], block table (paged)
    k_scale_ptr, v_scale_ptr,  # in: fp32 [kv_heads] scales of an fp8 cache (KV_FP8)
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
    ROWS: tl.constexpr,  # rows per block: GROUP·Q_LEN padded to a power of two in [16, 128]
    HEAD_DIM: tl.constexpr,  # real channels
    BLOCK_D: tl.constexpr,  # the tile: next power of two ≥ 16
    PAGE_SIZE: tl.constexpr,
    PAGED: tl.constexpr,
    SPLIT: tl.constexpr,
    KV_FP8: tl.constexpr,  # e4m3 cache with per-kv-head scales
    BLOCK_N: tl.constexpr,
):
    """Grid (batch·row_blocks, kv_heads, num_splits), row_blocks = ⌈GROUP·Q_LEN / ROWS⌉. Row
    r = t·GROUP + g (r < GROUP·Q_LEN) is query token t of head kv_head·GROUP + g; block k holds rows
    [k·ROWS, (k+1)·ROWS).

    Split s covers positions [s·chunk, min((s+1)·chunk, len)); row r sees those < len − Q_LEN + 1 + t,
    so the block's loop ends at len − Q_LEN + 1 + its largest t.
    m starts at −1e30 (not −inf) so a row with nothing visible in a split keeps l = 0 and acc = 0
    instead of NaN; the merge gives such a split weight exp2(−1e30 − m) = 0.
    """
    row_blocks = (GROUP * Q_LEN + ROWS - 1) // ROWS  # constexpr arithmetic
    b = (tl.program_id(0) // row_blocks).to(tl.int64)
    kv_h = tl.program_id(1).to(tl.int64)
    split = tl.program_id(2)
    rows = (tl.program_id(0) % row_blocks) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < GROUP * Q_LEN
    rows = tl.where(row_ok, rows, 0)  # padded rows alias row 0: in-bounds loads, never stored
    t = rows // GROUP
    head = kv_h * GROUP + rows % GROUP
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    offs_n = tl.arange(0, BLOCK_N)
    q = load_rows(q_ptr + b * stride_qb + head[:, None] * stride_qh + t[:, None] * stride_qt + offs_d[None, :],
                  row_ok, d_ok, True, HEAD_DIM, BLOCK_D)
    if KV_FP8:
        qk_scale = qk_scale * tl.load(k_scale_ptr + kv_h)  # K = k·k_scale: scale the scores once

    seq_len = tl.load(lens_ptr + b)
    start = split * chunk
    end = tl.minimum(start + chunk, seq_len)
    row_end = tl.minimum(seq_len - Q_LEN + 1 + t, end)  # exclusive, per row
    end = tl.minimum(end, seq_len - Q_LEN + 1 + tl.max(t, 0))  # the block's latest token: nothing past it
    acc = tl.zeros([ROWS, BLOCK_D], dtype=tl.float32)
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
        kv_ptrs = kv_row[:, None] + kv_h * stride_ch + offs_d[None, :]  # [BLOCK_N, BLOCK_D]
        k = load_rows(k_ptr + kv_ptrs, in_range, d_ok, True, HEAD_DIM, BLOCK_D).to(q.dtype)
        qk = tl.dot(q, tl.trans(k)) * qk_scale
        qk = tl.where(pos[None, :] < row_end[:, None], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        p = tl.exp2(qk - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = load_rows(v_ptr + kv_ptrs, in_range, d_ok, True, HEAD_DIM, BLOCK_D).to(q.dtype)
        acc = acc * alpha[:, None] + tl.dot(p.to(q.dtype), v)
        m_i = m_new
    if KV_FP8:
        acc = acc * tl.load(v_scale_ptr + kv_h)  # V = v·v_scale: scale the weighted sum once

    if SPLIT:
        part = ((b * heads + head) * Q_LEN + t) * num_splits + split  # [batch, heads, q_len, splits]
        # the merge reads only splits starting inside the sequence (start broadcast by hand: the
        # interpreter rejects a mask made of a vector & a scalar comparison)
        written = row_ok & (start + 0 * rows < seq_len)
        tl.store(part_m_ptr + part, m_i, mask=written)
        tl.store(part_l_ptr + part, l_i, mask=written)
        tl.store(part_acc_ptr + part[:, None] * HEAD_DIM + offs_d[None, :], acc, mask=written[:, None] & d_ok[None, :])
    else:
        out = acc / l_i[:, None]
        o_ptrs = o_ptr + b * stride_ob + head[:, None] * stride_oh + t[:, None] * stride_ot + offs_d[None, :]
        tl.store(o_ptrs, out.to(o_ptr.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])


_attn_decode_tuned = autotune(decode_configs(), key=["batch", "chunk", "GROUP", "Q_LEN", "HEAD_DIM", "PAGE_SIZE",
                                                     "PAGED", "SPLIT", "KV_FP8"],
                              prune=prune_decode_configs)(_attn_decode_kernel)


# ---------------------------------------------------------------------------------------------
# Launcher
# ---------------------------------------------------------------------------------------------


def row_tile(group: int, q_len: int) -> int:
    """Rows per program: the group's GROUP·q_len (head, token) rows padded to a power of two, 16 … 128."""
    return min(MAX_ROWS, max(MIN_ROWS, triton.next_power_of_2(group * q_len)))


def _sm_count(device: torch.device) -> int:
    """SMs to fill; 1 under the interpreter, which runs programs one after another anyway."""
    limits = device_limits(device)
    return 1 if limits.interpret else limits.sm_count


def check_paged(kv_lens: torch.Tensor, block_table: torch.Tensor | None, batch: int) -> None:
    """kv_lens int32 [batch]; a block table int32 [batch, max_blocks_per_seq] with contiguous rows."""
    if kv_lens.shape != (batch,) or kv_lens.dtype != torch.int32:
        raise ValueError(f"kv_lens must be int32 [{batch}]; got {kv_lens.dtype} {tuple(kv_lens.shape)}")
    if block_table is not None and (block_table.dim() != 2 or block_table.shape[0] != batch
                                    or block_table.dtype != torch.int32 or block_table.stride(1) != 1):
        raise ValueError(f"block_table must be int32 [{batch}, max_blocks_per_seq] with contiguous rows; got "
                         f"{block_table.dtype} {tuple(block_table.shape)}")


def _check_scales(k_cache, k_scale, v_scale, kv_heads: int) -> None:
    fp8 = k_cache.dtype == torch.float8_e4m3fn
    if fp8 != (k_scale is not None) or fp8 != (v_scale is not None):
        raise ValueError("an fp8 (e4m3) cache needs k_scale and v_scale; a fp16/bf16 cache takes none")
    for scale in (k_scale, v_scale) if fp8 else ():
        if scale.shape != (kv_heads,) or scale.dtype != torch.float32 or scale.device != k_cache.device:
            raise ValueError(f"k_scale and v_scale must be float32 [{kv_heads}] (one per kv head) on the cache's "
                             f"device; got {scale.dtype} {tuple(scale.shape)}")


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
    if v_cache.shape != k_cache.shape or v_cache.stride() != k_cache.stride() or v_cache.dtype != k_cache.dtype:
        raise ValueError(f"k_cache {tuple(k_cache.shape)} and v_cache {tuple(v_cache.shape)} need one shape, "
                         "strides and dtype")
    if k_cache.shape[3] != head_dim or (not paged and k_cache.shape[0] != batch):
        raise ValueError(f"cache {tuple(k_cache.shape)} must be {layout} for q {tuple(q.shape)}")
    if not 1 <= head_dim <= MAX_HEAD_DIM:
        raise ValueError(f"head_dim {head_dim} is not supported; valid: 1 … {MAX_HEAD_DIM}")
    if kv_heads == 0 or heads % kv_heads:
        raise ValueError(f"kv_heads {kv_heads} must divide heads {heads}")
    if not 1 <= q_len <= MAX_Q_LEN:
        raise ValueError(f"q_len {q_len} must be in [1, {MAX_Q_LEN}] (longer query chunks: attn_prefill over the "
                         "gathered cache, or several calls)")
    if q.dtype not in (torch.float16, torch.bfloat16) or k_cache.dtype not in (q.dtype, torch.float8_e4m3fn):
        raise ValueError(f"q must be float16 or bfloat16 and the caches q's dtype or float8_e4m3fn; got {q.dtype}, "
                         f"{k_cache.dtype}")
    if out.shape != q.shape or out.dtype != q.dtype:
        raise ValueError(f"out must be {tuple(q.shape)} {q.dtype}; got {tuple(out.shape)} {out.dtype}")
    check_paged(kv_lens, block_table, batch)
    tensors = (q, k_cache, v_cache, kv_lens, out) + ((block_table,) if paged else ())
    if len({t.device for t in tensors}) != 1:
        raise ValueError("q, caches, kv_lens, block_table and out must be on one device")
    if any(t.stride(3) != 1 for t in (q, k_cache, out)):
        raise ValueError("q, caches and out need a contiguous head_dim")
    capacity = block_table.shape[1] * k_cache.shape[1] if paged else k_cache.shape[2]
    return kv_heads, capacity


def check_lengths(kv_lens, block_table, q_len: int, capacity: int, num_blocks: int, page_size: int) -> None:
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
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
    sm_scale: float | None = None,
    num_splits: int | None = None,
    out: torch.Tensor | None = None,
    workspace: DecodeWorkspace | None = None,
    check_values: bool = True,
) -> torch.Tensor:
    """Decode attention over a contiguous cache, or a paged one when ``block_table`` is given.

    An fp8 cache takes its per-kv-head ``k_scale``/``v_scale``; ``num_splits`` forces the split
    count (1 = one pass); ``workspace`` reuses partial buffers; ``check_values=False`` skips the
    length and page checks, which sync with the device (the benchmark does them once per point).
    """
    out = torch.empty_like(q) if out is None else out
    kv_heads, capacity = _check_decode(q, k_cache, v_cache, kv_lens, block_table, out)
    _check_scales(k_cache, k_scale, v_scale, kv_heads)
    batch, heads, q_len, head_dim = q.shape
    paged = block_table is not None
    page_size = k_cache.shape[1] if paged else 1
    if check_values:
        check_lengths(kv_lens, block_table, q_len, capacity, k_cache.shape[0], page_size)
    group = heads // kv_heads
    tile_rows = row_tile(group, q_len)
    row_blocks = triton.cdiv(group * q_len, tile_rows)
    plan = plan_splits(batch * kv_heads * row_blocks, capacity, _sm_count(q.device), num_splits)
    split = plan.num_splits > 1
    rows = batch * heads * q_len
    if split and workspace is None:
        workspace = DecodeWorkspace.allocate(rows, plan.num_splits, head_dim, q.device)
    if split:
        workspace.check(rows, plan.num_splits, head_dim)
    parts = workspace.tensors if split else (out, out, out)  # unused when not split
    scales = (k_scale, v_scale) if k_scale is not None else (kv_lens, kv_lens)  # unused without fp8
    scale = (1.0 / math.sqrt(head_dim) if sm_scale is None else sm_scale) * LOG2E
    cache_strides = (k_cache.stride(0), k_cache.stride(1), k_cache.stride(2)) if paged else (
        k_cache.stride(0), k_cache.stride(2), k_cache.stride(1))
    _attn_decode_tuned[(batch * row_blocks, kv_heads, plan.num_splits)](
        q, k_cache, v_cache, kv_lens, block_table if paged else kv_lens, *scales,
        out, *parts,
        scale, plan.chunk, plan.num_splits, heads, batch,
        *q.stride()[:3], *out.stride()[:3], *cache_strides, block_table.stride(0) if paged else 0,
        GROUP=group, Q_LEN=q_len, ROWS=tile_rows, HEAD_DIM=head_dim,
        BLOCK_D=block_d(head_dim), PAGE_SIZE=page_size, PAGED=paged, SPLIT=split,
        KV_FP8=k_cache.dtype == torch.float8_e4m3fn,
    )
    if split:
        merge_splits(workspace, kv_lens, out, plan)
    return out


# ---------------------------------------------------------------------------------------------
# Reference
# ---------------------------------------------------------------------------------------------


def gather_sequence(cache: torch.Tensor, block_table: torch.Tensor, b: int, length: int) -> torch.Tensor:
    """Sequence b's first ``length`` positions of a paged cache [num_blocks, page_size, *rest] as
    [length, *rest]."""
    pages = block_table[b, :triton.cdiv(length, cache.shape[1])].long()
    return cache[pages].flatten(0, 1)[:length]


def decode_reference(q, k_cache, v_cache, kv_lens, block_table=None, k_scale=None, v_scale=None) -> torch.Tensor:
    """Float32 decode attention via :func:`attention_reference`, bottom-right causal over kv_lens, a
    sequence at a time (an fp8 cache is dequantised per sequence: K = k·k_scale[h], V = v·v_scale[h])."""
    parts = []
    for b, length in enumerate(kv_lens.tolist()):
        if block_table is None:
            k, v = k_cache[b, :, :length].float(), v_cache[b, :, :length].float()
        else:
            k = gather_sequence(k_cache, block_table, b, length).transpose(0, 1).float()
            v = gather_sequence(v_cache, block_table, b, length).transpose(0, 1).float()
        if k_scale is not None:
            k, v = k * k_scale[:, None, None], v * v_scale[:, None, None]
        parts.append(attention_reference(q[b:b + 1], k[None], v[None], causal=True, align=CausalAlign.BOTTOM_RIGHT))
    return torch.cat(parts)
