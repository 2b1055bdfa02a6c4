"""STREAM-style memory kernels: ``copy`` (y = x) and ``triad`` (a = b + s·c).

The suite's first memory-bound family and the DRAM ceiling every other kernel is judged against.
Full blocks take an unmasked path so loads and stores stay 16 bytes wide for any N; only the
last block is masked, a slice at a time.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.spec import (
    Axis,
    Case,
    DType,
    Impl,
    Inputs,
    KernelSpec,
    Launch,
    TuneSpace,
    poisoned,
    scaled_randn,
)
from kernels.spaces import launch_spaces, meta
from kernels.tuning import Limits, autotune, describe, device_limits

TRIAD_SCALAR = 3.0
STREAM_BYTES_PER_THREAD = 512  # loaded bytes a thread may hold at once: 128 registers
# The ragged last block runs TAIL elements at a time: with n not a multiple of 16 its mask cannot be
# proven uniform over 16 bytes, so every element is its own predicated access with its own address,
# and a whole BLOCK of them took every register and spilled (copy fp32 BLOCK=16384: 572 B on sm_90a)
# — in every program, since the registers are allocated for the kernel's worst path.
TAIL = tl.constexpr(1024)


def stream_configs() -> list[triton.Config]:
    """Block sizes (elements) × warps; large blocks keep many 16-byte requests in flight per SM."""
    return [
        triton.Config({"BLOCK": block}, num_warps=warps)
        for block in (4096, 8192, 16384, 2048, 1024)
        for warps in (4, 8, 16)
        if block // (32 * warps) >= 4
    ]


def stream_candidates(n: int, itemsize: int, arrays: int, warp_size: int = 32) -> tuple[triton.Config, ...]:
    """The configs worth timing for ``arrays`` streams of n elements: blocks not far beyond the
    array (all masked lanes); ≥ 16 bytes per thread and array, so every access can be 16 bytes
    wide (fp16 BLOCK=2048 with 16 warps compiled to 8-byte loads); at most STREAM_BYTES_PER_THREAD
    loaded per thread in all, beyond which one block's values no longer fit in registers (triad
    fp32 BLOCK=16384 with 4 warps held 1 KiB per thread and spilled 228 B on sm_90a). A thread's
    share counts the device's warp size: AMD's 64-lane wavefronts halve it (copy fp16 BLOCK=1024 with
    4 waves compiled to 8-byte loads for gfx942), so the smallest block doubles there."""
    configs = stream_configs()

    def per_thread(c: triton.Config) -> int:
        return c.kwargs["BLOCK"] * itemsize // (warp_size * c.num_warps)

    smallest = 1024 * warp_size // 32
    useful = [c for c in configs if c.kwargs["BLOCK"] <= max(smallest, triton.next_power_of_2(n))
              and 16 <= per_thread(c) and arrays * per_thread(c) <= STREAM_BYTES_PER_THREAD]
    return tuple(useful or configs[:1])


def stream_pruner(arrays: int):
    """The autotuner's pruner for a kernel loading ``arrays`` streams: an adapter over stream_candidates."""

    def prune(configs, named_args, **kwargs):
        first = next(value for value in named_args.values() if hasattr(value, "element_size"))
        warp_size = device_limits(first.device).warp_size
        return list(stream_candidates(named_args["n"], first.element_size(), arrays, warp_size))

    return prune


@autotune(stream_configs(), key=["n"], prune=stream_pruner(arrays=1))
@triton.jit
def _copy_kernel(
    x_ptr,  # in:  [n]
    y_ptr,  # out: [n]
    n,
    BLOCK: tl.constexpr,
):
    """y[i] = x[i] for i < n; one program per BLOCK elements, 64-bit offsets (n may exceed 2³¹)."""
    start = tl.program_id(0).to(tl.int64) * BLOCK
    offsets = start + tl.arange(0, BLOCK)
    if start + BLOCK <= n:
        tl.store(y_ptr + offsets, tl.load(x_ptr + offsets, eviction_policy="evict_first"))
    else:
        for sub in range(0, BLOCK, TAIL):
            tail = start + sub + tl.arange(0, TAIL)
            mask = tail < n
            tl.store(y_ptr + tail, tl.load(x_ptr + tail, mask=mask), mask=mask)


@autotune(stream_configs(), key=["n"], prune=stream_pruner(arrays=2))
@triton.jit
def _triad_kernel(
    b_ptr,  # in:  [n]
    c_ptr,  # in:  [n]
    a_ptr,  # out: [n]
    scalar,  # s, fp32
    n,
    BLOCK: tl.constexpr,
):
    """a[i] = b[i] + s·c[i], computed in fp32 and rounded once to a's dtype."""
    start = tl.program_id(0).to(tl.int64) * BLOCK
    offsets = start + tl.arange(0, BLOCK)
    if start + BLOCK <= n:
        b = tl.load(b_ptr + offsets, eviction_policy="evict_first").to(tl.float32)
        c = tl.load(c_ptr + offsets, eviction_policy="evict_first").to(tl.float32)
        tl.store(a_ptr + offsets, (b + scalar * c).to(a_ptr.dtype.element_ty))
    else:
        for sub in range(0, BLOCK, TAIL):
            tail = start + sub + tl.arange(0, TAIL)
            mask = tail < n
            b = tl.load(b_ptr + tail, mask=mask).to(tl.float32)
            c = tl.load(c_ptr + tail, mask=mask).to(tl.float32)
            tl.store(a_ptr + tail, (b + scalar * c).to(a_ptr.dtype.element_ty), mask=mask)


def _check_vectors(*tensors: torch.Tensor) -> int:
    first = tensors[0]
    for t in tensors:
        if t.dim() != 1 or not t.is_contiguous():
            raise ValueError(f"stream kernels take contiguous 1-D tensors, got shape {tuple(t.shape)} "
                             f"stride {t.stride()}")
        if t.shape != first.shape or t.dtype != first.dtype or t.device != first.device:
            raise ValueError("stream kernels need tensors of one shape, dtype and device")
    return first.numel()


def copy(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """y = x with the Triton copy kernel."""
    out = torch.empty_like(x) if out is None else out
    n = _check_vectors(x, out)
    if n:
        _copy_kernel[lambda meta: (triton.cdiv(n, meta["BLOCK"]),)](x, out, n)
    return out


def triad(b: torch.Tensor, c: torch.Tensor, scalar: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """a = b + scalar·c with the Triton triad kernel."""
    out = torch.empty_like(b) if out is None else out
    n = _check_vectors(b, c, out)
    if n:
        _triad_kernel[lambda meta: (triton.cdiv(n, meta["BLOCK"]),)](b, c, out, float(scalar), n)
    return out


def copy_reference(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float64)


def triad_reference(b: torch.Tensor, c: torch.Tensor, scalar: float) -> torch.Tensor:
    return b.to(torch.float64) + scalar * c.to(torch.float64)


# ---------------------------------------------------------------------------------------------
# Specs
# ---------------------------------------------------------------------------------------------

N_AXIS = Axis("N", int, 1 << 24, "elements per array", minimum=1)
STREAM_DTYPES = (DType.FP32, DType.FP16, DType.BF16)


def _copy_inputs(case: Case, device: torch.device, gen: torch.Generator) -> Inputs:
    dtype = case.dtype.torch
    return {
        "x": scaled_randn((case["N"],), dtype=dtype, device=device, generator=gen),
        "out": poisoned((case["N"],), dtype=dtype, device=device),
    }


def _triad_inputs(case: Case, device: torch.device, gen: torch.Generator) -> Inputs:
    """|N(0, 1)| values, as STREAM's positive initial values: b + s·c never cancels, so a result
    rounded once or twice (CPU torch rounds s·c first) stays within the dtype's rounding of O(1)."""
    dtype = case.dtype.torch
    n = case["N"]
    return {
        "b": scaled_randn((n,), dtype=dtype, device=device, generator=gen).abs(),
        "c": scaled_randn((n,), dtype=dtype, device=device, generator=gen).abs(),
        "out": poisoned((n,), dtype=dtype, device=device),
    }


def _copy_candidates(case: Case, limits: Limits) -> tuple[TuneSpace, ...]:
    x = meta(case["N"], case.dtype.torch)
    return launch_spaces(lambda: copy(x, torch.empty_like(x)), {"copy": _copy_kernel}, limits)


def _triad_candidates(case: Case, limits: Limits) -> tuple[TuneSpace, ...]:
    b = meta(case["N"], case.dtype.torch)
    launch = lambda: triad(b, torch.empty_like(b), TRIAD_SCALAR, torch.empty_like(b))  # noqa: E731
    return launch_spaces(launch, {"triad": _triad_kernel}, limits)


def _build_copy_triton(inputs: Inputs, case: Case) -> Launch:
    x, out = inputs["x"], inputs["out"]
    return Launch(run=lambda: copy(x, out), config=lambda: describe(_copy_kernel.best_config))


def _build_copy_torch(inputs: Inputs, case: Case) -> Launch:
    x, out = inputs["x"], inputs["out"]
    return Launch(run=lambda: out.copy_(x), config=lambda: "Tensor.copy_")


def _build_triad_triton(inputs: Inputs, case: Case) -> Launch:
    b, c, out = inputs["b"], inputs["c"], inputs["out"]
    return Launch(run=lambda: triad(b, c, TRIAD_SCALAR, out), config=lambda: describe(_triad_kernel.best_config))


def _build_triad_torch(inputs: Inputs, case: Case) -> Launch:
    b, c, out = inputs["b"], inputs["c"], inputs["out"]
    return Launch(run=lambda: torch.add(b, c, alpha=TRIAD_SCALAR, out=out), config=lambda: "torch.add(alpha)")


COPY = KernelSpec(
    name="copy",
    summary="y = x (STREAM copy): one read and one write per element",
    axes=(N_AXIS,),
    dtypes=STREAM_DTYPES,
    impls=(
        Impl("triton", _build_copy_triton, "Triton, unmasked 16-byte body + masked tail",
             candidates=_copy_candidates),
        Impl("torch", _build_copy_torch, "Tensor.copy_ (cudaMemcpy-class copy kernel)"),
    ),
    make_inputs=_copy_inputs,
    reference=lambda inputs, case: copy_reference(inputs["x"]),
    flops=lambda case: 0,
    bytes=lambda case: 2 * case["N"] * case.dtype.itemsize,
    tolerance={DType.FP32: 0.0, DType.FP16: 0.0, DType.BF16: 0.0},  # a copy is exact
    tags=("memory",),
)

TRIAD = KernelSpec(
    name="triad",
    summary="a = b + s·c (STREAM triad): two reads, one write, 2 FLOPs per element",
    axes=(N_AXIS,),
    dtypes=STREAM_DTYPES,
    impls=(
        Impl("triton", _build_triad_triton, "Triton, fp32 arithmetic, unmasked 16-byte body",
             candidates=_triad_candidates),
        Impl("torch", _build_triad_torch, "torch.add(b, c, alpha=s)"),
    ),
    make_inputs=_triad_inputs,
    reference=lambda inputs, case: triad_reference(inputs["b"], inputs["c"], TRIAD_SCALAR),
    flops=lambda case: 2 * case["N"],
    bytes=lambda case: 3 * case["N"] * case.dtype.itemsize,
    # one rounding of an O(1) result to the output dtype: ~2^-p / sqrt(3) in relative norm
    tolerance={DType.FP32: 1e-6, DType.FP16: 1e-3, DType.BF16: 8e-3},
    tags=("memory",),
)
