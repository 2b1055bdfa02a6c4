"""Quantized weight formats: bit layouts, pack/unpack, the reference quantizer and THE reference dequantizer.

A linear layer is y = x·Wᵀ with W: [N, K] = [out_features, in_features]. Every format below stores
exactly the tensors listed, and :func:`packed_bytes` counts exactly those bytes (it equals
``QuantizedWeight.nbytes``), so predicted and measured GB/s use one number.

``int8``  W8A16, symmetric, one scale per output channel
    qweight  int8  [N, K]        q ∈ [−127, 127]; −128 is never produced (symmetric range), the
                                 dequantizers still decode it as −128·scale
    scales   fp16  [N]           W[n, k] ≈ q[n, k] · scales[n]
    bytes    N·K + 2·N

``int4``  asymmetric, one scale and zero point per group of G ∈ {32, 64, 128} consecutive k
    qweight  uint8 [N, K/2]      byte j of row n: low nibble = code of k = 2j (the even k),
                                 high nibble = code of k = 2j + 1; codes 0 … 15
    scales   fp16  [K/G, N]      group-major, so one group's scales for a run of n are contiguous
    zeros    uint8 [K/G, ⌈N/2⌉]  zero points 0 … 15 (uint4) packed two per byte along n: low nibble =
                                 even n; an odd N leaves the last high nibble 0 (stored, so counted)
    W[n, k] ≈ (q[n, k] − zeros[k/G, n]) · scales[k/G, n]
    bytes    N·K/2 + 2·N·K/G + (K/G)·⌈N/2⌉

``fp8``   OCP e4m3 (``torch.float8_e4m3fn``), one scale per output channel
    qweight  float8_e4m3fn [N, K]  kernels read the bytes as uint8 and bitcast them; the NaN codes
                                   0x7F/0xFF are never produced
    scales   fp32  [N]           fp32 because amax/448 of small weights sits near fp16's subnormals
    bytes    N·K + 4·N

``mxfp4`` OCP Microscaling MX v1.0: e2m1 elements, one E8M0 scale per block of 32 consecutive k
    qweight  uint8 [N, K/2]      nibbles as in int4 (low = even k); a code is s e1 e0 m (bit 3 sign,
                                 bits 2–1 exponent, bit 0 mantissa): ±{0, 0.5, 1, 1.5, 2, 3, 4, 6}
    scales   uint8 [K/32, N]     E8M0 biased exponents: scale = 2^(e − 127); 255 = NaN (never produced)
    bytes    N·K/2 + N·K/32

K must be a multiple of the group for int4 and of 32 for mxfp4: the quantizer rejects other K with
a one-line ValueError (no padding, so no stored byte is a pad along K). int8 and fp8 take any K.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch

MX_BLOCK = 32  # OCP MX: one shared scale per 32 elements
E2M1_MAX = 6.0
E4M3_MAX = 448.0
E8M0_BIAS = 127
E8M0_NAN = 255
# magnitudes of the eight e2m1 codes 0b0000 … 0b0111; the sign bit (0b1000) negates
E2M1_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


class QuantFormat(str, Enum):
    INT8 = "int8"
    INT4 = "int4"
    FP8 = "fp8"
    MXFP4 = "mxfp4"

    @property
    def group_sizes(self) -> tuple[int, ...]:
        """The group sizes this format takes; () for the per-channel formats."""
        return {QuantFormat.INT4: (32, 64, 128), QuantFormat.MXFP4: (MX_BLOCK,)}.get(self, ())

    @property
    def grouped(self) -> bool:
        return bool(self.group_sizes)

    @classmethod
    def parse(cls, value: "QuantFormat | str") -> "QuantFormat":
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"unknown format {value!r}; valid: {', '.join(f.value for f in cls)}") from None


def check_group(fmt: QuantFormat | str, k: int, group_size: int | None) -> int | None:
    """The group a format uses for K columns, or a one-line ValueError naming what is valid."""
    fmt = QuantFormat.parse(fmt)
    if not fmt.grouped:
        if group_size is not None:
            raise ValueError(f"{fmt.value} is per-channel and takes no group_size")
        return None
    group = fmt.group_sizes[-1] if group_size is None else group_size
    if group not in fmt.group_sizes:
        raise ValueError(f"{fmt.value} takes group_size {', '.join(map(str, fmt.group_sizes))}, got {group}")
    if k % group:
        raise ValueError(f"{fmt.value} with group_size {group} needs K a multiple of {group}, got K={k}")
    return group


def packed_bytes(fmt: QuantFormat | str, n: int, k: int, group_size: int | None = None) -> int:
    """Bytes of every stored tensor of an [N, K] weight (the layout table in the module docstring)."""
    fmt = QuantFormat.parse(fmt)
    group = check_group(fmt, k, group_size)
    if fmt is QuantFormat.INT8:
        return n * k + 2 * n
    if fmt is QuantFormat.FP8:
        return n * k + 4 * n
    groups = k // group
    if fmt is QuantFormat.INT4:
        return n * k // 2 + 2 * n * groups + groups * ((n + 1) // 2)
    return n * k // 2 + n * groups


@dataclass(frozen=True)
class QuantizedWeight:
    """An [N, K] weight in one format; the tensors and their layouts are the module docstring's."""

    format: QuantFormat
    group_size: int | None
    n: int
    k: int
    qweight: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None = None

    def __post_init__(self):
        expected = _layout(self.format, self.n, self.k, self.group_size)
        for name, (shape, dtype) in expected.items():
            tensor = getattr(self, name)
            if tensor is None or tuple(tensor.shape) != shape or tensor.dtype != dtype or not tensor.is_contiguous():
                got = None if tensor is None else (tuple(tensor.shape), tensor.dtype)
                raise ValueError(f"{self.format.value} {name} must be contiguous {shape} {dtype}, got {got}")
        if "zeros" not in expected and self.zeros is not None:
            raise ValueError(f"{self.format.value} stores no zero points")

    @property
    def tensors(self) -> tuple[torch.Tensor, ...]:
        return tuple(t for t in (self.qweight, self.scales, self.zeros) if t is not None)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors)

    @property
    def device(self) -> torch.device:
        return self.qweight.device


def _layout(fmt: QuantFormat, n: int, k: int, group_size: int | None) -> dict:
    group = check_group(fmt, k, group_size)
    if fmt is QuantFormat.INT8:
        return {"qweight": ((n, k), torch.int8), "scales": ((n,), torch.float16)}
    if fmt is QuantFormat.FP8:
        return {"qweight": ((n, k), torch.float8_e4m3fn), "scales": ((n,), torch.float32)}
    if fmt is QuantFormat.INT4:
        return {"qweight": ((n, k // 2), torch.uint8), "scales": ((k // group, n), torch.float16),
                "zeros": ((k // group, (n + 1) // 2), torch.uint8)}
    return {"qweight": ((n, k // 2), torch.uint8), "scales": ((k // MX_BLOCK, n), torch.uint8)}


# ---------------------------------------------------------------------------------------------
# Bit-level pack/unpack (exact inverses of each other)
# ---------------------------------------------------------------------------------------------


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """Codes 0 … 15 along the last dim, two per byte: low nibble = even index; an odd length pads a 0."""
    if codes.shape[-1] % 2:
        codes = torch.nn.functional.pad(codes, (0, 1))
    codes = codes.to(torch.uint8)
    return (codes[..., 0::2] | (codes[..., 1::2] << 4)).contiguous()


def unpack_nibbles(packed: torch.Tensor, length: int | None = None) -> torch.Tensor:
    """The inverse of :func:`pack_nibbles`: uint8 codes 0 … 15, the last dim cut to ``length``."""
    codes = torch.stack((packed & 0xF, packed >> 4), dim=-1).flatten(-2)
    return codes if length is None else codes[..., :length]


def e2m1_decode(codes: torch.Tensor) -> torch.Tensor:
    """e2m1 codes 0 … 15 → float32 values (−0.0 for code 8)."""
    grid = torch.tensor(E2M1_GRID, dtype=torch.float32, device=codes.device)
    lut = torch.cat((grid, -grid))
    return lut[codes.long()]


def e2m1_encode(values: torch.Tensor) -> torch.Tensor:
    """Round to the nearest e2m1 value, ties to the even code, saturating at ±6; keeps the sign of ±0."""
    grid = torch.tensor(E2M1_GRID, dtype=torch.float32, device=values.device)
    magnitude = values.float().abs()
    lower = (torch.searchsorted(grid, magnitude.contiguous(), right=True) - 1).clamp(0, 7)
    upper = (lower + 1).clamp(max=7)
    below, above = magnitude - grid[lower], grid[upper] - magnitude
    pick_upper = (above < below) | ((above == below) & (upper % 2 == 0))
    index = torch.where(pick_upper, upper, lower)
    return (index | (torch.signbit(values).long() << 3)).to(torch.uint8)


def e8m0_decode(exponents: torch.Tensor) -> torch.Tensor:
    """E8M0 biased exponents → float32 2^(e − 127), built from bits (2^−127 is an fp32 subnormal)."""
    e = exponents.to(torch.int32)
    bits = torch.where(e == 0, torch.full_like(e, 0x00400000), e << 23)
    bits = torch.where(e == E8M0_NAN, torch.full_like(e, 0x7FC00000), bits)
    return bits.view(torch.float32)


# ---------------------------------------------------------------------------------------------
# Reference quantizer
# ---------------------------------------------------------------------------------------------


def quantize(weight: torch.Tensor, fmt: QuantFormat | str, group_size: int | None = None) -> QuantizedWeight:
    """Quantize a finite [N, K] weight; the error per element is at most half a step of its grid.

    ``group_size`` is for int4 (32, 64 or 128; default 128) and mxfp4 (32 only, the default);
    int8 and fp8 are per-channel and take none.
    """
    fmt = QuantFormat.parse(fmt)
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D [N, K], got shape {tuple(weight.shape)}")
    n, k = weight.shape
    group = check_group(fmt, k, group_size)
    w = weight.float()
    if not torch.isfinite(w).all():
        raise ValueError("weight has non-finite values")
    if fmt is QuantFormat.INT8:
        scale = _fp16_at_least(w.abs().amax(dim=1) / 127)
        q = torch.round(w / scale.float()[:, None]).clamp(-127, 127).to(torch.int8)
        return QuantizedWeight(fmt, None, n, k, q, scale)
    if fmt is QuantFormat.FP8:
        amax = w.abs().amax(dim=1)
        scale = torch.where(amax > 0, amax / E4M3_MAX, torch.ones_like(amax))
        # clamp: w/scale may round a hair past 448, and torch turns out-of-range e4m3 into NaN
        q = (w / scale[:, None]).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
        return QuantizedWeight(fmt, None, n, k, q.contiguous(), scale.contiguous())
    blocks = w.reshape(n, k // group, group)
    if fmt is QuantFormat.INT4:
        # the range always holds 0, so the zero point lands in 0 … 15; rounding the scale UP to
        # fp16 keeps 15·scale ≥ max − min, so no element saturates and the error stays ≤ scale/2
        low = blocks.amin(dim=2).clamp(max=0)
        high = blocks.amax(dim=2).clamp(min=0)
        scale = _fp16_at_least((high - low) / 15)
        s = scale.float()
        zero = torch.round(-low / s).clamp(0, 15)
        q = (torch.round(blocks / s[..., None]) + zero[..., None]).clamp(0, 15).to(torch.uint8)
        return QuantizedWeight(fmt, group, n, k, pack_nibbles(q.reshape(n, k)),
                               scale.t().contiguous(), pack_nibbles(zero.t().to(torch.uint8)))
    # mxfp4: shared exponent floor(log2(amax)) − emax(e2m1) = floor(log2(amax)) − 2 (frexp is exact)
    amax = blocks.abs().amax(dim=2)
    _, exponent = torch.frexp(amax)
    shared = torch.where(amax > 0, exponent - 3, torch.full_like(exponent, -E8M0_BIAS)).clamp(-E8M0_BIAS, E8M0_BIAS)
    # 2^−shared from bits: exact, and 127 − shared ∈ [2, 254] is always a normal exponent
    inverse = ((E8M0_BIAS - shared.to(torch.int32)) << 23).view(torch.float32)
    codes = e2m1_encode(blocks * inverse[..., None])
    biased = (shared + E8M0_BIAS).to(torch.uint8)
    return QuantizedWeight(fmt, group, n, k, pack_nibbles(codes.reshape(n, k)), biased.t().contiguous())


def _fp16_at_least(scale: torch.Tensor) -> torch.Tensor:
    """fp16 scales ≥ the fp32 ones (never below, so the grid still spans the range); 0 → 1."""
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    half = scale.to(torch.float16)
    if not torch.isfinite(half).all():
        raise ValueError("weights too large for fp16 scales")
    bumped = (half.view(torch.int16) + 1).view(torch.float16)
    return torch.where(half.float() < scale, bumped, half).contiguous()


# ---------------------------------------------------------------------------------------------
# THE reference dequantizer (float32, torch ops; Triton kernels must match it bit for bit)
# ---------------------------------------------------------------------------------------------


def dequantize(qw: QuantizedWeight) -> torch.Tensor:
    """The float32 [N, K] weight a quantized one stands for; every product is exact in fp32 but fp8's."""
    n = qw.n
    if qw.format is QuantFormat.INT8:
        return qw.qweight.float() * qw.scales.float()[:, None]
    if qw.format is QuantFormat.FP8:
        return qw.qweight.float() * qw.scales[:, None]
    group = qw.group_size
    codes = unpack_nibbles(qw.qweight)
    if qw.format is QuantFormat.INT4:
        zeros = unpack_nibbles(qw.zeros, n).t().float().repeat_interleave(group, dim=1)
        scales = qw.scales.t().float().repeat_interleave(group, dim=1)
        return (codes.float() - zeros) * scales
    scales = e8m0_decode(qw.scales).t().repeat_interleave(group, dim=1)
    return e2m1_decode(codes) * scales
