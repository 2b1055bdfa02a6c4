"""Suite data: every suite expands against the registered specs; presets carry the published shapes."""

import pytest

from bench.suites import Shape, Sweep, expand, get_suite, suite_names
from bench.suites.presets import BATCHES, llm_linear_shapes
from kernels.models import LLAMA3_8B, LLAMA3_70B
from kernels import registry
from kernels.spec import UsageError


@pytest.mark.parametrize("name", suite_names())
def test_every_suite_expands_to_valid_points(name):
    points = expand(get_suite(name).sweeps)
    assert points
    assert len({p.key() for p in points}) == len(points)
    for point in points:
        spec = registry.get(point.kernel)
        spec.impl(point.impl)
        if not point.skip:
            assert point.case == spec.case(point.case.dtype, **point.case.as_dict())


def test_llama_projection_shapes():
    shapes = {s.label: dict(s.values) for s in llm_linear_shapes()}
    assert shapes["llama3-8b.k"] == {"N": 1024, "K": 4096}
    assert shapes["llama3-8b.down"] == {"N": 4096, "K": 14336}
    assert shapes["llama3-70b.gate"] == {"N": 28672, "K": 8192}
    assert shapes["llama3-70b.o"] == {"N": 8192, "K": 8192}
    assert shapes["mixtral-8x7b.expert.w2"] == {"N": 4096, "K": 14336}
    assert BATCHES[0] == 1 and BATCHES[-1] == 4096 and len(BATCHES) == 13
    assert LLAMA3_8B.kv_heads == LLAMA3_70B.kv_heads == 8


def test_unsupported_dtype_is_an_explicit_skip():
    points = expand([Sweep.make("copy", ("triton",), ("fp8",), N=(16,))])
    assert points[0].skip == "copy does not take fp8"


def test_a_suite_naming_a_missing_impl_fails_loudly():
    with pytest.raises(UsageError, match="no impl"):
        expand([Sweep.make("copy", ("cublas",), ("fp16",), N=(16,))])


def test_shape_values_are_validated():
    with pytest.raises(UsageError, match="below the minimum"):
        expand([Sweep.make("copy", ("triton",), ("fp16",), shapes=(Shape.of("bad", N=0),))])


def test_presets_of_one_shape_are_measured_once_under_every_label():
    points = [p for p in expand(get_suite("linear").sweeps)
              if p.kernel == "gemm" and p.impl == "triton" and p.case.dtype.value == "fp16" and p.case["M"] == 1
              and (p.case["N"], p.case["K"]) == (14336, 4096)]
    assert len(points) == 1  # llama3-8b.gate, .up and the Mixtral expert's w1/w3 share it
    labels = set(points[0].label.split("+"))
    assert {"llama3-8b.gate", "llama3-8b.up", "mixtral-8x7b.expert.w1", "mixtral-8x7b.expert.w3"} <= labels
