"""Fused weight-only qgemv/qgemm against the reference dequantizer + float64 matmul."""

from __future__ import annotations

import pytest
import torch

from kernels.check import check_point
from kernels.qgemm import QGEMM, qgemm
from kernels.qgemv import QGEMV, QGemvConfig, _SCRATCH, qgemv
from kernels.quant_formats import dequantize_traffic, quantize
from kernels.spec import DeviceCaps, generator_for, relative_error, scaled_randn

FORMATS = [("int8", 128), ("fp8", 128), ("int4", 32), ("int4", 64), ("int4", 128), ("int4", 256), ("mxfp4", 32),
           ("nvfp4", 16)]
INTERPRETER = DeviceCaps("interpreter", None, True, 0, 1, 0)



def shape(fmt: str, group: int) -> dict:
    """N odd; K = 3 groups (int4/mxfp4 tiles are one group wide, so 3 K steps split unevenly), 5 nvfp4
    blocks (80: no multiple of any K tile), or 200, no multiple of the per-channel formats' K blocks."""
    if fmt == "nvfp4":
        return dict(format=fmt, group_size=group, N=67, K=5 * group)
    grouped = fmt in ("int4", "mxfp4")
    return dict(format=fmt, group_size=group, N=67, K=3 * group if grouped else 200)


@pytest.mark.parametrize("fmt,group", FORMATS)
@pytest.mark.parametrize("m", [1, 3, 17])
def test_qgemv_matches_reference(fmt, group, m, device, seed):
    case = QGEMV.case("fp16", M=m, **shape(fmt, group))
    for impl in QGEMV.impls:
        checked = check_point(QGEMV, impl, case, device, seed)
        assert checked.ok, f"{impl.name} {case.label()}: {checked.message()}"


@pytest.mark.parametrize("fmt,group", [("int8", 128), ("int4", 32), ("mxfp4", 32), ("nvfp4", 16)])
@pytest.mark.parametrize("m", [1, 17, 40])
def test_qgemm_matches_reference(fmt, group, m, device, seed):
    case = QGEMM.case("fp16", M=m, **shape(fmt, group))
    checked = check_point(QGEMM, "triton", case, device, seed)
    assert checked.ok, f"{case.label()}: {checked.message()}"


def test_qgemm_several_tiles_each_way(device, seed):
    # 2 × 3 output tiles with the first config (64 × 128): exercises the grouped program order
    case = QGEMM.case("fp16", format="int4", group_size=32, M=100, N=300, K=96)
    checked = check_point(QGEMM, "triton", case, device, seed)
    assert checked.ok, f"{case.label()}: {checked.message()}"


@pytest.mark.parametrize("fmt,group", [("fp8", 128), ("int4", 64), ("int4", 128), ("int4", 256)])
def test_qgemm_other_formats(fmt, group, device, seed):
    case = QGEMM.case("fp16", M=3, **shape(fmt, group))
    checked = check_point(QGEMM, "triton", case, device, seed)
    assert checked.ok, f"{case.label()}: {checked.message()}"


def _linear(fmt, group, m, n, k, device, seed):
    gen = generator_for(device, seed)
    x = scaled_randn((m, k), dtype=torch.float16, device=device, generator=gen)
    w = scaled_randn((n, k), dtype=torch.float32, device=device, generator=gen, fan_in=k)
    qw = quantize(w, fmt, group if fmt in ("int4", "mxfp4", "nvfp4") else None)
    return x, qw, QGEMV.reference({"x": x, "weight": qw}, None)


@pytest.mark.parametrize("config", [
    QGemvConfig(block_n=16, block_k=128, split_k=1),
    QGemvConfig(block_n=32, block_k=64, split_k=3),  # uneven split of the K steps
    QGemvConfig(block_n=16, block_k=256, split_k=8),  # more splits than steps: some are empty
])
@pytest.mark.parametrize("fmt,group,m", [("int4", 32, 1), ("int8", 128, 5), ("mxfp4", 32, 16), ("nvfp4", 16, 3)])
def test_qgemv_explicit_configs_and_split_k(config, fmt, group, m, device, seed):
    x, qw, expected = _linear(fmt, group, m, 45, 3 * group if fmt != "int8" else 300, device, seed)
    for _ in range(2):  # the split-K counters must reset themselves for the next call
        out = torch.full((m, 45), float("nan"), dtype=torch.float16, device=device)
        error = relative_error(qgemv(x, qw, out, config=config), expected)
        assert error <= QGEMV.tolerance[QGEMV.dtypes[0]], error
    assert all(int(s.counters.abs().sum()) == 0 for s in _SCRATCH.values())


def test_qgemv_rejects_bad_inputs(device):
    qw = quantize(torch.randn(8, 64, device=device), "int4", 32)
    x = torch.randn(1, 64, device=device).half()
    with pytest.raises(ValueError, match="qgemv takes M ≤ 64 .* got M=65; use qgemm"):
        qgemv(torch.randn(65, 64, device=device).half(), qw)
    with pytest.raises(ValueError, match=r"x must be fp16/bf16 \[M, 64\]"):
        qgemv(torch.randn(1, 32, device=device).half(), qw)
    with pytest.raises(ValueError, match=r"x must be fp16/bf16 \[M, 64\]"):
        qgemm(torch.randn(1, 64, device=device), qw)
    with pytest.raises(ValueError, match=r"out must be contiguous torch.float16 \[1, 8\]"):
        qgemv(x, qw, out=torch.empty(1, 8, dtype=torch.bfloat16, device=device))
    with pytest.raises(ValueError, match="split_k must be 1 … 8"):
        qgemv(x, qw, config=QGemvConfig(block_n=16, block_k=128, split_k=9))


def test_k_not_a_multiple_of_the_group_is_a_clear_error_and_a_skip():
    with pytest.raises(ValueError, match="^int4 with group_size 64 needs K a multiple of 64, got K=96$"):
        quantize(torch.randn(4, 96), "int4", 64)
    case = QGEMV.case("fp16", format="int4", group_size=64, K=96)
    assert QGEMV.skip_reason(case, QGEMV.impl("triton"), INTERPRETER) == \
        "int4 with group_size 64 needs K a multiple of 64, got K=96"


def test_skip_rules():
    assert "qgemv covers M ≤ 64" in QGEMV.skip_reason(QGEMV.case("fp16", M=65), QGEMV.impl("triton"), INTERPRETER)
    assert QGEMM.skip_reason(QGEMM.case("fp16", M=65), QGEMM.impl("triton"), INTERPRETER) is None
    bf16_dot = QGEMV.case("bf16", M=2)  # M ≥ 2 runs on tl.dot
    assert "bf16" in QGEMV.skip_reason(bf16_dot, QGEMV.impl("triton"), INTERPRETER)
    assert QGEMV.skip_reason(QGEMV.case("bf16", M=1), QGEMV.impl("triton"), INTERPRETER) is None
    assert QGEMV.skip_reason(bf16_dot, QGEMV.impl("torch"), INTERPRETER) is None


def test_flops_and_bytes_by_hand():
    # int4, G=32, M=3, N=3, K=64, fp16: x 3·64·2 = 384; W 3·32 + 2·3·2 + 2·⌈3/2⌉ = 112; y 3·3·2 = 18
    for spec in (QGEMV, QGEMM):
        case = spec.case("fp16", format="int4", group_size=32, M=3, N=3, K=64)
        assert spec.flops(case) == 2 * 3 * 3 * 64
        assert spec.bytes_for(case, spec.impl("triton")) == 384 + 112 + 18
        assert spec.bytes_for(case, spec.impl("torch")) == 384 + 3 * 64 * 2 + 18  # dense fp16 weight
        # reference dequantize (fp32 temporaries), .to(fp16) (fp32 in, fp16 out), matmul on the fp16 weight
        assert spec.bytes_for(case, spec.impl("torch_dequant")) == (
            dequantize_traffic("int4", 3, 64, 32) + 3 * 64 * (4 + 2) + 384 + 3 * 64 * 2 + 18)
    int8 = QGEMV.case("fp16", format="int8", M=1, N=3, K=5)
    assert QGEMV.bytes(int8) == 1 * 5 * 2 + (3 * 5 + 3 * 2) + 1 * 3 * 2


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("fmt,group", FORMATS)
def test_all_formats_at_llm_shapes_on_gpu(fmt, group, dtype, seed):
    for n, k in ((4096, 4096), (1024, 4096)):  # the second needs split-K to fill the SMs
        for spec, m in ((QGEMV, 1), (QGEMV, 16), (QGEMM, 1), (QGEMM, 333)):
            case = spec.case(dtype, format=fmt, group_size=group, M=m, N=n, K=k)
            for impl in spec.impls:
                checked = check_point(spec, impl, case, "cuda", seed)
                assert checked.ok, f"{impl.name} {case.label()}: {checked.message()}"
