"""attn_decode: ragged contiguous/paged KV caches (any page size), GQA, q_len 1 … 256 (speculative
decoding; chunked prefill over a paged cache, as vLLM's unified attention), padded head dims, fp8 (e4m3)
caches with per-kv-head scales, one-pass and split-KV paths."""

from __future__ import annotations

import pytest
import torch
import triton

from kernels.attn_decode import MAX_Q_LEN, attn_decode, decode_reference
from kernels.attn_split import MAX_SPLITS, plan_splits
from kernels.attn_decode_spec import ATTN_DECODE, decode_lengths, head_sigmas
from kernels.check import check_point
from kernels.errors import UsageError
from kernels.spec import DeviceCaps, DType, generator_for, relative_error

FP16_TOL = ATTN_DECODE.tolerance[DType.FP16]


def _case(dtype="fp16", **values):
    return ATTN_DECODE.case(dtype, **values)


def _inputs(case, device, seed):
    return ATTN_DECODE.make_inputs(case, torch.device(device), generator_for(device, seed))


def _run(inputs, **kwargs):
    return attn_decode(inputs["q"], inputs["k_cache"], inputs["v_cache"], inputs["kv_lens"], inputs["block_table"],
                       k_scale=inputs["k_scale"], v_scale=inputs["v_scale"], **kwargs)


# ---------------------------------------------------------------------------------------------
# the gate: both layouts, odd contexts, GQA/MQA, speculative q_len, padded head dims, fp8 caches
# ---------------------------------------------------------------------------------------------

SHAPES = [  # batch, heads, kv_heads, q_len, context, head_dim
    (1, 2, 2, 1, 1, 16),
    (3, 4, 2, 1, 37, 40),
    (2, 4, 1, 3, 129, 16),
    (3, 2, 2, 8, 70, 59),
    (2, 8, 2, 4, 45, 16),  # group·q_len = 16: a full tile of real rows
    (2, 2, 1, 16, 50, 80),  # 16 draft tokens
]
LAYOUTS = [("contiguous", 16), ("paged", 16), ("paged", 1), ("paged", 64)]


@pytest.mark.parametrize("cache,page_size", LAYOUTS)
@pytest.mark.parametrize("batch,heads,kv_heads,q_len,context,head_dim", SHAPES)
def test_triton_matches_reference(cache, page_size, batch, heads, kv_heads, q_len, context, head_dim, device, seed):
    case = _case(batch=batch, heads=heads, kv_heads=kv_heads, q_len=q_len, context=context, head_dim=head_dim,
                 cache=cache, page_size=page_size)
    checked = check_point(ATTN_DECODE, "triton", case, device, seed)
    assert checked.ok, checked.message()
    assert checked.launch.config().split()[0] in ("one-pass", "split-kv")


# ---------------------------------------------------------------------------------------------
# query chunks past 16 tokens over a paged cache (vLLM's unified attention: chunked prefill runs
# 64 … 129-token chunks through the decode kernel family): query i of a chunk of q_len sees
# positions ≤ kv_len − q_len + i; (head, token) rows beyond one tile run in several row blocks
# ---------------------------------------------------------------------------------------------

CHUNKS = [  # batch, heads, kv_heads, q_len, context, page_size
    (2, 2, 2, 64, 97, 16),  # one 64-row tile per kv head
    (1, 4, 2, 128, 150, 16),  # GQA: 256 (head, token) rows, two row blocks
    (2, 2, 2, 129, 140, 8),  # vLLM's 129-token chunk: 128 rows and one more
    (2, 1, 1, 17, 40, 1),  # just past the old limit, one token per page
]


@pytest.mark.parametrize("batch,heads,kv_heads,q_len,context,page_size", CHUNKS)
def test_query_chunks_over_a_paged_cache_match_reference(batch, heads, kv_heads, q_len, context, page_size, device,
                                                          seed):
    case = _case(batch=batch, heads=heads, kv_heads=kv_heads, q_len=q_len, context=context, head_dim=40,
                 cache="paged", page_size=page_size)
    checked = check_point(ATTN_DECODE, "triton", case, device, seed)
    assert checked.ok, checked.message()


@pytest.mark.parametrize("cache", ["contiguous", "paged"])
def test_query_chunk_row_blocks_and_splits_agree(cache, device, seed):
    case = _case(batch=2, heads=4, kv_heads=1, q_len=64, context=90, head_dim=16, cache=cache)  # 256 rows
    inputs = _inputs(case, device, seed)
    expected = ATTN_DECODE.reference(inputs, case)
    for splits in (1, 2, 5):
        assert relative_error(_run(inputs, num_splits=splits), expected) < FP16_TOL, splits


def test_q_len_axis_takes_query_chunks_and_refuses_past_the_limit():
    assert MAX_Q_LEN >= 129
    for q_len in (17, 64, 128, 129, MAX_Q_LEN):
        assert _case(q_len=q_len, cache="paged")["q_len"] == q_len
    for q_len in (0, MAX_Q_LEN + 1):
        with pytest.raises(UsageError, match=f"q_len.*{MAX_Q_LEN}") as error:
            _case(q_len=q_len)
        assert "\n" not in str(error.value) and len(str(error.value)) < 200


@pytest.mark.parametrize("cache,page_size", [("contiguous", 16), ("paged", 16), ("paged", 256)])
@pytest.mark.parametrize("q_len,head_dim", [(1, 32), (3, 59)])
def test_fp8_cache_matches_reference(cache, page_size, q_len, head_dim, device, seed):
    case = _case(batch=3, heads=4, kv_heads=2, q_len=q_len, context=53, head_dim=head_dim, cache=cache,
                 page_size=page_size, kv_dtype="fp8")
    checked = check_point(ATTN_DECODE, "triton", case, device, seed)
    assert checked.ok, checked.message()
    assert checked.inputs["k_cache"].dtype == torch.float8_e4m3fn


@pytest.mark.parametrize("cache,kv_dtype", [("contiguous", "auto"), ("paged", "auto"), ("contiguous", "fp8"),
                                            ("paged", "fp8")])
def test_torch_baseline_matches_reference(cache, kv_dtype, device, seed):
    case = _case(batch=3, heads=4, kv_heads=2, q_len=2, context=37, head_dim=40, cache=cache, kv_dtype=kv_dtype)
    checked = check_point(ATTN_DECODE, "torch", case, device, seed)
    assert checked.ok, checked.message()
    config = checked.launch.config()
    assert "sdpa " in config and ("gather" in config) == (cache == "paged") and ("fp8" in config) == (kv_dtype == "fp8")


# ---------------------------------------------------------------------------------------------
# fp8 caches: the per-kv-head scales are applied, each to its own head
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("splits", [1, 3])
def test_fp8_scales_are_per_kv_head(splits, device, seed):
    """Each kv head's codes span ±448 at a different spread (σ 0.5, 1, 2): the kernel must undo exactly
    its own head's k_scale and v_scale — dropping either, or using one head's for all, is far off."""
    case = _case(batch=2, heads=6, kv_heads=3, q_len=2, context=41, head_dim=16, cache="paged", kv_dtype="fp8")
    inputs = _inputs(case, device, seed)
    assert torch.equal(inputs["k_scale"].cpu(), head_sigmas(3) * 8 / 448)
    inputs["v_scale"] = inputs["v_scale"] * torch.tensor([1.0, 3.0, 0.25], device=device)  # K and V scales differ
    expected = ATTN_DECODE.reference(inputs, case)
    assert relative_error(_run(inputs, num_splits=splits), expected) < FP16_TOL
    for name in ("k_scale", "v_scale"):  # the reference itself depends on each scale of each head
        other = dict(inputs, **{name: inputs[name][:1].expand(3).contiguous()})
        assert relative_error(ATTN_DECODE.reference(other, case), expected) > 0.05


def test_fp8_cache_needs_its_scales(device):
    case = _case(batch=2, heads=4, kv_heads=2, context=20, head_dim=16, cache="paged", kv_dtype="fp8")
    inputs = _inputs(case, device, 0)
    q, k, v, lens, table = (inputs[n] for n in ("q", "k_cache", "v_cache", "kv_lens", "block_table"))
    with pytest.raises(ValueError, match="fp8 .* needs k_scale and v_scale"):
        attn_decode(q, k, v, lens, table)
    with pytest.raises(ValueError, match=r"float32 \[2\] \(one per kv head\)"):
        attn_decode(q, k, v, lens, table, k_scale=inputs["k_scale"][:1], v_scale=inputs["v_scale"][:1])
    fp16 = _inputs(_case(batch=2, heads=4, kv_heads=2, context=20, head_dim=16), device, 0)
    with pytest.raises(ValueError, match="takes none"):
        _run(dict(fp16, k_scale=inputs["k_scale"], v_scale=inputs["v_scale"]))


# ---------------------------------------------------------------------------------------------
# split-KV, layouts agreeing, masking
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cache", ["contiguous", "paged"])
def test_split_and_one_pass_paths_agree(cache, device, seed):
    case = _case(batch=3, heads=4, kv_heads=2, q_len=3, context=100, head_dim=40, cache=cache)
    inputs = _inputs(case, device, seed)
    expected = ATTN_DECODE.reference(inputs, case)
    one_pass = _run(inputs, num_splits=1)
    assert relative_error(one_pass, expected) < FP16_TOL
    for splits in (2, 3, 7, 40):  # 40 splits of 3 positions: many start beyond the shorter sequences
        assert relative_error(_run(inputs, num_splits=splits), expected) < FP16_TOL, splits


def _page(contiguous: dict, page_size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The same sequences laid out in shuffled pages of a pool with spare pages."""
    k, v = contiguous["k_cache"], contiguous["v_cache"]
    batch, kv_heads, capacity, head_dim = k.shape
    per_seq = triton.cdiv(capacity, page_size)
    pool = batch * per_seq + 3
    order = torch.randperm(pool, generator=gen, device=gen.device).to(k.device)[:batch * per_seq]
    table = order.view(batch, per_seq).to(torch.int32)
    paged_k = torch.zeros((pool, page_size, kv_heads, head_dim), dtype=k.dtype, device=k.device)
    paged_v = torch.zeros_like(paged_k)
    padded = per_seq * page_size
    for b in range(batch):
        for cache, dense in ((paged_k, k), (paged_v, v)):
            rows = torch.zeros((padded, kv_heads, head_dim), dtype=k.dtype, device=k.device)
            rows[:capacity] = dense[b].transpose(0, 1)
            cache[table[b].long()] = rows.view(per_seq, page_size, kv_heads, head_dim)
    return paged_k, paged_v, table


@pytest.mark.parametrize("page_size", [1, 5, 16, 256])
@pytest.mark.parametrize("splits", [1, 3])
def test_paged_and_contiguous_give_the_same_answer(page_size, splits, device, seed):
    case = _case(batch=3, heads=4, kv_heads=2, q_len=2, context=83, head_dim=16, cache="contiguous")
    inputs = _inputs(case, device, seed)
    paged_k, paged_v, table = _page(inputs, page_size, generator_for(device, seed + 1))
    contiguous = _run(inputs, num_splits=splits)
    paged = attn_decode(inputs["q"], paged_k, paged_v, inputs["kv_lens"], table, num_splits=splits)
    # not bit-equal in general: the capacities (83 vs whole pages) move the split boundaries, and the
    # autotuner may pick another BLOCK_N per layout
    assert relative_error(paged, contiguous) < FP16_TOL


@pytest.mark.parametrize("cache,page_size", LAYOUTS)
@pytest.mark.parametrize("splits", [1, 4])
def test_nothing_past_a_sequence_is_read(cache, page_size, splits, device, seed):
    """Cache slots past each length (the tail of a partly filled last page, or of the contiguous
    buffer) hold NaN: reading any of them would poison the output."""
    case = _case(batch=3, heads=2, kv_heads=1, q_len=2, context=77, head_dim=16, cache=cache, page_size=page_size)
    inputs = _inputs(case, device, seed)
    expected = ATTN_DECODE.reference(inputs, case)
    for b, length in enumerate(inputs["kv_lens"].tolist()):
        for name in ("k_cache", "v_cache"):
            if cache == "contiguous":
                inputs[name][b, :, length:] = float("nan")
            else:
                last = triton.cdiv(length, page_size) - 1
                inputs[name][inputs["block_table"][b, last].long(), length - last * page_size:] = float("nan")
    assert relative_error(_run(inputs, num_splits=splits), expected) < FP16_TOL


@pytest.mark.parametrize("head_dim", [40, 59, 72, 120])
@pytest.mark.parametrize("splits", [1, 3])
def test_padded_channels_are_never_read_or_written(head_dim, splits, device, seed):
    """q, caches and out are views into rows of the padded tile width whose extra channels hold NaN."""
    case = _case(batch=2, heads=4, kv_heads=2, q_len=2, context=45, head_dim=head_dim, cache="paged")
    inputs = _inputs(case, device, seed)
    width = triton.next_power_of_2(head_dim)
    wide = {}
    for name in ("q", "k_cache", "v_cache", "out"):
        t = inputs[name]
        wide[name] = torch.full(t.shape[:-1] + (width,), float("nan"), dtype=t.dtype, device=device)
        wide[name][..., :head_dim] = t
        inputs[name] = wide[name][..., :head_dim]
    expected = ATTN_DECODE.reference(inputs, case)
    _run(inputs, num_splits=splits, out=inputs["out"])
    assert relative_error(inputs["out"], expected) < FP16_TOL
    assert torch.isnan(wide["out"][..., head_dim:]).all()


@pytest.mark.parametrize("cache", ["contiguous", "paged"])
@pytest.mark.parametrize("q_len,heads", [(4, 2), (70, 4)])  # 70 tokens × 4 heads: 280 rows, three row blocks
def test_new_tokens_are_causal_among_themselves(cache, q_len, heads, device):
    """q = 0 gives uniform weights, so token t must average v over positions < len − q_len + 1 + t."""
    context = 100 if q_len > 4 else 50
    case = _case(batch=2, heads=heads, kv_heads=1, q_len=q_len, context=context, head_dim=16, cache=cache)
    inputs = _inputs(case, device, 0)
    inputs["q"].zero_()
    positions = torch.arange(context, device=device, dtype=torch.float32) / 64  # exact in fp16
    if cache == "contiguous":
        inputs["v_cache"].copy_(positions[None, None, :, None].expand_as(inputs["v_cache"]))
    else:
        for b, length in enumerate(inputs["kv_lens"].tolist()):
            for p in range(length):  # table entries past a sequence's pages are 0: never write through them
                page = inputs["block_table"][b, p // 16].long()
                inputs["v_cache"][page, p % 16] = positions[p]
    out = _run(inputs, num_splits=2)
    for b, length in enumerate(inputs["kv_lens"].tolist()):
        for t in range(q_len):
            visible = length - q_len + 1 + t
            expected = (visible - 1) / 2 / 64
            assert torch.allclose(out[b, :, t].float(), torch.full_like(out[b, :, t], expected).float(), atol=1e-3)


def test_lengths_are_ragged_deterministic_and_permuted(device):
    case = _case(batch=3, context=9, q_len=1)
    assert decode_lengths(case) == [9, 7, 5]
    assert decode_lengths(_case(batch=1, context=9)) == [9]
    assert decode_lengths(_case(batch=2, context=3, q_len=3)) == [3, 3]  # never below q_len
    lens = [sorted(_inputs(_case(batch=5, context=40, cache="contiguous"), device, s)["kv_lens"].tolist())
            for s in (1, 2)]
    assert lens[0] == lens[1] == sorted(decode_lengths(_case(batch=5, context=40)))


# ---------------------------------------------------------------------------------------------
# split planning, launcher errors, cost model, skips
# ---------------------------------------------------------------------------------------------


def test_plan_splits():
    assert plan_splits(programs=512, capacity=4096, sm_count=132).num_splits == 1
    plan = plan_splits(programs=4, capacity=131072, sm_count=132)
    assert plan.num_splits == MAX_SPLITS and plan.chunk % 128 == 0 and plan.num_splits * plan.chunk >= 131072
    assert plan_splits(programs=4, capacity=300, sm_count=132).num_splits == 1  # too short to be worth it
    forced = plan_splits(programs=512, capacity=100, sm_count=132, num_splits=3)
    assert (forced.num_splits, forced.chunk) == (3, 34)
    with pytest.raises(ValueError, match="num_splits"):
        plan_splits(programs=1, capacity=100, sm_count=132, num_splits=MAX_SPLITS + 1)


def _small(device, cache="paged", **values):
    base = dict(batch=2, heads=4, kv_heads=2, q_len=1, context=20, head_dim=16, cache=cache)
    return _inputs(_case(**{**base, **values}), device, 0)


def test_launcher_errors(device):
    inputs = _small(device)
    q, k, v, lens, table = (inputs[n] for n in ("q", "k_cache", "v_cache", "kv_lens", "block_table"))
    with pytest.raises(ValueError, match="kv_heads 3 must divide heads 4"):
        attn_decode(q, k[:, :, :1].expand(-1, -1, 3, -1), v[:, :, :1].expand(-1, -1, 3, -1), lens, table)
    with pytest.raises(ValueError, match="head_dim 300 is not supported; valid: 1 … 256"):
        big = torch.zeros(k.shape[:3] + (300,), dtype=k.dtype, device=device)
        attn_decode(torch.zeros(q.shape[:3] + (300,), dtype=q.dtype, device=device), big, big, lens, table)
    with pytest.raises(ValueError, match="block table too short"):
        attn_decode(q, k, v, lens, table[:, :1])
    with pytest.raises(ValueError, match="block_table must be int32"):
        attn_decode(q, k, v, lens, table[:1])
    with pytest.raises(ValueError, match="block_table points outside"):
        attn_decode(q, k, v, lens, table + k.shape[0])
    with pytest.raises(ValueError, match="kv_lens must be int32"):
        attn_decode(q, k, v, lens.long(), table)
    with pytest.raises(ValueError, match="must be ≥ q_len"):
        attn_decode(q.repeat(1, 1, 3, 1), k, v, torch.ones_like(lens), table)
    with pytest.raises(ValueError, match=f"q_len {MAX_Q_LEN + 1} must be in \\[1, {MAX_Q_LEN}\\]"):
        attn_decode(q.repeat(1, 1, MAX_Q_LEN + 1, 1), k, v, lens, table)
    with pytest.raises(ValueError, match="num_splits 0"):
        attn_decode(q, k, v, lens, table, num_splits=0)
    with pytest.raises(ValueError, match="float8_e4m3fn"):
        attn_decode(q, k.float(), v.float(), lens, table)
    contiguous = _small(device, cache="contiguous")
    with pytest.raises(ValueError, match="cache too short"):
        attn_decode(contiguous["q"], contiguous["k_cache"][:, :, :5], contiguous["v_cache"][:, :, :5],
                    contiguous["kv_lens"])


def test_flops_and_bytes_by_hand():
    values = dict(batch=2, heads=4, kv_heads=2, q_len=2, context=10, head_dim=16, page_size=16)
    contiguous, paged = _case(cache="contiguous", **values), _case(cache="paged", **values)
    # lengths 10 and 5; two new tokens see L−1 and L keys: 19 + 9 = 28 (query, key) pairs per head
    assert ATTN_DECODE.flops(contiguous) == ATTN_DECODE.flops(paged) == 4 * 4 * 16 * 28
    q_and_o = 2 * 2 * 4 * 2 * 16 * 2
    assert ATTN_DECODE.bytes(contiguous) == q_and_o + 2 * 15 * 2 * 16 * 2 + 2 * 4
    # one 16-token page per sequence, and one table entry each
    assert ATTN_DECODE.bytes(paged) == q_and_o + 2 * 32 * 2 * 16 * 2 + 2 * 4 + 2 * 4
    # fp8: one byte per cached value, plus the fp32 k and v scales of each kv head
    fp8 = _case(cache="paged", kv_dtype="fp8", **values)
    assert ATTN_DECODE.bytes(fp8) == q_and_o + 2 * 32 * 2 * 16 * 1 + 2 * 4 + 2 * 4 + 2 * 2 * 4
    # head_dim 40 counts 40 channels, not the 64 of its tile
    odd = _case(cache="contiguous", **{**values, "head_dim": 40})
    assert ATTN_DECODE.bytes(odd) == (2 * 2 * 4 * 2 + 2 * 15 * 2) * 40 * 2 + 2 * 4


def test_torch_bytes_by_hand():
    """The baseline reads the whole capacity (and more when it gathers or dequantises)."""
    torch_impl = ATTN_DECODE.impl("torch")
    values = dict(batch=2, heads=4, kv_heads=2, q_len=2, context=10, head_dim=16, page_size=16)
    q_and_o, mask = 2 * 2 * 4 * 2 * 16 * 2, 2 * 4 * 10 * 2  # mask: batch × (group·q_len = 4) rows × capacity
    contiguous = _case(cache="contiguous", **values)
    assert ATTN_DECODE.bytes_for(contiguous, torch_impl) == 2 * 2 * 10 * 2 * 16 * 2 + mask + q_and_o
    # paged: capacity is one 16-slot page per sequence (= the pool here); each cache's gather reads the
    # pool and the 2-entry table, writes the copy; SDPA reads the copy
    paged = _case(cache="paged", **values)
    elements, mask16, tables = 2 * 2 * 16 * 2 * 16, 2 * 4 * 16 * 2, 2 * (2 * 4)
    assert ATTN_DECODE.bytes_for(paged, torch_impl) == elements * (2 + 2 + 2) + tables + mask16 + q_and_o
    # fp8 paged: gather 1 + 1 B, copy_ to fp16 1 + 2 B, mul_ 2 + 2 B (and the 2 fp32 scales), SDPA 2 B
    fp8 = _case(cache="paged", kv_dtype="fp8", **values)
    scales = 2 * (2 * 4)
    assert ATTN_DECODE.bytes_for(fp8, torch_impl) == elements * (2 + 3 + 4 + 2) + tables + scales + mask16 + q_and_o
    # at batch ≥ 2 the lengths average ¾ of the context: the capacity is ≈ 1.33× the valid positions
    big = _case(batch=16, heads=32, kv_heads=8, context=4096, cache="contiguous")
    ratio = ATTN_DECODE.bytes_for(big, torch_impl) / ATTN_DECODE.bytes(big)
    assert 1.33 < ratio < 1.40


CAPS = DeviceCaps("test", (9, 0), False, 50 << 20, 132, 80 * 10**9)
INTERPRETER = DeviceCaps("interpreter", None, True, 0, 1, 0)


def test_skip_rules():
    triton_impl, torch_impl = ATTN_DECODE.impl("triton"), ATTN_DECODE.impl("torch")
    assert "divide" in ATTN_DECODE.skip_reason(_case(heads=4, kv_heads=3), triton_impl, CAPS)
    assert "exceeds context" in ATTN_DECODE.skip_reason(_case(q_len=4, context=2), triton_impl, CAPS)
    assert ATTN_DECODE.skip_reason(_case(batch=16, context=32768), triton_impl, CAPS) is None
    assert "paged cache only" in ATTN_DECODE.skip_reason(_case(cache="contiguous", page_size=64), triton_impl, CAPS)
    # (head, token) rows past one tile run in several row blocks: nothing to skip
    assert ATTN_DECODE.skip_reason(_case(heads=64, kv_heads=4, q_len=16), triton_impl, CAPS) is None
    assert ATTN_DECODE.skip_reason(_case(heads=32, kv_heads=8, q_len=128, context=4096), triton_impl, CAPS) is None
    assert "interpreter" in ATTN_DECODE.skip_reason(_case("bf16"), triton_impl, INTERPRETER)
    assert ATTN_DECODE.skip_reason(_case("bf16"), torch_impl, INTERPRETER) is None
    ampere = DeviceCaps("A100", (8, 0), False, 40 << 20, 108, 80 * 10**9)
    assert "sm_89" in ATTN_DECODE.skip_reason(_case(kv_dtype="fp8"), triton_impl, ampere)
    # the sweep skips by footprint (over 85% of memory): the baseline's includes its gathered copy
    huge = _case("bf16", batch=256, kv_heads=32, context=131072, cache="contiguous")
    assert ATTN_DECODE.footprint_bytes(huge, triton_impl) > 0.85 * CAPS.memory_bytes
    # ~52 GB of pages fit for Triton, not beside the baseline's 69 GB gathered contiguous copy
    paged = _case("bf16", batch=32, kv_heads=32, context=131072, cache="paged")
    assert ATTN_DECODE.footprint_bytes(paged, triton_impl) < 0.85 * CAPS.memory_bytes
    assert ATTN_DECODE.footprint_bytes(paged, torch_impl) > 0.85 * CAPS.memory_bytes


# ---------------------------------------------------------------------------------------------
# GPU only: bf16 (tl.dot on bf16 is wrong under the interpreter), e4m3 at realistic sizes
# ---------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("impl", ["triton", "torch"])
@pytest.mark.parametrize("cache", ["contiguous", "paged"])
@pytest.mark.parametrize("kv_dtype", ["auto", "fp8"])
@pytest.mark.parametrize("batch,kv_heads,q_len,context,head_dim", [
    (1, 8, 1, 32768, 128),  # split-KV by the heuristic
    (4, 4, 4, 4096, 96),
    (64, 8, 1, 4096, 128),  # one pass: 512 programs fill the GPU
    (7, 32, 1, 3001, 80),
    (3, 8, 16, 5003, 128),
    (2, 8, 129, 4099, 120),  # a vLLM query chunk (5 row blocks of 128) at one of its head sizes
])
def test_gpu_realistic(dtype, impl, cache, kv_dtype, batch, kv_heads, q_len, context, head_dim, seed):
    case = _case(dtype, batch=batch, heads=32, kv_heads=kv_heads, q_len=q_len, context=context, head_dim=head_dim,
                 cache=cache, kv_dtype=kv_dtype)
    checked = check_point(ATTN_DECODE, impl, case, "cuda", seed)
    assert checked.ok, f"{checked.message()} ({checked.launch.config()})"


@pytest.mark.gpu
@pytest.mark.parametrize("page_size", [1, 32, 256])
@pytest.mark.parametrize("splits", [1, 5, MAX_SPLITS])
@pytest.mark.parametrize("kv_dtype", ["auto", "fp8"])
def test_gpu_forced_splits_bf16(page_size, splits, kv_dtype, seed):
    case = _case("bf16", batch=3, heads=32, kv_heads=8, q_len=2, context=5000, head_dim=128, cache="paged",
                 page_size=page_size, kv_dtype=kv_dtype)
    inputs = _inputs(case, "cuda", seed)
    expected = decode_reference(*(inputs[n] for n in ("q", "k_cache", "v_cache", "kv_lens", "block_table",
                                                      "k_scale", "v_scale")))
    assert relative_error(_run(inputs, num_splits=splits), expected) < ATTN_DECODE.tolerance[DType.BF16]
