"""read / write / fma / launch ceiling kernels against their references, on odd sizes."""

import pytest
import torch

from bench.suites import expand, get_suite
from kernels import registry
from kernels.ceilings import FMA, LAUNCH, READ, READ_ROW, WRITE, fma_chain, read_rows
from kernels.check import check_point
from kernels.spec import DType


@pytest.mark.parametrize("kernel", ["read", "write"])
@pytest.mark.parametrize("dtype", [DType.FP32, DType.FP16, DType.BF16])
@pytest.mark.parametrize("n", [1, 4095, 2 * READ_ROW, 3 * READ_ROW + 17])
def test_memory_ceiling_kernels(kernel, dtype, n, device, seed):
    spec = registry.get(kernel)
    for impl in spec.impls:
        case = spec.case(dtype, N=n)
        if spec.skip_reason(case, impl, caps=None):
            continue
        checked = check_point(spec, impl, case, device, seed)
        assert checked.ok, f"{impl.name}: {checked.message()}"


@pytest.mark.parametrize("n, iters", [(1, 1), (1000, 7), (5000, 64)])
def test_fma_chain(n, iters, device, seed):
    checked = check_point(FMA, "triton", FMA.case("fp32", N=n, iters=iters), device, seed)
    assert checked.ok, checked.message()


@pytest.mark.parametrize("impl", ["triton", "torch"])
def test_launch_kernel_writes_its_element(impl, device, seed):
    checked = check_point(LAUNCH, impl, LAUNCH.case("fp32", count=3), device, seed)
    assert checked.ok, checked.message()


def test_torch_read_skips_partial_rows():
    case = READ.case("fp32", N=READ_ROW + 1)
    assert "whole rows" in READ.skip_reason(case, READ.impl("torch"), caps=None)
    assert READ.skip_reason(READ.case("fp32", N=2 * READ_ROW), READ.impl("torch"), caps=None) is None


def test_costs_from_shape():
    assert READ.bytes(READ.case("fp16", N=READ_ROW + 1)) == (READ_ROW + 1) * 2 + 2 * 4
    assert WRITE.bytes(WRITE.case("bf16", N=10)) == 20
    assert FMA.flops(FMA.case("fp32", N=10, iters=100)) == 2000
    assert FMA.bytes(FMA.case("fp32", N=10, iters=100)) == 80


def test_launchers_reject_bad_input(device):
    with pytest.raises(ValueError, match="contiguous 1-D"):
        read_rows(torch.zeros(3, 3, device=device))
    with pytest.raises(ValueError, match="fp32"):
        fma_chain(torch.zeros(8, dtype=torch.float16, device=device), 3)
    with pytest.raises(ValueError, match="iters"):
        fma_chain(torch.zeros(8, device=device), 0)


def test_ceilings_suite_has_warm_l2_and_both_launch_modes():
    points = expand(get_suite("ceilings").sweeps)
    timings = {(p.kernel, p.timing) for p in points}
    assert ("read", (("l2", "warm"),)) in timings
    assert ("launch", (("l2", "warm"), ("graph", "never"))) in timings
    assert ("launch", (("l2", "warm"), ("graph", "always"))) in timings
    # the same case under two timing policies stays two points
    launches = [p for p in points if p.kernel == "launch" and p.impl == "triton" and p.case["count"] == 1]
    assert len(launches) == 2
