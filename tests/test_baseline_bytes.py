"""Each torch baseline is credited the bytes it moves (issue 11 §5): the formulas in the specs against
the traffic of the ops a baseline's timed run actually dispatches, counted on the CPU.

The counter sees every aten op below the Python API: an op reads each tensor argument once (a
broadcast operand only its stored elements) and writes its outputs; views move nothing. That is the
same accounting the formulas use, so a baseline that gains, loses or widens an op fails here.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from kernels import registry
from kernels.quant_formats import dequantize, dequantize_traffic, e2m1_lut, quantize
from kernels.spec import generator_for

FILLS = {"full_like", "empty_like", "zeros_like", "ones_like", "empty", "empty_strided", "fill_", "zero_"}  # write only
OVERWRITES = {"copy_"}  # in-place ops that do not read their destination


def _stored_bytes(t: torch.Tensor) -> int:
    elements = 1
    for size, stride in zip(t.shape, t.stride()):
        if stride != 0:
            elements *= size
    return elements * t.element_size()


class Traffic(TorchDispatchMode):
    """Bytes read and written by the aten ops run inside the mode; SDPA kernels count their output only
    (the CPU flash kernel also returns a logsumexp a GPU forward-only call does not keep)."""

    def __init__(self):
        super().__init__()
        self.total = 0
        self.ops: list[tuple[str, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        returns = func._schema.returns
        if any(r.alias_info is not None and not r.alias_info.is_write for r in returns):
            return out  # a view
        outs = [o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor)]
        if "scaled_dot_product" in func._schema.name:
            outs = outs[:1]
        name = func._schema.name.split("::")[-1]
        ins = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        if name in FILLS:
            ins = []
        elif "out" in kwargs or name in OVERWRITES:  # the destination is written, not read
            ins = [a for a in ins if not any(a is o for o in outs)]
        read = sum(_stored_bytes(a) for a in ins)  # in-place arithmetic (mul_) reads its self too
        moved = read + sum(o.numel() * o.element_size() for o in outs)
        self.ops.append((func._schema.name, moved))
        self.total += moved
        return out


WEIGHTS = [("int8", None, 7, 40), ("fp8", None, 5, 48), ("int4", 32, 7, 64), ("int4", 256, 3, 512),
           ("mxfp4", 32, 5, 96), ("nvfp4", 16, 7, 48)]


@pytest.mark.parametrize("fmt,group,n,k", WEIGHTS)
def test_dequantize_traffic_is_what_its_ops_move(fmt, group, n, k, seed):
    qw = quantize(torch.randn(n, k, generator=torch.Generator().manual_seed(seed)), fmt, group)
    e2m1_lut("cpu")
    with Traffic() as traffic:
        dequantize(qw)
    assert traffic.total == dequantize_traffic(fmt, n, k, group), traffic.ops


def _point(kernel: str, **values):
    spec = registry.get(kernel)
    case = spec.case("fp16", **values)
    return spec, case, spec.make_inputs(case, torch.device("cpu"), generator_for("cpu", 0))


QUANT_POINTS = [
    ("dequant", "torch", dict(format="int4", group_size=32, N=7, K=64)),
    ("dequant", "torch", dict(format="nvfp4", group_size=16, N=9, K=48)),
    ("qgemv", "torch_dequant", dict(format="mxfp4", group_size=32, M=3, N=7, K=64)),
    ("qgemv", "torch_dequant", dict(format="int8", M=1, N=5, K=40)),
    ("qgemm", "torch_dequant", dict(format="int4", group_size=256, M=17, N=3, K=512)),
    ("qgemm", "torch_dequant", dict(format="nvfp4", group_size=16, M=5, N=9, K=80)),
    ("qgemm", "torch", dict(format="fp8", M=5, N=9, K=40)),
]


@pytest.mark.parametrize("kernel,impl,values", QUANT_POINTS)
def test_quant_baselines_are_credited_what_they_move(kernel, impl, values):
    """≈ 13 B (int8/fp8) to ≈ 50 B (4-bit) per weight for the dequantize-then-matmul baselines, not the
    packed bytes."""
    spec, case, inputs = _point(kernel, **values)
    launch = spec.impl(impl).build(inputs, case)
    launch.run()
    with Traffic() as traffic:
        launch.run()
    assert traffic.total == spec.bytes_for(case, spec.impl(impl)), traffic.ops


@pytest.mark.parametrize("kernel,impl,values", [p for p in QUANT_POINTS if p[0] == "dequant" or p[1] == "torch_dequant"])
def test_no_host_to_device_copy_inside_the_timed_run(kernel, impl, values, monkeypatch):
    """Constants (the e2m1 table) are built when the point is built: a torch.tensor(...) from Python data
    in the timed run is a blocking host→device copy on a GPU and cannot be captured in a CUDA graph."""
    spec, case, inputs = _point(kernel, **values)
    launch = spec.impl(impl).build(inputs, case)
    made = []
    original = torch.tensor
    monkeypatch.setattr(torch, "tensor", lambda *a, **k: made.append(a) or original(*a, **k))
    launch.run()
    assert made == []


DECODE_POINTS = [
    dict(batch=3, heads=4, kv_heads=2, q_len=2, context=37, head_dim=16, cache="contiguous"),
    dict(batch=3, heads=4, kv_heads=2, q_len=2, context=37, head_dim=32, cache="paged", page_size=16),
    dict(batch=2, heads=4, kv_heads=1, q_len=1, context=29, head_dim=16, cache="paged", page_size=8,
         kv_dtype="fp8"),
    dict(batch=2, heads=2, kv_heads=2, q_len=3, context=21, head_dim=16, cache="contiguous", kv_dtype="fp8"),
]


@pytest.mark.parametrize("values", DECODE_POINTS)
def test_decode_baseline_is_credited_what_it_moves(values):
    """Gather, dequantise and SDPA over the whole capacity with its mask: ≈ 1.33× the kernel's bytes at
    batch ≥ 2 for the contiguous cache, more when it gathers or dequantises."""
    spec, case, inputs = _point("attn_decode", **values)
    launch = spec.impl("torch").build(inputs, case)
    if "FLASH" not in launch.config():
        pytest.skip(f"counts SDPA as one fused kernel; this torch runs {launch.config()}")
    with Traffic() as traffic:
        launch.run()
    assert traffic.total == spec.bytes_for(case, spec.impl("torch")), traffic.ops
    assert spec.bytes_for(case, spec.impl("torch")) > spec.bytes(case)
