"""attn_decode: ragged contiguous/paged KV caches, GQA, q_len > 1, one-pass and split-KV paths."""

from __future__ import annotations

import pytest
import torch
import triton

from kernels.attn_decode import (
    ATTN_DECODE,
    MAX_SPLITS,
    attn_decode,
    decode_lengths,
    decode_reference,
    plan_splits,
)
from kernels.check import check_point
from kernels.spec import DeviceCaps, DType, generator_for, relative_error

FP16_TOL = ATTN_DECODE.tolerance[DType.FP16]


def _case(dtype="fp16", **values):
    return ATTN_DECODE.case(dtype, **values)


def _inputs(case, device, seed):
    return ATTN_DECODE.make_inputs(case, torch.device(device), generator_for(device, seed))


def _run(inputs, **kwargs):
    return attn_decode(inputs["q"], inputs["k_cache"], inputs["v_cache"], inputs["kv_lens"], inputs["block_table"],
                       **kwargs)


# ---------------------------------------------------------------------------------------------
# the gate: both layouts, odd contexts, GQA/MQA, speculative q_len
# ---------------------------------------------------------------------------------------------

SHAPES = [  # batch, heads, kv_heads, q_len, context, head_dim
    (1, 2, 2, 1, 1, 16),
    (3, 4, 2, 1, 37, 32),
    (2, 4, 1, 3, 129, 16),
    (3, 2, 2, 8, 70, 64),
    (2, 8, 2, 4, 45, 16),  # group·q_len = 16: a full tile of real rows
]
LAYOUTS = [("contiguous", 16), ("paged", 16), ("paged", 64)]


@pytest.mark.parametrize("cache,page_size", LAYOUTS)
@pytest.mark.parametrize("batch,heads,kv_heads,q_len,context,head_dim", SHAPES)
def test_triton_matches_reference(cache, page_size, batch, heads, kv_heads, q_len, context, head_dim, device, seed):
    case = _case(batch=batch, heads=heads, kv_heads=kv_heads, q_len=q_len, context=context, head_dim=head_dim,
                 cache=cache, page_size=page_size)
    checked = check_point(ATTN_DECODE, "triton", case, device, seed)
    assert checked.ok, checked.message()
    assert checked.launch.config().split()[0] in ("one-pass", "split-kv")


@pytest.mark.parametrize("cache", ["contiguous", "paged"])
def test_torch_baseline_matches_reference(cache, device, seed):
    case = _case(batch=3, heads=4, kv_heads=2, q_len=2, context=37, head_dim=32, cache=cache)
    checked = check_point(ATTN_DECODE, "torch", case, device, seed)
    assert checked.ok, checked.message()
    assert checked.launch.config().startswith("sdpa ")


# ---------------------------------------------------------------------------------------------
# split-KV, layouts agreeing, masking
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cache", ["contiguous", "paged"])
def test_split_and_one_pass_paths_agree(cache, device, seed):
    case = _case(batch=3, heads=4, kv_heads=2, q_len=3, context=100, head_dim=16, cache=cache)
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


@pytest.mark.parametrize("page_size", [16, 64, 5])
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


@pytest.mark.parametrize("cache", ["contiguous", "paged"])
def test_new_tokens_are_causal_among_themselves(cache, device):
    """q = 0 gives uniform weights, so token t must average v over positions < len − q_len + 1 + t."""
    q_len, context = 4, 50
    case = _case(batch=2, heads=2, kv_heads=1, q_len=q_len, context=context, head_dim=16, cache=cache)
    inputs = _inputs(case, device, 0)
    inputs["q"].zero_()
    positions = torch.arange(context, device=device, dtype=torch.float32) / 64  # exact in fp16
    if cache == "contiguous":
        inputs["v_cache"].copy_(positions[None, None, :, None].expand_as(inputs["v_cache"]))
    else:
        for b in range(2):
            for p in range(context):
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
    with pytest.raises(ValueError, match="head_dim 48 is not supported"):
        big = torch.zeros(k.shape[:3] + (48,), dtype=k.dtype, device=device)
        attn_decode(torch.zeros(q.shape[:3] + (48,), dtype=q.dtype, device=device), big, big, lens, table)
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
    with pytest.raises(ValueError, match="q_len 17"):
        attn_decode(q.repeat(1, 1, 17, 1), k, v, lens, table)
    with pytest.raises(ValueError, match="num_splits 0"):
        attn_decode(q, k, v, lens, table, num_splits=0)
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


CAPS = DeviceCaps("test", (9, 0), False, 50 << 20, 132, 80 * 10**9)


def test_skip_rules():
    triton_impl, torch_impl = ATTN_DECODE.impl("triton"), ATTN_DECODE.impl("torch")
    assert "divide" in ATTN_DECODE.skip_reason(_case(heads=4, kv_heads=3), triton_impl, CAPS)
    assert "exceeds context" in ATTN_DECODE.skip_reason(_case(q_len=4, context=2), triton_impl, CAPS)
    assert ATTN_DECODE.skip_reason(_case(batch=16, context=32768), triton_impl, CAPS) is None
    # the sweep skips by footprint (over 85% of memory): the baseline's includes its gathered copy
    huge = _case("bf16", batch=256, kv_heads=32, context=131072, cache="contiguous")
    assert ATTN_DECODE.footprint_bytes(huge, triton_impl) > 0.85 * CAPS.memory_bytes
    # ~52 GB of pages fit for Triton, not beside the baseline's 69 GB gathered contiguous copy
    paged = _case("bf16", batch=32, kv_heads=32, context=131072, cache="paged")
    assert ATTN_DECODE.footprint_bytes(paged, triton_impl) < 0.85 * CAPS.memory_bytes
    assert ATTN_DECODE.footprint_bytes(paged, torch_impl) > 0.85 * CAPS.memory_bytes


# ---------------------------------------------------------------------------------------------
# GPU only: bf16 (tl.dot on bf16 is wrong under the interpreter) and realistic sizes
# ---------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("impl", ["triton", "torch"])
@pytest.mark.parametrize("cache", ["contiguous", "paged"])
@pytest.mark.parametrize("batch,kv_heads,q_len,context", [
    (1, 8, 1, 32768),  # split-KV by the heuristic
    (4, 4, 4, 4096),
    (64, 8, 1, 4096),  # one pass: 512 programs fill the GPU
    (7, 32, 1, 3001),
])
def test_gpu_realistic(dtype, impl, cache, batch, kv_heads, q_len, context, seed):
    case = _case(dtype, batch=batch, heads=32, kv_heads=kv_heads, q_len=q_len, context=context, head_dim=128,
                 cache=cache)
    checked = check_point(ATTN_DECODE, impl, case, "cuda", seed)
    assert checked.ok, f"{checked.message()} ({checked.launch.config()})"


@pytest.mark.gpu
@pytest.mark.parametrize("splits", [1, 5, MAX_SPLITS])
def test_gpu_forced_splits_bf16(splits, seed):
    case = _case("bf16", batch=3, heads=32, kv_heads=8, q_len=2, context=5000, head_dim=128, cache="paged")
    inputs = _inputs(case, "cuda", seed)
    expected = decode_reference(inputs["q"], inputs["k_cache"], inputs["v_cache"], inputs["kv_lens"],
                                inputs["block_table"])
    assert relative_error(_run(inputs, num_splits=splits), expected) < ATTN_DECODE.tolerance[DType.BF16]
