"""gemm family: odd shapes, both W layouts, strides, fp32 accumulation, launcher errors, cost model.

The interpreter covers fp16/fp32 and the tiled variant; bf16, fp8 and the TMA variant are
GPU-marked (the interpreter mis-computes bf16 dots and has neither fp8 nor TMA).
"""

from __future__ import annotations

import pytest
import torch

from bench.device import detect
from kernels.check import check_point
from kernels.gemm import (
    GEMM,
    GemmVariant,
    gemm,
    gemm_configs,
    gemm_tma_configs,
    shared_memory_bytes,
    shared_memory_limit,
    tma_eligible,
)
from kernels.gemm_fp8 import FP8_MAX, quantize_rowwise
from kernels.linear import linear_reference
from kernels.spec import DeviceCaps, DType, generator_for, relative_error

INTERPRETER_DTYPES = ("fp16", "fp32")


def _assert_ok(checked, case):
    assert checked.ok, f"{case.label()}: {checked.message()}"


def impl_skip(spec, impl: str, case) -> None:
    """Skip a point the family's or impl's rule excludes on this machine's device (e.g. _scaled_mm with
    K % 16 != 0, bf16 tl.dot under the interpreter)."""
    reason = spec.skip_reason(case, spec.impl(impl), detect(interpret=not torch.cuda.is_available()).caps)
    if reason:
        pytest.skip(reason)


@pytest.mark.parametrize("impl", ["triton", "torch"])
def test_impl_skip_asks_the_rules_with_this_devices_caps(impl):
    """The GPU-only realistic tests skip through this helper; it once passed no caps, so every Triton
    impl's rule raised on the H200 (20 of 20 Triton points 'failed' there, none on a CPU)."""
    for dtype in ("fp16", "bf16", "fp32"):
        try:
            impl_skip(GEMM, impl, GEMM.case(dtype, M=1, N=64, K=64))
        except pytest.skip.Exception:
            pass


@pytest.mark.parametrize("layout", ["nk", "kn"])
@pytest.mark.parametrize("dtype", INTERPRETER_DTYPES)
@pytest.mark.parametrize("M", [1, 3, 17])
def test_triton_odd_shapes(device, seed, dtype, layout, M):
    """N=77, K=131: no block size divides them, so every edge mask is exercised (K tail included)."""
    case = GEMM.case(dtype, M=M, N=77, K=131, w_layout=layout)
    _assert_ok(check_point(GEMM, "triton", case, device, seed), case)


@pytest.mark.parametrize("dtype", INTERPRETER_DTYPES)
def test_triton_even_k(device, seed, dtype):
    """K a multiple of every BLOCK_K: the unmasked-K (EVEN_K) loop."""
    case = GEMM.case(dtype, M=70, N=90, K=256)
    _assert_ok(check_point(GEMM, "triton", case, device, seed), case)


@pytest.mark.parametrize("layout", ["nk", "kn"])
@pytest.mark.parametrize("dtype", INTERPRETER_DTYPES)
def test_torch_baseline(device, seed, dtype, layout):
    case = GEMM.case(dtype, M=3, N=77, K=131, w_layout=layout)
    _assert_ok(check_point(GEMM, "torch", case, device, seed), case)


def test_poisoned_output_is_fully_written(device, seed):
    """check_point hands a NaN-filled ``out``: a skipped tile would make the error NaN."""
    case = GEMM.case("fp16", M=65, N=130, K=64)
    for impl in ("triton", "torch"):
        checked = check_point(GEMM, impl, case, device, seed)
        assert torch.isfinite(checked.inputs["out"]).all()
        _assert_ok(checked, case)


def test_strided_x_and_out(device, seed):
    """x and y as column slices of wider buffers (row stride ≠ width) and W as a transposed view."""
    gen = generator_for(device, seed)
    x = torch.randn((5, 160), generator=gen, device=device).half()[:, 7:138]
    w = (torch.randn((131, 77), generator=gen, device=device) / 131**0.5).half().t()
    out = torch.full((5, 100), float("nan"), dtype=torch.float16, device=device)[:, 3:80]
    gemm(x, w, out)
    assert relative_error(out, linear_reference(x, w)) <= GEMM.tolerance[DType.FP16]


def cancelling_inputs(M: int, N: int, K: int, device: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """fp16 x, W whose running dot products climb to ≈ K/2·0.56 and then cancel to O(1).

    The second half of K repeats x and negates W (plus noise), so the final y is small while the
    partial sums are large: an fp16 accumulator (ulp 1 at ~1000) loses far more than the tolerance,
    an fp32 one does not.
    """
    gen = torch.Generator().manual_seed(seed)
    half = K // 2
    x_half = torch.rand((M, half), generator=gen) * 0.5 + 0.5
    w_half = torch.rand((N, half), generator=gen) * 0.5 + 0.5
    noise = torch.randn((N, half), generator=gen) * 0.2
    x = torch.cat([x_half, x_half], dim=1).half().to(device)
    w = torch.cat([w_half, noise - w_half], dim=1).half().to(device)
    return x, w


def fp16_chunk_accumulation(x: torch.Tensor, w: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """What a kernel with an fp16 accumulator would return: one fp16 rounding per K chunk."""
    acc = torch.zeros((x.shape[0], w.shape[0]), dtype=torch.float16)
    xf, wf = x.cpu().float(), w.cpu().float()
    for k in range(0, x.shape[1], chunk):
        acc = (acc.float() + xf[:, k:k + chunk] @ wf[:, k:k + chunk].t()).half()
    return acc


def test_fp32_accumulation_on_long_k(device, seed):
    x, w = cancelling_inputs(3, 40, 4096, device, seed)
    expected = linear_reference(x, w)
    tolerance = GEMM.tolerance[DType.FP16]
    # the test discriminates: fp16 accumulation fails it by a wide margin
    assert relative_error(fp16_chunk_accumulation(x, w), expected.cpu()) > 10 * tolerance
    assert relative_error(gemm(x, w), expected) <= tolerance


def operands(dtype: str, M: int, N: int, K: int, device: str, seed: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """x ~ N(0, 1), W ~ N(0, 1/K) in ``dtype``; fp8 quantised row-wise, its scales in the dict."""
    gen = generator_for(device, seed)
    x = torch.randn((M, K), generator=gen, device=device)
    w = torch.randn((N, K), generator=gen, device=device) / K**0.5
    if dtype != "fp8":
        return x.to(DType(dtype).torch), w.to(DType(dtype).torch), {}
    (x, x_scale), (w, w_scale) = quantize_rowwise(x), quantize_rowwise(w)
    return x, w, {"x_scale": x_scale, "w_scale": w_scale}


def assert_matches_reference(y: torch.Tensor, x: torch.Tensor, w: torch.Tensor, scales: dict, dtype: str):
    expected = linear_reference(x, w, scales.get("x_scale"), scales.get("w_scale"))
    error = relative_error(y, expected)
    assert error <= GEMM.tolerance[DType(dtype)], f"{dtype}: rel_err {error:.3g}"


def fits(config, dtype: str, tma: bool) -> bool:
    """Whether the pruner would offer ``config`` for ``dtype`` on this GPU (always, under the interpreter)."""
    if not torch.cuda.is_available():
        return True
    out_size = 2 if dtype == "fp8" else DType(dtype).itemsize
    return shared_memory_bytes(config, DType(dtype).itemsize, out_size, tma) <= \
        shared_memory_limit(torch.cuda.current_device())


@pytest.mark.parametrize("index", range(len(gemm_configs())))
def test_each_tiled_config(device, seed, index):
    """Every autotune config of the tiled kernel, forced, on an odd small shape."""
    config = gemm_configs()[index]
    dtypes = INTERPRETER_DTYPES if device == "cpu" else ("fp16", "bf16", "fp32", "fp8")
    for dtype in (d for d in dtypes if fits(config, d, tma=False)):
        x, w, scales = operands(dtype, 67, 150, 200, device, seed)
        assert_matches_reference(gemm(x, w, variant="tiled", config=config, **scales), x, w, scales, dtype)


# ---------------------------------------------------------------------------------------------
# Launcher errors, inputs, cost model, skip rules
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make, message", [
    (lambda: (torch.zeros(2, 3, 4), torch.zeros(5, 4)), "2-D"),
    (lambda: (torch.zeros(2, 4), torch.zeros(5, 3)), "K mismatch"),
    (lambda: (torch.zeros(2, 4), torch.zeros(5, 4, dtype=torch.float16)), "one dtype"),
    (lambda: (torch.zeros(2, 4, dtype=torch.int8), torch.zeros(5, 4, dtype=torch.int8)), "one dtype"),
    (lambda: (torch.zeros(2, 4), torch.zeros(5, 4, device="meta")), "different devices"),
])
def test_launcher_rejects_bad_operands(make, message):
    x, w = make()
    with pytest.raises(ValueError, match=message):
        gemm(x, w)


def test_launcher_rejects_bad_out_and_scales():
    x, w = torch.zeros(2, 4), torch.zeros(5, 4)
    with pytest.raises(ValueError, match="out must be"):
        gemm(x, w, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="out must be"):
        gemm(x, w, torch.zeros(2, 5, dtype=torch.float16))
    with pytest.raises(ValueError, match="take no scales"):
        gemm(x, w, x_scale=torch.ones(2), w_scale=torch.ones(5))
    x8, w8 = x.to(torch.float8_e4m3fn), w.to(torch.float8_e4m3fn)
    with pytest.raises(ValueError, match="need x_scale"):
        gemm(x8, w8)
    with pytest.raises(ValueError, match="w_scale must be fp32 of shape"):
        gemm(x8, w8, x_scale=torch.ones(2), w_scale=torch.ones(4))
    with pytest.raises(ValueError, match="K-major"):
        gemm(x8, torch.zeros(4, 5).to(torch.float8_e4m3fn).t(), x_scale=torch.ones(2), w_scale=torch.ones(5))


def test_tma_variant_refused_where_unavailable():
    x, w = torch.zeros(2, 8), torch.zeros(8, 8)
    if not tma_eligible(x, w, torch.zeros(2, 8)):
        with pytest.raises(ValueError, match="tma variant needs"):
            gemm(x, w, variant=GemmVariant.TMA)


def test_flops_and_bytes():
    case = GEMM.case("fp16", M=2, N=3, K=5)
    assert GEMM.flops(case) == 2 * 2 * 3 * 5
    assert GEMM.bytes(case) == (2 * 5 + 3 * 5) * 2 + 2 * 3 * 2
    fp8 = GEMM.case("fp8", M=2, N=3, K=5)
    assert GEMM.bytes(fp8) == (2 * 5 + 3 * 5) * 1 + 2 * 3 * 2 + 4 * (2 + 3)  # bf16 out, fp32 scales


def test_fp8_inputs_and_reference_use_dequantised_values(seed):
    case = GEMM.case("fp8", M=4, N=6, K=32)
    inputs = GEMM.make_inputs(case, torch.device("cpu"), generator_for("cpu", seed))
    x, xs, w, ws = inputs["x"], inputs["x_scale"], inputs["w"], inputs["w_scale"]
    assert x.dtype == w.dtype == torch.float8_e4m3fn and inputs["out"].dtype == torch.bfloat16
    assert xs.shape == (4,) and ws.shape == (6,) and xs.dtype == ws.dtype == torch.float32
    assert torch.allclose(x.float().abs().amax(dim=1), torch.full((4,), FP8_MAX))  # row amax hits 448
    expected = (x.double() * xs.double()[:, None]) @ (w.double() * ws.double()[:, None]).t()
    assert torch.equal(GEMM.reference(inputs, case), expected)


def test_quantize_rowwise_round_trip(seed):
    values = torch.randn((8, 64), generator=torch.Generator().manual_seed(seed))
    q, scale = quantize_rowwise(values)
    assert relative_error(q.double() * scale.double()[:, None], values) < 0.05  # e4m3: 3 mantissa bits


def test_skip_rules():
    interpreter = DeviceCaps("cpu", None, True, 0, 1, 0)
    hopper = DeviceCaps("H100", (9, 0), False, 50 << 20, 132, 80 << 30)
    ampere = DeviceCaps("A100", (8, 0), False, 40 << 20, 108, 80 << 30)
    fp8 = GEMM.case("fp8", M=1, N=64, K=64)
    triton_impl, torch_impl = GEMM.impl("triton"), GEMM.impl("torch")
    assert GEMM.skip_reason(fp8, triton_impl, interpreter).startswith("fp8 needs sm_89+")
    assert GEMM.skip_reason(fp8, triton_impl, ampere).startswith("fp8 needs sm_89+")
    assert GEMM.skip_reason(fp8, triton_impl, hopper) is None
    assert "K-major" in GEMM.skip_reason(GEMM.case("fp8", w_layout="kn"), triton_impl, hopper)
    assert "multiples of 16" in GEMM.skip_reason(GEMM.case("fp8", N=77), torch_impl, hopper)
    assert GEMM.skip_reason(GEMM.case("fp16", N=77), torch_impl, interpreter) is None
    assert "interpreter" in GEMM.skip_reason(GEMM.case("bf16"), triton_impl, interpreter)
    assert GEMM.skip_reason(GEMM.case("bf16"), triton_impl, hopper) is None


# ---------------------------------------------------------------------------------------------
# GPU only: bf16, fp8, TMA, realistic shapes
# ---------------------------------------------------------------------------------------------

REALISTIC = [dict(M=1, N=4096, K=4096), dict(M=64, N=4096, K=14336), dict(M=64, N=14336, K=4096),
             dict(M=1024, N=1024, K=1024), dict(M=300, N=4096, K=1000)]


@pytest.mark.gpu
@pytest.mark.parametrize("shape", REALISTIC, ids=lambda s: f"{s['M']}x{s['N']}x{s['K']}")
@pytest.mark.parametrize("dtype", ["fp16", "bf16", "fp32", "fp8"])
@pytest.mark.parametrize("impl", ["triton", "torch"])
def test_gpu_realistic(seed, impl, dtype, shape):
    case = GEMM.case(dtype, **shape)
    impl_skip(GEMM, impl, case)
    _assert_ok(check_point(GEMM, impl, case, "cuda", seed), case)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["fp16", "bf16", "fp32"])
def test_gpu_kn_layout(seed, dtype):
    case = GEMM.case(dtype, M=512, N=1000, K=777, w_layout="kn")
    _assert_ok(check_point(GEMM, "triton", case, "cuda", seed), case)


@pytest.mark.gpu
@pytest.mark.parametrize("variant", list(GemmVariant))
@pytest.mark.parametrize("dtype", ["fp16", "bf16", "fp32", "fp8"])
def test_gpu_each_variant(seed, dtype, variant):
    """Both variants on an odd shape whose rows are 16-byte aligned (TMA's condition)."""
    x, w, scales = operands(dtype, 257, 272, 320, "cuda", seed)
    assert_matches_reference(gemm(x, w, variant=variant, **scales), x, w, scales, dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("index", range(len(gemm_tma_configs())))
def test_gpu_each_tma_config(seed, index):
    config = gemm_tma_configs()[index]
    for dtype in (d for d in ("fp16", "bf16", "fp32", "fp8") if fits(config, d, tma=True)):
        x, w, scales = operands(dtype, 200, 304, 384, "cuda", seed)
        assert_matches_reference(gemm(x, w, variant="tma", config=config, **scales), x, w, scales, dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("variant", list(GemmVariant))
def test_gpu_fp32_accumulation_each_variant(seed, variant):
    x, w = cancelling_inputs(128, 64, 4096, "cuda", seed)
    error = relative_error(gemm(x, w, variant=variant), linear_reference(x, w))
    assert error <= GEMM.tolerance[DType.FP16]
