"""copy and triad: Triton kernels against the reference, on sizes that are not multiples of a block."""

import pytest
import torch

from kernels import registry
from kernels.check import check_point
from kernels.spec import DType, Impl, Launch
from kernels.stream import COPY, TRIAD, copy, triad

ODD_SIZES = (1, 7, 1023, 4097, 3 * 4096 + 5)


@pytest.mark.parametrize("kernel", ["copy", "triad"])
@pytest.mark.parametrize("dtype", [DType.FP32, DType.FP16, DType.BF16])
@pytest.mark.parametrize("n", ODD_SIZES)
@pytest.mark.parametrize("impl", ["triton", "torch"])
def test_stream_kernels_match_reference(kernel, dtype, n, impl, device, seed):
    spec = registry.get(kernel)
    checked = check_point(spec, impl, spec.case(dtype, N=n), device, seed)
    assert checked.ok, checked.message()


@pytest.mark.parametrize("dtype", [DType.FP16, DType.BF16])
def test_triad_torch_single_element_seed_that_used_to_cancel(dtype, device):
    # seed 997328039 drew b ≈ −s·c: the one-element sum cancelled and CPU torch's double rounding
    # (s·c, then the sum) exceeded the tolerance. Positive inputs leave nothing to cancel.
    checked = check_point(TRIAD, "torch", TRIAD.case(dtype, N=1), device, 997328039)
    assert checked.ok, checked.message()


def test_gate_catches_an_unwritten_element(device, seed):
    def build(inputs, case):
        x, out = inputs["x"], inputs["out"]
        return Launch(run=lambda: (copy(x[:-1], out[:-1]), out)[1])  # forgets the last element

    checked = check_point(COPY, Impl("broken", build), COPY.case("fp32", N=4097), device, seed)
    assert not checked.ok


def test_gate_catches_a_wrong_value(device, seed):
    def build(inputs, case):
        b, c, out = inputs["b"], inputs["c"], inputs["out"]
        return Launch(run=lambda: triad(b, c, 2.999, out))  # wrong scalar

    checked = check_point(TRIAD, Impl("broken", build), TRIAD.case("fp32", N=4097), device, seed)
    assert not checked.ok


def test_copy_large_offsets_do_not_wrap(device):
    # offsets are 64-bit in the kernel; here just check a size past one grid row of blocks
    x = torch.arange(70_001, dtype=torch.float32, device=device)
    assert torch.equal(copy(x), x)


def test_launchers_reject_bad_input(device):
    x = torch.zeros(10, device=device)
    with pytest.raises(ValueError, match="contiguous 1-D"):
        copy(torch.zeros(4, 4, device=device))
    with pytest.raises(ValueError, match="contiguous 1-D"):
        copy(torch.zeros(20, device=device)[::2])
    with pytest.raises(ValueError, match="one shape, dtype and device"):
        triad(x, torch.zeros(11, device=device), 1.0)
    with pytest.raises(ValueError, match="one shape, dtype and device"):
        copy(x, torch.zeros(10, dtype=torch.float16, device=device))


def test_flops_and_bytes_from_shape():
    assert COPY.flops(COPY.case("fp16", N=1000)) == 0
    assert COPY.bytes(COPY.case("fp16", N=1000)) == 4000
    assert TRIAD.flops(TRIAD.case("fp32", N=1000)) == 2000
    assert TRIAD.bytes(TRIAD.case("fp32", N=1000)) == 12000


@pytest.mark.gpu
@pytest.mark.parametrize("kernel", ["copy", "triad"])
def test_stream_kernels_on_gpu_at_size(kernel, seed):
    spec = registry.get(kernel)
    for dtype in spec.dtypes:
        checked = check_point(spec, "triton", spec.case(dtype, N=(1 << 26) + 3), "cuda", seed)
        assert checked.ok, checked.message()
