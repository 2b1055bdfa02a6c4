"""The linear layer y = x·Wᵀ as every linear family sees it: call checks, the one float64 reference,
scaled inputs, FLOPs and bytes from the shape, tolerances, and the cuBLAS baseline.

x: [M, K], W: [N, K] like ``nn.Linear.weight`` (or any strides), y: [M, N]. ``gemm`` and ``gemv``
(kernels/gemm.py, kernels/gemv.py) share all of it; fp8 pieces are in kernels/gemm_fp8.py.
"""

from __future__ import annotations

import torch

from kernels.gemm_fp8 import quantize_rowwise, scaled_mm_launch, scaled_mm_skip
from kernels.spec import Axis, Case, DeviceCaps, DType, Impl, Inputs, Launch, poisoned, scaled_randn
from kernels.spaces import meta
from kernels.targets import fp8_dtype
from kernels.tuning import Limits


LINEAR_DTYPES = {torch.float16: torch.float16, torch.bfloat16: torch.bfloat16, torch.float32: torch.float32,
                 torch.float8_e4m3fn: torch.bfloat16,
                 torch.float8_e4m3fnuz: torch.bfloat16}  # input dtype -> output dtype (fnuz: AMD gfx942's fp8)


def check_linear_args(x, w, out, x_scale, w_scale) -> torch.Tensor:
    """Validate a y = x·Wᵀ call (shared with gemv); returns ``out``, allocated when None."""
    if x.dim() != 2 or w.dim() != 2:
        raise ValueError(f"x and W must be 2-D ([M, K] and [N, K]), got {tuple(x.shape)} and {tuple(w.shape)}")
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"K mismatch: x is {tuple(x.shape)}, W is {tuple(w.shape)} (W must be [N, K])")
    if x.dtype != w.dtype or x.dtype not in LINEAR_DTYPES:
        valid = ", ".join(str(d).removeprefix("torch.") for d in LINEAR_DTYPES)
        raise ValueError(f"x and W need one dtype among {valid}; got {x.dtype} and {w.dtype}")
    if x.device != w.device:
        raise ValueError(f"x and W are on different devices ({x.device}, {w.device})")
    fp8 = x.dtype in (torch.float8_e4m3fn, torch.float8_e4m3fnuz)
    if (x_scale is not None, w_scale is not None) != (fp8, fp8):
        raise ValueError("fp8 x and W need x_scale [M] and w_scale [N] (fp32); other dtypes take no scales")
    if fp8:
        if w.stride(1) != 1:
            raise ValueError("fp8 W must be K-major (stride 1 along K, w_layout nk), as fp8 tensor cores need")
        for name, scale, n in (("x_scale", x_scale, x.shape[0]), ("w_scale", w_scale, w.shape[0])):
            if scale.shape != (n,) or scale.dtype != torch.float32 or scale.device != x.device:
                raise ValueError(f"{name} must be fp32 of shape ({n},) on {x.device}, got {scale.dtype} "
                                 f"{tuple(scale.shape)} on {scale.device}")
    shape, out_dtype = (x.shape[0], w.shape[0]), LINEAR_DTYPES[x.dtype]
    if out is None:
        return torch.empty(shape, dtype=out_dtype, device=x.device)
    if out.shape != shape or out.dtype != out_dtype or out.device != x.device:
        raise ValueError(f"out must be {out_dtype} of shape {shape} on {x.device}, got {out.dtype} "
                         f"{tuple(out.shape)} on {out.device}")
    return out


def linear_reference(x: torch.Tensor, w: torch.Tensor, x_scale: torch.Tensor | None = None,
                     w_scale: torch.Tensor | None = None) -> torch.Tensor:
    """y = x·Wᵀ in float64 from the (dequantised, for fp8) input values: the one linear reference."""
    x64, w64 = x.to(torch.float64), w.to(torch.float64)
    if x_scale is not None:
        x64 = x64 * x_scale.to(torch.float64)[:, None]
        w64 = w64 * w_scale.to(torch.float64)[:, None]
    return x64 @ w64.t()



def linear_axes(default_m: int) -> tuple[Axis, ...]:
    return (
        Axis("M", int, default_m, "batch: rows of x and y", minimum=1),
        Axis("N", int, 4096, "output features: rows of W", minimum=1),
        Axis("K", int, 4096, "input features", minimum=1),
        Axis("w_layout", str, "nk", "nk: W stored [N, K] row-major (nn.Linear); kn: a [K, N] row-major "
             "buffer passed as its transposed view", choices=("nk", "kn")),
    )


def linear_inputs(case: Case, device: torch.device, gen: torch.Generator) -> Inputs:
    """x ~ N(0, 1), W ~ N(0, 1/K) (so y ~ N(0, 1) for any K); fp8 quantises both with row scales."""
    M, N, K = case["M"], case["N"], case["K"]
    fp8 = case.dtype is DType.FP8
    dtype = torch.float32 if fp8 else case.dtype.torch
    x = scaled_randn((M, K), dtype=dtype, device=device, generator=gen)
    if case["w_layout"] == "kn":
        w = scaled_randn((K, N), dtype=dtype, device=device, generator=gen, fan_in=K).t()
    else:
        w = scaled_randn((N, K), dtype=dtype, device=device, generator=gen, fan_in=K)
    inputs: Inputs = {"x": x, "w": w, "x_scale": None, "w_scale": None}
    if fp8:
        inputs["x"], inputs["x_scale"] = quantize_rowwise(x)
        inputs["w"], inputs["w_scale"] = quantize_rowwise(w)  # per output channel: rows of W
        if case["w_layout"] == "kn":  # keep the layout (the launcher rejects it with a clear error)
            inputs["w"] = inputs["w"].t().contiguous().t()
    inputs["out"] = poisoned((M, N), dtype=LINEAR_DTYPES[inputs["x"].dtype], device=device)
    return inputs


def linear_reference_of(inputs: Inputs, case: Case) -> torch.Tensor:
    return linear_reference(inputs["x"], inputs["w"], inputs["x_scale"], inputs["w_scale"])


def linear_flops(case: Case) -> int:
    return 2 * case["M"] * case["N"] * case["K"]


def linear_bytes(case: Case) -> int:
    """x and W read once, y written once (bf16 for fp8), plus the fp32 scales for fp8."""
    M, N, K = case["M"], case["N"], case["K"]
    out_size = DType.BF16.itemsize if case.dtype is DType.FP8 else case.dtype.itemsize
    scales = 4 * (M + N) if case.dtype is DType.FP8 else 0
    return (M * K + N * K) * case.dtype.itemsize + M * N * out_size + scales


# Bounds on the relative Frobenius error against the float64 reference, y ~ N(0, 1) (5–10× the
# expected error, so a lost K tile or a wrong row still fails):
LINEAR_TOLERANCE = {
    DType.FP16: 2e-3,  # fp32 accumulation; one fp16 output rounding ≈ 2e-4 rms
    DType.BF16: 1.6e-2,  # fp32 accumulation; one bf16 output rounding ≈ 1.7e-3 rms
    # tf32 keeps 10 mantissa bits and tensor cores truncate the fp32 inputs: ≈ 1e-3, partly systematic
    DType.FP32: 5e-3,
    DType.FP8: 1.6e-2,  # reference uses the dequantised inputs: only accumulation and the bf16 output remain
}


def _build_torch(inputs: Inputs, case: Case) -> Launch:
    """cuBLAS through torch: matmul (switched to tf32 for fp32, as ours runs), _scaled_mm for fp8."""
    if case.dtype is DType.FP8:
        return scaled_mm_launch(inputs)
    x, wt, out = inputs["x"], inputs["w"].t(), inputs["out"]
    if case.dtype is not DType.FP32:
        return Launch(run=lambda: torch.matmul(x, wt, out=out), config=lambda: "torch.matmul")

    def run_tf32() -> torch.Tensor:
        previous = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("high")  # tf32 for this call only
        try:
            return torch.matmul(x, wt, out=out)
        finally:
            torch.set_float32_matmul_precision(previous)

    return Launch(run=run_tf32, config=lambda: "torch.matmul tf32")


TORCH_IMPL = Impl("torch", _build_torch, "cuBLAS: torch.matmul (tf32 for fp32), torch._scaled_mm rowwise for fp8",
                  skip=lambda case, caps: scaled_mm_skip(case))


def precision_note(case: Case, tensor_cores: bool = True) -> str:
    """What the config string should say about arithmetic beyond the dtype."""
    if not tensor_cores:
        return ""
    return {DType.FP32: " tf32", DType.FP8: " fp8-promote-per-BLOCK_K"}.get(case.dtype, "")


def interpreter_bf16_skip(case: Case, caps: DeviceCaps) -> str | None:
    """Triton's CPU interpreter returns garbage for tl.dot on bf16 operands (a known gap)."""
    if caps.interpret and case.dtype is DType.BF16:
        return "the Triton interpreter mis-computes bf16 tl.dot; bf16 runs on a GPU only"
    return None


def meta_linear_operands(case: Case, limits: Limits | None = None) -> dict[str, torch.Tensor | None]:
    """x, w, out and the fp8 scales of a linear case as ``meta`` tensors: its shapes, strides and
    dtypes, no memory (for :mod:`kernels.spaces`; shared with gemv); fp8 in the flavour of ``limits``'
    target (kernels.targets.fp8_dtype; None: OCP e4m3fn)."""
    M, N, K = case["M"], case["N"], case["K"]
    dtype = case.dtype.torch
    if case.dtype is DType.FP8 and limits is not None:
        dtype = fp8_dtype(limits)
    w = meta((K, N), dtype).t() if case["w_layout"] == "kn" else meta((N, K), dtype)
    fp8 = case.dtype is DType.FP8
    return {"x": meta((M, K), dtype), "w": w, "out": meta((M, N), LINEAR_DTYPES[dtype]),
            "x_scale": meta(M) if fp8 else None, "w_scale": meta(N) if fp8 else None}
