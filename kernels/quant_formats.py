"""Quantized weight formats: bit layouts, pack/unpack, the reference quantizer and THE reference dequantizer.

A linear layer is y = x·Wᵀ with W: [N, K] = [out_features, in_features]. Every format below stores
exactly the tensors listed, and :func:`packed_bytes` counts exactly those bytes (it equals
``QuantizedWeight.nbytes``), so predicted and measured GB/s use one number.

``int8``  W8A16, symmetric, one scale per output channel
    qweight  int8  [N, K]        q ∈ [−127, 127]; −128 is never produced (symmetric range), the
                                 dequantizers still decode it as −128·scale
    scales   fp16  [N]           W[n, k] ≈ q[n, k] · scales[n]
    bytes    N·K + 2·N

``int4``  asymmetric, one scale and zero point per group of G ∈ {32, 64, 128, 256} consecutive k
    qweight  uint8 [N, K/2]      byte j of row n: low nibble = code of k = 2j (the even k),
                                 high nibble = code of k = 2j + 1; codes 0 … 15
    scales   fp16  [K/G, N]      group-major, so one group's scales for a run of n are contiguous
    zeros    uint8 [K/G, ⌈N/2⌉]  zero points 0 … 15 (uint4) packed two per byte along n: low nibble =
                                 even n; an odd N leaves the last high nibble 0 (stored, so counted)
    W[n, k] ≈ (q[n, k] − zeros[k/G, n]) · scales[k/G, n]
    bytes    N·K/2 + 2·N·K/G + (K/G)·⌈N/2⌉

``fp8``   e4m3, one scale per output channel: OCP ``torch.float8_e4m3fn`` (max 448), or on AMD gfx942
          ``torch.float8_e4m3fnuz`` (bias 8, max 240; ``quantize(..., fp8_dtype=)``, chosen by target)
    qweight  float8_e4m3fn [N, K]  kernels read the bytes as uint8 and bitcast them; the NaN codes
                                   (0x7F/0xFF; fnuz: 0x80) are never produced
    scales   fp32  [N]           fp32 because amax/448 of small weights sits near fp16's subnormals
    bytes    N·K + 4·N

``mxfp4`` OCP Microscaling MX v1.0: e2m1 elements, one E8M0 scale per block of 32 consecutive k
    qweight  uint8 [N, K/2]      nibbles as in int4 (low = even k); a code is s e1 e0 m (bit 3 sign,
                                 bits 2–1 exponent, bit 0 mantissa): ±{0, 0.5, 1, 1.5, 2, 3, 4, 6}
    scales   uint8 [K/32, N]     E8M0 biased exponents: scale = 2^(e − 127); 255 = NaN (never produced)
    bytes    N·K/2 + N·K/32

``nvfp4`` NVIDIA's NVFP4 (Blackwell's native format, dequantised on Hopper): e2m1 elements, one e4m3
          scale per block of 16 consecutive k, one fp32 scale for the whole tensor
    qweight  uint8 [N, K/2]      nibbles as in mxfp4
    scales   float8_e4m3fn [K/16, N]  block scales, never negative, never NaN (0x7F/0xFF)
    tensor_scale  fp32 [1]       W[n, k] ≈ (e2m1(q[n, k]) · scales[k/16, n]) · tensor_scale; the
                                 product in brackets is exact (≤ 6 significant bits), so it is exact
                                 in fp16/bf16 too and kernels apply tensor_scale once at the end
    bytes    N·K/2 + N·K/16 + 4

Activations for the native FP4 MMA (``qgemm``'s scaled variant on Blackwell and gfx950, which needs
both operands in FP4): :func:`quantize_activations` puts x [M, K] on the weight format's e2m1 grid
with one power-of-two scale per block of 32 (mxfp4: E8M0 byte) or 16 (nvfp4: the same 2^s as an e4m3
byte) along K, s = floor(log2 amax) − 2 as OCP MX v1.0 does; :func:`activation_grid` gives the values.

K must be a multiple of the group for int4, of 32 for mxfp4 and of 16 for nvfp4: the quantizer rejects
other K with a one-line ValueError (no padding, so no stored byte is a pad along K). int8 and fp8 take
any K.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch

MX_BLOCK = 32  # OCP MX: one shared scale per 32 elements
NVFP4_BLOCK = 16  # NVFP4: one e4m3 scale per 16 elements
E2M1_MAX = 6.0
E4M3_MAX = 448.0
E4M3FNUZ_MAX = 240.0  # AMD gfx942's e4m3 (bias 8)
FP8_WEIGHT_DTYPES = {torch.float8_e4m3fn: E4M3_MAX, torch.float8_e4m3fnuz: E4M3FNUZ_MAX}  # dtype -> largest finite
E8M0_BIAS = 127
E8M0_NAN = 255
# magnitudes of the eight e2m1 codes 0b0000 … 0b0111; the sign bit (0b1000) negates
E2M1_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


class QuantFormat(str, Enum):
    INT8 = "int8"
    INT4 = "int4"
    FP8 = "fp8"
    MXFP4 = "mxfp4"
    NVFP4 = "nvfp4"

    @property
    def group_sizes(self) -> tuple[int, ...]:
        """The group sizes this format takes; () for the per-channel formats."""
        return {QuantFormat.INT4: (32, 64, 128, 256), QuantFormat.MXFP4: (MX_BLOCK,),
                QuantFormat.NVFP4: (NVFP4_BLOCK,)}.get(self, ())

    @property
    def default_group(self) -> int | None:
        """The group a grouped format uses when none is given (int4: 128)."""
        if not self.grouped:
            return None
        return 128 if self is QuantFormat.INT4 else self.group_sizes[0]

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
    group = fmt.default_group if group_size is None else group_size
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
    if fmt is QuantFormat.NVFP4:
        return n * k // 2 + n * groups + 4
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
    tensor_scale: torch.Tensor | None = None  # nvfp4's fp32 [1]

    def __post_init__(self):
        fp8 = self.qweight.dtype if self.qweight is not None and self.qweight.dtype in FP8_WEIGHT_DTYPES else None
        expected = _layout(self.format, self.n, self.k, self.group_size, fp8 or torch.float8_e4m3fn)
        for name, (shape, dtype) in expected.items():
            tensor = getattr(self, name)
            if tensor is None or tuple(tensor.shape) != shape or tensor.dtype != dtype or not tensor.is_contiguous():
                got = None if tensor is None else (tuple(tensor.shape), tensor.dtype)
                raise ValueError(f"{self.format.value} {name} must be contiguous {shape} {dtype}, got {got}")
        if "zeros" not in expected and self.zeros is not None:
            raise ValueError(f"{self.format.value} stores no zero points")
        if "tensor_scale" not in expected and self.tensor_scale is not None:
            raise ValueError(f"{self.format.value} stores no tensor scale")

    @property
    def tensors(self) -> tuple[torch.Tensor, ...]:
        return tuple(t for t in (self.qweight, self.scales, self.zeros, self.tensor_scale) if t is not None)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors)

    @property
    def device(self) -> torch.device:
        return self.qweight.device


def _layout(fmt: QuantFormat, n: int, k: int, group_size: int | None,
            fp8_dtype: torch.dtype = torch.float8_e4m3fn) -> dict:
    group = check_group(fmt, k, group_size)
    if fmt is QuantFormat.INT8:
        return {"qweight": ((n, k), torch.int8), "scales": ((n,), torch.float16)}
    if fmt is QuantFormat.FP8:
        return {"qweight": ((n, k), fp8_dtype), "scales": ((n,), torch.float32)}
    if fmt is QuantFormat.INT4:
        return {"qweight": ((n, k // 2), torch.uint8), "scales": ((k // group, n), torch.float16),
                "zeros": ((k // group, (n + 1) // 2), torch.uint8)}
    if fmt is QuantFormat.NVFP4:
        return {"qweight": ((n, k // 2), torch.uint8), "scales": ((k // group, n), torch.float8_e4m3fn),
                "tensor_scale": ((1,), torch.float32)}
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


_E2M1_LUTS: dict[torch.device, torch.Tensor] = {}


def e2m1_lut(device: torch.device | str) -> torch.Tensor:
    """The 16 e2m1 values as float32 on ``device``, built once per device: building it per call would put a
    blocking host→device copy inside every timed dequantize (and keep it out of a CUDA graph)."""
    device = torch.device(device)
    lut = _E2M1_LUTS.get(device)
    if lut is None:
        grid = torch.tensor(E2M1_GRID, dtype=torch.float32)
        lut = _E2M1_LUTS[device] = torch.cat((grid, -grid)).to(device)
    return lut


def e2m1_decode(codes: torch.Tensor) -> torch.Tensor:
    """e2m1 codes 0 … 15 → float32 values (−0.0 for code 8)."""
    return e2m1_lut(codes.device)[codes.long()]


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


def quantize(weight: torch.Tensor, fmt: QuantFormat | str, group_size: int | None = None,
             fp8_dtype: torch.dtype = torch.float8_e4m3fn) -> QuantizedWeight:
    """Quantize a finite [N, K] weight; the error per element is at most half a step of its grid.

    ``group_size`` is for int4 (32, 64, 128 or 256; default 128), mxfp4 (32 only, the default) and
    nvfp4 (16 only, the default); int8 and fp8 are per-channel and take none. ``fp8_dtype`` is the
    fp8 format's element type: e4m3fn, or e4m3fnuz for AMD gfx942 (kernels.targets.fp8_dtype).
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
        if fp8_dtype not in FP8_WEIGHT_DTYPES:
            raise ValueError(f"fp8_dtype must be one of {', '.join(map(str, FP8_WEIGHT_DTYPES))}, got {fp8_dtype}")
        top = FP8_WEIGHT_DTYPES[fp8_dtype]
        amax = w.abs().amax(dim=1)
        scale = torch.where(amax > 0, amax / top, torch.ones_like(amax))
        # clamp: w/scale may round a hair past the top, and torch turns out-of-range e4m3 into NaN
        q = (w / scale[:, None]).clamp(-top, top).to(fp8_dtype)
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
    if fmt is QuantFormat.NVFP4:
        return _quantize_nvfp4(blocks, n, k, group)
    # mxfp4: shared exponent floor(log2(amax)) − emax(e2m1) = floor(log2(amax)) − 2 (frexp is exact)
    amax = blocks.abs().amax(dim=2)
    _, exponent = torch.frexp(amax)
    shared = torch.where(amax > 0, exponent - 3, torch.full_like(exponent, -E8M0_BIAS)).clamp(-E8M0_BIAS, E8M0_BIAS)
    # 2^−shared from bits: exact, and 127 − shared ∈ [2, 254] is always a normal exponent
    inverse = ((E8M0_BIAS - shared.to(torch.int32)) << 23).view(torch.float32)
    codes = e2m1_encode(blocks * inverse[..., None])
    biased = (shared + E8M0_BIAS).to(torch.uint8)
    return QuantizedWeight(fmt, group, n, k, pack_nibbles(codes.reshape(n, k)), biased.t().contiguous())


def _quantize_nvfp4(blocks: torch.Tensor, n: int, k: int, group: int) -> QuantizedWeight:
    """NVFP4 as NVIDIA's recipe: tensor_scale = amax/(448·6), block scale amax_b/6/tensor_scale in e4m3,
    except that the block scale is rounded UP to e4m3 (not to nearest), so no element saturates and the
    error stays within half an e2m1 step of the stored scale."""
    amax = blocks.abs().amax()
    tensor_scale = torch.where(amax > 0, amax / (E4M3_MAX * E2M1_MAX), torch.ones_like(amax)).reshape(1)
    wanted = (blocks.abs().amax(dim=2) / E2M1_MAX / tensor_scale).clamp(max=E4M3_MAX)
    scale = _e4m3_at_least(wanted)
    step = scale.float() * tensor_scale
    inverse = torch.where(step > 0, 1.0 / step, torch.zeros_like(step))
    codes = e2m1_encode(blocks * inverse[..., None])
    return QuantizedWeight(QuantFormat.NVFP4, group, n, k, pack_nibbles(codes.reshape(n, k)),
                           scale.t().contiguous(), tensor_scale=tensor_scale.contiguous())


def _e4m3_at_least(scale: torch.Tensor) -> torch.Tensor:
    """e4m3 values ≥ the fp32 ones in [0, 448] (0 stays 0; a tiny positive one becomes 2^-9)."""
    e4m3 = scale.to(torch.float8_e4m3fn)
    bumped = (e4m3.view(torch.uint8) + 1).view(torch.float8_e4m3fn)  # the next code up (≤ 0x7E: never NaN)
    return torch.where(e4m3.float() < scale, bumped.float(), e4m3.float()).to(torch.float8_e4m3fn)


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
    if qw.format is QuantFormat.NVFP4:
        scales = qw.scales.t().float().repeat_interleave(group, dim=1)
        return e2m1_decode(codes) * scales * qw.tensor_scale
    scales = e8m0_decode(qw.scales).t().repeat_interleave(group, dim=1)
    return e2m1_decode(codes) * scales


def dequantize_traffic(fmt: QuantFormat | str, n: int, k: int, group_size: int | None = None) -> int:
    """Bytes :func:`dequantize` moves on an [N, K] weight: every torch op above reads its inputs once
    (broadcast operands count their stored elements) and writes its output once; views move nothing.

    With E = N·K elements and S = N·K/G stored scales (G the group): unpacking the nibbles reads and
    writes E/2 twice (& 0xF, >> 4) and E once (stack), 4E; an fp32 scale (or zero point) expanded
    along K (repeat_interleave) reads 4S and writes 4E; codes.float() reads E, writes 4E; an fp32
    elementwise op on two E-sized operands reads 8E and writes 4E; the e2m1 lookup reads the int64
    codes (8E) and the 16-entry table, writes 4E, after codes.long() (E in, 8E out).
    """
    fmt = QuantFormat.parse(fmt)
    group = check_group(fmt, k, group_size)
    e = n * k
    if fmt is QuantFormat.INT8:  # q.float(); scales.float(); q · scales
        return (e + 4 * e) + (2 * n + 4 * n) + (4 * e + 4 * n + 4 * e)
    if fmt is QuantFormat.FP8:  # q.float(); q · scales
        return (e + 4 * e) + (4 * e + 4 * n + 4 * e)
    s = n * (k // group)
    unpack, expand, lookup, elementwise = 4 * e, 4 * s + 4 * e, (e + 8 * e) + (8 * e + 64 + 4 * e), 12 * e
    if fmt is QuantFormat.INT4:
        z = (k // group) * ((n + 1) // 2)  # packed zero-point bytes
        zeros = 8 * z + (s + 4 * s) + expand  # unpack the zero points; .float(); expand
        scales = (2 * s + 4 * s) + expand  # .float(); expand
        return unpack + zeros + scales + (e + 4 * e) + 2 * elementwise  # codes.float(); − zeros; · scales
    if fmt is QuantFormat.NVFP4:  # scales.float(); expand; lookup; · scales; · tensor_scale (4 B read)
        return unpack + (s + 4 * s) + expand + lookup + elementwise + (4 * e + 4 + 4 * e)
    # mxfp4: e8m0_decode on S exponents (to int32; ==0; full_like; << 23; where; ==255; full_like; where),
    # expand, lookup, · scales
    decode = (s + 4 * s) + (4 * s + s) + 4 * s + (4 * s + 4 * s) + (9 * s + 4 * s) + (4 * s + s) + 4 * s + (9 * s + 4 * s)
    return unpack + decode + expand + lookup + elementwise


# ---------------------------------------------------------------------------------------------
# Activations for the native FP4 MMA (the scaled qgemm variant quantises x this way in-kernel)
# ---------------------------------------------------------------------------------------------

# the power-of-two block scale 2^s each format can store: E8M0 (mxfp4) and e4m3 (nvfp4: 2^-9 … 2^8)
ACTIVATION_SCALE_RANGE = {QuantFormat.MXFP4: (-E8M0_BIAS, E8M0_BIAS), QuantFormat.NVFP4: (-9, 8)}


def _activation_exponents(x: torch.Tensor, fmt: QuantFormat) -> tuple[torch.Tensor, int]:
    if fmt not in ACTIVATION_SCALE_RANGE:
        raise ValueError(f"activations are quantised for mxfp4 or nvfp4 weights, got {fmt.value}")
    group = fmt.default_group
    if x.dim() != 2 or x.shape[1] % group:
        raise ValueError(f"{fmt.value} activations must be 2-D [M, K] with K a multiple of {group}, "
                         f"got shape {tuple(x.shape)}")
    blocks = x.float().reshape(x.shape[0], x.shape[1] // group, group)
    amax = blocks.abs().amax(dim=2)
    _, exponent = torch.frexp(amax)  # amax = f·2^e, f ∈ [0.5, 1): floor(log2 amax) = e − 1
    low, high = ACTIVATION_SCALE_RANGE[fmt]
    shared = torch.where(amax > 0, exponent - 3, torch.full_like(exponent, low))  # a zero block: the smallest
    return shared.clamp(low, high), group  # s = floor(log2 amax) − emax(e2m1) = e − 1 − 2


def quantize_activations(x: torch.Tensor, fmt: QuantFormat | str) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] on the e2m1 grid of an mxfp4/nvfp4 weight: (codes [M, K/2] uint8 packed as the weights,
    scales [M, K/G] uint8: the E8M0 byte of 2^s for mxfp4, its e4m3 byte for nvfp4), the layout
    ``tl.dot_scaled`` takes. A zero block gets the smallest scale; elements past 6·2^s saturate."""
    fmt = QuantFormat.parse(fmt)
    shared, group = _activation_exponents(x, fmt)
    inverse = ((E8M0_BIAS - shared.to(torch.int32)) << 23).view(torch.float32)  # 2^−s, exact
    blocks = x.float().reshape(x.shape[0], -1, group)
    codes = e2m1_encode(blocks * inverse[..., None]).reshape(x.shape)
    if fmt is QuantFormat.MXFP4:
        scales = (shared + E8M0_BIAS).to(torch.uint8)
    else:
        scales = torch.exp2(shared.float()).to(torch.float8_e4m3fn).view(torch.uint8)  # exact: 2^s, s ∈ [−9, 8]
    return pack_nibbles(codes), scales.contiguous()


def activation_grid(x: torch.Tensor, fmt: QuantFormat | str) -> torch.Tensor:
    """The float32 values :func:`quantize_activations` stands for (what the scaled variant multiplies)."""
    fmt = QuantFormat.parse(fmt)
    codes, scales = quantize_activations(x, fmt)
    scale = e8m0_decode(scales) if fmt is QuantFormat.MXFP4 else scales.view(torch.float8_e4m3fn).float()
    return e2m1_decode(unpack_nibbles(codes)) * scale.repeat_interleave(fmt.default_group, dim=1)
