"""``dequant``: packed quantized weights → a dense fp16/bf16 [N, K] matrix, and the decode helpers
the fused ``qgemv``/``qgemm`` kernels share.

Formats and bit layouts are :mod:`kernels.quant_formats`'s. Decoding stays in 32-bit integer and
fp32 arithmetic that reproduces the reference dequantizer bit for bit:

- int8: the byte u = q mod 256 becomes q through the float trick (2²³ + (u ^ 0x80)) − (2²³ + 128)
  (a LOP3 and an FADD instead of a slow int→float conversion);
- int4: (2²³ + q) − (2²³ + z) = q − z the same way, then × the group's fp16 scale;
- fp8: uint8 → bitcast to e4m3 → fp16 → fp32 (exact), then × the fp32 channel scale (AMD gfx942's
  e4m3fnuz weights decode as FMT "fp8_fnuz", :func:`kernel_format`);
- mxfp4: the nibble s e1 e0 m placed at fp16 bits 15 | 11–10 | 9 is the e2m1 value × 2⁻¹⁴ (e = 0
  lands on fp16 subnormals, which is exactly e2m1's subnormal), then × 2¹⁴ × 2^(E − 127), with the
  E8M0 scale built from bits (E = 0 → fp32 subnormal 2⁻¹²⁷, 255 → NaN);
- nvfp4: the e2m1 value as for mxfp4, times its block's e4m3 scale decoded the same way (the byte
  s eeee mmm placed at fp16 bits 15 | 14–10 | 9–7 is the e4m3 value × 2⁻⁸, so no sm_89 conversion is
  needed); that product is exact, even in fp16/bf16, and the fp32 tensor scale is applied once at
  the end, as the reference applies it last.

Tiles of int4 and mxfp4 are exactly one group wide along K, so a tile needs one scale per row, a
plain [BLOCK_N] vector, applied per K step (``tile_group``). nvfp4's 16-wide blocks are decoded
with their scales inside any K tile, so it tiles K like the per-channel formats.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels import quant_formats
from kernels.quant_formats import (
    QuantFormat,
    QuantizedWeight,
    check_group,
    dequantize,
    dequantize_traffic,
    e2m1_lut,
    packed_bytes,
    quantize,
)
from kernels.spaces import launch_spaces, meta
from kernels.spec import (
    Axis,
    Case,
    DeviceCaps,
    DType,
    Impl,
    Inputs,
    KernelSpec,
    Launch,
    TuneSpace,
    poisoned,
    scaled_randn,
)
from kernels.targets import fp8_dtype
from kernels.tuning import Limits, autotune, describe, device_limits

# ---------------------------------------------------------------------------------------------
# Decode helpers (shared with kernels/qgemv.py and kernels/qgemm.py)
# ---------------------------------------------------------------------------------------------


@triton.jit
def _fp16_bits_to_fp32(bits):
    return bits.to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)


@triton.jit
def _e2m1_times_2_14(b):
    """int32 bytes of packed e2m1 pairs → their values × 2⁻¹⁴ as fp16 bit patterns [.., 2·bytes]."""
    lo = ((b & 0x7) << 9) | ((b & 0x8) << 12)
    hi = ((b & 0x70) << 5) | ((b & 0x80) << 8)
    return lo, hi


@triton.jit
def decode_tile(
    w_ptr,  # in: packed weights (uint8 view), rows of stride_wn bytes
    s_ptr,  # in: nvfp4 block scales [K/16, N] (e4m3 bytes; other formats: unused here)
    z_ptr,  # in: int4 zero points [K/G, ⌈N/2⌉] uint8 (unused by other formats)
    offs_n,  # [BLOCK_N] output channels of the tile
    k0,  # first column of the tile (a multiple of BLOCK_K)
    N,
    K,
    stride_wn,
    stride_sg,
    stride_zg,
    FMT: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Raw weights of W[offs_n, k0 : k0 + BLOCK_K] in fp32: q (int8, fp8), q − z (int4), the e2m1 value
    (mxfp4), the e2m1 value × its block scale (nvfp4); the row/group/tensor scale is not applied.
    Masked-off elements decode to a finite value."""
    mask_n = offs_n < N
    rows = offs_n.to(tl.int64)[:, None] * stride_wn
    if FMT == "nvfp4":
        # K is a multiple of 16, not of BLOCK_K: mask the tail bytes and scales
        offs_b = k0 // 2 + tl.arange(0, BLOCK_K // 2)
        b = tl.load(w_ptr + rows + offs_b[None, :], mask=mask_n[:, None] & (offs_b < K // 2)[None, :],
                    other=0).to(tl.int32)
        lo, hi = _e2m1_times_2_14(b)
        values = _fp16_bits_to_fp32(tl.reshape(tl.join(lo, hi), (BLOCK_N, BLOCK_K)))
        offs_g = k0 // 16 + tl.arange(0, BLOCK_K // 16)
        e = tl.load(s_ptr + offs_g[None, :] * stride_sg + offs_n[:, None],
                    mask=mask_n[:, None] & (offs_g < K // 16)[None, :], other=0).to(tl.int32)
        block = _fp16_bits_to_fp32(((e & 0x80) << 8) | ((e & 0x7F) << 7))  # e4m3 × 2⁻⁸
        block = tl.reshape(tl.broadcast_to(block[:, :, None], (BLOCK_N, BLOCK_K // 16, 16)), (BLOCK_N, BLOCK_K))
        raw = values * block * 4194304.0  # 2¹⁴ · 2⁸: exact, the scales were powers of two
    elif FMT == "int8" or FMT == "fp8" or FMT == "fp8_fnuz":
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask = mask_n[:, None] & (offs_k < K)[None, :]
        b = tl.load(w_ptr + rows + offs_k[None, :], mask=mask, other=0)
        if FMT == "int8":
            raw = ((b.to(tl.int32) ^ 0x80) | 0x4B000000).to(tl.float32, bitcast=True) - 8388736.0
        elif FMT == "fp8_fnuz":
            raw = b.to(tl.float8e4b8, bitcast=True).to(tl.float16).to(tl.float32)
        else:
            raw = b.to(tl.float8e4nv, bitcast=True).to(tl.float16).to(tl.float32)
    else:
        # K is a multiple of the group (= BLOCK_K): no column mask, so the row mask stays constant
        # along a row and the byte loads stay 16 bytes wide
        offs_b = k0 // 2 + tl.arange(0, BLOCK_K // 2)
        b = tl.load(w_ptr + rows + offs_b[None, :], mask=mask_n[:, None], other=0).to(tl.int32)
        if FMT == "int4":
            zb = tl.load(z_ptr + (k0 // BLOCK_K) * stride_zg + offs_n // 2, mask=mask_n, other=0).to(tl.int32)
            z = ((zb >> ((offs_n % 2) * 4)) & 0xF).to(tl.float32) + 8388608.0
            q = tl.reshape(tl.join(b & 0xF, b >> 4), (BLOCK_N, BLOCK_K))
            raw = (q | 0x4B000000).to(tl.float32, bitcast=True) - z[:, None]
        else:
            lo, hi = _e2m1_times_2_14(b)
            raw = _fp16_bits_to_fp32(tl.reshape(tl.join(lo, hi), (BLOCK_N, BLOCK_K))) * 16384.0
    return raw


@triton.jit
def row_scale(
    s_ptr,  # in: scales (fp16 int8/int4, fp32 fp8, uint8 E8M0 mxfp4)
    t_ptr,  # in: nvfp4's fp32 tensor scale [1] (unused by other formats)
    group,  # group index along K (ignored by the per-channel formats)
    offs_n,
    N,
    stride_sg,
    FMT: tl.constexpr,
):
    """The fp32 scale of each row offs_n for one K group (per-channel formats: the channel scale;
    nvfp4: the tensor scale, its block scales being part of the decoded tile)."""
    mask_n = offs_n < N
    if FMT == "nvfp4":
        scale = tl.load(t_ptr + 0 * offs_n)
    elif FMT == "mxfp4":
        e = tl.load(s_ptr + group * stride_sg + offs_n, mask=mask_n, other=127).to(tl.int32)
        bits = tl.where(e == 0, 0x00400000, tl.where(e == 255, 0x7FC00000, e << 23))
        scale = bits.to(tl.float32, bitcast=True)
    elif FMT == "int4":
        scale = tl.load(s_ptr + group * stride_sg + offs_n, mask=mask_n, other=0.0).to(tl.float32)
    else:
        scale = tl.load(s_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
    return scale


def kernel_args(qw: QuantizedWeight) -> tuple:
    """(w, s, z, t, stride_wn, stride_sg, stride_zg) for the kernels: weights (and e4m3 scales) as raw
    uint8 bytes; z and t stand in with a valid pointer the kernel never reads when the format has none."""
    scales = qw.scales.view(torch.uint8) if qw.scales.dtype == torch.float8_e4m3fn else qw.scales
    zeros = qw.zeros if qw.zeros is not None else scales
    tensor_scale = qw.tensor_scale if qw.tensor_scale is not None else scales
    stride_sg = qw.scales.stride(0) if qw.scales.dim() == 2 else 0
    stride_zg = qw.zeros.stride(0) if qw.zeros is not None else 0
    weights = qw.qweight.view(torch.uint8)
    return weights, scales, zeros, tensor_scale, weights.stride(0), stride_sg, stride_zg


def kernel_format(qw: QuantizedWeight) -> str:
    """The kernels' FMT: the format's name, except "fp8_fnuz" for AMD gfx942's e4m3fnuz fp8 weights."""
    if qw.format is QuantFormat.FP8 and qw.qweight.dtype == torch.float8_e4m3fnuz:
        return "fp8_fnuz"
    return qw.format.value


def tile_group(qw: QuantizedWeight) -> int:
    """The kernels' QGROUP: int4/mxfp4 tile K one group at a time and scale each tile's product;
    0 for formats whose scale applies once at the end (int8, fp8, and nvfp4's tensor scale)."""
    return qw.group_size if qw.format in (QuantFormat.INT4, QuantFormat.MXFP4) else 0


def block_k_for(qw_group: int | None, block_k: int) -> int:
    """Grouped formats tile K one group at a time; per-channel formats take the config's block."""
    return qw_group if qw_group else block_k


# ---------------------------------------------------------------------------------------------
# Dequant kernel
# ---------------------------------------------------------------------------------------------


def dequant_configs() -> list[triton.Config]:
    """Row × column blocks of 8–32 K elements (grouped formats swap BLOCK_K for their group)."""
    return [
        triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w)
        for bn, bk in ((64, 128), (32, 256), (128, 128), (64, 256), (128, 64), (256, 32))
        for w in (4, 8)
    ]


def dequant_candidates(group: int) -> tuple[triton.Config, ...]:
    """A grouped format's tile is one group wide: BLOCK_K replaced by the group, duplicates dropped."""
    unique = {}
    for c in dequant_configs():
        bk = block_k_for(group, c.kwargs["BLOCK_K"])
        key = (c.kwargs["BLOCK_N"], bk, c.num_warps)
        unique.setdefault(key, triton.Config({"BLOCK_N": key[0], "BLOCK_K": bk}, num_warps=c.num_warps))
    return tuple(unique.values())


def prune_dequant_configs(configs, named_args, **kwargs):
    """The autotuner's pruner: an adapter over :func:`dequant_candidates`."""
    return list(dequant_candidates({**named_args, **kwargs}["QGROUP"]))


@autotune(dequant_configs(), key=["N", "K", "FMT", "QGROUP"], prune=prune_dequant_configs)
@triton.jit
def _dequant_kernel(
    w_ptr, s_ptr, z_ptr, t_ptr,  # in: packed weights (uint8), scales, zero points, tensor scale
    out_ptr,  # out: [N, K] fp16/bf16
    N, K,
    stride_wn, stride_sg, stride_zg, stride_on,
    FMT: tl.constexpr,
    QGROUP: tl.constexpr,  # K tile = this group (int4, mxfp4); 0: scale once per row (tile_group)
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """out[n, k] = raw(n, k) · scale(n, k // G) rounded once to out's dtype; a [BLOCK_N, BLOCK_K] tile per program."""
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    k0 = tl.program_id(1) * BLOCK_K
    raw = decode_tile(w_ptr, s_ptr, z_ptr, offs_n, k0, N, K, stride_wn, stride_sg, stride_zg, FMT, BLOCK_N, BLOCK_K)
    scale = row_scale(s_ptr, t_ptr, k0 // BLOCK_K, offs_n, N, stride_sg, FMT)
    offs_k = k0 + tl.arange(0, BLOCK_K)
    mask = (offs_n < N)[:, None] & (offs_k < K)[None, :]
    out = out_ptr + offs_n.to(tl.int64)[:, None] * stride_on + offs_k[None, :]
    tl.store(out, (raw * scale[:, None]).to(out_ptr.dtype.element_ty), mask=mask)


ACTIVATION_DTYPES = (torch.float16, torch.bfloat16)


def dequant(qw: QuantizedWeight, dtype: torch.dtype = torch.float16, out: torch.Tensor | None = None) -> torch.Tensor:
    """The dense [N, K] weight in fp16/bf16 with the Triton dequant kernel."""
    if out is None:
        out = torch.empty((qw.n, qw.k), dtype=dtype, device=qw.device)
    if out.dtype not in ACTIVATION_DTYPES or tuple(out.shape) != (qw.n, qw.k) or out.stride(1) != 1:
        raise ValueError(f"out must be fp16/bf16 [{qw.n}, {qw.k}] with unit column stride, "
                         f"got {out.dtype} {tuple(out.shape)} stride {out.stride()}")
    if out.device != qw.device:
        raise ValueError(f"out is on {out.device}, the weight on {qw.device}")
    w, s, z, t, stride_wn, stride_sg, stride_zg = kernel_args(qw)
    grid = lambda meta: (triton.cdiv(qw.n, meta["BLOCK_N"]), triton.cdiv(qw.k, meta["BLOCK_K"]))
    _dequant_kernel[grid](w, s, z, t, out, qw.n, qw.k, stride_wn, stride_sg, stride_zg, out.stride(0),
                          FMT=kernel_format(qw), QGROUP=tile_group(qw))
    return out


# ---------------------------------------------------------------------------------------------
# Spec pieces shared by dequant, qgemv and qgemm
# ---------------------------------------------------------------------------------------------

FORMAT_AXIS = Axis("format", str, "int4", "weight format", choices=tuple(f.value for f in QuantFormat))
GROUP_AXIS = Axis("group_size", int, 128, "int4 group along K (mxfp4: 32; nvfp4: 16; int8/fp8: the default only)",
                  choices=(16, 32, 64, 128, 256))
N_AXIS = Axis("N", int, 4096, "output features (rows of W)", minimum=1)
K_AXIS = Axis("K", int, 4096, "input features (columns of W)", minimum=1)
QUANT_DTYPES = (DType.FP16, DType.BF16)


def group_of(case: Case) -> int | None:
    """The group a case's format uses: int4 the axis value, mxfp4 32, nvfp4 16, per-channel formats None."""
    fmt = QuantFormat(case["format"])
    return case["group_size"] if fmt.grouped else None


def quant_skip(case: Case, caps: DeviceCaps) -> str | None:
    """group_size/format/K combinations the layouts cannot take (one convention: per-channel formats
    take only the default group_size, mxfp4 only its block of 32, nvfp4 of 16)."""
    fmt = QuantFormat(case["format"])
    if not fmt.grouped and case["group_size"] != GROUP_AXIS.default:
        return f"{fmt.value} is per-channel: group_size does not apply (only the default {GROUP_AXIS.default} runs)"
    try:
        check_group(fmt, case["K"], group_of(case))
    except ValueError as error:
        return str(error)
    return None


def triton_fp8_skip(case: Case, caps: DeviceCaps) -> str | None:
    if case["format"] == QuantFormat.FP8.value and caps.capability is not None and caps.capability < (8, 9):
        return "the Triton e4m3 conversion needs sm_89+"
    return None


def quantized_weight(case: Case, device: torch.device, gen: torch.Generator) -> QuantizedWeight:
    """W ~ Normal(0, 1/K), quantized by the reference quantizer (set-up, never timed); fp8 in the
    e4m3 flavour of the device's target."""
    weight = scaled_randn((case["N"], case["K"]), dtype=torch.float32, device=device, generator=gen, fan_in=case["K"])
    return quantize(weight, case["format"], group_of(case), fp8_dtype=fp8_dtype(device_limits(device)))


def _grouped_shape(case: Case) -> tuple[int, int, int | None]:
    """(N, K, group) a byte count uses: a case the skip rule rejects (the sweep still records its bytes)
    counts its format's own group and K rounded up to it."""
    fmt = QuantFormat(case["format"])
    if not fmt.grouped:
        return case["N"], case["K"], None
    group = case["group_size"] if case["group_size"] in fmt.group_sizes else fmt.default_group
    return case["N"], triton.cdiv(case["K"], group) * group, group


def torch_dequant_bytes(case: Case) -> int:
    """What the reference dequantizer (the torch baselines' first step) moves, from
    :func:`kernels.quant_formats.dequantize_traffic`: ≈ 13 B per weight for int8/fp8, ≈ 41–49 for the
    4-bit formats (fp32 temporaries), against ≤ 1 B packed."""
    n, k, group = _grouped_shape(case)
    return dequantize_traffic(case["format"], n, k, group)


def prepare_dequantize(qw: QuantizedWeight) -> None:
    """Build the reference dequantizer's constants (the e2m1 table) before a timed run uses them."""
    if qw.format in (QuantFormat.MXFP4, QuantFormat.NVFP4):
        e2m1_lut(qw.device)


def weight_bytes(case: Case) -> int:
    """Packed bytes of the case's weight; a case the skip rule rejects (the sweep still records its
    bytes) counts its format's own group and K rounded up to it."""
    n, k, group = _grouped_shape(case)
    return packed_bytes(case["format"], n, k, group)


# ---------------------------------------------------------------------------------------------
# Spec
# ---------------------------------------------------------------------------------------------


def _dequant_inputs(case: Case, device: torch.device, gen: torch.Generator) -> Inputs:
    return {
        "weight": quantized_weight(case, device, gen),
        "out": poisoned((case["N"], case["K"]), dtype=case.dtype.torch, device=device),
    }


def meta_weight(case: Case, limits: Limits | None = None) -> QuantizedWeight:
    """The case's quantized weight as ``meta`` tensors: its layout, no memory (for kernels.spaces);
    fp8 in the e4m3 flavour of ``limits``' target (None: OCP e4m3fn)."""
    fmt, group = QuantFormat(case["format"]), group_of(case)
    fp8 = fp8_dtype(limits) if limits is not None else torch.float8_e4m3fn
    layout = quant_formats._layout(fmt, case["N"], case["K"], group, fp8)  # the tensors a weight of this shape holds
    tensors = {name: meta(shape, dtype) for name, (shape, dtype) in layout.items()}
    return QuantizedWeight(fmt, group, case["N"], case["K"], **tensors)


def _dequant_candidates(case: Case, limits: Limits) -> tuple[TuneSpace, ...]:
    qw = meta_weight(case, limits)
    return launch_spaces(lambda: dequant(qw, case.dtype.torch), {"dequant": _dequant_kernel}, limits)


def _build_triton(inputs: Inputs, case: Case) -> Launch:
    qw, out = inputs["weight"], inputs["out"]
    return Launch(run=lambda: dequant(qw, out.dtype, out), config=lambda: describe(_dequant_kernel.best_config))


def _build_torch(inputs: Inputs, case: Case) -> Launch:
    qw, out = inputs["weight"], inputs["out"]
    prepare_dequantize(qw)
    return Launch(run=lambda: out.copy_(dequantize(qw)), config=lambda: "reference dequantize (fp32 torch ops)")


def _torch_bytes(case: Case) -> int:
    """The reference dequantizer's traffic, then copy_ reads its fp32 result and writes the dtype."""
    elements = case["N"] * _grouped_shape(case)[1]
    return torch_dequant_bytes(case) + elements * (4 + case.dtype.itemsize)


DEQUANT = KernelSpec(
    name="dequant",
    summary="packed quantized W [N, K] → dense fp16/bf16 W (memory-bound; FLOPs counted as 0)",
    axes=(FORMAT_AXIS, GROUP_AXIS, N_AXIS, K_AXIS),
    dtypes=QUANT_DTYPES,
    impls=(
        Impl("triton", _build_triton, "Triton, one group-wide (or config-wide) tile per program",
             skip=triton_fp8_skip, candidates=_dequant_candidates),
        Impl("torch", _build_torch, "the reference dequantizer (fp32 torch ops) and a copy to the dtype",
             bytes=_torch_bytes),
    ),
    make_inputs=_dequant_inputs,
    reference=lambda inputs, case: dequantize(inputs["weight"]),
    flops=lambda case: 0,
    bytes=lambda case: weight_bytes(case) + case["N"] * case["K"] * case.dtype.itemsize,
    # one rounding of exact fp32 values to the output dtype: ≤ 2^-11 (fp16) / 2^-8 (bf16) relative
    tolerance={DType.FP16: 1e-3, DType.BF16: 8e-3},
    skip=quant_skip,
    tags=("memory", "quant"),
)
