"""attn_mla: DeepSeek-V3 MLA decode over a paged latent cache, against the shared reference's latent form."""

from __future__ import annotations

import math

import pytest
import torch
import triton

from kernels.attn_decode_spec import decode_lengths
from kernels.attn_mla import attn_mla, block_h, mla_reference
from kernels.attn_mla_spec import ATTN_MLA, SM_SCALE, V_DIM, WIDTH
from kernels.attn_ref import CausalAlign, attention_reference
from kernels.check import check_point
from kernels.spec import DeviceCaps, DType, generator_for, relative_error, scaled_randn

FP16_TOL = ATTN_MLA.tolerance[DType.FP16]


def _case(dtype="fp16", **values):
    return ATTN_MLA.case(dtype, **values)


def _small(batch, heads, q_len, lengths, page_size, v_dim, rope_dim, device, seed):
    """q, a paged latent cache of small dims, kv_lens and a shuffled block table."""
    gen = generator_for(device, seed)
    width = v_dim + rope_dim
    pages = [triton.cdiv(n, page_size) for n in lengths]
    pool = sum(pages) + 2
    order = torch.randperm(pool, generator=gen, device=gen.device).to(device)
    table = torch.zeros((batch, max(pages)), dtype=torch.int32, device=device)
    first = 0
    for b, n in enumerate(pages):
        table[b, :n] = order[first:first + n]
        first += n
    q = scaled_randn((batch, heads, q_len, width), dtype=torch.float16, device=device, generator=gen)
    cache = scaled_randn((pool, page_size, width), dtype=torch.float16, device=device, generator=gen)
    return q, cache, torch.tensor(lengths, dtype=torch.int32, device=device), table


# ---------------------------------------------------------------------------------------------
# the reference's latent form
# ---------------------------------------------------------------------------------------------


def test_latent_reference_is_attention_with_k_c_and_v_c512(seed):
    """Each head attends over k = c and v = c[..., :v_dim]: SDPA with the latent repeated per head agrees."""
    import torch.nn.functional as F

    q, cache, lens, table = _small(2, 3, 2, [9, 6], 4, 16, 16, "cpu", seed)
    q, cache = q.float(), cache.float()
    out = mla_reference(q, cache, lens, table, 16, 0.3)
    for b, length in enumerate(lens.tolist()):
        rows = cache[table[b].long()].flatten(0, 1)[:length]  # [length, 32]
        k = rows[None, None].expand(1, 3, length, 32)
        mask = torch.arange(length)[None, :] <= torch.arange(2)[:, None] + length - 2
        expected = F.scaled_dot_product_attention(q[b:b + 1], k, k[..., :16], attn_mask=mask, scale=0.3)
        assert relative_error(out[b:b + 1], expected) < 1e-5


def test_reference_alignment_is_bottom_right():
    """One query over 3 keys sees all 3 (bottom-right), not only key 0 (top-left)."""
    q = torch.zeros(1, 1, 1, 4)
    k = torch.zeros(1, 1, 3, 4)
    v = torch.arange(3.0)[None, None, :, None].expand(1, 1, 3, 4)
    out = attention_reference(q, k, v, causal=True, align=CausalAlign.BOTTOM_RIGHT)
    assert torch.allclose(out, torch.ones(1, 1, 1, 4))


# ---------------------------------------------------------------------------------------------
# the kernel through the gate (the real 512 + 64 dims, small batch and heads)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch,heads,q_len,context,page_size", [
    (2, 4, 1, 37, 16),
    (3, 4, 2, 70, 64),
    (1, 16, 1, 45, 1),
    (2, 2, 3, 29, 256),
])
def test_triton_matches_reference(batch, heads, q_len, context, page_size, device, seed):
    case = _case(batch=batch, heads=heads, q_len=q_len, context=context, page_size=page_size)
    checked = check_point(ATTN_MLA, "triton", case, device, seed)
    assert checked.ok, checked.message()
    assert "BLOCK_H=16" in checked.launch.config()


def test_torch_baseline_matches_reference(device, seed):
    checked = check_point(ATTN_MLA, "torch", _case(batch=2, heads=4, q_len=2, context=37, page_size=16), device, seed)
    assert checked.ok, checked.message()
    assert checked.launch.config().startswith("gather + sdpa")


# ---------------------------------------------------------------------------------------------
# the launcher at small dims: splits, row blocks, masking
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("heads,q_len", [(4, 3), (40, 2)])  # 40·2 = 80 rows: two row blocks of 64
@pytest.mark.parametrize("splits", [1, 3, 7])
def test_splits_and_row_blocks_agree_with_the_reference(heads, q_len, splits, device, seed):
    lengths = [61, 30, 45]
    q, cache, lens, table = _small(3, heads, q_len, lengths, 16, 64, 16, device, seed)
    expected = mla_reference(q, cache, lens, table, 64, 0.2)
    out = attn_mla(q, cache, lens, table, v_dim=64, sm_scale=0.2, num_splits=splits)
    assert out.shape == (3, heads, q_len, 64)
    assert relative_error(out, expected) < FP16_TOL
    assert block_h(heads, q_len) == (16 if heads * q_len <= 16 else 64)


def test_default_scale_is_one_over_root_width(device, seed):
    q, cache, lens, table = _small(2, 4, 1, [20, 13], 8, 32, 16, device, seed)
    expected = mla_reference(q, cache, lens, table, 32, 1 / math.sqrt(48))
    assert relative_error(attn_mla(q, cache, lens, table, v_dim=32), expected) < FP16_TOL


@pytest.mark.parametrize("splits", [1, 4])
def test_nothing_past_a_sequence_is_read(splits, device, seed):
    lengths = [37, 21]
    q, cache, lens, table = _small(2, 4, 2, lengths, 16, 32, 16, device, seed)
    expected = mla_reference(q, cache, lens, table, 32, 0.25)
    for b, length in enumerate(lengths):
        last = triton.cdiv(length, 16) - 1
        cache[table[b, last].long(), length - last * 16:] = float("nan")
    assert relative_error(attn_mla(q, cache, lens, table, v_dim=32, sm_scale=0.25, num_splits=splits),
                          expected) < FP16_TOL


def test_new_tokens_are_causal_among_themselves(device):
    """q = 0: uniform weights, so token t averages channel values over positions < len − q_len + 1 + t."""
    q_len, lengths = 3, [20, 11]
    q, cache, lens, table = _small(2, 2, q_len, lengths, 4, 16, 16, device, 0)
    q.zero_()
    for b, length in enumerate(lengths):
        for p in range(length):
            cache[table[b, p // 4].long(), p % 4] = p / 64
    out = attn_mla(q, cache, lens, table, v_dim=16, num_splits=2)
    for b, length in enumerate(lengths):
        for t in range(q_len):
            expected = (length - q_len + t) / 2 / 64
            assert torch.allclose(out[b, :, t].float(), torch.full((2, 16), expected, device=device), atol=1e-3)


def test_launcher_errors(device):
    q, cache, lens, table = _small(2, 4, 1, [20, 13], 8, 32, 16, device, 0)
    with pytest.raises(ValueError, match="powers of two"):
        attn_mla(q, cache, lens, table, v_dim=24)
    with pytest.raises(ValueError, match="needs a block_table"):
        attn_mla(q, cache, lens, None, v_dim=32)
    with pytest.raises(ValueError, match="q_len 17"):
        attn_mla(q.repeat(1, 1, 17, 1), cache, lens, table, v_dim=32)
    with pytest.raises(ValueError, match="block table too short"):
        attn_mla(q, cache, lens, table[:, :1], v_dim=32)
    with pytest.raises(ValueError, match="out must be"):
        attn_mla(q, cache, lens, table, v_dim=32, out=torch.empty_like(q))


# ---------------------------------------------------------------------------------------------
# cost model and skips
# ---------------------------------------------------------------------------------------------


def test_flops_and_bytes_by_hand():
    case = _case(batch=2, heads=4, q_len=2, context=10, page_size=16)
    assert decode_lengths(case) == [10, 5]
    # two new tokens see L−1 and L keys: 19 + 9 = 28 pairs per head; 2·576 + 2·512 FLOPs each
    assert ATTN_MLA.flops(case) == 2 * (576 + 512) * 4 * 28
    rows = 2 * 4 * 2
    # the latent cache once (one 16-slot page per sequence, 576 channels), q in, 512-wide out, lens, table
    assert ATTN_MLA.bytes(case) == 2 * 16 * 576 * 2 + rows * (576 + 512) * 2 + 2 * 4 + 2 * 4
    # torch: gather reads and writes the pages, SDPA reads k (576) and v (512) and the mask
    capacity = 16
    expected = 2 * 2 * capacity * 576 * 2 + 2 * capacity * (576 + 512) * 2 + rows * capacity * 2
    expected += rows * (576 + 512) * 2 + 2 * 4
    assert ATTN_MLA.bytes_for(case, ATTN_MLA.impl("torch")) == expected
    assert (WIDTH, V_DIM, SM_SCALE) == (576, 512, 1 / math.sqrt(192))


def test_skip_rules():
    interpreter = DeviceCaps("interpreter", None, True, 0, 1, 0)
    assert "interpreter" in ATTN_MLA.skip_reason(_case("bf16"), ATTN_MLA.impl("triton"), interpreter)
    assert ATTN_MLA.skip_reason(_case("bf16"), ATTN_MLA.impl("torch"), interpreter) is None
    assert "exceeds context" in ATTN_MLA.skip_reason(_case(q_len=4, context=3), ATTN_MLA.impl("triton"), interpreter)


# ---------------------------------------------------------------------------------------------
# GPU only: bf16, 128 heads, long contexts
# ---------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("impl", ["triton", "torch"])
@pytest.mark.parametrize("batch,heads,q_len,context,page_size", [
    (1, 128, 1, 32771, 64),  # split-KV across the SMs
    (16, 128, 2, 4099, 64),
    (64, 16, 1, 8191, 1),
    (3, 128, 1, 1000, 256),
])
def test_gpu_realistic(dtype, impl, batch, heads, q_len, context, page_size, seed):
    case = _case(dtype, batch=batch, heads=heads, q_len=q_len, context=context, page_size=page_size)
    checked = check_point(ATTN_MLA, impl, case, "cuda", seed)
    assert checked.ok, f"{checked.message()} ({checked.launch.config()})"


@pytest.mark.gpu
@pytest.mark.parametrize("splits", [1, 5, 64])
def test_gpu_forced_splits_bf16(splits, seed):
    case = _case("bf16", batch=2, heads=128, q_len=1, context=9000, page_size=64)
    inputs = ATTN_MLA.make_inputs(case, torch.device("cuda"), generator_for("cuda", seed))
    expected = ATTN_MLA.reference(inputs, case)
    out = attn_mla(inputs["q"], inputs["kv_cache"], inputs["kv_lens"], inputs["block_table"], sm_scale=SM_SCALE,
                   num_splits=splits)
    assert relative_error(out, expected) < ATTN_MLA.tolerance[DType.BF16]

