"""Linear layer y = x·Wᵀ as a tiled GEMM (family ``gemm``).

x: [M, K], W: [N, K] like ``nn.Linear.weight`` (or any strides, e.g. the transposed view of a
[K, N] buffer), y: [M, N]. fp16/bf16 accumulate in fp32; fp32 runs on tensor cores as tf32
(``input_precision="tf32"``, or bf16x3 on gfx950, which has no tf32: kernels.targets.dot_precision;
the torch baseline is switched to tf32 as well so the two are comparable); fp8 e4m3 (e4m3fnuz on
gfx942) takes per-row scales for x and per-output-channel scales for W and writes bf16, with the
fp8 tensor-core partial sums promoted to fp32 every BLOCK_K (like cuBLAS without fast accumulation).
On Blackwell the pruner keeps tcgen05 tile shapes (kernels.targets.min_mma_rows).

Two variants: ``tiled`` (pointer loads, the path the interpreter tests, any strides) and
``tma`` (persistent, host TensorDescriptors; Hopper+, unit inner strides, 16-byte aligned rows).
Triton proves 16-byte alignment only from strides divisible by 16, so a row stride (K) that is
not a multiple of 16 gets element loads and an unpipelined K loop: correct, but slow. Inputs,
reference, cost model and the torch baseline, shared with ``gemv``, are in kernels/linear.py.
"""

from __future__ import annotations

import functools
from enum import Enum

import torch
import triton
import triton.language as tl

from kernels.gemm_fp8 import fp8_skip
from kernels.linear import (
    LINEAR_TOLERANCE,
    TORCH_IMPL,
    check_linear_args,
    interpreter_bf16_skip,
    linear_axes,
    linear_bytes,
    linear_flops,
    linear_inputs,
    linear_reference_of,
    meta_linear_operands,
    precision_note,
)
from kernels.spec import Case, DType, Impl, Inputs, KernelSpec, Launch, TuneSpace
from kernels.spaces import launch_spaces
from kernels.targets import dot_precision, has_tma, is_blackwell, min_mma_rows
from kernels.tuning import Limits, autotune, describe, device_limits

GROUP_M = 8  # row tiles that share one W column tile while it is hot in L2
TIGHT_ACC_PER_THREAD = 64  # fp32 accumulators per thread when the K loop holds more (see gemm_candidates)
# x and W elements a thread loads per K step when K % 16 ≠ 0 (rows not provably 16-byte aligned): each is
# a separate load with its own address; 64–128 spilled 4–2536 B on sm_90a
UNALIGNED_LOADS_PER_THREAD = 32


class GemmVariant(str, Enum):
    TILED = "tiled"
    TMA = "tma"  # persistent, TMA loads and stores (Hopper+)


def _config(bm: int, bn: int, bk: int, warps: int, stages: int, **extra) -> triton.Config:
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": GROUP_M}, num_warps=warps,
                         num_stages=stages, **extra)


def gemm_configs() -> list[triton.Config]:
    """Hopper-sized tiles, largest first: 128×256 with 8 warps (two warpgroups) is the wgmma
    sweet spot; 64-row tiles serve small M; BLOCK_K=128 suits fp8 (same bytes as fp16 at 64)."""
    return [
        _config(128, 256, 64, 8, 3),
        _config(128, 256, 64, 8, 4),
        _config(256, 128, 64, 8, 3),
        _config(128, 256, 128, 8, 3),
        _config(128, 128, 64, 4, 4),
        _config(128, 128, 64, 8, 3),
        _config(128, 128, 128, 8, 3),
        _config(64, 256, 64, 4, 4),
        _config(64, 128, 64, 4, 4),
        _config(64, 64, 128, 4, 4),
        _config(32, 64, 128, 4, 4),
        _config(16, 64, 128, 4, 4),
        _config(128, 256, 32, 8, 3),  # BLOCK_K=32 tiles keep fp32 (tf32) pipelines within shared memory
        _config(128, 128, 32, 8, 4),
    ]


def _set_tma_blocks(nargs):
    """Autotune pre-hook: the host descriptors' block shapes follow the config being run."""
    bm, bn, bk = nargs["BLOCK_M"], nargs["BLOCK_N"], nargs["BLOCK_K"]
    nargs["x_desc"].block_shape = [bm, bk]
    nargs["w_desc"].block_shape = [bn, bk]
    nargs["y_desc"].block_shape = [bm, bn]


def gemm_tma_configs() -> list[triton.Config]:
    """Tiles for the persistent TMA kernel (its epilogue also stages a BLOCK_M×BLOCK_N tile in smem)."""
    shapes = [(128, 256, 64, 8, 3), (128, 128, 64, 8, 4), (128, 256, 128, 8, 3), (128, 128, 128, 8, 3),
              (64, 256, 64, 4, 4), (64, 128, 128, 4, 4), (128, 128, 32, 8, 4)]
    return [_config(*shape, pre_hook=_set_tma_blocks) for shape in shapes]


def shared_memory_bytes(config: triton.Config, in_size: int, out_size: int, tma: bool) -> int:
    """Pipeline buffers (stages × both operand tiles) plus, for TMA, the staged output tile."""
    k = config.kwargs
    buffers = config.num_stages * (k["BLOCK_M"] + k["BLOCK_N"]) * k["BLOCK_K"] * in_size
    return buffers + (k["BLOCK_M"] * k["BLOCK_N"] * out_size if tma else 0)


def shared_memory_limit(device_index: int) -> int:
    """Opt-in shared memory per block of a CUDA device (kept for callers; see kernels.tuning.Limits)."""
    return device_limits(device_index).smem_per_block


def gemm_candidates(M: int, N: int, K: int, in_size: int, out_size: int, tma: bool,
                    limits: Limits) -> tuple[triton.Config, ...]:
    """The configs worth timing: tiles that fit the problem (no block far beyond M, N, K), the
    device's shared memory and the registers: at most TIGHT_ACC_PER_THREAD fp32 accumulators per
    thread where the K loop needs more than the accumulator — fp8's promotion every BLOCK_K keeps a
    second one, a ragged K its masks (128 per thread spilled 104–632 B on sm_90a); a warp is
    ``limits.warp_size`` threads (64 on AMD CDNA); on Blackwell, row blocks of 64 and more."""
    configs = gemm_tma_configs() if tma else gemm_configs()

    def roomy(c: triton.Config) -> bool:
        tight = in_size == 1 or K % c.kwargs["BLOCK_K"] != 0
        threads = limits.warp_size * c.num_warps
        return not tight or c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] <= TIGHT_ACC_PER_THREAD * threads

    useful = [
        c for c in configs
        if c.kwargs["BLOCK_M"] <= max(64, triton.next_power_of_2(M))
        and c.kwargs["BLOCK_N"] <= max(64, triton.next_power_of_2(N))
        and c.kwargs["BLOCK_K"] <= max(64, triton.next_power_of_2(K))
    ] or configs
    useful = [c for c in useful if roomy(c)] or useful
    # Blackwell: tiles shorter than 64 rows miss tcgen05 (mma.sync instead, fp8 even upcast to fp16);
    # the persistent TMA kernel takes tcgen05's full 128 rows (64 × 128 × 128, 4 warps, spilled 8 B on sm_100a)
    rows = max(min_mma_rows(limits), 128 if tma and is_blackwell(limits) else 0)
    useful = [c for c in useful if c.kwargs["BLOCK_M"] >= rows] or useful
    if K % 16:  # Triton cannot prove 16-byte aligned rows (it needs K % 16 == 0): element loads
        loaded = lambda c: (c.kwargs["BLOCK_K"] * (c.kwargs["BLOCK_M"] + c.kwargs["BLOCK_N"])  # noqa: E731
                            // (limits.warp_size * c.num_warps))
        useful = [c for c in useful if loaded(c) <= UNALIGNED_LOADS_PER_THREAD] or [min(useful, key=loaded)]
    smem = functools.partial(shared_memory_bytes, in_size=in_size, out_size=out_size, tma=tma)
    fitting = tuple(c for c in useful if smem(c) <= limits.smem_per_block)
    return fitting or (_fewer_stages(min(useful, key=smem), smem, limits.smem_per_block),)


def _fewer_stages(config: triton.Config, smem, limit: int) -> triton.Config:
    """``config`` with as many pipeline stages as fit ``limit`` (at least one): the fallback when no
    tile fits, e.g. fp32 on MI300X's 64 KiB of LDS (4 stages of 16 × 64 × 128 compiled to 120 KiB)."""
    stages = config.num_stages
    while stages > 1 and smem(_with_stages(config, stages)) > limit:
        stages -= 1
    return _with_stages(config, stages)


def _with_stages(config: triton.Config, stages: int) -> triton.Config:
    return triton.Config(dict(config.kwargs), num_warps=config.num_warps, num_stages=stages,
                         pre_hook=config.pre_hook)


def _prune(named_args, tma: bool):
    """The autotuner's pruner: an adapter over :func:`gemm_candidates` on the operands' device."""
    x = named_args["x_desc"].base if tma else named_args["x_ptr"]
    y = named_args["y_desc"].base if tma else named_args["y_ptr"]
    return list(gemm_candidates(named_args["M"], named_args["N"], named_args["K"], x.element_size(),
                                y.element_size(), tma, device_limits(x.device)))


def prune_gemm_configs(configs, named_args, **kwargs):
    return _prune({**named_args, **kwargs}, tma=False)


def prune_gemm_tma_configs(configs, named_args, **kwargs):
    return _prune({**named_args, **kwargs}, tma=True)


@triton.jit
def _tile_coords(tile, num_pid_m, num_pid_n, GROUP_M: tl.constexpr):
    """Grouped ordering: consecutive tiles walk GROUP_M row tiles down one W column tile."""
    per_group = GROUP_M * num_pid_n
    first_m = (tile // per_group) * GROUP_M
    group_m = tl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (tile % per_group) % group_m
    pid_n = (tile % per_group) // group_m
    return pid_m, pid_n


@autotune(gemm_configs(), key=["M", "N", "K", "stride_wk"], prune=prune_gemm_configs)
@triton.heuristics({"EVEN_K": lambda args: args["K"] % args["BLOCK_K"] == 0})
@triton.jit
def _gemm_kernel(
    x_ptr, w_ptr, x_scale_ptr, w_scale_ptr,  # in: x [M, K], W [N, K], fp8 scales [M], [N] (else None)
    y_ptr,  # out: [M, N]
    M, N, K,
    stride_xm, stride_xk, stride_wn, stride_wk, stride_ym, stride_yn,
    HAS_SCALES: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    EVEN_K: tl.constexpr,
    PRECISION: tl.constexpr = "tf32",  # fp32 operands' input_precision on this target (dot_precision)
):
    """y[m, n] = Σ_k x[m, k]·W[n, k] (·sx[m]·sw[n] for fp8) for one BLOCK_M×BLOCK_N tile.

    The W tile is read as Wᵀ [BLOCK_K, BLOCK_N] through its strides, so a K-major ([N, K]) and an
    N-major ([K, N] buffer) W take the same code. Rows/columns past M/N are masked (zeros); the K
    mask is compiled out when BLOCK_K divides K.
    """
    pid_m, pid_n = _tile_coords(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_n = offs_n < N
    x_ptrs = x_ptr + offs_m[:, None].to(tl.int64) * stride_xm + offs_k[None, :] * stride_xk
    w_ptrs = w_ptr + offs_k[:, None] * stride_wk + offs_n[None, :].to(tl.int64) * stride_wn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        if EVEN_K:
            x = tl.load(x_ptrs, mask=mask_m[:, None], other=0.0)
            w = tl.load(w_ptrs, mask=mask_n[None, :], other=0.0)
        else:
            k_left = K - k * BLOCK_K
            x = tl.load(x_ptrs, mask=mask_m[:, None] & (offs_k[None, :] < k_left), other=0.0)
            w = tl.load(w_ptrs, mask=(offs_k[:, None] < k_left) & mask_n[None, :], other=0.0)
        if HAS_SCALES:  # fp8: promote tensor-core partial sums to the fp32 accumulator every BLOCK_K
            acc = tl.dot(x, w, acc, max_num_imprecise_acc=BLOCK_K)
        else:
            acc = tl.dot(x, w, acc, input_precision=PRECISION)
        x_ptrs += BLOCK_K * stride_xk
        w_ptrs += BLOCK_K * stride_wk
    if HAS_SCALES:
        acc *= tl.load(x_scale_ptr + offs_m, mask=mask_m, other=0.0)[:, None]
        acc *= tl.load(w_scale_ptr + offs_n, mask=mask_n, other=0.0)[None, :]
    y_ptrs = y_ptr + offs_m[:, None].to(tl.int64) * stride_ym + offs_n[None, :] * stride_yn
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


# descriptors carry no ``dtype`` attribute, so the autotuner cannot key on them: DTYPE_KEY does
@autotune(gemm_tma_configs(), key=["M", "N", "K", "DTYPE_KEY"], prune=prune_gemm_tma_configs)
@triton.jit
def _gemm_tma_kernel(
    x_desc, w_desc, x_scale_ptr, w_scale_ptr,  # in: descriptors of x [M, K] and W [N, K]; fp8 scales or None
    y_desc,  # out: descriptor of y [M, N]
    M, N, K,
    HAS_SCALES: tl.constexpr, DTYPE_KEY: tl.constexpr,  # DTYPE_KEY: autotune key only, e.g. "torch.float16"
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    NUM_SMS: tl.constexpr,
    PRECISION: tl.constexpr = "tf32",  # fp32 operands' input_precision on this target (dot_precision)
):
    """Persistent y = x·Wᵀ: NUM_SMS programs stride over the tiles in grouped order; TMA zero-fills
    loads past the edges and clips the stores, so no masks are needed."""
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    k_tiles = tl.cdiv(K, BLOCK_K)
    for tile in tl.range(tl.program_id(0), num_pid_m * num_pid_n, NUM_SMS):
        pid_m, pid_n = _tile_coords(tile, num_pid_m, num_pid_n, GROUP_M)
        off_m = pid_m * BLOCK_M
        off_n = pid_n * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for ki in range(k_tiles):
            x = x_desc.load([off_m, ki * BLOCK_K])
            w = w_desc.load([off_n, ki * BLOCK_K])
            if HAS_SCALES:
                acc = tl.dot(x, tl.trans(w), acc, max_num_imprecise_acc=BLOCK_K)
            else:
                acc = tl.dot(x, tl.trans(w), acc, input_precision=PRECISION)
        if HAS_SCALES:
            offs_m = off_m + tl.arange(0, BLOCK_M)
            offs_n = off_n + tl.arange(0, BLOCK_N)
            acc *= tl.load(x_scale_ptr + offs_m, mask=offs_m < M, other=0.0)[:, None]
            acc *= tl.load(w_scale_ptr + offs_n, mask=offs_n < N, other=0.0)[None, :]
        y_desc.store([off_m, off_n], acc.to(y_desc.dtype))


# ---------------------------------------------------------------------------------------------
# Launcher
# ---------------------------------------------------------------------------------------------

def _rows_tma_ready(t: torch.Tensor) -> bool:
    return t.stride(1) == 1 and (t.stride(0) * t.element_size()) % 16 == 0 and t.data_ptr() % 16 == 0


def tma_eligible(x: torch.Tensor, w: torch.Tensor, out: torch.Tensor) -> bool:
    """TMA needs an NVIDIA Hopper+ GPU (not the interpreter, not AMD), unit inner strides and 16-byte aligned rows."""
    if not has_tma(device_limits(x.device)):
        return False
    return all(_rows_tma_ready(t) for t in (x, w, out))


def gemm_variant(x: torch.Tensor, w: torch.Tensor, out: torch.Tensor) -> GemmVariant:
    """The variant ``gemm`` runs when none is forced: TMA where it can, except for M ≤ 64, where
    the tiled kernel's 16- and 32-row tiles waste less than TMA's 64-row ones."""
    return GemmVariant.TMA if x.shape[0] > 64 and tma_eligible(x, w, out) else GemmVariant.TILED


def _launch(kernel, grid, args, config: triton.Config | None, **constants):
    """Autotuned launch, or one fixed config (the GPU tests run every config this way)."""
    if config is None:
        kernel[grid](*args, **constants)
        return
    meta = config.all_kwargs()
    if config.pre_hook is not None:
        config.pre_hook({**dict(zip(kernel.arg_names, args)), **constants, **meta})
    kernel.fn[grid](*args, **constants, **meta)


def gemm(x: torch.Tensor, w: torch.Tensor, out: torch.Tensor | None = None, *,
         x_scale: torch.Tensor | None = None, w_scale: torch.Tensor | None = None,
         variant: GemmVariant | str | None = None, config: triton.Config | None = None) -> torch.Tensor:
    """y = x·Wᵀ (W: [N, K], any strides; fp8 also takes x_scale [M] and w_scale [N] and writes bf16).

    ``variant`` forces tiled or tma (default: :func:`gemm_variant`); ``config`` skips autotuning.
    """
    out = check_linear_args(x, w, out, x_scale, w_scale)
    M, K = x.shape
    N = w.shape[0]
    variant = gemm_variant(x, w, out) if variant is None else GemmVariant(variant)
    if variant is GemmVariant.TMA and not tma_eligible(x, w, out):
        raise ValueError("the tma variant needs a Hopper+ GPU, unit inner strides and 16-byte aligned rows")
    if M == 0 or N == 0:
        return out
    if K == 0:
        return out.zero_()
    has_scales = x_scale is not None
    precision = dot_precision(device_limits(x.device))
    tiles = lambda meta: triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"])  # noqa: E731
    if variant is GemmVariant.TILED:
        args = (x, w, x_scale, w_scale, out, M, N, K, *x.stride(), *w.stride(), *out.stride(), has_scales)
        _launch(_gemm_kernel, lambda meta: (tiles(meta),), args, config, PRECISION=precision)
        return out
    from triton.tools.tensor_descriptor import TensorDescriptor  # host TMA descriptors (triton >= 3.4)

    num_sms = device_limits(x.device).sm_count
    x_desc, w_desc, y_desc = (TensorDescriptor.from_tensor(t, [1, 1]) for t in (x, w, out))  # pre-hook sets blocks
    args = (x_desc, w_desc, x_scale, w_scale, y_desc, M, N, K, has_scales, str(x.dtype))
    _launch(_gemm_tma_kernel, lambda meta: (min(num_sms, tiles(meta)),), args, config, NUM_SMS=num_sms,
            PRECISION=precision)
    return out


def last_config(variant: GemmVariant) -> str:
    """Which variant and autotuned config the last ``gemm`` call of that variant ran."""
    kernel = _gemm_tma_kernel if variant is GemmVariant.TMA else _gemm_kernel
    return f"{variant.value} {describe(kernel.best_config)}"


# ---------------------------------------------------------------------------------------------
# Spec
# ---------------------------------------------------------------------------------------------


def _gemm_candidates(case: Case, limits: Limits) -> tuple[TuneSpace, ...]:
    """The variant a case launches on ``limits`` and the configs its autotuner keeps."""
    o = meta_linear_operands(case, limits)
    launch = lambda: gemm(o["x"], o["w"], o["out"], x_scale=o["x_scale"], w_scale=o["w_scale"])  # noqa: E731
    kernels = {GemmVariant.TILED.value: _gemm_kernel, GemmVariant.TMA.value: _gemm_tma_kernel}
    return launch_spaces(launch, kernels, limits)


def _build_gemm_triton(inputs: Inputs, case: Case) -> Launch:
    x, w, out, xs, ws = inputs["x"], inputs["w"], inputs["out"], inputs["x_scale"], inputs["w_scale"]
    variant = gemm_variant(x, w, out)
    return Launch(run=lambda: gemm(x, w, out, x_scale=xs, w_scale=ws, variant=variant),
                  config=lambda: last_config(variant) + precision_note(case))


GEMM = KernelSpec(
    name="gemm",
    summary="linear layer y = x·Wᵀ (W: [N, K]) as a tiled tensor-core GEMM, any M",
    axes=linear_axes(default_m=4096),
    dtypes=(DType.FP16, DType.BF16, DType.FP32, DType.FP8),
    impls=(
        Impl("triton", _build_gemm_triton, "Triton tl.dot tiles, grouped order; persistent TMA on Hopper",
             skip=interpreter_bf16_skip, candidates=_gemm_candidates),
        TORCH_IMPL,
    ),
    make_inputs=linear_inputs,
    reference=linear_reference_of,
    flops=linear_flops,
    bytes=linear_bytes,
    tolerance=LINEAR_TOLERANCE,
    skip=fp8_skip,
    tags=("compute", "linear"),
)
