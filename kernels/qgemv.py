"""``qgemv``: y = x·Wᵀ with a quantized W for decode batches M = 1 … 64, split-K so small N fills the GPU.

At small M the layer is a weight stream: every packed byte is read once, in 16-byte loads along K
(rows of packed W are contiguous), and dequantised in registers. A program owns BLOCK_N output
channels and a contiguous range of K steps (split-K); SPLIT_K is not searched by the autotuner,
:func:`split_for` gives each config the smallest power of two that makes ≥ 2 programs per SM.
The inner product depends on M:

- M = 1: each lane keeps fp32 partial products of its [BLOCK_N, BLOCK_K] slice and reduces once
  after the loop (no shuffles inside it);
- M = 2 … 64: tl.dot on the raw tile (exact in fp16/bf16), as qgemm does, x padded to ≥ 16 rows.
  The tensor cores idle at these batches anyway; a CUDA-core broadcast product [M, BLOCK_N,
  BLOCK_K] needed so many registers that only tiles too small for 16-byte weight loads fit.

Every target runs this one variant (no block-scaled MMA as in qgemm's: at these batches the matrix
units idle and the weight stream sets the time); the pruner sizes tiles by the target's warp size,
shared memory and, on Blackwell, tensor memory.

With SPLIT_K > 1 each program writes an fp32 partial and bumps a per-column-block counter; the last
split to finish sums the partials and writes y. One launch, no memset: the counter resets itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kernels.dequant import (
    K_AXIS,
    N_AXIS,
    QUANT_DTYPES,
    decode_tile,
    row_scale,
    tile_group,
    block_k_for,
    kernel_args,
    kernel_format,
    meta_weight,
    quant_skip,
    triton_fp8_skip,
)
from kernels.qgemm import (
    BASELINES,
    LINEAR_AXES,
    LINEAR_TOLERANCE,
    check_linear,
    interpreter_bf16_dot_skip,
    linear_bytes,
    linear_inputs,
    qlinear_reference,
)
from kernels.quant_formats import QuantizedWeight
from kernels.spaces import launch_spaces, meta
from kernels.spec import Axis, Case, DeviceCaps, Impl, Inputs, KernelSpec, Launch, TuneSpace
from kernels.targets import TMEM_COLUMNS, is_blackwell, min_mma_rows
from kernels.tuning import Limits, autotune, describe, device_limits

MAX_M = 64
SPLIT_MAX = 8
MIN_BLOCK_N = 16  # tl.dot's minimum; also sizes the split-K counters
MIN_BLOCK_M_DOT = 16  # x rows are padded to this for tl.dot (M ≥ 2)
INTERPRETER_SMS = 4  # small, so the interpreter's small test shapes still split K
LIVE_PER_THREAD = 128  # fp32 values a thread holds (lanes or decoded tile and accumulator): more spill on sm_90a
BLACKWELL_LIVE_PER_THREAD = 80  # sm_100a's ptxas spilled 8 B at 128 (nvfp4 M=1) and at 96 (mxfp4 M=64)
BLACKWELL_LANES_PER_THREAD = 48  # the M = 1 path on sm_100a: 64 (int4, 32 × 128 tile, 4 warps) spilled 32 B


@dataclass(frozen=True)
class QGemvConfig:
    """An explicit launch configuration (tests, pinned benchmarks); BLOCK_K is the group for int4/mxfp4."""

    block_n: int
    block_k: int
    split_k: int
    num_warps: int = 4
    num_stages: int = 2


def qgemv_configs() -> list[triton.Config]:
    """Channel blocks × K blocks × warps; prune_qgemv_configs fits them to the format, M and the shape."""
    return [
        triton.Config({"BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": 1}, num_warps=w, num_stages=2)
        for bn in (16, 32, 64, 128)
        for bk in (256, 512, 1024)
        for w in (4, 8)
    ]


def split_for(n: int, k: int, block_n: int, block_k: int, sms: int) -> int:
    """Smallest power-of-two split of the K steps giving ≥ 2 programs per SM (≤ SPLIT_MAX, ≤ steps)."""
    programs, steps, split = triton.cdiv(n, block_n), triton.cdiv(k, block_k), 1
    while programs * split < 2 * sms and split * 2 <= min(steps, SPLIT_MAX):
        split *= 2
    return split


def qgemv_candidates(block_m: int, n: int, k: int, group: int, fmt: str,
                     limits: Limits) -> tuple[triton.Config, ...]:
    """Group-wide K tiles for grouped formats, a register budget per M path (threads counted by
    ``limits.warp_size``), a split-K per config, and weight tiles of ≥ 16 bytes per thread, so every
    thread streams W in 16-byte loads (tiles with less compiled to 8-, 4- or 1-byte loads on sm_90a);
    when no tile in the budget is that large (small groups), the ones with the most bytes per thread.
    The dot path's operands fit the device's shared memory (LDS); on Blackwell the register budget is
    tighter and a tcgen05 dot (BLOCK_M ≥ 64) takes K tiles ≤ TMEM_COLUMNS."""
    sms = INTERPRETER_SMS if limits.interpret else limits.sm_count
    bits = 8 if fmt in ("int8", "fp8") else 4  # the 4-bit formats pack two codes per byte
    live_budget = BLACKWELL_LIVE_PER_THREAD if is_blackwell(limits) else LIVE_PER_THREAD
    tcgen05 = block_m >= min_mma_rows(limits) and is_blackwell(limits)
    kept = {}
    for c in qgemv_configs():
        bn, bk, warps = c.kwargs["BLOCK_N"], block_k_for(group, c.kwargs["BLOCK_K"]), c.num_warps
        if not group and bk > max(256, triton.next_power_of_2(k)):
            continue  # mostly masked lanes
        threads = limits.warp_size * warps  # 64-wide wavefronts on AMD CDNA
        if block_m == 1:
            live = 2 * bn * bk / threads  # the fp32 lanes and the decoded tile
        else:
            live = (bn * bk + block_m * bn) / threads  # the decoded tile and the accumulator
        if live > live_budget or (block_m == 1 and is_blackwell(limits) and live > BLACKWELL_LANES_PER_THREAD):
            continue  # fp32 values per thread: beyond this they spill
        if block_m > 1 and 2 * (block_m + bn) * bk > limits.smem_per_block:
            continue  # tl.dot stages x and the decoded W in shared memory (16-bit): MI300X has 64 KiB of LDS
        if tcgen05 and bk > TMEM_COLUMNS:
            continue  # tcgen05 keeps x's [BLOCK_M, BLOCK_K] tile in tensor memory: 1024 columns fail to compile
        tile = {"BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": split_for(n, k, bn, bk, sms)}
        per_thread = min(16, bn * bk * bits // 8 // threads)  # W bytes a thread loads per step (16: enough)
        kept.setdefault((bn, bk, warps), (per_thread, triton.Config(tile, num_warps=warps, num_stages=c.num_stages)))
    if not kept:  # nothing in the budget: the smallest tile, most warps
        bk = block_k_for(group, 128)
        tile = {"BLOCK_N": MIN_BLOCK_N, "BLOCK_K": bk, "SPLIT_K": split_for(n, k, MIN_BLOCK_N, bk, sms)}
        return (triton.Config(tile, num_warps=8, num_stages=2),)
    widest = max(per_thread for per_thread, _ in kept.values())
    return tuple(config for per_thread, config in kept.values() if per_thread == widest)


def prune_qgemv_configs(configs, named_args, **kwargs):
    """The autotuner's pruner: an adapter over :func:`qgemv_candidates` on x's device."""
    args = {**named_args, **kwargs}
    return list(qgemv_candidates(args["BLOCK_M"], args["N"], args["K"], args["QGROUP"], args["FMT"],
                                 device_limits(args["x_ptr"].device)))


@autotune(qgemv_configs(), key=["BLOCK_M", "N", "K", "FMT", "QGROUP"], prune=prune_qgemv_configs)
@triton.jit
def _qgemv_kernel(
    x_ptr,  # in:  [M, K] fp16/bf16
    w_ptr, s_ptr, z_ptr, t_ptr,  # in: packed W (uint8), scales, zero points, tensor scale
    out_ptr,  # out: [M, N] contiguous, x's dtype
    part_ptr,  # scratch: [SPLIT_K, M, N] fp32 partials (SPLIT_K > 1)
    count_ptr,  # scratch: [⌈N / BLOCK_N⌉] int32 finished-split counters, zero between calls
    M, N, K,
    stride_xm, stride_wn, stride_sg, stride_zg, stride_om,
    FMT: tl.constexpr,
    QGROUP: tl.constexpr,  # K tile = this group, scaled per tile (int4, mxfp4); 0: scaled once (tile_group)
    BLOCK_M: tl.constexpr,  # 1, or M padded to a power of two ≥ 16 (tl.dot)
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SPLIT_K: tl.constexpr,
):
    """y[m, n] = Σ_k x[m, k]·W[n, k] in fp32; grid (⌈N / BLOCK_N⌉, SPLIT_K), a program owns BLOCK_N
    channels and a contiguous range of K steps."""
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    steps = tl.cdiv(K, BLOCK_K)
    per_split = tl.cdiv(steps, SPLIT_K)
    first = pid_s * per_split
    last = tl.minimum(first + per_split, steps)
    x_rows = x_ptr + offs_m[:, None] * stride_xm
    if BLOCK_M == 1:
        lanes = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for step in range(first, last):
        k0 = step * BLOCK_K
        offs_k = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_rows + offs_k[None, :], mask=(offs_m < M)[:, None] & (offs_k < K)[None, :], other=0.0)
        raw = decode_tile(w_ptr, s_ptr, z_ptr, offs_n, k0, N, K, stride_wn, stride_sg, stride_zg, FMT, BLOCK_N,
                          BLOCK_K)
        if BLOCK_M > 1:
            part = tl.dot(x, tl.trans(raw.to(x_ptr.dtype.element_ty)))
            if QGROUP > 0:
                acc += part * row_scale(s_ptr, t_ptr, step, offs_n, N, stride_sg, FMT)[None, :]
            else:
                acc += part
        else:
            w = raw
            if QGROUP > 0:
                w = raw * row_scale(s_ptr, t_ptr, step, offs_n, N, stride_sg, FMT)[:, None]
            lanes += w * x.to(tl.float32)
    if BLOCK_M == 1:
        acc = tl.sum(lanes, axis=1)[None, :]
    if QGROUP == 0:
        acc *= row_scale(s_ptr, t_ptr, 0, offs_n, N, stride_sg, FMT)[None, :]
    mask = (offs_m < M)[:, None] & (offs_n < N)[None, :]
    out = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
    if SPLIT_K == 1:
        tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=mask)
    else:
        # serial split-K fix-up: the barrier orders every thread's partial stores before the one-thread
        # atomic (acq_rel, gpu scope) that publishes them; the split that finishes last sums all the
        # partials (reading L2, .cg) and resets the counter for the next call
        parts = part_ptr + offs_m[:, None] * N + offs_n[None, :]
        tl.store(parts + pid_s * M * N, acc, mask=mask)
        tl.debug_barrier()
        if tl.atomic_add(count_ptr + pid_n, 1) == SPLIT_K - 1:
            total = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            for s in tl.static_range(SPLIT_K):
                total += tl.load(parts + s * M * N, mask=mask, other=0.0, cache_modifier=".cg")
            tl.store(out, total.to(out_ptr.dtype.element_ty), mask=mask)
            tl.atomic_xchg(count_ptr + pid_n, 0)


@dataclass
class _Scratch:
    partials: torch.Tensor  # fp32, grown on demand
    counters: torch.Tensor  # int32, zero between calls (each call's last split resets its counter)


_SCRATCH: dict[torch.device, _Scratch] = {}


def _scratch(device: torch.device, partials: int, counters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reused split-K scratch (allocating per call would be timed); one stream at a time may use it."""
    scratch = _SCRATCH.get(device)
    if scratch is None or scratch.partials.numel() < partials or scratch.counters.numel() < counters:
        grow = scratch or _Scratch(torch.empty(0), torch.empty(0))
        scratch = _Scratch(torch.empty(max(partials, grow.partials.numel()), dtype=torch.float32, device=device),
                           torch.zeros(max(counters, grow.counters.numel()), dtype=torch.int32, device=device))
        _SCRATCH[device] = scratch
    return scratch.partials, scratch.counters


def qgemv(x: torch.Tensor, qw: QuantizedWeight, out: torch.Tensor | None = None,
          config: QGemvConfig | None = None) -> torch.Tensor:
    """y = x·Wᵀ for M ≤ 64 with the split-K weight-streaming kernel (autotuned unless ``config``)."""
    out = check_linear(x, qw, out)
    m = x.shape[0]
    if m > MAX_M:
        raise ValueError(f"qgemv takes M ≤ {MAX_M} (decode batches), got M={m}; use qgemm")
    if m == 0:
        return out
    block_m = 1 if m == 1 else max(MIN_BLOCK_M_DOT, triton.next_power_of_2(m))
    w, s, z, t, stride_wn, stride_sg, stride_zg = kernel_args(qw)
    group = tile_group(qw)
    split = config.split_k if config else SPLIT_MAX
    if not 1 <= split <= SPLIT_MAX:
        raise ValueError(f"split_k must be 1 … {SPLIT_MAX}, got {split}")
    part, count = _scratch(x.device, split * m * qw.n, triton.cdiv(qw.n, MIN_BLOCK_N))
    args = (x, w, s, z, t, out, part, count, m, qw.n, qw.k, x.stride(0), stride_wn, stride_sg, stride_zg, out.stride(0))
    grid = lambda meta: (triton.cdiv(qw.n, meta["BLOCK_N"]), meta["SPLIT_K"])
    if config is None:
        _qgemv_kernel[grid](*args, FMT=kernel_format(qw), QGROUP=group, BLOCK_M=block_m)
    else:
        if config.block_n < MIN_BLOCK_N:
            raise ValueError(f"block_n must be ≥ {MIN_BLOCK_N}, got {config.block_n}")
        meta = {"BLOCK_N": config.block_n, "BLOCK_K": block_k_for(group, config.block_k), "SPLIT_K": split}
        _qgemv_kernel.fn[grid(meta)](*args, FMT=kernel_format(qw), QGROUP=group, BLOCK_M=block_m, **meta,
                                     num_warps=config.num_warps, num_stages=config.num_stages)
    return out


# ---------------------------------------------------------------------------------------------
# Spec
# ---------------------------------------------------------------------------------------------


def _build_triton(inputs: Inputs, case: Case) -> Launch:
    x, qw, out = inputs["x"], inputs["weight"], inputs["out"]
    partials, _ = _scratch(x.device, SPLIT_MAX * x.shape[0] * qw.n, triton.cdiv(qw.n, MIN_BLOCK_N))  # as qgemv sizes it
    return Launch(run=lambda: qgemv(x, qw, out), config=lambda: describe(_qgemv_kernel.best_config),
                  scratch=(partials,))


def _candidates(case: Case, limits: Limits) -> tuple[TuneSpace, ...]:
    x, qw = meta((case["M"], case["K"]), case.dtype.torch), meta_weight(case, limits)
    try:
        return launch_spaces(lambda: qgemv(x, qw), {"qgemv": _qgemv_kernel}, limits)
    finally:
        _SCRATCH.pop(x.device, None)  # the launcher's reusable scratch is for real devices only


def _triton_skip(case: Case, caps: DeviceCaps) -> str | None:
    """fp8 needs sm_89+; bf16 reaches tl.dot (broken under the interpreter) from M = 2."""
    dot = interpreter_bf16_dot_skip(case, caps) if case["M"] >= 2 else None
    return triton_fp8_skip(case, caps) or dot


def _batch_skip(case: Case, caps: DeviceCaps) -> str | None:
    if case["M"] > MAX_M:
        return f"qgemv covers M ≤ {MAX_M} (decode batches); qgemm takes any M"
    return quant_skip(case, caps)


QGEMV = KernelSpec(
    name="qgemv",
    summary="y = x·Wᵀ for M ≤ 64, W quantized, weight-streaming split-K kernel",
    axes=LINEAR_AXES + (Axis("M", int, 1, "batch (rows of x), 1 … 64", minimum=1), N_AXIS, K_AXIS),
    dtypes=QUANT_DTYPES,
    impls=(Impl("triton", _build_triton, "Triton split-K GEMV, 16-byte weight loads, fp32 lanes",
                skip=_triton_skip, candidates=_candidates),) + BASELINES,
    make_inputs=linear_inputs,
    reference=lambda inputs, case: qlinear_reference(inputs["x"], inputs["weight"]),
    flops=lambda case: 2 * case["M"] * case["N"] * case["K"],
    bytes=linear_bytes,
    tolerance=LINEAR_TOLERANCE,
    skip=_batch_skip,
    tags=("memory", "quant"),
)
