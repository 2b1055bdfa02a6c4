"""The Triton dequant kernel: bit-exact against the reference dequantizer, over every code value."""

from __future__ import annotations

import pytest
import torch

from kernels.check import check_point
from kernels.dequant import DEQUANT, dequant
from kernels.quant_formats import QuantFormat, QuantizedWeight, dequantize, dequantize_traffic, packed_bytes, quantize
from kernels.spec import DeviceCaps

CASES = [("int8", None), ("fp8", None), ("int4", 32), ("int4", 64), ("int4", 128), ("int4", 256), ("mxfp4", 32),
         ("nvfp4", 16)]
INTERPRETER = DeviceCaps("interpreter", None, True, 0, 1, 0)


def random_codes(fmt: str, group: int | None, n: int, k: int, device, seed: int) -> QuantizedWeight:
    """Every bit pattern a format may hold (not only what the quantizer makes), extremes included."""
    gen = torch.Generator().manual_seed(seed)

    def uint8(*shape, high=256):
        return torch.randint(0, high, shape, generator=gen, dtype=torch.uint8)

    fmt = QuantFormat(fmt)
    if fmt is QuantFormat.INT8:
        q = uint8(n, k).view(torch.int8)  # −128 too: never produced, still decoded the same way
        q.view(-1)[:3] = torch.tensor([-128, -127, 127], dtype=torch.int8)
        qw = QuantizedWeight(fmt, None, n, k, q, torch.randn(n, generator=gen).half())
    elif fmt is QuantFormat.FP8:
        bits = uint8(n, k)
        bits[(bits & 0x7F) == 0x7F] ^= 1  # the NaN codes 0x7F/0xFF are not values
        qw = QuantizedWeight(fmt, None, n, k, bits.view(torch.float8_e4m3fn), torch.randn(n, generator=gen))
    elif fmt is QuantFormat.INT4:
        qw = QuantizedWeight(fmt, group, n, k, uint8(n, k // 2), torch.randn(k // group, n, generator=gen).half(),
                             uint8(k // group, (n + 1) // 2))
    elif fmt is QuantFormat.NVFP4:
        # every non-negative e4m3 block scale but NaN (subnormals and 448 included); tensor scales that
        # keep 6 · 448 · t inside fp16
        bits = uint8(k // group, n, high=0x7F)
        bits[0, :4] = torch.tensor([0x00, 0x01, 0x07, 0x7E], dtype=torch.uint8)[: min(4, n)]
        tensor_scale = torch.pow(2.0, -torch.randint(4, 12, (1,), generator=gen).float()) * 1.37
        qw = QuantizedWeight(fmt, group, n, k, uint8(n, k // 2), bits.view(torch.float8_e4m3fn),
                             tensor_scale=tensor_scale)
    else:
        # mostly exponents whose outputs are normal fp16 values, plus every valid extreme (255 is NaN)
        exponents = uint8(k // group, n) % 24 + 115
        exponents[0, :4] = torch.tensor([0, 1, 253, 254], dtype=torch.uint8)[: min(4, n)]
        qw = QuantizedWeight(fmt, group, n, k, uint8(n, k // 2), exponents)
    moved = (t.to(device) if t is not None else None for t in (qw.qweight, qw.scales, qw.zeros, qw.tensor_scale))
    return QuantizedWeight(qw.format, qw.group_size, qw.n, qw.k, *moved)


def assert_bit_exact(actual: torch.Tensor, qw: QuantizedWeight):
    expected = dequantize(qw).to(actual.dtype)
    different = actual.view(torch.int16) != expected.view(torch.int16)
    assert not different.any(), (
        f"{int(different.sum())} of {actual.numel()} differ; first: got {actual[different][:4].tolist()}, "
        f"want {expected[different][:4].tolist()}")


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # E8M0 254 overflows fp16 on purpose
@pytest.mark.parametrize("fmt,group", CASES)
def test_dequant_is_bit_exact_on_every_code(fmt, group, device, seed):
    # N odd; K = 3 groups (grouped) or 200, not a multiple of any per-channel block
    n, k = 37, (3 * group if group else 200)
    qw = random_codes(fmt, group, n, k, device, seed)
    assert_bit_exact(dequant(qw, torch.float16, out=torch.full((n, k), float("nan"), dtype=torch.float16,
                                                                device=device)), qw)


@pytest.mark.parametrize("fmt,group", CASES)
def test_dequant_spec_passes_the_gate(fmt, group, device, seed):
    case = DEQUANT.case("fp16", format=fmt, group_size=group or 128, N=37, K=3 * (group or 67))  # nvfp4: K = 48
    for impl in DEQUANT.impls:
        checked = check_point(DEQUANT, impl, case, device, seed)
        assert checked.ok, f"{impl.name}: {checked.message()}"
        assert_bit_exact(checked.inputs["out"], checked.inputs["weight"])  # both round exact fp32 values once


def test_dequant_rejects_a_bad_out(device):
    qw = quantize(torch.randn(8, 64, device=device), "int4", 32)
    with pytest.raises(ValueError, match=r"out must be fp16/bf16 \[8, 64\]"):
        dequant(qw, out=torch.empty(8, 64, dtype=torch.float32, device=device))
    with pytest.raises(ValueError, match=r"out must be fp16/bf16 \[8, 64\]"):
        dequant(qw, out=torch.empty(64, 8, dtype=torch.float16, device=device).t())


def test_dequant_counts_bytes_and_flops_by_hand():
    case = DEQUANT.case("fp16", format="int4", group_size=32, N=3, K=64)
    # packed: 3·32 code bytes + 2·3·2 scale bytes + 2·⌈3/2⌉ zero bytes; written: 3·64 fp16
    assert DEQUANT.bytes(case) == (96 + 12 + 4) + 3 * 64 * 2
    assert DEQUANT.flops(case) == 0
    mx = DEQUANT.case("bf16", format="mxfp4", group_size=32, N=3, K=64)
    assert DEQUANT.bytes(mx) == packed_bytes("mxfp4", 3, 64) + 3 * 64 * 2 == 102 + 384
    nv = DEQUANT.case("fp16", format="nvfp4", group_size=16, N=3, K=64)
    assert DEQUANT.bytes(nv) == (96 + 12 + 4) + 3 * 64 * 2
    # the torch baseline: the reference dequantizer's fp32 temporaries, then copy_ (fp32 in, fp16 out)
    assert DEQUANT.bytes_for(nv, DEQUANT.impl("torch")) == dequantize_traffic("nvfp4", 3, 64) + 3 * 64 * (4 + 2)


@pytest.mark.parametrize("values,reason", [
    (dict(format="int8", group_size=64), "int8 is per-channel: group_size does not apply"),
    (dict(format="mxfp4", group_size=128), "mxfp4 takes group_size 32, got 128"),
    (dict(format="nvfp4", group_size=32), "nvfp4 takes group_size 16, got 32"),
    (dict(format="int4", group_size=256, K=4000), "int4 with group_size 256 needs K a multiple of 256, got K=4000"),
    (dict(format="int4", group_size=128, K=4000), "int4 with group_size 128 needs K a multiple of 128, got K=4000"),
])
def test_dequant_skips_what_the_layouts_cannot_hold(values, reason):
    case = DEQUANT.case("fp16", **values)
    assert DEQUANT.skip_reason(case, DEQUANT.impl("triton"), INTERPRETER).startswith(reason)
    assert DEQUANT.bytes(case) > 0  # the sweep records bytes for skipped points too: must not raise
    assert DEQUANT.skip_reason(DEQUANT.case("fp16", format="int4", group_size=64), DEQUANT.impl("triton"),
                               INTERPRETER) is None


def test_dequant_fp8_needs_sm89():
    case = DEQUANT.case("fp16", format="fp8")
    ampere = DeviceCaps("A100", (8, 0), False, 0, 108, 0)
    assert "sm_89" in DEQUANT.skip_reason(case, DEQUANT.impl("triton"), ampere)
    assert DEQUANT.skip_reason(case, DEQUANT.impl("torch"), ampere) is None


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("fmt,group", CASES)
def test_dequant_bit_exact_at_llm_shapes_on_gpu(fmt, group, dtype, seed):
    for n, k in ((4096, 4096), (1024, 14336)):
        qw = quantize(torch.randn(n, k, device="cuda") / k**0.5, fmt, group)
        assert_bit_exact(dequant(qw, dtype), qw)
        codes = random_codes(fmt, group, 1000, 2 * 1024 if group else 1000, "cuda", seed)
        assert_bit_exact(dequant(codes, dtype), codes)
