"""attn_prefill: flash attention forward against the shared float32 reference (and the reference against SDPA):
any head_dim ≤ 256 (padded tiles), seq_q ≠ seq_kv with the causal mask aligned bottom-right."""

from __future__ import annotations

import pytest
import torch
import triton

import kernels.attn_ref as attn_ref
from kernels.attn_prefill import ATTN_PREFILL, _attn_prefill_tuned, attn_prefill
from kernels.attn_ref import CausalAlign, attention_reference, causal_pairs
from kernels.check import check_point
from kernels.spec import DeviceCaps, DType, generator_for, relative_error, scaled_randn

FP16_TOL = ATTN_PREFILL.tolerance[DType.FP16]
BOTTOM_RIGHT = CausalAlign.BOTTOM_RIGHT


def _qkv(shape_q, shape_kv, device, seed, dtype=torch.float16):
    gen = generator_for(device, seed)
    return tuple(scaled_randn(s, dtype=dtype, device=device, generator=gen) for s in (shape_q, shape_kv, shape_kv))


def _case(dtype="fp16", **values):
    return ATTN_PREFILL.case(dtype, **values)


# ---------------------------------------------------------------------------------------------
# the reference itself
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
def test_reference_matches_sdpa_with_gqa(causal, seed):
    import torch.nn.functional as F

    q, k, v = _qkv((2, 4, 37, 16), (2, 2, 37, 16), "cpu", seed, torch.float32)
    expected = F.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), is_causal=causal)
    assert relative_error(attention_reference(q, k, v, causal=causal), expected) < 1e-5


@pytest.mark.parametrize("seq_q,seq_kv", [(5, 23), (23, 23), (1, 9)])
def test_reference_bottom_right_matches_torch_causal_lower_right(seq_q, seq_kv, seed):
    """torch's own bottom-right bias (FlashAttention ≥ 2.1's alignment) agrees with the reference."""
    import torch.nn.functional as F
    from torch.nn.attention.bias import causal_lower_right

    q, k, v = _qkv((1, 2, seq_q, 16), (1, 2, seq_kv, 16), "cpu", seed, torch.float32)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(seq_q, seq_kv))
    assert relative_error(attention_reference(q, k, v, causal=True, align=BOTTOM_RIGHT), expected) < 1e-5


def test_reference_rows_without_keys_are_zero(seed):
    q, k, v = _qkv((1, 2, 9, 16), (1, 1, 4, 16), "cpu", seed, torch.float32)
    out = attention_reference(q, k, v, causal=True, align=BOTTOM_RIGHT)
    assert torch.equal(out[:, :, :5], torch.zeros_like(out[:, :, :5]))  # queries 0 … 4 see no key
    assert torch.allclose(out[0, :, 5], v[0, 0, 0].expand(2, 16))  # query 5 sees key 0 only


def test_reference_takes_a_narrower_v(seed):
    """The latent (MLA) form: v may be narrower than q and k."""
    q, k, _ = _qkv((1, 3, 4, 24), (1, 1, 7, 24), "cpu", seed, torch.float32)
    out = attention_reference(q, k, k[..., :8], causal=True, align=BOTTOM_RIGHT)
    full = attention_reference(q, k, k, causal=True, align=BOTTOM_RIGHT)
    assert out.shape == (1, 3, 4, 8) and torch.allclose(out, full[..., :8], atol=1e-6)


def test_reference_chunking_does_not_change_the_result(monkeypatch, seed):
    q, k, v = _qkv((2, 4, 29, 16), (2, 1, 29, 16), "cpu", seed, torch.float32)
    lens = [29, 11]
    whole = attention_reference(q[:, :, -5:], k, v, causal=True, kv_lens=lens, align=BOTTOM_RIGHT)
    monkeypatch.setattr(attn_ref, "MAX_SCORES", 40)  # forces row and head chunks of a few rows
    chunked = attention_reference(q[:, :, -5:], k, v, causal=True, kv_lens=lens, align=BOTTOM_RIGHT)
    assert relative_error(chunked, whole) < 1e-6


def test_causal_pairs_by_brute_force():
    for seq_q in range(1, 14):
        for seq_kv in range(1, 14):
            expected = sum(max(0, i + seq_kv - seq_q + 1) for i in range(seq_q))
            assert causal_pairs(seq_q, seq_kv) == expected, (seq_q, seq_kv)


# ---------------------------------------------------------------------------------------------
# the kernel through the correctness gate
# ---------------------------------------------------------------------------------------------

CASES = [  # batch, heads, kv_heads, seq_q, seq_kv, head_dim, causal: odd lengths, GQA, MQA, padded dims
    (1, 2, 2, 1, 1, 16, True),
    (2, 4, 2, 37, 37, 32, True),
    (1, 4, 1, 129, 129, 64, False),
    (3, 2, 1, 67, 67, 40, False),
    (1, 2, 1, 40, 40, 256, True),
    (1, 2, 1, 45, 77, 59, True),  # chunked prefill: 45 new tokens after 32 cached, odd head_dim
    (2, 2, 2, 19, 150, 80, True),
    (1, 2, 1, 70, 20, 111, True),  # more queries than keys: the first 50 see none
    (1, 2, 2, 33, 50, 96, False),
]


@pytest.mark.parametrize("batch,heads,kv_heads,seq_q,seq_kv,head_dim,causal", CASES)
def test_triton_matches_reference(batch, heads, kv_heads, seq_q, seq_kv, head_dim, causal, device, seed):
    case = _case(batch=batch, heads=heads, kv_heads=kv_heads, seq_q=seq_q, seq_kv=seq_kv, head_dim=head_dim,
                 causal=causal)
    checked = check_point(ATTN_PREFILL, "triton", case, device, seed)
    assert checked.ok, checked.message()
    assert "BLOCK_M=" in checked.launch.config()


@pytest.mark.parametrize("seq_q,seq_kv,head_dim", [(37, 37, 32), (45, 77, 59), (70, 20, 40)])
def test_torch_baseline_matches_reference(seq_q, seq_kv, head_dim, device, seed):
    case = _case(batch=2, heads=4, kv_heads=2, seq_q=seq_q, seq_kv=seq_kv, head_dim=head_dim, causal=True)
    checked = check_point(ATTN_PREFILL, "torch", case, device, seed)
    assert checked.ok, checked.message()
    assert checked.launch.config().startswith("sdpa ")


TILES = [triton.Config({"BLOCK_M": 64, "BLOCK_N": 128}, num_warps=4, num_stages=2),
         triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=4, num_stages=2),
         triton.Config({"BLOCK_M": 16, "BLOCK_N": 16}, num_warps=4, num_stages=2)]
TILE_IDS = ["m64n128", "m128n64", "m16n16"]


@pytest.mark.parametrize("config", TILES, ids=TILE_IDS)
@pytest.mark.parametrize("seq_q,seq_kv", [(130, 70), (50, 130), (129, 129)])
@pytest.mark.parametrize("causal", [False, True])
def test_pinned_tiles_and_unequal_lengths(config, seq_q, seq_kv, causal, device, seed):
    """Diagonal blocks that do not start on a BLOCK_N boundary, bottom-right causal with seq_q ≠ seq_kv."""
    q, k, v = _qkv((1, 2, seq_q, 32), (1, 1, seq_kv, 32), device, seed)
    out = attn_prefill(q, k, v, causal=causal, config=config)
    assert relative_error(out, attention_reference(q, k, v, causal=causal, align=BOTTOM_RIGHT)) < FP16_TOL


def _positions_as_values(seq_kv: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """k = 1 and v[j] = j/256 (exact in fp16): with q = 0 every visible key weighs the same, so row i's
    output is the mean of the positions it sees — a leaked or a missing key moves it."""
    k = torch.ones((1, 1, seq_kv, 16), dtype=torch.float16, device=device)
    v = (torch.arange(seq_kv, device=device, dtype=torch.float32) / 256).half()[None, None, :, None]
    return k, v.expand(1, 1, seq_kv, 16).contiguous()


@pytest.mark.parametrize("config", TILES, ids=TILE_IDS)
@pytest.mark.parametrize("seq_q,seq_kv", [(129, 129), (37, 150), (150, 37)])
def test_causal_mask_is_bottom_right(config, seq_q, seq_kv, device):
    """Query i sees keys 0 … i + seq_kv − seq_q (FlashAttention ≥ 2.1); queries that see none output 0."""
    q = torch.zeros((1, 1, seq_q, 16), dtype=torch.float16, device=device)
    k, v = _positions_as_values(seq_kv, device)
    out = attn_prefill(q, k, v, causal=True, config=config)[0, 0].float()
    last = torch.arange(seq_q, device=device) + seq_kv - seq_q  # last visible key per query
    expected = torch.where(last >= 0, last.clamp(min=0).float() / 2 / 256, torch.zeros_like(last, dtype=torch.float32))
    assert torch.allclose(out, expected[:, None].expand(seq_q, 16), atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize("head_dim", [1, 40, 59, 72, 80, 111, 120])
def test_padded_channels_are_never_read_or_written(head_dim, device, seed):
    """q, k, v and out are views into rows of the padded tile width whose extra channels hold NaN: a
    padded channel loaded without its mask poisons every score; one stored without it overwrites NaN."""
    width = triton.next_power_of_2(head_dim)
    gen = generator_for(device, seed)
    tensors = []
    for seq in (53, 61, 61, 53):
        wide = torch.full((1, 2, seq, width), float("nan"), dtype=torch.float16, device=device)
        wide[..., :head_dim] = scaled_randn((1, 2, seq, head_dim), dtype=torch.float16, device=device, generator=gen)
        tensors.append(wide)
    q, k, v, out = (t[..., :head_dim] for t in tensors)
    attn_prefill(q, k, v, causal=True, out=out)
    expected = attention_reference(q, k, v, causal=True, align=BOTTOM_RIGHT)
    assert relative_error(out, expected) < FP16_TOL
    assert torch.isnan(tensors[3][..., head_dim:]).all()


def test_sm_scale_is_honoured(device, seed):
    q, k, v = _qkv((1, 2, 33, 16), (1, 2, 33, 16), device, seed)
    out = attn_prefill(q, k, v, causal=False, sm_scale=0.7)
    assert relative_error(out, attention_reference(q, k, v, causal=False, sm_scale=0.7)) < FP16_TOL


def test_autotune_key_holds_what_changes_the_best_tile():
    """GQA and MHA points, and different batch·heads, must not share a tuned config."""
    assert {"batch_heads", "group", "seq_q", "seq_kv", "HEAD_DIM", "CAUSAL"} <= set(_attn_prefill_tuned.keys)


# ---------------------------------------------------------------------------------------------
# launcher errors, spec cost model and skips
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("q_shape,kv_shape,dtype,match", [
    ((1, 4, 8, 16), (1, 3, 8, 16), torch.float16, "kv_heads 3 must divide heads 4"),
    ((1, 2, 8, 300), (1, 2, 8, 300), torch.float16, "head_dim 300 is not supported; valid: 1 … 256"),
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
    values = dict(batch=2, heads=4, kv_heads=2, head_dim=16)
    causal, full = _case(seq_q=3, seq_kv=3, causal=True, **values), _case(seq_q=3, seq_kv=3, causal=False, **values)
    assert ATTN_PREFILL.flops(causal) == 4 * 2 * 4 * 16 * 6  # pairs (i, j ≤ i) of 3 tokens: 1 + 2 + 3
    assert ATTN_PREFILL.flops(full) == 4 * 2 * 4 * 16 * 9
    assert ATTN_PREFILL.bytes(full) == (2 * 4 * 3 + 2 * 2 * 3) * 2 * 16 * 2  # Q, O per head; K, V per kv head
    # 2 queries after 3 cached tokens: they see 4 and 5 keys; bytes count the real head_dim 80
    chunk = _case(seq_q=2, seq_kv=5, causal=True, batch=1, heads=1, kv_heads=1, head_dim=80)
    assert ATTN_PREFILL.flops(chunk) == 4 * 80 * (4 + 5)
    assert ATTN_PREFILL.bytes(chunk) == (2 * 2 + 2 * 5) * 80 * 2
    # 5 queries, 2 keys: queries 0–2 see nothing, 3 and 4 see 1 and 2
    assert ATTN_PREFILL.flops(_case(seq_q=5, seq_kv=2, causal=True, batch=1, heads=1, kv_heads=1,
                                    head_dim=16)) == 4 * 16 * 3


def test_torch_bytes_by_hand():
    torch_impl = ATTN_PREFILL.impl("torch")
    plain = _case(batch=1, heads=2, kv_heads=1, seq_q=3, seq_kv=5, head_dim=16, causal=True)
    assert ATTN_PREFILL.bytes_for(plain, torch_impl) == ATTN_PREFILL.bytes(plain)
    # head_dim 59: FLASH pads q, k, v to 64 (read 59, write 64), reads the copies, writes a 64-wide O
    odd = _case(batch=1, heads=2, kv_heads=1, seq_q=3, seq_kv=5, head_dim=59, causal=True)
    q_rows, kv_rows = 2 * 3, 2 * 5
    assert ATTN_PREFILL.bytes_for(odd, torch_impl) == ((q_rows + kv_rows) * (59 + 64 + 64) + q_rows * 64) * 2
    # 7 queries over 5 keys: SDPA on the last 5, then the zero padding reads 5 rows and writes 7
    tall = _case(batch=1, heads=1, kv_heads=1, seq_q=7, seq_kv=5, head_dim=16, causal=True)
    assert ATTN_PREFILL.bytes_for(tall, torch_impl) == ((2 * 5 + 2 * 5) + (5 + 7)) * 16 * 2


CAPS = DeviceCaps("test", (9, 0), False, 50 << 20, 132, 80 * 10**9)
INTERPRETER = DeviceCaps("interpreter", None, True, 0, 1, 0)


def test_skip_rules():
    triton_impl, torch_impl = ATTN_PREFILL.impl("triton"), ATTN_PREFILL.impl("torch")
    assert ATTN_PREFILL.skip_reason(_case(heads=4, kv_heads=3), triton_impl, CAPS)
    assert ATTN_PREFILL.skip_reason(_case(), triton_impl, CAPS) is None
    # bf16 tl.dot is wrong under the interpreter: a skip with its reason, not a failed point
    assert "interpreter" in ATTN_PREFILL.skip_reason(_case("bf16"), triton_impl, INTERPRETER)
    assert ATTN_PREFILL.skip_reason(_case("bf16"), torch_impl, INTERPRETER) is None
    assert ATTN_PREFILL.skip_reason(_case("bf16"), triton_impl, CAPS) is None


# ---------------------------------------------------------------------------------------------
# GPU only: bf16 (tl.dot on bf16 is wrong under the interpreter) and realistic sizes
# ---------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("impl", ["triton", "torch"])
@pytest.mark.parametrize("seq_q,seq_kv,head_dim,kv_heads,causal", [
    (1024, 1024, 128, 8, True), (1024, 1024, 128, 8, False), (4096, 4096, 64, 8, True), (2000, 2000, 128, 2, True),
    (777, 777, 256, 8, False), (1000, 3001, 80, 8, True), (2048, 2048, 96, 8, True), (1021, 4093, 192, 2, True),
    (513, 513, 111, 8, True), (3001, 1000, 128, 8, True),
])
def test_gpu_realistic(dtype, impl, seq_q, seq_kv, head_dim, kv_heads, causal, seed):
    case = _case(dtype, batch=2, heads=8, kv_heads=kv_heads, seq_q=seq_q, seq_kv=seq_kv, head_dim=head_dim,
                 causal=causal)
    checked = check_point(ATTN_PREFILL, impl, case, "cuda", seed)
    assert checked.ok, f"{checked.message()} ({checked.launch.config()})"
