"""Ceiling kernels: what the device can do at best, measured by the same harness as everything else.

``read`` (row sums: DRAM/L2 read bandwidth), ``write`` (fill: write bandwidth), ``fma`` (dependent
FMA chains: CUDA-core fp32 FLOP/s) and ``launch`` (a one-element kernel: launch latency, in a stream
or replayed from a CUDA graph). ``copy`` and ``triad`` live in :mod:`kernels.stream`; tensor-core
peaks come from large ``gemm`` points.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.spec import Axis, Case, DType, Impl, Inputs, KernelSpec, Launch, TuneSpace, poisoned, scaled_randn
from kernels.spaces import launch_spaces, meta
from kernels.stream import N_AXIS, stream_configs, stream_pruner
from kernels.tuning import Limits, autotune, describe

READ_ROW = 4096  # elements summed per output value: the write traffic is 1/4096 of the read
FILL_VALUE = 1.5
FMA_B, FMA_C = 0.5, 0.25  # a ← a·b + c contracts towards c/(1−b): rounding errors do not grow


def fma_configs() -> list[triton.Config]:
    return [triton.Config({"BLOCK": block}, num_warps=warps) for block in (4096, 2048, 8192) for warps in (4, 8)]


@triton.jit
def _read_kernel(
    x_ptr,  # in:  [n]
    sums_ptr,  # out: [cdiv(n, ROW)] fp32
    n,
    ROW: tl.constexpr,
):
    """sums[r] = Σ x[r·ROW : (r+1)·ROW] in fp32; one program per row, the last row masked."""
    row = tl.program_id(0).to(tl.int64)
    offsets = row * ROW + tl.arange(0, ROW)
    if row * ROW + ROW <= n:
        values = tl.load(x_ptr + offsets, eviction_policy="evict_first")
    else:
        values = tl.load(x_ptr + offsets, mask=offsets < n, other=0.0)
    tl.store(sums_ptr + row, tl.sum(values.to(tl.float32), axis=0))


@autotune(stream_configs(), key=["n"], prune=stream_pruner(arrays=1))
@triton.jit
def _write_kernel(
    y_ptr,  # out: [n]
    value,  # fp32 constant
    n,
    BLOCK: tl.constexpr,
):
    """y[i] = value for i < n: writes only, 16-byte stores on full blocks."""
    start = tl.program_id(0).to(tl.int64) * BLOCK
    offsets = start + tl.arange(0, BLOCK)
    # built in fp32 and converted: Triton 3.6's interpreter cannot fill a bf16 block directly
    fill = tl.full((BLOCK,), value, dtype=tl.float32).to(y_ptr.dtype.element_ty)
    if start + BLOCK <= n:
        tl.store(y_ptr + offsets, fill)
    else:
        tl.store(y_ptr + offsets, fill, mask=offsets < n)


@autotune(fma_configs(), key=["n", "iters"])
@triton.jit
def _fma_kernel(
    x_ptr,  # in:  [n] fp32
    y_ptr,  # out: [n] fp32
    b, c,  # fp32 constants
    n, iters,
    BLOCK: tl.constexpr,
):
    """y[i] = f^iters(x[i]) with f(a) = a·b + c as fp32 FMAs: 2·iters FLOPs per element.

    Each thread holds BLOCK / (32·warps) independent chains, enough to hide FMA latency.
    """
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    a = tl.load(x_ptr + offsets, mask=mask, other=0.0)
    for _ in range(iters):
        a = tl.fma(a, b, c)
    tl.store(y_ptr + offsets, a, mask=mask)


@triton.jit
def _launch_kernel(y_ptr):
    """y[0] = 1: the smallest kernel that still proves it ran."""
    tl.store(y_ptr, 1.0)


def read_rows(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Row sums of ``x`` in rows of READ_ROW elements (fp32)."""
    if x.dim() != 1 or not x.is_contiguous():
        raise ValueError(f"read takes a contiguous 1-D tensor, got shape {tuple(x.shape)}")
    rows = triton.cdiv(x.numel(), READ_ROW)
    out = torch.empty(rows, dtype=torch.float32, device=x.device) if out is None else out
    if out.shape != (rows,) or out.dtype != torch.float32:
        raise ValueError(f"read needs an fp32 output of {rows} values")
    if rows:
        _read_kernel[(rows,)](x, out, x.numel(), ROW=READ_ROW, num_warps=8)
    return out


def fill(out: torch.Tensor, value: float) -> torch.Tensor:
    if out.dim() != 1 or not out.is_contiguous():
        raise ValueError(f"write takes a contiguous 1-D tensor, got shape {tuple(out.shape)}")
    n = out.numel()
    if n:
        _write_kernel[lambda meta: (triton.cdiv(n, meta["BLOCK"]),)](out, float(value), n)
    return out


def fma_chain(x: torch.Tensor, iters: int, out: torch.Tensor | None = None) -> torch.Tensor:
    if x.dtype != torch.float32 or x.dim() != 1 or not x.is_contiguous():
        raise ValueError("fma takes a contiguous 1-D fp32 tensor")
    if iters < 1:
        raise ValueError(f"fma needs iters ≥ 1, got {iters}")
    out = torch.empty_like(x) if out is None else out
    n = x.numel()
    _fma_kernel[lambda meta: (triton.cdiv(n, meta["BLOCK"]),)](x, out, FMA_B, FMA_C, n, iters)
    return out


def empty_launches(out: torch.Tensor, count: int) -> torch.Tensor:
    for _ in range(count):
        _launch_kernel[(1,)](out)
    return out


def read_reference(x: torch.Tensor) -> torch.Tensor:
    rows = triton.cdiv(x.numel(), READ_ROW)
    padded = torch.zeros(rows * READ_ROW, dtype=torch.float64, device=x.device)
    padded[: x.numel()] = x.to(torch.float64)
    return padded.view(rows, READ_ROW).sum(dim=1)


def fma_reference(x: torch.Tensor, iters: int) -> torch.Tensor:
    a = x.to(torch.float64)
    for _ in range(iters):
        a = a * FMA_B + FMA_C
    return a


# ---------------------------------------------------------------------------------------------
# Specs
# ---------------------------------------------------------------------------------------------

def _read_candidates(case: Case, limits: Limits) -> tuple[TuneSpace, ...]:
    x = meta(case["N"], case.dtype.torch)
    return launch_spaces(lambda: read_rows(x), {"read": _read_kernel}, limits)


def _write_candidates(case: Case, limits: Limits) -> tuple[TuneSpace, ...]:
    y = meta(case["N"], case.dtype.torch)
    return launch_spaces(lambda: fill(y, FILL_VALUE), {"write": _write_kernel}, limits)


def _fma_candidates(case: Case, limits: Limits) -> tuple[TuneSpace, ...]:
    x = meta(case["N"])
    return launch_spaces(lambda: fma_chain(x, case["iters"]), {"fma": _fma_kernel}, limits)


def _launch_candidates(case: Case, limits: Limits) -> tuple[TuneSpace, ...]:
    return launch_spaces(lambda: empty_launches(meta(1), case["count"]), {"launch": _launch_kernel}, limits)


ITERS_AXIS = Axis("iters", int, 512, "dependent FMAs per element", minimum=1)
MEMORY_DTYPES = (DType.FP32, DType.FP16, DType.BF16)


def _vector(case: Case, device, gen) -> torch.Tensor:
    return scaled_randn((case["N"],), dtype=case.dtype.torch, device=device, generator=gen)


def _read_inputs(case: Case, device, gen) -> Inputs:
    rows = triton.cdiv(case["N"], READ_ROW)
    return {"x": _vector(case, device, gen), "out": poisoned((rows,), dtype=torch.float32, device=device)}


def _build_read_torch(inputs: Inputs, case: Case) -> Launch:
    rows = inputs["x"].view(-1, READ_ROW)
    return Launch(lambda: torch.sum(rows, dim=1, dtype=torch.float32, out=inputs["out"]), lambda: "torch.sum(dim=1)")


def _torch_read_skip(case: Case, caps) -> str | None:
    return None if case["N"] % READ_ROW == 0 else f"torch read needs N % {READ_ROW} == 0 (whole rows)"


READ = KernelSpec(
    name="read",
    summary=f"row sums over rows of {READ_ROW} elements: DRAM (or L2) read bandwidth",
    axes=(N_AXIS,),
    dtypes=MEMORY_DTYPES,
    impls=(
        Impl("triton", lambda inputs, case: Launch(lambda: read_rows(inputs["x"], inputs["out"]),
                                                   lambda: f"ROW={READ_ROW} warps=8"), "Triton row sums",
             candidates=_read_candidates),
        Impl("torch", _build_read_torch, "torch.sum over rows", skip=_torch_read_skip),
    ),
    make_inputs=_read_inputs,
    reference=lambda inputs, case: read_reference(inputs["x"]),
    flops=lambda case: case["N"],
    bytes=lambda case: case["N"] * case.dtype.itemsize + triton.cdiv(case["N"], READ_ROW) * 4,
    # fp32 sums of READ_ROW O(1) values: relative error ~ sqrt(ROW)·2^-24 on a sum of size ~sqrt(ROW)
    tolerance={DType.FP32: 1e-5, DType.FP16: 1e-5, DType.BF16: 1e-5},
    tags=("memory", "ceiling"),
)

WRITE = KernelSpec(
    name="write",
    summary="y = constant: write bandwidth",
    axes=(N_AXIS,),
    dtypes=MEMORY_DTYPES,
    impls=(
        Impl("triton", lambda inputs, case: Launch(lambda: fill(inputs["out"], FILL_VALUE),
                                                   lambda: describe(_write_kernel.best_config)), "Triton fill",
             candidates=_write_candidates),
        Impl("torch", lambda inputs, case: Launch(lambda: inputs["out"].fill_(FILL_VALUE), lambda: "Tensor.fill_"),
             "Tensor.fill_"),
    ),
    make_inputs=lambda case, device, gen: {"out": poisoned((case["N"],), dtype=case.dtype.torch, device=device)},
    reference=lambda inputs, case: torch.full((case["N"],), FILL_VALUE, dtype=torch.float64),
    flops=lambda case: 0,
    bytes=lambda case: case["N"] * case.dtype.itemsize,
    tolerance={DType.FP32: 0.0, DType.FP16: 0.0, DType.BF16: 0.0},  # 1.5 is exact in every dtype
    tags=("memory", "ceiling"),
)

FMA = KernelSpec(
    name="fma",
    summary="iters dependent fp32 FMAs per element: CUDA-core FLOP/s",
    axes=(Axis("N", int, 1 << 22, "elements", minimum=1), ITERS_AXIS),
    dtypes=(DType.FP32,),
    impls=(
        Impl("triton", lambda inputs, case: Launch(lambda: fma_chain(inputs["x"], case["iters"], inputs["out"]),
                                                   lambda: describe(_fma_kernel.best_config)), "Triton FMA chains",
             candidates=_fma_candidates),
    ),
    make_inputs=lambda case, device, gen: {"x": _vector(case, device, gen),
                                           "out": poisoned((case["N"],), dtype=torch.float32, device=device)},
    reference=lambda inputs, case: fma_reference(inputs["x"], case["iters"]),
    flops=lambda case: 2 * case["N"] * case["iters"],
    bytes=lambda case: 2 * case["N"] * 4,
    tolerance={DType.FP32: 1e-6},  # the chain contracts: fp32 rounding stays ~2^-24 relative
    tags=("compute", "ceiling"),
)

def _build_torch_launches(inputs: Inputs, case: Case) -> Launch:
    out, count = inputs["out"], case["count"]

    def run():
        for _ in range(count):
            out.fill_(1.0)
        return out

    return Launch(run, lambda: "Tensor.fill_")


LAUNCH = KernelSpec(
    name="launch",
    summary="count back-to-back one-element kernels: launch latency = median_s / count "
            "(stream vs CUDA graph: the launch column)",
    axes=(Axis("count", int, 1, "kernels launched per timed run", minimum=1),),
    dtypes=(DType.FP32,),
    impls=(
        Impl("triton", lambda inputs, case: Launch(lambda: empty_launches(inputs["out"], case["count"]),
                                                   lambda: "1 program"), "Triton", candidates=_launch_candidates),
        Impl("torch", _build_torch_launches, "Tensor.fill_ on one element"),
    ),
    make_inputs=lambda case, device, gen: {"out": poisoned((1,), dtype=torch.float32, device=device)},
    reference=lambda inputs, case: torch.ones(1, dtype=torch.float64),
    flops=lambda case: 0,
    bytes=lambda case: 4,
    tolerance={DType.FP32: 0.0},
    tags=("latency", "ceiling"),
)
