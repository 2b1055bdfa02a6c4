"""Spec of ``attn_decode`` (kernels and launcher: :mod:`kernels.attn_decode`): ragged lengths from
the shape alone, contiguous or paged caches with any page size, fp16/bf16 or fp8 (e4m3, per-kv-head
scales) caches, and a torch baseline whose bytes are what it moves.

The ``torch`` baseline is what a torch user runs for one decode step: SDPA over the whole cache
capacity with an additive mask for the ragged lengths; a paged cache is first gathered to the
contiguous layout and an fp8 cache dequantised to q's dtype, both inside the timed run.
"""

from __future__ import annotations

import math

import torch
import triton

from kernels.attn_decode import (
    MAX_Q_LEN,
    _attn_decode_tuned,
    _check_decode,
    _sm_count,
    attn_decode,
    check_lengths,
    decode_reference,
    row_tile,
)
from kernels.attn_split import MAX_SPLITS, DecodeWorkspace, _decode_merge_kernel, plan_splits
from kernels.attn_ref import pick_sdpa_backend
from kernels.attn_tiles import MAX_HEAD_DIM
from kernels.linear import interpreter_bf16_skip
from kernels.spaces import launch_spaces, meta
from kernels.spec import Axis, Case, DeviceCaps, DType, Impl, Inputs, KernelSpec, Launch, TuneSpace, poisoned, scaled_randn
from kernels.tuning import HOPPER, Limits, describe

H100_SM_COUNT = HOPPER.sm_count
CACHES = ("contiguous", "paged")
PAGE_SIZES = tuple(2**i for i in range(9))  # 1 (FlashInfer, SGLang) … 16/32 (vLLM) … 256 (FlashAttention)
KV_DTYPES = ("auto", "fp8")  # auto: q's dtype; fp8: e4m3 with one fp32 scale per kv head for K and for V
FP8_RANGE = 8.0  # an fp8 cache's scale maps ±8σ of its head's values onto e4m3's ±448


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


def _fp8(case: Case) -> bool:
    return case["kv_dtype"] == "fp8"


def head_sigmas(kv_heads: int) -> torch.Tensor:
    """Per-kv-head spread of an fp8 cache's values (0.5, 1, 2, 0.5 …): one shared scale would be wrong."""
    return torch.pow(2.0, torch.arange(kv_heads) % 3 - 1.0)


def randn_cache(shape: tuple[int, ...], dtype: torch.dtype, device, gen: torch.Generator,
                head_axis: int = 0, scales: torch.Tensor | None = None) -> torch.Tensor:
    """scaled_randn in slices of the leading dim (a 35 GB cache never needs a 70 GB fp32 staging copy);
    an fp8 cache stores round(σ_h·x / scale_h) with x ~ N(0, 1), σ_h from :func:`head_sigmas`."""
    cache = torch.empty(shape, dtype=dtype, device=device)
    per_slice = max(1, math.prod(shape[1:]))
    step = max(1, (1 << 26) // per_slice)
    view = [1] * len(shape)
    view[head_axis] = shape[head_axis]
    if scales is not None:
        codes_per_sigma = (head_sigmas(shape[head_axis]).to(device) / scales).view(view)
    for i in range(0, shape[0], step):
        rows = cache[i:i + step]
        if scales is None:
            rows.copy_(scaled_randn(rows.shape, dtype=dtype, device=device, generator=gen))
        else:
            x = scaled_randn(rows.shape, dtype=torch.float32, device=device, generator=gen)
            rows.copy_((x * codes_per_sigma).clamp(-448.0, 448.0))
    return cache


def paged_table(lengths: list[int], context: int, page_size: int, gen: torch.Generator,
                device: torch.device) -> torch.Tensor:
    """A block table [batch, ⌈context/page_size⌉] int32 giving each sequence its own pages of one pool of
    Σ⌈len/page_size⌉ pages, in shuffled order (neighbouring pages are not neighbours in memory)."""
    pages = [triton.cdiv(n, page_size) for n in lengths]
    shuffled = torch.randperm(sum(pages), generator=gen, device=gen.device).to(device=device, dtype=torch.int32)
    table = torch.zeros((len(lengths), triton.cdiv(context, page_size)), dtype=torch.int32, device=device)
    first = 0
    for b, n in enumerate(pages):
        table[b, :n] = shuffled[first:first + n]
        first += n
    return table


def ragged_lengths(case: Case, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """:func:`decode_lengths` in a random order, int32 on the device."""
    order = torch.randperm(case["batch"], generator=gen, device=gen.device).tolist()
    lengths = decode_lengths(case)
    return torch.tensor([lengths[i] for i in order], dtype=torch.int32, device=device)


def _inputs(case: Case, device: torch.device, gen: torch.Generator) -> Inputs:
    batch, heads, kv_heads, q_len = case["batch"], case["heads"], case["kv_heads"], case["q_len"]
    context, head_dim, page_size = case["context"], case["head_dim"], case["page_size"]
    dtype = case.dtype.torch
    kv_lens = ragged_lengths(case, gen, device)
    inputs = {
        "q": scaled_randn((batch, heads, q_len, head_dim), dtype=dtype, device=device, generator=gen),
        "kv_lens": kv_lens,
        "block_table": None,
        "k_scale": None,
        "v_scale": None,
        "out": poisoned((batch, heads, q_len, head_dim), dtype=dtype, device=device),
    }
    if case["cache"] == "contiguous":
        shape, head_axis = (batch, kv_heads, context, head_dim), 1
    else:
        inputs["block_table"] = paged_table(kv_lens.tolist(), context, page_size, gen, device)
        shape, head_axis = (sum(_pages(case)), page_size, kv_heads, head_dim), 2
    cache_dtype = dtype
    if _fp8(case):
        cache_dtype = torch.float8_e4m3fn
        inputs["k_scale"] = (head_sigmas(kv_heads) * FP8_RANGE / 448.0).to(device)
        inputs["v_scale"] = inputs["k_scale"].clone()
    for name, scale in (("k_cache", inputs["k_scale"]), ("v_cache", inputs["v_scale"])):
        inputs[name] = randn_cache(shape, cache_dtype, device, gen, head_axis, scale)
    return inputs


def _reference(inputs: Inputs, case: Case) -> torch.Tensor:
    return decode_reference(*(inputs[n] for n in ("q", "k_cache", "v_cache", "kv_lens", "block_table", "k_scale",
                                                  "v_scale")))


def _build_triton(inputs: Inputs, case: Case) -> Launch:
    q, k, v, lens, table, ks, vs, out = (inputs[n] for n in ("q", "k_cache", "v_cache", "kv_lens", "block_table",
                                                              "k_scale", "v_scale", "out"))
    capacity = _check_decode(q, k, v, lens, table, out)[1]
    check_lengths(lens, table, case["q_len"], capacity, k.shape[0], case["page_size"])  # once, untimed
    plan = plan_splits(case["batch"] * case["kv_heads"] * _row_blocks(case), capacity, _sm_count(q.device))
    rows = case["batch"] * case["heads"] * case["q_len"]
    workspace = DecodeWorkspace.allocate(rows, plan.num_splits, case["head_dim"], q.device) if plan.num_splits > 1 else None
    variant = f"split-kv splits={plan.num_splits} chunk={plan.chunk}" if plan.num_splits > 1 else "one-pass"
    return Launch(
        run=lambda: attn_decode(q, k, v, lens, table, k_scale=ks, v_scale=vs, num_splits=plan.num_splits, out=out,
                                workspace=workspace, check_values=False),
        config=lambda: f"{variant} {describe(_attn_decode_tuned.best_config)}",
        scratch=workspace.tensors if workspace else (),
    )


def _row_blocks(case: Case) -> int:
    """Programs per (sequence, kv head) across the (head, token) rows: more than one past 128 rows."""
    group = case["heads"] // case["kv_heads"]
    return triton.cdiv(group * case["q_len"], row_tile(group, case["q_len"]))


def _candidates(case: Case, limits: Limits) -> tuple[TuneSpace, ...]:
    """What a point launches on ``limits`` (kernels.spaces), from ``meta`` inputs of its layout."""
    batch, heads, kv_heads, head_dim = case["batch"], case["heads"], case["kv_heads"], case["head_dim"]
    if case["cache"] == "contiguous":
        shape, table = (batch, kv_heads, case["context"], head_dim), None
    else:
        shape = (sum(_pages(case)), case["page_size"], kv_heads, head_dim)
        table = meta((batch, triton.cdiv(case["context"], case["page_size"])), torch.int32)
    cache_dtype = torch.float8_e4m3fn if _fp8(case) else case.dtype.torch
    scale = meta(kv_heads) if _fp8(case) else None
    q, lens = meta((batch, heads, case["q_len"], head_dim), case.dtype.torch), meta(batch, torch.int32)
    k, v = meta(shape, cache_dtype), meta(shape, cache_dtype)
    launch = lambda: attn_decode(q, k, v, lens, table, k_scale=scale, v_scale=scale, check_values=False)  # noqa: E731
    return launch_spaces(launch, {"decode": _attn_decode_tuned, "merge": _decode_merge_kernel}, limits)


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


def _torch_capacity(case: Case) -> int:
    """Positions per sequence the baseline attends over: the contiguous buffer, or every table entry's page."""
    if case["cache"] == "contiguous":
        return case["context"]
    return triton.cdiv(case["context"], case["page_size"]) * case["page_size"]


def _build_torch(inputs: Inputs, case: Case) -> Launch:
    """Timed: [gather the pages] → [dequantise fp8 to q's dtype] → SDPA with the ragged-length mask.

    GQA is folded into the query rows ([batch, kv_heads, group·q_len, d]), so K/V are never repeated.
    The gather is one index_select per cache over every block-table entry (bytes, as uint8, so it
    takes e4m3 too); the mask is built once, untimed, as a serving engine keeps its metadata.
    """
    import torch.nn.functional as F

    q, lens, table = inputs["q"], inputs["kv_lens"], inputs["block_table"]
    batch, heads, q_len, head_dim = q.shape
    caches = [inputs["k_cache"], inputs["v_cache"]]
    kv_heads, capacity = case["kv_heads"], _torch_capacity(case)
    steps = []
    if table is not None:
        index = table.reshape(-1)
        pooled = [c.view(torch.uint8) for c in caches]
        gathered = [torch.empty((index.numel(),) + c.shape[1:], dtype=torch.uint8, device=q.device) for c in pooled]
        steps += [lambda src=src, dst=dst: torch.index_select(src, 0, index, out=dst)
                  for src, dst in zip(pooled, gathered)]
        caches = [g.view(caches[0].dtype).view(batch, capacity, kv_heads, head_dim).transpose(1, 2) for g in gathered]
    if _fp8(case):
        scales = [inputs[n].view(1, kv_heads, 1, 1) for n in ("k_scale", "v_scale")]
        dense = [torch.empty((batch, kv_heads, capacity, head_dim), dtype=q.dtype, device=q.device) for _ in caches]
        steps += [lambda src=src, dst=dst, s=s: dst.copy_(src).mul_(s) for src, dst, s in zip(caches, dense, scales)]
        caches = dense
    k, v = caches
    group = heads // kv_heads
    folded = q.reshape(batch, kv_heads, group * q_len, head_dim)
    mask = decode_mask(lens, q_len, group, capacity, q.dtype)

    def call() -> torch.Tensor:
        for step in steps:
            step()
        return F.scaled_dot_product_attention(folded, k, v, attn_mask=mask).view(batch, heads, q_len, head_dim)

    run, backend = pick_sdpa_backend(call)
    how = ("gather + " if table is not None else "") + ("fp8 dequant + " if _fp8(case) else "")
    return Launch(run=run, config=lambda: f"{how}sdpa {backend} over capacity {capacity}")


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


def _kv_itemsize(case: Case) -> int:
    return 1 if _fp8(case) else case.dtype.itemsize


def _bytes(case: Case) -> int:
    """Q + O, K + V of the valid positions (whole pages when paged), kv_lens, the table entries read,
    and an fp8 cache's two fp32 scales per kv head."""
    item = case.dtype.itemsize
    q_and_o = 2 * case["batch"] * case["heads"] * case["q_len"] * case["head_dim"] * item
    kv = 2 * _cache_positions(case) * case["kv_heads"] * case["head_dim"] * _kv_itemsize(case)
    table = 4 * sum(_pages(case)) if case["cache"] == "paged" else 0
    scales = 2 * 4 * case["kv_heads"] if _fp8(case) else 0
    return q_and_o + kv + 4 * case["batch"] + table + scales


def _torch_bytes(case: Case) -> int:
    """What the baseline's timed ops move, for each of K and V with E = batch × capacity × kv_heads ×
    head_dim elements (capacity = the contiguous buffer's context, or every table entry's page:
    ⌈context/page⌉·page) and s the cache's itemsize:

    * gather (paged): index_select reads the pool's pages once (Σ⌈len/page⌉ pages: table entries past a
      sequence all point at one page, read again from L2), its int32 index (the whole table), and
      writes E·s;
    * fp8 dequant: copy_ to q's dtype reads E and writes 2E; mul_ by the [kv_heads] fp32 scales reads
      2E and the scales, writes 2E;
    * SDPA (memory-efficient backend, the one that takes a mask) reads the E elements once;

    plus Q read, O written and the additive mask [batch, group·q_len, capacity] read once (its
    broadcast over kv heads served from L2). At batch ≥ 2 the lengths average ¾ of context, so reading
    the capacity alone is ≈ 1.33× the kernel's bytes.
    """
    item, kv_item = case.dtype.itemsize, _kv_itemsize(case)
    batch, kv_heads, head_dim, capacity = case["batch"], case["kv_heads"], case["head_dim"], _torch_capacity(case)
    elements = batch * capacity * kv_heads * head_dim
    per_cache = elements * item  # SDPA's read
    if case["cache"] == "paged":
        pool = sum(_pages(case)) * case["page_size"] * kv_heads * head_dim
        table = batch * triton.cdiv(case["context"], case["page_size"])
        per_cache += pool * kv_item + 4 * table + elements * kv_item
    if _fp8(case):
        per_cache += elements * (1 + item) + elements * 2 * item + 4 * kv_heads
    rows = case["heads"] // kv_heads * case["q_len"]
    mask = batch * rows * capacity * item
    q_and_o = 2 * batch * case["heads"] * case["q_len"] * head_dim * item
    return 2 * per_cache + mask + q_and_o


def _footprint(case: Case) -> int:
    """Resident bytes: the allocated caches (contiguous: full context per sequence), Q, O, the table, and
    the split workspace's bound (only splits when batch·kv_heads is below ~2 waves of 132 SMs)."""
    batch, heads, q_len, head_dim = case["batch"], case["heads"], case["q_len"], case["head_dim"]
    item = case.dtype.itemsize
    if case["cache"] == "contiguous":
        cache = 2 * batch * case["kv_heads"] * case["context"] * head_dim * _kv_itemsize(case)
    else:
        cache = 2 * sum(_pages(case)) * case["page_size"] * case["kv_heads"] * head_dim * _kv_itemsize(case)
        cache += 4 * batch * triton.cdiv(case["context"], case["page_size"])
    splits_possible = batch * case["kv_heads"] * _row_blocks(case) < 2 * H100_SM_COUNT  # plan_splits' rule, H100/H200
    workspace = batch * heads * q_len * MAX_SPLITS * (head_dim + 2) * 4 if splits_possible else 0
    return cache + 2 * batch * heads * q_len * head_dim * item + workspace


def _torch_footprint(case: Case) -> int:
    """The baseline adds its mask, the gathered copies (paged) and the dequantised copies (fp8)."""
    batch, capacity, item = case["batch"], _torch_capacity(case), case.dtype.itemsize
    elements = 2 * batch * case["kv_heads"] * capacity * case["head_dim"]
    extra = batch * case["heads"] * case["q_len"] * (triton.cdiv(capacity, 16) * 16) * item
    if case["cache"] == "paged":
        extra += elements * _kv_itemsize(case)
    if _fp8(case):
        extra += elements * item
    return _footprint(case) + extra


def _skip(case: Case, caps: DeviceCaps) -> str | None:
    if case["heads"] % case["kv_heads"]:
        return f"kv_heads {case['kv_heads']} does not divide heads {case['heads']}"
    if case["q_len"] > case["context"]:
        return f"q_len {case['q_len']} exceeds context {case['context']}"
    if case["cache"] == "contiguous" and case["page_size"] != ATTN_DECODE.axis("page_size").default:
        return "page_size applies to the paged cache only (contiguous runs at the default page_size)"
    return None


def _triton_skip(case: Case, caps: DeviceCaps) -> str | None:
    if _fp8(case) and caps.capability is not None and caps.capability < (8, 9):
        return "the Triton e4m3 conversion needs sm_89+"
    return interpreter_bf16_skip(case, caps)


ATTN_DECODE = KernelSpec(
    name="attn_decode",
    summary="KV-cache decode attention: ragged lengths, contiguous or paged cache, fp8 cache, GQA, split-KV",
    axes=(
        Axis("batch", int, 16, "sequences", minimum=1),
        Axis("heads", int, 32, "query heads", minimum=1),
        Axis("kv_heads", int, 8, "key/value heads (divides heads)", minimum=1),
        Axis("q_len", int, 1, f"new tokens per sequence, 1 … {MAX_Q_LEN}: speculative decoding (≤ 16), query "
             "chunks of chunked prefill over the cache (vLLM's unified attention: 64 … 129), causal within the chunk",
             minimum=1, maximum=MAX_Q_LEN),
        Axis("context", int, 4096, "longest sequence; lengths run evenly from context/2 to context", minimum=1),
        Axis("head_dim", int, 128, f"channels per head, any 1 … {MAX_HEAD_DIM} (tile padded to the next power of two "
             "≥ 16, padded channels masked)", minimum=1, maximum=MAX_HEAD_DIM),
        Axis("cache", str, "paged", "KV cache layout", choices=CACHES),
        Axis("page_size", int, 16, "tokens per page (paged cache only)", choices=PAGE_SIZES),
        Axis("kv_dtype", str, "auto", "cache element type: auto = q's dtype; fp8 = e4m3 with per-kv-head scales",
             choices=KV_DTYPES),
    ),
    dtypes=(DType.FP16, DType.BF16),
    impls=(
        Impl("triton", _build_triton, "Triton, one program per (sequence, kv head, split), GQA group as tile rows",
             skip=_triton_skip, candidates=_candidates),
        Impl("torch", _build_torch, "torch: [gather pages] + [fp8 → dtype] + SDPA over the capacity with a mask, "
             "all timed", bytes=_torch_bytes, footprint=_torch_footprint),
    ),
    make_inputs=_inputs,
    reference=_reference,
    flops=_flops,
    bytes=_bytes,
    # As attn_prefill: P rounded to fp16/bf16 before P·V, O rounded once; the split merge is fp32;
    # an fp8 cache's values are exact in fp16/bf16. Measured ~2.5e-4 for fp16 under the interpreter;
    # bf16 is 8× coarser. 4× headroom.
    tolerance={DType.FP16: 1e-3, DType.BF16: 8e-3},
    footprint=_footprint,
    skip=_skip,
    tags=("memory", "attention"),
)
