"""gemv family: the fma (M ≤ 8) and dot paths, forced and automatic split-K, workspace, errors.

The interpreter covers fp16/fp32; bf16 and fp8 are GPU-marked. Split-K's serial reduction runs
under the interpreter too, but programs run one after another there, so only the GPU tests see
splits finishing concurrently (e.g. a reduction triggered by the wrong ticket) and check
bit-for-bit determinism.
"""

from __future__ import annotations

import pytest
import torch

from kernels.check import check_point
from kernels.gemm import shared_memory_limit
from kernels.linear import linear_reference
from kernels.gemv import DEFAULT_SMS, GEMV, MAX_SPLIT, gemv, gemv_candidates, gemv_workspace, split_for
from kernels.spec import DeviceCaps, DType, relative_error
from tests.test_gemm import assert_matches_reference, cancelling_inputs, impl_skip, operands

INTERPRETER_DTYPES = ("fp16", "fp32")


def _assert_ok(checked, case):
    assert checked.ok, f"{case.label()}: {checked.message()}"


def _sms(device: str) -> int:
    return torch.cuda.get_device_properties(0).multi_processor_count if device == "cuda" else DEFAULT_SMS


@pytest.mark.parametrize("layout", ["nk", "kn"])
@pytest.mark.parametrize("dtype", INTERPRETER_DTYPES)
@pytest.mark.parametrize("M", [1, 3, 17])  # fma with one row, fma with a 3-D tile, dot
def test_triton_odd_shapes(device, seed, dtype, layout, M):
    case = GEMV.case(dtype, M=M, N=77, K=131, w_layout=layout)
    _assert_ok(check_point(GEMV, "triton", case, device, seed), case)


@pytest.mark.parametrize("layout", ["nk", "kn"])
@pytest.mark.parametrize("M", [1, 3, 17])
def test_forced_split_k(device, seed, M, layout):
    """Three K splits over K=1031: every split has whole chunks, the last one the ragged tail."""
    x, w, _ = operands("fp16", M, 77, 1031, device, seed)
    if layout == "kn":
        w = w.t().contiguous().t()
    y = torch.full((M, 77), float("nan"), dtype=torch.float16, device=device)
    gemv(x, w, y, split_k=3)
    assert_matches_reference(y, x, w, {}, "fp16")


def test_automatic_split_k_and_workspace_reuse(device, seed):
    """Few N tiles make the plan split K; a reused workspace gives identical results (counters re-arm)."""
    x, w, _ = operands("fp32", 17, 77, 1031, device, seed)
    configs = gemv_candidates(17, 77, 1031, 4, _sms(device))
    assert max(c.kwargs["SPLIT_K"] for c in configs) > 1
    workspace = gemv_workspace(x, w)
    first = gemv(x, w, workspace=workspace)
    second = gemv(x, w, workspace=workspace)
    assert torch.equal(first, second)
    assert not workspace.counters.any()
    assert_matches_reference(first, x, w, {}, "fp32")


def test_torch_baseline_poisoned(device, seed):
    case = GEMV.case("fp16", M=5, N=77, K=131)
    checked = check_point(GEMV, "torch", case, device, seed)
    _assert_ok(checked, case)
    assert torch.isfinite(checked.inputs["out"]).all()


@pytest.mark.parametrize("split_k", [0, 4])
@pytest.mark.parametrize("M", [1, 3, 17])
def test_fp32_accumulation_on_long_k(device, seed, M, split_k):
    x, w = cancelling_inputs(M, 40, 4096, device, seed)
    error = relative_error(gemv(x, w, split_k=split_k), linear_reference(x, w))
    assert error <= GEMV.tolerance[DType.FP16]  # an fp16 accumulator fails by > 10× (see test_gemm)


@pytest.mark.parametrize("M", [1, 3, 17])
def test_each_candidate_config(device, seed, M):
    """Every config the pruner may offer, forced, on one odd shape (fp16; all dtypes on a GPU)."""
    dtypes = INTERPRETER_DTYPES if device == "cpu" else ("fp16", "bf16", "fp32", "fp8")
    for dtype in dtypes:
        x, w, scales = operands(dtype, M, 77, 1031, device, seed)
        smem = None if device == "cpu" else shared_memory_limit(torch.cuda.current_device())
        for config in gemv_candidates(M, 77, 1031, x.element_size(), _sms(device), 0, smem):
            y = gemv(x, w, config=config, **scales)
            assert_matches_reference(y, x, w, scales, dtype)


def test_candidates_follow_the_batch():
    one = gemv_candidates(1, 4096, 4096, 2, DEFAULT_SMS)
    assert one and all(not c.kwargs["USE_DOT"] and c.kwargs["BLOCK_M"] == 1 for c in one)  # no padded tiles
    few = gemv_candidates(5, 4096, 4096, 2, DEFAULT_SMS)
    assert {c.kwargs["USE_DOT"] for c in few} == {False, True}
    assert {c.kwargs["BLOCK_M"] for c in few} == {8, 16}
    many = gemv_candidates(33, 4096, 4096, 4, DEFAULT_SMS, smem_limit=227 * 1024)
    assert many and all(c.kwargs["USE_DOT"] and c.kwargs["BLOCK_M"] == 64 for c in many)
    assert all(c.num_stages * (64 + c.kwargs["BLOCK_N"]) * c.kwargs["BLOCK_K"] * 4 <= 227 * 1024 for c in many)


def test_split_plan():
    assert split_for(N=8192, K=8192, block_n=16, block_k=512, num_sms=132) == 1  # 512 tiles fill 132 SMs
    assert split_for(N=1024, K=8192, block_n=16, block_k=512, num_sms=132) == 5  # 64 tiles: 5 splits
    assert split_for(N=64, K=2048, block_n=16, block_k=512, num_sms=132) == 2  # ≥ 2 chunks per split
    assert split_for(N=64, K=1 << 20, block_n=16, block_k=512, num_sms=132) == MAX_SPLIT
    assert split_for(N=8192, K=8192, block_n=16, block_k=512, num_sms=132, request=3) == 3


def test_launcher_errors():
    x, w = torch.zeros(65, 8), torch.zeros(4, 8)
    with pytest.raises(ValueError, match="M ≤ 64"):
        gemv(x, w)
    with pytest.raises(ValueError, match="split_k"):
        gemv(x[:2], w, split_k=MAX_SPLIT + 1)
    with pytest.raises(ValueError, match="split_k"):
        gemv(x[:2], w, split_k=-1)
    with pytest.raises(ValueError, match="K mismatch"):
        gemv(x[:2], torch.zeros(4, 9))
    small = gemv_workspace(torch.zeros(1, 8), w, split_k=2)
    with pytest.raises(ValueError, match="workspace too small"):
        gemv(torch.zeros(2, 8), w, split_k=4, workspace=small)


def test_flops_bytes_and_skip():
    case = GEMV.case("fp16", M=1, N=3, K=5)
    assert GEMV.flops(case) == 30
    assert GEMV.bytes(case) == (5 + 15) * 2 + 3 * 2
    interpreter = DeviceCaps("cpu", None, True, 0, 1, 0)
    assert "M ≤ 64" in GEMV.skip_reason(GEMV.case("fp16", M=128), GEMV.impl("triton"), interpreter)
    assert GEMV.skip_reason(GEMV.case("fp8"), GEMV.impl("triton"), interpreter).startswith("fp8 needs sm_89+")
    assert GEMV.skip_reason(case, GEMV.impl("triton"), interpreter) is None


# ---------------------------------------------------------------------------------------------
# GPU only
# ---------------------------------------------------------------------------------------------

REALISTIC = [dict(M=1, N=4096, K=4096), dict(M=1, N=14336, K=4096), dict(M=64, N=4096, K=14336),
             dict(M=8, N=1024, K=8192), dict(M=33, N=1000, K=777)]


@pytest.mark.gpu
@pytest.mark.parametrize("shape", REALISTIC, ids=lambda s: f"{s['M']}x{s['N']}x{s['K']}")
@pytest.mark.parametrize("dtype", ["fp16", "bf16", "fp32", "fp8"])
@pytest.mark.parametrize("impl", ["triton", "torch"])
def test_gpu_realistic(seed, impl, dtype, shape):
    case = GEMV.case(dtype, **shape)
    impl_skip(GEMV, impl, case)
    _assert_ok(check_point(GEMV, impl, case, "cuda", seed), case)


@pytest.mark.gpu
@pytest.mark.parametrize("split_k", [0, 2, 7, MAX_SPLIT])
@pytest.mark.parametrize("dtype", ["bf16", "fp8"])
def test_gpu_split_k_is_deterministic(seed, dtype, split_k):
    """Concurrent splits, serial reduction: repeated runs agree bit for bit and with the reference."""
    x, w, scales = operands(dtype, 3, 1024, 8192, "cuda", seed)
    workspace = gemv_workspace(x, w, split_k)
    runs = [gemv(x, w, x_scale=scales.get("x_scale"), w_scale=scales.get("w_scale"), split_k=split_k,
                 workspace=workspace) for _ in range(5)]
    assert all(torch.equal(runs[0], r) for r in runs[1:])
    assert_matches_reference(runs[0], x, w, scales, dtype)
