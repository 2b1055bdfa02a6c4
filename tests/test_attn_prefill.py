"""attn_prefill: flash attention forward against the shared float32 reference (and the reference against SDPA)."""

from __future__ import annotations

import pytest
import torch
import triton

import kernels.attn_ref as attn_ref
from kernels.attn_prefill import ATTN_PREFILL, attn_prefill
from kernels.attn_ref import CausalAlign, attention_reference
from kernels.check import check_point
from kernels.spec import DeviceCaps, DType, generator_for, relative_error, scaled_randn

FP16_TOL = ATTN_PREFILL.tolerance[DType.FP16]


def _qkv(shape_q, shape_kv, device, seed, dtype=torch.float16):
    gen = generator_for(device, seed)
    return tuple(scaled_randn(s, dtype=dtype, device=device, generator=gen) for s in (shape_q, shape_kv, shape_kv))


# ---------------------------------------------------------------------------------------------
# the reference itself
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
def test_reference_matches_sdpa_with_gqa(causal, seed):
    import torch.nn.functional as F

    q, k, v = _qkv((2, 4, 37, 16), (2, 2, 37, 16), "cpu", seed, torch.float32)
    expected = F.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), is_causal=causal)
    assert relative_error(attention_reference(q, k, v, causal=causal), expected) < 1e-5


def test_reference_chunking_does_not_change_the_result(monkeypatch, seed):
    q, k, v = _qkv((2, 4, 29, 16), (2, 1, 29, 16), "cpu", seed, torch.float32)
    lens = [29, 11]
    whole = attention_reference(q[:, :, -5:], k, v, causal=True, kv_lens=lens, align=CausalAlign.BOTTOM_RIGHT)
    monkeypatch.setattr(attn_ref, "MAX_SCORES", 40)  # forces row and head chunks of a few rows
    chunked = attention_reference(q[:, :, -5:], k, v, causal=True, kv_lens=lens, align=CausalAlign.BOTTOM_RIGHT)
    assert relative_error(chunked, whole) < 1e-6


# ---------------------------------------------------------------------------------------------
# the kernel through the correctness gate
# ---------------------------------------------------------------------------------------------

CASES = [  # batch, heads, kv_heads, seq, head_dim, causal: odd lengths, GQA, MQA, one token
    (1, 2, 2, 1, 16, True),
    (2, 4, 2, 37, 32, True),
    (1, 4, 1, 129, 64, False),
    (1, 2, 2, 129, 16, True),
    (3, 2, 1, 67, 32, False),
    (1, 2, 1, 40, 256, True),
]


@pytest.mark.parametrize("batch,heads,kv_heads,seq,head_dim,causal", CASES)
def test_triton_matches_reference(batch, heads, kv_heads, seq, head_dim, causal, device, seed):
    case = ATTN_PREFILL.case("fp16", batch=batch, heads=heads, kv_heads=kv_heads, seq=seq, head_dim=head_dim,
                             causal=causal)
    checked = check_point(ATTN_PREFILL, "triton", case, device, seed)
    assert checked.ok, checked.message()
    assert "BLOCK_M=" in checked.launch.config()


def test_torch_baseline_matches_reference(device, seed):
    case = ATTN_PREFILL.case("fp16", batch=2, heads=4, kv_heads=2, seq=37, head_dim=32, causal=True)
    checked = check_point(ATTN_PREFILL, "torch", case, device, seed)
    assert checked.ok, checked.message()
    assert checked.launch.config().startswith("sdpa ")


TILES = [triton.Config({"BLOCK_M": 64, "BLOCK_N": 128}, num_warps=4, num_stages=2),
         triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=4, num_stages=2)]


@pytest.mark.parametrize("config", TILES, ids=["m64n128", "m128n64"])
@pytest.mark.parametrize("seq_q,seq_kv", [(130, 70), (50, 130), (129, 129)])
@pytest.mark.parametrize("causal", [False, True])
def test_pinned_tiles_and_unequal_lengths(config, seq_q, seq_kv, causal, device, seed):
    """Diagonal blocks that do not start on a BLOCK_N boundary, and top-left causal with seq_q ≠ seq_kv."""
    q, k, v = _qkv((1, 2, seq_q, 32), (1, 1, seq_kv, 32), device, seed)
    out = attn_prefill(q, k, v, causal=causal, config=config)
    assert relative_error(out, attention_reference(q, k, v, causal=causal)) < FP16_TOL


@pytest.mark.parametrize("config", TILES, ids=["m64n128", "m128n64"])
def test_causal_mask_at_the_diagonal(config, device):
    """q = 0 gives uniform weights, so row i must be the mean of v[0..i]; one leaked future key shows."""
    seq = 129
    q = torch.zeros((1, 1, seq, 16), dtype=torch.float16, device=device)
    k = torch.ones((1, 1, seq, 16), dtype=torch.float16, device=device)
    v = (torch.arange(seq, device=device, dtype=torch.float32) / 256).half()[None, None, :, None].expand(1, 1, seq, 16)
    out = attn_prefill(q, k, v.contiguous(), causal=True, config=config)
    expected = (torch.arange(seq, device=device, dtype=torch.float32) / 512)[:, None].expand(seq, 16)
    assert torch.allclose(out[0, 0].float(), expected, atol=2e-3, rtol=2e-3)


def test_sm_scale_is_honoured(device, seed):
    q, k, v = _qkv((1, 2, 33, 16), (1, 2, 33, 16), device, seed)
    out = attn_prefill(q, k, v, causal=False, sm_scale=0.7)
    assert relative_error(out, attention_reference(q, k, v, causal=False, sm_scale=0.7)) < FP16_TOL


# ---------------------------------------------------------------------------------------------
# launcher errors, spec cost model and skips
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("q_shape,kv_shape,dtype,match", [
    ((1, 4, 8, 16), (1, 3, 8, 16), torch.float16, "kv_heads 3 must divide heads 4"),
    ((1, 2, 8, 48), (1, 2, 8, 48), torch.float16, "head_dim 48 is not supported"),
    ((1, 2, 8, 16), (1, 2, 8, 16), torch.float32, "float16 or bfloat16"),
    ((1, 2, 8, 16), (2, 2, 8, 16), torch.float16, r"must both be \[1, kv_heads"),
    ((2, 8, 16), (2, 8, 16), torch.float16, "attn_prefill takes q"),
    ((1, 2, 0, 16), (1, 2, 8, 16), torch.float16, "seq_q ≥ 1"),
])
def test_launcher_rejects_bad_input(q_shape, kv_shape, dtype, match):
    q, k = torch.zeros(q_shape, dtype=dtype), torch.zeros(kv_shape, dtype=dtype)
    with pytest.raises(ValueError, match=match):
        attn_prefill(q, k, k)


def test_launcher_rejects_bad_out():
    q = torch.zeros((1, 2, 8, 16), dtype=torch.float16)
    with pytest.raises(ValueError, match="out must be"):
        attn_prefill(q, q, q, out=torch.zeros((1, 2, 9, 16), dtype=torch.float16))


def test_flops_and_bytes_by_hand():
    causal = ATTN_PREFILL.case("fp16", batch=2, heads=4, kv_heads=2, seq=3, head_dim=16, causal=True)
    full = ATTN_PREFILL.case("fp16", batch=2, heads=4, kv_heads=2, seq=3, head_dim=16, causal=False)
    assert ATTN_PREFILL.flops(causal) == 4 * 2 * 4 * 16 * 6  # pairs (i, j ≤ i) of 3 tokens: 1 + 2 + 3
    assert ATTN_PREFILL.flops(full) == 4 * 2 * 4 * 16 * 9
    assert ATTN_PREFILL.bytes(full) == (2 * 4 + 2 * 2) * 2 * 3 * 16 * 2  # Q, O per head; K, V per kv head


CAPS = DeviceCaps("test", (9, 0), False, 50 << 20, 132, 80 * 10**9)


def test_skip_rules():
    triton_impl = ATTN_PREFILL.impl("triton")
    assert ATTN_PREFILL.skip_reason(ATTN_PREFILL.case("fp16", heads=4, kv_heads=3), triton_impl, CAPS)
    assert ATTN_PREFILL.skip_reason(ATTN_PREFILL.case("fp16"), triton_impl, CAPS) is None


# ---------------------------------------------------------------------------------------------
# GPU only: bf16 (tl.dot on bf16 is wrong under the interpreter) and realistic sizes
# ---------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("impl", ["triton", "torch"])
@pytest.mark.parametrize("seq,head_dim,kv_heads,causal", [
    (1024, 128, 8, True), (1024, 128, 8, False), (4096, 64, 8, True), (2000, 128, 2, True), (777, 256, 8, False),
])
def test_gpu_realistic(dtype, impl, seq, head_dim, kv_heads, causal, seed):
    case = ATTN_PREFILL.case(dtype, batch=2, heads=8, kv_heads=kv_heads, seq=seq, head_dim=head_dim, causal=causal)
    checked = check_point(ATTN_PREFILL, impl, case, "cuda", seed)
    assert checked.ok, f"{checked.message()} ({checked.launch.config()})"
