"""Expert weights of the ``moe`` family: E experts' [R, K] matrices stacked into one [E·R, K] weight.

Stacking along rows keeps every :mod:`kernels.quant_formats` layout valid (scales, zero points and
nibbles are per row or per row group), so the fused kernels decode an expert's tile with the quant
families' own helpers (``decode_tile``, ``row_scale``) at row ``e·R + r``. Formats (the row's
``format`` axis):

``bf16``        unquantized, stored in the activation dtype (fp16/bf16/fp32): R·K·itemsize per expert
``fp8-channel`` quant_formats ``fp8``: e4m3 + one fp32 scale per row (R·K + 4·R)
``fp8-block``   DeepSeek-V3's: e4m3 + one fp32 scale per 128 × 128 block of each expert's [R, K],
                ``block_scales`` [E, ⌈R/128⌉, ⌈K/128⌉] (R·K + 4·⌈R/128⌉·⌈K/128⌉)
``int4-g128``   quant_formats ``int4`` with groups of 128 along K (W4A16)
``mxfp4``       e2m1 + E8M0 per 32 (gpt-oss); ``nvfp4``: e2m1 + e4m3 per 16 + an fp32 tensor scale
                (one for the stacked weight, counted once per expert: real checkpoints keep one each)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Callable

import torch

from kernels.quant_formats import E4M3_MAX, QuantFormat, QuantizedWeight, dequantize, packed_bytes, quantize

FP8_BLOCK = 128  # DeepSeek-V3's weight block: 128 × 128


class MoeFormat(str, Enum):
    BF16 = "bf16"
    FP8_CHANNEL = "fp8-channel"
    FP8_BLOCK = "fp8-block"
    INT4_G128 = "int4-g128"
    MXFP4 = "mxfp4"
    NVFP4 = "nvfp4"

    @property
    def quant(self) -> QuantFormat | None:
        """The quant family's format this one is stored in (None: dense or fp8-block)."""
        return _QUANT.get(self)

    @property
    def group(self) -> int | None:
        """The K group a layout needs K to be a multiple of (None: any K)."""
        return {MoeFormat.INT4_G128: 128, MoeFormat.MXFP4: 32, MoeFormat.NVFP4: 16}.get(self)

    @property
    def kernel(self) -> str:
        """The kernels' FMT constexpr: the quant families' names, "dense" and "fp8-block"."""
        return self.quant.value if self.quant else ("dense" if self is MoeFormat.BF16 else "fp8-block")


_QUANT = {MoeFormat.FP8_CHANNEL: QuantFormat.FP8, MoeFormat.INT4_G128: QuantFormat.INT4,
          MoeFormat.MXFP4: QuantFormat.MXFP4, MoeFormat.NVFP4: QuantFormat.NVFP4}


@dataclass(frozen=True)
class ExpertWeights:
    """``experts`` stacked [rows, k] weights; exactly one of ``dense``, ``quantized``, ``block_q`` is set."""

    format: MoeFormat
    experts: int
    rows: int  # R: rows of one expert
    k: int
    dense: torch.Tensor | None = None  # [E·R, K] in the activation dtype
    quantized: QuantizedWeight | None = None  # [E·R, K] in a quant_formats format
    block_q: torch.Tensor | None = None  # fp8-block: e4m3 [E·R, K]
    block_scales: torch.Tensor | None = None  # fp8-block: fp32 [E, ⌈R/128⌉, ⌈K/128⌉]

    @property
    def device(self) -> torch.device:
        return next(t for t in (self.dense, self.quantized and self.quantized.qweight, self.block_q)
                    if t is not None).device


def expert_bytes(fmt: MoeFormat | str, rows: int, k: int, itemsize: int) -> int:
    """Stored bytes of ONE expert's [rows, k] weight (``itemsize``: the activation's, for bf16)."""
    fmt = MoeFormat(fmt)
    if fmt is MoeFormat.BF16:
        return rows * k * itemsize
    if fmt is MoeFormat.FP8_BLOCK:
        return rows * k + 4 * math.ceil(rows / FP8_BLOCK) * math.ceil(k / FP8_BLOCK)
    group = fmt.group
    k_stored = math.ceil(k / group) * group if group else k  # a case the skip rule refuses still counts
    return packed_bytes(fmt.quant, rows, k_stored, group if fmt.quant.grouped else None)


def pack_experts(expert: Callable[[int], torch.Tensor], experts: int, fmt: MoeFormat | str,
                 dtype: torch.dtype) -> ExpertWeights:
    """Quantize each expert's float [R, K] weight ``expert(e)`` by the reference quantizers, one at a
    time (DeepSeek's 256 experts in fp32 at once would be 45 GB), and stack them (set-up, never timed).

    nvfp4 keeps one tensor scale for the stack: every expert's must be the same (the spec's weights
    are built so), else a one-line ValueError."""
    fmt = MoeFormat(fmt)
    parts = [expert(e) for e in range(experts)] if fmt is MoeFormat.BF16 else None
    if parts is not None:
        r, k = parts[0].shape
        return ExpertWeights(fmt, experts, r, k, dense=torch.cat([p.to(dtype) for p in parts]).contiguous())
    if fmt is MoeFormat.FP8_BLOCK:
        blocks = [quantize_fp8_block(expert(e)[None]) for e in range(experts)]
        r, k = blocks[0][0].shape
        return ExpertWeights(fmt, experts, r, k, block_q=torch.cat([q for q, _ in blocks]).contiguous(),
                             block_scales=torch.cat([s for _, s in blocks]).contiguous())
    group = fmt.group if fmt.quant.grouped else None
    pieces = [quantize(expert(e), fmt.quant, group) for e in range(experts)]
    first = pieces[0]
    if first.tensor_scale is not None and any(not torch.equal(p.tensor_scale, first.tensor_scale) for p in pieces):
        raise ValueError("nvfp4 experts must share one tensor scale (give every expert the same amax)")
    along_n = 0 if first.scales.dim() == 1 else 1  # per-channel scales [N]; grouped [K/G, N]
    stacked = QuantizedWeight(
        first.format, first.group_size, experts * first.n, first.k,
        torch.cat([p.qweight for p in pieces]).contiguous(),
        torch.cat([p.scales for p in pieces], dim=along_n).contiguous(),
        None if first.zeros is None else torch.cat([p.zeros for p in pieces], dim=1).contiguous(),
        first.tensor_scale)
    return ExpertWeights(fmt, experts, first.n, first.k, quantized=stacked)


def expert_slice(w: ExpertWeights, e: int) -> ExpertWeights:
    """Expert ``e`` alone, as a one-expert stack (copies: for references and baselines' set-up)."""
    r = w.rows
    if w.dense is not None:
        return ExpertWeights(w.format, 1, r, w.k, dense=w.dense[e * r:(e + 1) * r].contiguous())
    if w.block_q is not None:
        return ExpertWeights(w.format, 1, r, w.k, block_q=w.block_q[e * r:(e + 1) * r].contiguous(),
                             block_scales=w.block_scales[e:e + 1].contiguous())
    q = w.quantized
    scales = q.scales[e * r:(e + 1) * r] if q.scales.dim() == 1 else q.scales[:, e * r:(e + 1) * r]
    zeros = None if q.zeros is None else q.zeros[:, e * r // 2:(e + 1) * r // 2].contiguous()
    one = QuantizedWeight(q.format, q.group_size, r, q.k, q.qweight[e * r:(e + 1) * r].contiguous(),
                          scales.contiguous(), zeros, q.tensor_scale)
    return ExpertWeights(w.format, 1, r, w.k, quantized=one)


def quantize_fp8_block(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """e4m3 [E·R, K] and fp32 scales [E, ⌈R/128⌉, ⌈K/128⌉]: each 128 × 128 block's amax maps to 448."""
    e, r, k = weights.shape
    rb, kb = math.ceil(r / FP8_BLOCK), math.ceil(k / FP8_BLOCK)
    padded = torch.nn.functional.pad(weights.float(), (0, kb * FP8_BLOCK - k, 0, rb * FP8_BLOCK - r))
    blocks = padded.reshape(e, rb, FP8_BLOCK, kb, FP8_BLOCK)
    amax = blocks.abs().amax(dim=(2, 4))
    scales = torch.where(amax > 0, amax / E4M3_MAX, torch.ones_like(amax)).contiguous()
    q = (blocks / scales[:, :, None, :, None]).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    q = q.reshape(e, rb * FP8_BLOCK, kb * FP8_BLOCK)[:, :r, :k]
    return q.reshape(e * r, k).contiguous(), scales


def dequantize_experts(w: ExpertWeights) -> torch.Tensor:
    """THE reference weights: float32 [E, R, K] (the quant families' reference dequantizer)."""
    e, r, k = w.experts, w.rows, w.k
    if w.dense is not None:
        return w.dense.float().reshape(e, r, k)
    if w.quantized is not None:
        return dequantize(w.quantized).reshape(e, r, k)
    scales = w.block_scales.repeat_interleave(FP8_BLOCK, dim=1).repeat_interleave(FP8_BLOCK, dim=2)[:, :r, :k]
    return w.block_q.float().reshape(e, r, k) * scales


def kernel_weight_args(w: ExpertWeights) -> tuple:
    """(w, s, z, t, stride_wn, stride_sg, stride_zg, stride_se, stride_sb) for the fused kernels; unused
    pointers stand in with a valid one the kernel never reads (as kernels.dequant.kernel_args)."""
    from kernels.dequant import kernel_args  # imports Triton: only a launch needs it

    if w.quantized is not None:
        return (*kernel_args(w.quantized), 0, 0)
    if w.dense is not None:
        return w.dense, w.dense, w.dense, w.dense, w.dense.stride(0), 0, 0, 0, 0
    q, s = w.block_q.view(torch.uint8), w.block_scales
    return q, s, s, s, q.stride(0), 0, 0, s.stride(0), s.stride(1)


def meta_experts(fmt: MoeFormat | str, experts: int, rows: int, k: int, dtype: torch.dtype) -> ExpertWeights:
    """The stacked weights' layout as ``meta`` tensors (no memory): for compiling, never running."""
    from kernels import quant_formats

    fmt = MoeFormat(fmt)
    meta = lambda shape, dt: torch.empty(shape, dtype=dt, device="meta")
    if fmt is MoeFormat.BF16:
        return ExpertWeights(fmt, experts, rows, k, dense=meta((experts * rows, k), dtype))
    if fmt is MoeFormat.FP8_BLOCK:
        blocks = (experts, math.ceil(rows / FP8_BLOCK), math.ceil(k / FP8_BLOCK))
        return ExpertWeights(fmt, experts, rows, k, block_q=meta((experts * rows, k), torch.float8_e4m3fn),
                             block_scales=meta(blocks, torch.float32))
    group = fmt.group if fmt.quant.grouped else None
    layout = quant_formats._layout(fmt.quant, experts * rows, k, group)  # the tensors such a weight holds
    tensors = {name: meta(shape, dt) for name, (shape, dt) in layout.items()}
    return ExpertWeights(fmt, experts, rows, k,
                         quantized=QuantizedWeight(fmt.quant, group, experts * rows, k, **tensors))
