"""Spec of ``attn_mla`` (kernel and launcher: :mod:`kernels.attn_mla`): DeepSeek-V3's latent cache
(512 + 64 channels per token, one for all heads), paged, ragged lengths as ``attn_decode``'s.

Bytes are the latent cache read once (whole touched pages), q read and the 512-wide output written
once: the 128 heads share every cache byte. The ``torch`` baseline gathers the pages (timed) and runs
SDPA with the 128 heads folded into query rows over k = c, v = c[..., :512].
"""

from __future__ import annotations

import math

import torch
import triton

from kernels.attn_decode import _sm_count, check_lengths
from kernels.attn_split import MAX_SPLITS, DecodeWorkspace, _decode_merge_kernel, plan_splits
from kernels.attn_decode_spec import (
    H100_SM_COUNT,
    PAGE_SIZES,
    decode_lengths,
    decode_mask,
    paged_table,
    randn_cache,
    ragged_lengths,
)
from kernels.attn_mla import MAX_Q_LEN, _attn_mla_tuned, _check_mla, attn_mla, block_h, mla_reference
from kernels.attn_ref import pick_sdpa_backend
from kernels.linear import interpreter_bf16_skip
from kernels.models import DEEPSEEK_V3
from kernels.spaces import launch_spaces, meta
from kernels.spec import Axis, Case, DeviceCaps, DType, Impl, Inputs, KernelSpec, Launch, TuneSpace, poisoned, scaled_randn
from kernels.tuning import Limits, describe, device_limits

V_DIM = DEEPSEEK_V3.kv_lora_rank  # 512: the latent part, K and V
WIDTH = V_DIM + DEEPSEEK_V3.rope_dim  # 576: a cache row and a query row
SM_SCALE = 1.0 / math.sqrt(DEEPSEEK_V3.nope_dim + DEEPSEEK_V3.rope_dim)  # 1/√192, before YaRN's mscale


def _pages(case: Case) -> list[int]:
    return [triton.cdiv(n, case["page_size"]) for n in decode_lengths(case)]


def _inputs(case: Case, device: torch.device, gen: torch.Generator) -> Inputs:
    batch, heads, q_len, page_size = case["batch"], case["heads"], case["q_len"], case["page_size"]
    dtype = case.dtype.torch
    kv_lens = ragged_lengths(case, gen, device)
    q = scaled_randn((batch, heads, q_len, WIDTH), dtype=dtype, device=device, generator=gen)
    table = paged_table(kv_lens.tolist(), case["context"], page_size, gen, device)
    cache = randn_cache((sum(_pages(case)), page_size, WIDTH), dtype, device, gen)
    return {"q": q, "kv_cache": cache, "kv_lens": kv_lens, "block_table": table,
            "out": poisoned((batch, heads, q_len, V_DIM), dtype=dtype, device=device)}


def _reference(inputs: Inputs, case: Case) -> torch.Tensor:
    return mla_reference(inputs["q"], inputs["kv_cache"], inputs["kv_lens"], inputs["block_table"], V_DIM, SM_SCALE)


def _build_triton(inputs: Inputs, case: Case) -> Launch:
    q, cache, lens, table, out = (inputs[n] for n in ("q", "kv_cache", "kv_lens", "block_table", "out"))
    capacity = _check_mla(q, cache, lens, table, out, V_DIM)
    check_lengths(lens, table, case["q_len"], capacity, cache.shape[0], case["page_size"])  # once, untimed
    rows_per_program = block_h(case["heads"], case["q_len"], device_limits(q.device))
    row_blocks = triton.cdiv(case["heads"] * case["q_len"], rows_per_program)
    plan = plan_splits(case["batch"] * row_blocks, capacity, _sm_count(q.device))
    rows = case["batch"] * case["heads"] * case["q_len"]
    workspace = DecodeWorkspace.allocate(rows, plan.num_splits, V_DIM, q.device) if plan.num_splits > 1 else None
    variant = f"split-kv splits={plan.num_splits} chunk={plan.chunk}" if plan.num_splits > 1 else "one-pass"
    return Launch(
        run=lambda: attn_mla(q, cache, lens, table, v_dim=V_DIM, sm_scale=SM_SCALE, num_splits=plan.num_splits,
                             out=out, workspace=workspace, check_values=False),
        config=lambda: f"{variant} BLOCK_H={rows_per_program} "
                       f"{describe(_attn_mla_tuned.best_config)}",
        scratch=workspace.tensors if workspace else (),
    )


def _candidates(case: Case, limits: Limits) -> tuple[TuneSpace, ...]:
    """What a point launches on ``limits`` (kernels.spaces), from ``meta`` inputs of its layout."""
    batch, page_size, dtype = case["batch"], case["page_size"], case.dtype.torch
    q, lens = meta((batch, case["heads"], case["q_len"], WIDTH), dtype), meta(batch, torch.int32)
    cache = meta((sum(_pages(case)), page_size, WIDTH), dtype)
    table = meta((batch, triton.cdiv(case["context"], page_size)), torch.int32)
    launch = lambda: attn_mla(q, cache, lens, table, v_dim=V_DIM, sm_scale=SM_SCALE, check_values=False)  # noqa: E731
    return launch_spaces(launch, {"mla": _attn_mla_tuned, "merge": _decode_merge_kernel}, limits)


def _capacity(case: Case) -> int:
    return triton.cdiv(case["context"], case["page_size"]) * case["page_size"]


def _build_torch(inputs: Inputs, case: Case) -> Launch:
    """Timed: gather every table entry's page (one index_select) → SDPA over k = c, v = c[..., :512] with
    the heads folded into query rows ([batch, 1, heads·q_len, 576]) and the ragged-length mask."""
    import torch.nn.functional as F

    q, cache, lens, table = inputs["q"], inputs["kv_cache"], inputs["kv_lens"], inputs["block_table"]
    batch, heads, q_len, _ = q.shape
    capacity = _capacity(case)
    index = table.reshape(-1)
    gathered = torch.empty((index.numel(),) + cache.shape[1:], dtype=cache.dtype, device=cache.device)
    latent = gathered.view(batch, 1, capacity, WIDTH)
    folded = q.reshape(batch, 1, heads * q_len, WIDTH)
    mask = decode_mask(lens, q_len, heads, capacity, q.dtype)

    def call() -> torch.Tensor:
        torch.index_select(cache, 0, index, out=gathered)
        out = F.scaled_dot_product_attention(folded, latent, latent[..., :V_DIM], attn_mask=mask, scale=SM_SCALE)
        return out.view(batch, heads, q_len, V_DIM)

    run, backend = pick_sdpa_backend(call)
    return Launch(run=run, config=lambda: f"gather + sdpa {backend} over capacity {capacity}")


def _flops(case: Case) -> int:
    """2·576 (q·cᵀ) + 2·512 (p·c) per (head, query, visible key); query t of a length-L sequence sees
    L − q_len + 1 + t keys."""
    q_len = case["q_len"]
    pairs = sum(q_len * n - q_len * (q_len - 1) // 2 for n in decode_lengths(case))
    return 2 * (WIDTH + V_DIM) * case["heads"] * pairs


def _bytes(case: Case) -> int:
    """The latent cache once (whole touched pages, 576 channels), q in, the 512-wide output out,
    kv_lens and the table entries read."""
    item = case.dtype.itemsize
    rows = case["batch"] * case["heads"] * case["q_len"]
    cache = sum(_pages(case)) * case["page_size"] * WIDTH * item
    return cache + rows * (WIDTH + V_DIM) * item + 4 * case["batch"] + 4 * sum(_pages(case))


def _torch_bytes(case: Case) -> int:
    """The gather (index_select) reads the pool's pages once (Σ⌈len/page⌉ pages of 576 channels; table
    entries past a sequence all point at one page, read again from L2) and its int32 index (the whole
    table), and writes batch × capacity positions (capacity = ⌈context/page⌉·page); SDPA
    (memory-efficient backend) reads k (576 channels) and v (the first 512 again: a second view of the
    same rows) per position and the mask [batch, heads·q_len, capacity] once, reads q, writes the output."""
    item, batch, capacity = case.dtype.itemsize, case["batch"], _capacity(case)
    positions = batch * capacity
    rows = batch * case["heads"] * case["q_len"]
    pool = sum(_pages(case)) * case["page_size"]
    gather = pool * WIDTH * item + 4 * batch * triton.cdiv(case["context"], case["page_size"]) + positions * WIDTH * item
    sdpa = positions * (WIDTH + V_DIM) * item + rows * capacity * item + rows * (WIDTH + V_DIM) * item
    return gather + sdpa


def _footprint(case: Case) -> int:
    """The cache pages, the table, q, the output and the split workspace's bound (as attn_decode's)."""
    item, batch, rows = case.dtype.itemsize, case["batch"], case["batch"] * case["heads"] * case["q_len"]
    cache = sum(_pages(case)) * case["page_size"] * WIDTH * item + 4 * batch * triton.cdiv(case["context"],
                                                                                          case["page_size"])
    row_blocks = triton.cdiv(case["heads"] * case["q_len"], block_h(case["heads"], case["q_len"]))
    splits_possible = batch * row_blocks < 2 * H100_SM_COUNT
    workspace = rows * MAX_SPLITS * (V_DIM + 2) * 4 if splits_possible else 0
    return cache + rows * (WIDTH + V_DIM) * item + workspace


def _torch_footprint(case: Case) -> int:
    item, capacity = case.dtype.itemsize, _capacity(case)
    rows = case["batch"] * case["heads"] * case["q_len"]
    return _footprint(case) + case["batch"] * capacity * WIDTH * item + rows * (triton.cdiv(capacity, 16) * 16) * item


def _skip(case: Case, caps: DeviceCaps) -> str | None:
    if case["q_len"] > case["context"]:
        return f"q_len {case['q_len']} exceeds context {case['context']}"
    return None


ATTN_MLA = KernelSpec(
    name="attn_mla",
    summary="MLA decode (DeepSeek-V3/R1): all heads over one paged latent cache of 512 + 64 channels, split-KV",
    axes=(
        Axis("batch", int, 64, "sequences", minimum=1),
        Axis("heads", int, DEEPSEEK_V3.heads, "query heads (128; 16 per GPU at tensor parallel 8)", minimum=1),
        Axis("q_len", int, 1, "new tokens per sequence (multi-token prediction when > 1)",
             choices=tuple(range(1, MAX_Q_LEN + 1))),
        Axis("context", int, 4096, "longest sequence; lengths run evenly from context/2 to context", minimum=1),
        Axis("page_size", int, 64, "tokens per page (FlashMLA: 64)", choices=PAGE_SIZES),
    ),
    dtypes=(DType.FP16, DType.BF16),
    impls=(
        Impl("triton", _build_triton, "Triton, 64 (head, token) rows per program share each latent tile, split-KV",
             skip=interpreter_bf16_skip, candidates=_candidates),
        Impl("torch", _build_torch, "torch: gather pages + SDPA over the latent cache with a mask, both timed",
             bytes=_torch_bytes, footprint=_torch_footprint),
    ),
    make_inputs=_inputs,
    reference=_reference,
    flops=_flops,
    bytes=_bytes,
    # as attn_decode: P rounded to fp16/bf16 before P·V, O once; 576-long dots of O(1) terms in fp32
    tolerance={DType.FP16: 1e-3, DType.BF16: 8e-3},
    footprint=_footprint,
    skip=_skip,
    tags=("memory", "attention"),
)
