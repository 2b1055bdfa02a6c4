"""Quantized formats: bit layouts, exact pack/unpack, byte counts, reference quantizer bounds (CPU, torch only)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.quant_formats import (
    E2M1_GRID,
    QuantFormat,
    QuantizedWeight,
    activation_grid,
    check_group,
    dequantize,
    e2m1_decode,
    e2m1_encode,
    e8m0_decode,
    pack_nibbles,
    packed_bytes,
    quantize,
    quantize_activations,
    unpack_nibbles,
)

FAST = settings(max_examples=40, deadline=None)
GROUPED = [("int4", 32), ("int4", 64), ("int4", 128), ("int4", 256), ("mxfp4", 32), ("nvfp4", 16)]
ALL = [("int8", None), ("fp8", None)] + GROUPED


def _nibble_rows(draw, rows, cols):
    """Codes 0 … 15 with the extremes forced into the first two places."""
    codes = draw(st.lists(st.integers(0, 15), min_size=rows * cols, max_size=rows * cols))
    codes[:2] = [0, 15][: len(codes)]
    return np.array(codes, dtype=np.uint8).reshape(rows, cols)


@st.composite
def nibble_matrices(draw, even=False):
    rows = draw(st.integers(1, 5))
    cols = 2 * draw(st.integers(1, 20)) if even else draw(st.integers(1, 41))
    return _nibble_rows(draw, rows, cols)


@FAST
@given(nibble_matrices())
def test_pack_unpack_nibbles_round_trip_and_layout(codes):
    packed = pack_nibbles(torch.from_numpy(codes))
    cols = codes.shape[1]
    assert packed.dtype == torch.uint8 and packed.shape == (codes.shape[0], (cols + 1) // 2)
    padded = np.pad(codes, ((0, 0), (0, cols % 2)))
    expected = padded[:, 0::2].astype(np.int64) + 16 * padded[:, 1::2]  # low nibble = even index
    assert np.array_equal(packed.numpy(), expected)
    assert torch.equal(unpack_nibbles(packed, cols), torch.from_numpy(codes))


def test_e2m1_codes_round_trip_and_values():
    codes = torch.arange(16, dtype=torch.uint8)
    values = e2m1_decode(codes)
    assert values[:8].tolist() == list(E2M1_GRID) and values[8:].tolist() == [-v for v in E2M1_GRID]
    assert torch.signbit(values[8]) and not torch.signbit(values[0])  # ±0 are distinct codes
    assert torch.equal(e2m1_encode(values), codes)


@FAST
@given(st.floats(-20.0, 20.0, allow_nan=False, width=32))
def test_e2m1_encode_is_round_to_nearest_even_with_saturation(x):
    code = int(e2m1_encode(torch.tensor([x]))[0])
    assert (code >> 3) == int(math.copysign(1.0, x) < 0)
    value = E2M1_GRID[code & 7]
    magnitude = abs(x)
    if magnitude >= 6.0:
        assert value == 6.0
        return
    distances = [abs(g - magnitude) for g in E2M1_GRID]
    best = min(distances)
    assert abs(value - magnitude) == best
    ties = [i for i, d in enumerate(distances) if d == best]
    if len(ties) == 2:
        assert (code & 7) % 2 == 0  # ties go to the even code (mantissa bit 0)


def test_e2m1_ties_go_to_even_and_large_values_saturate():
    midpoints = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0]  # halfway between neighbouring grid values
    assert e2m1_encode(torch.tensor(midpoints)).tolist() == [0, 2, 2, 4, 4, 6, 6]
    assert e2m1_encode(-torch.tensor(midpoints)).tolist() == [8, 10, 10, 12, 12, 14, 14]
    codes = e2m1_encode(torch.tensor([6.5, 7.0, 100.0, -8.0, -6.0, -0.0, 0.1]))
    assert codes.tolist() == [7, 7, 7, 15, 15, 8, 0]


def test_e8m0_decode_every_code():
    e = torch.arange(256, dtype=torch.uint8)
    values = e8m0_decode(e).double()
    assert all(values[i].item() == 2.0 ** (i - 127) for i in range(255))  # 0 → 2^-127, a subnormal
    assert torch.isnan(values[255])


@st.composite
def quantized_weights(draw, fmt, group):
    """A QuantizedWeight built from random codes (every code value reachable) and random scales."""
    n = draw(st.integers(1, 7))
    k = (group or 1) * draw(st.integers(1, 3)) if group else draw(st.integers(1, 9))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    if fmt == "int8":
        q = torch.randint(-127, 128, (n, k), generator=gen, dtype=torch.int8)
        q.view(-1)[: min(2, n * k)] = torch.tensor([-127, 127], dtype=torch.int8)[: min(2, n * k)]
        scales = torch.rand(n, generator=gen).half() + 0.01
        return QuantizedWeight(QuantFormat.INT8, None, n, k, q, scales), q.double() * scales.double()[:, None]
    if fmt == "fp8":
        bits = torch.randint(0, 256, (n, k), generator=gen, dtype=torch.uint8)
        bits[(bits & 0x7F) == 0x7F] = 0x7E  # the NaN codes are not values
        scales = torch.rand(n, generator=gen) + 0.01
        q = bits.view(torch.float8_e4m3fn)
        return QuantizedWeight(QuantFormat.FP8, None, n, k, q, scales), q.double() * scales.double()[:, None]
    codes = torch.from_numpy(_nibble_rows(draw, n, k))
    groups = k // group
    idx = torch.arange(k) // group
    if fmt == "nvfp4":
        bits = torch.randint(0, 0x7F, (groups, n), generator=gen, dtype=torch.uint8)  # e4m3 ≥ 0, never NaN
        bits.view(-1)[: min(2, groups * n)] = torch.tensor([0x01, 0x7E], dtype=torch.uint8)[: min(2, groups * n)]
        scales = bits.view(torch.float8_e4m3fn)
        tensor_scale = torch.rand(1, generator=gen) + 0.01
        qw = QuantizedWeight(QuantFormat.NVFP4, group, n, k, torch.from_numpy(_pack_by_hand(codes.numpy())), scales,
                             tensor_scale=tensor_scale)
        lut = torch.tensor(E2M1_GRID + tuple(-v for v in E2M1_GRID), dtype=torch.float64)
        expected = lut[codes.long()] * scales.t().double()[:, idx] * tensor_scale.double()
        return qw, expected
    if fmt == "int4":
        zeros = torch.randint(0, 16, (groups, n), generator=gen, dtype=torch.uint8)
        scales = (torch.rand(groups, n, generator=gen) + 0.01).half()
        packed_zeros = torch.from_numpy(_pack_by_hand(zeros.numpy()))
        qw = QuantizedWeight(QuantFormat.INT4, group, n, k, torch.from_numpy(_pack_by_hand(codes.numpy())),
                             scales, packed_zeros)
        expected = (codes.double() - zeros.t().double()[:, idx]) * scales.t().double()[:, idx]
        return qw, expected
    exponents = torch.randint(0, 255, (groups, n), generator=gen, dtype=torch.uint8)
    exponents.view(-1)[: min(2, groups * n)] = torch.tensor([0, 254], dtype=torch.uint8)[: min(2, groups * n)]
    qw = QuantizedWeight(QuantFormat.MXFP4, group, n, k, torch.from_numpy(_pack_by_hand(codes.numpy())), exponents)
    lut = torch.tensor(E2M1_GRID + tuple(-v for v in E2M1_GRID), dtype=torch.float64)
    expected = lut[codes.long()] * torch.pow(2.0, exponents.t().double()[:, idx] - 127)
    return qw, expected


def _pack_by_hand(codes: np.ndarray) -> np.ndarray:
    """The documented byte layout written out independently of pack_nibbles."""
    padded = np.pad(codes, ((0, 0), (0, codes.shape[1] % 2)))
    return (padded[:, 0::2] | (padded[:, 1::2] << 4)).astype(np.uint8)


@pytest.mark.parametrize("fmt,group", ALL)
@FAST
@given(data=st.data())
def test_dequantize_decodes_the_documented_layout(fmt, group, data):
    qw, expected = data.draw(quantized_weights(fmt, group))
    actual = dequantize(qw)
    assert actual.dtype == torch.float32 and actual.shape == (qw.n, qw.k)
    # every product is exact in fp32 but fp8's (4 × 24 significant bits) and nvfp4's tensor scale
    rounding = 2.0**-24 if fmt in ("fp8", "nvfp4") else 0.0
    assert torch.allclose(actual.double(), expected.to(torch.float32).double(), rtol=rounding, atol=0.0)
    assert qw.nbytes == packed_bytes(fmt, qw.n, qw.k, group)


@pytest.mark.parametrize("fmt,group,expected", [
    ("int8", None, 3 * 5 + 2 * 3),  # codes + fp16 scales
    ("fp8", None, 3 * 5 + 4 * 3),  # codes + fp32 scales
])
def test_packed_bytes_per_channel_by_hand(fmt, group, expected):
    assert packed_bytes(fmt, 3, 5, group) == expected
    assert quantize(torch.randn(3, 5), fmt).nbytes == expected


def test_packed_bytes_grouped_by_hand():
    # int4 N=3, K=64, G=32: 3·32 code bytes + 2 groups·3 fp16 scales + 2 groups·⌈3/2⌉ zero bytes
    assert packed_bytes("int4", 3, 64, 32) == 96 + 12 + 4
    # mxfp4 N=3, K=64: 3·32 code bytes + 2 blocks·3 E8M0 bytes
    assert packed_bytes("mxfp4", 3, 64, 32) == 96 + 6
    # nvfp4 N=3, K=64: 3·32 code bytes + 4 blocks·3 e4m3 bytes + one fp32 tensor scale
    assert packed_bytes("nvfp4", 3, 64) == 96 + 12 + 4
    # int4 G=256, N=3, K=512: 3·256 code bytes + 2 groups·3 fp16 scales + 2 groups·⌈3/2⌉ zero bytes
    assert packed_bytes("int4", 3, 512, 256) == 768 + 12 + 4
    for fmt, group in GROUPED:
        assert quantize(torch.randn(5, 2 * group), fmt, group).nbytes == packed_bytes(fmt, 5, 2 * group, group)


@pytest.mark.parametrize("fmt,group,k,message", [
    ("int4", 32, 100, "int4 with group_size 32 needs K a multiple of 32, got K=100"),
    ("int4", 128, 64, "int4 with group_size 128 needs K a multiple of 128, got K=64"),
    ("mxfp4", None, 48, "mxfp4 with group_size 32 needs K a multiple of 32, got K=48"),
    ("int4", 16, 64, "int4 takes group_size 32, 64, 128, 256, got 16"),
    ("int4", 256, 384, "int4 with group_size 256 needs K a multiple of 256, got K=384"),
    ("mxfp4", 64, 64, "mxfp4 takes group_size 32, got 64"),
    ("nvfp4", None, 40, "nvfp4 with group_size 16 needs K a multiple of 16, got K=40"),
    ("nvfp4", 32, 64, "nvfp4 takes group_size 16, got 32"),
    ("int8", 64, 64, "int8 is per-channel and takes no group_size"),
])
def test_bad_group_or_k_is_one_clear_error(fmt, group, k, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        quantize(torch.randn(4, k), fmt, group)
    with pytest.raises(ValueError, match=f"^{message}$"):
        check_group(fmt, k, group)


def test_quantize_rejects_bad_weights():
    with pytest.raises(ValueError, match="non-finite"):
        quantize(torch.tensor([[1.0, float("inf")]]), "int8")
    with pytest.raises(ValueError, match="2-D"):
        quantize(torch.randn(8), "int8")
    with pytest.raises(ValueError, match="unknown format 'int3'"):
        quantize(torch.randn(2, 32), "int3")


@st.composite
def weights(draw, k_multiple):
    """Rows of very different magnitudes, maybe a zero row and an outlier."""
    n = draw(st.integers(1, 6))
    k = k_multiple * draw(st.integers(1, 3))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    w = torch.randn(n, k, generator=gen) * torch.pow(10.0, torch.randint(-4, 3, (n, 1), generator=gen).float())
    if draw(st.booleans()):
        w[0] = 0.0
    if draw(st.booleans()):
        w[-1, -1] *= 50.0
    return w


@pytest.mark.parametrize("fmt,group", ALL)
@FAST
@given(data=st.data())
def test_quantizer_error_is_at_most_half_a_step(fmt, group, data):
    w = data.draw(weights(group or 7))
    qw = quantize(w, fmt, group)
    deq = dequantize(qw).double()
    err = (deq - w.double()).abs()
    n, k = w.shape
    if fmt == "int8":
        assert qw.qweight.min() >= -127  # -128 is never produced
        step = qw.scales.double()[:, None].expand(n, k)
    elif fmt == "int4":
        codes = unpack_nibbles(qw.qweight)
        assert codes.max() <= 15 and unpack_nibbles(qw.zeros, n).max() <= 15
        step = qw.scales.t().double().repeat_interleave(group, dim=1)
    elif fmt == "nvfp4":
        assert qw.tensor_scale.item() == pytest.approx(max(w.abs().max().item(), 0) / 2688 or 1.0)
        assert (qw.scales.float() <= 448).all() and not qw.scales.float().isnan().any()
        step = qw.scales.t().double().repeat_interleave(group, dim=1) * qw.tensor_scale.double()
        scaled = torch.where(step > 0, w.double().abs() / step, torch.zeros_like(step))
        assert (scaled <= 6 * (1 + 2.0**-20)).all()  # the block scale rounds up: nothing saturates
        local = torch.where(scaled <= 2, 0.5, torch.where(scaled <= 4, 1.0, 2.0))  # e2m1 spacing
        step = local * step
    elif fmt == "fp8":
        # e4m3 keeps 3 mantissa bits: half an ulp is 2^-4 of the value (2^-10 of the scale when subnormal)
        scale = qw.scales.double()[:, None]
        bound = torch.maximum(w.double().abs() * 2.0**-4, scale * 2.0**-10) + deq.abs() * 2.0**-23
        assert (err <= bound).all()
        return
    else:
        scale = e8m0_decode(qw.scales).t().double().repeat_interleave(group, dim=1)
        scaled = w.double().abs() / scale
        amax = scaled.reshape(n, k // group, group).amax(dim=2)
        assert ((amax >= 4) & (amax < 8) | (amax == 0)).all()  # E = floor(log2 amax) − 2
        saturated = scaled > 6
        assert torch.equal(deq[saturated].abs(), 6 * scale[saturated])
        local = torch.where(scaled <= 2, 0.5, torch.where(scaled <= 4, 1.0, 2.0))  # e2m1 spacing
        err, step = err[~saturated], (local * scale)[~saturated]
    assert (err <= step * (0.5 + 2.0**-20)).all()


def test_quantizer_saturates_mxfp4_outliers():
    w = torch.zeros(1, 32)
    w[0, 0], w[0, 1], w[0, 2] = 7.9, -7.0, 1.0  # amax 7.9 → E = 0: 7.9 and −7 lie past e2m1's 6
    deq = dequantize(quantize(w, "mxfp4"))
    assert deq[0, :3].tolist() == [6.0, -6.0, 1.0]


def test_quantizer_zero_weight_decodes_to_zero():
    for fmt, group in ALL:
        assert torch.equal(dequantize(quantize(torch.zeros(3, 256), fmt, group)), torch.zeros(3, 256))


def test_quantized_weight_checks_its_layout():
    with pytest.raises(ValueError, match=r"int4 zeros must be contiguous \(1, 2\) torch.uint8"):
        QuantizedWeight(QuantFormat.INT4, 32, 3, 32, torch.zeros(3, 16, dtype=torch.uint8),
                        torch.ones(1, 3, dtype=torch.float16), None)
    codes, e4m3 = torch.zeros(3, 16, dtype=torch.uint8), torch.zeros(2, 3, dtype=torch.float8_e4m3fn)
    with pytest.raises(ValueError, match=r"nvfp4 tensor_scale must be contiguous \(1,\) torch.float32"):
        QuantizedWeight(QuantFormat.NVFP4, 16, 3, 32, codes, e4m3)
    with pytest.raises(ValueError, match="mxfp4 stores no tensor scale"):
        QuantizedWeight(QuantFormat.MXFP4, 32, 3, 32, codes, torch.zeros(1, 3, dtype=torch.uint8),
                        tensor_scale=torch.ones(1))


def test_nvfp4_quantizer_by_hand():
    """amax 6·448·2⁻⁴: tensor scale 2⁻⁴; a block with amax 3 gets e4m3 scale 3/6/2⁻⁴ = 8 exactly."""
    w = torch.zeros(1, 32)
    w[0, 0], w[0, 16], w[0, 17], w[0, 18] = 6 * 448 / 16, 3.0, -1.5, 0.7
    qw = quantize(w, "nvfp4")
    assert qw.tensor_scale.item() == 2.0**-4 and qw.scales.float()[:, 0].tolist() == [448.0, 8.0]
    # 0.7 / (8 · 2⁻⁴) = 1.4 → e2m1 1.5 → 0.75
    assert dequantize(qw)[0, 16:19].tolist() == [3.0, -1.5, 0.75]


def test_activation_quantiser_by_hand():
    """A block with amax 3 = 0.75·2²: s = 2 − 3 = −1, so the step is 2⁻¹: 3 → 6 (code 7), −0.3 → −0.6 →
    −0.5 (code 9), 0.125 → 0.25, a tie, → 0 (even code); an all-zero block gets the smallest scale."""
    x = torch.zeros(1, 64)
    x[0, 0], x[0, 1], x[0, 2] = 3.0, -0.3, 0.125
    codes, scales = quantize_activations(x, "mxfp4")
    assert codes[0, :2].tolist() == [7 | (9 << 4), 0] and scales.tolist() == [[126, 0]]  # E8M0: 127 − 1; 2⁻¹²⁷
    nv_codes, nv_scales = quantize_activations(x, "nvfp4")
    assert torch.equal(nv_codes[:, :16], codes[:, :16])
    assert nv_scales.tolist() == [[48, 1, 1, 1]]  # e4m3 2⁻¹ = (−1 + 7) << 3; zero blocks 2⁻⁹ (subnormal 0x01)
    assert activation_grid(x, "mxfp4")[0, :3].tolist() == [3.0, -0.25, 0.0]
    with pytest.raises(ValueError, match="activations are quantised for mxfp4 or nvfp4"):
        quantize_activations(x, "int4")
    with pytest.raises(ValueError, match="K a multiple of 32"):
        quantize_activations(torch.zeros(2, 48), "mxfp4")


def test_fp8_weights_in_amds_e4m3fnuz():
    w = torch.randn(5, 40, generator=torch.Generator().manual_seed(3))
    qw = quantize(w, "fp8", fp8_dtype=torch.float8_e4m3fnuz)
    assert qw.qweight.dtype == torch.float8_e4m3fnuz and qw.qweight.float().abs().amax(dim=1).tolist() == [240.0] * 5
    assert qw.nbytes == packed_bytes("fp8", 5, 40)
    assert (dequantize(qw) - w).abs().max() <= w.abs().amax() / 240 * 8  # half a step at the top binade (2⁴)
