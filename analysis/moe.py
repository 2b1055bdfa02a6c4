"""Cost model of one mixture-of-experts layer (the ``moe`` family) and its knee, from shapes alone (no torch).

A layer routes each of T tokens to ``top_k`` of ``experts`` SwiGLU experts (W1: [2·d_ff, d_model] gate+up,
W2: [d_model, d_ff]); under expert parallelism ``ep`` a GPU holds E_local = E/ep experts and computes only
the (token, expert) pairs routed to them. Per layer, per GPU (the row contract, docs/briefs moe-contract):

* FLOPs  = 2·P·3·d_model·d_ff (+ 2·T·3·d_model·d_ff for a shared expert), P the pairs routed here;
* bytes  = U·d_model·a (x rows read: tokens with ≥ 1 pair here, all T with a shared expert)
         + touched·(W1 + W2 bytes of one expert in its format, scales included) (+ the shared expert's)
         + T·k·8 (ids and combine weights) + T·d_model·a (out written).

The PREDICTED curve takes the expectations of uniform routing: P = T·k/ep, touched =
E_local·(1 − (1 − k/E)^T), U = T·(1 − C(E − E_local, k)/C(E, k)). Expert weight bytes per format mirror
kernels/moe_formats.expert_bytes (the kernel side's row bytes): bf16 2 B; fp8-channel 1 B + an fp32 scale per
row; fp8-block 1 B + an fp32 scale per 128 × 128 block; int4-g128 0.5 B + an fp16 scale and a 4-bit zero per 128
(asymmetric, as the quant families store it); mxfp4 0.5 B + a 1-byte E8M0 scale per 32; nvfp4 0.5 B + a 1-byte
e4m3 scale per 16 + one fp32 tensor scale per matrix.

Predicted time on a device = max(FLOPs / peak, bytes / DRAM bandwidth) (datasheet, no launch cost). The peak is
the format's tensor path as a serving engine runs it where the device has it: fp8 tensor cores for the fp8 formats
(W8A8), fp4 for mxfp4/nvfp4 on Blackwell, bf16 otherwise (int4 is W4A16; Hopper dequantises fp4 to bf16; A100
has no fp8). The knee is the T where the two times cross, solved on the exact expectation: ridge·E/k is only the
large-T approximation (it drops the activations and assumes every expert is touched).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import Enum

import numpy as np

from analysis.devices import Datasheet
from kernels.models import MoeModel

ROUTING_BYTES_PER_PAIR = 8  # int32 expert id + fp32 combine weight
FP8_BLOCK = 128


class WeightFormat(str, Enum):
    BF16 = "bf16"
    FP8_CHANNEL = "fp8-channel"
    FP8_BLOCK = "fp8-block"
    INT4_G128 = "int4-g128"
    MXFP4 = "mxfp4"
    NVFP4 = "nvfp4"


FORMATS = tuple(f.value for f in WeightFormat)
# tensor paths in order of preference: the first the device has is the one a serving engine runs
COMPUTE_PATHS = {WeightFormat.BF16: ("bf16",), WeightFormat.FP8_CHANNEL: ("fp8", "bf16"),
                 WeightFormat.FP8_BLOCK: ("fp8", "bf16"), WeightFormat.INT4_G128: ("bf16",),
                 WeightFormat.MXFP4: ("fp4", "bf16"), WeightFormat.NVFP4: ("fp4", "bf16")}


def matrix_bytes(fmt: WeightFormat | str, rows: int, k: int, itemsize: float = 2.0) -> float:
    """Stored bytes of one expert's [rows, k] weight with its scales (``itemsize``: bf16's element size)."""
    fmt = WeightFormat(fmt)
    if fmt is WeightFormat.BF16:
        return float(rows * k * itemsize)
    if fmt is WeightFormat.FP8_CHANNEL:
        return float(rows * k + 4 * rows)
    if fmt is WeightFormat.FP8_BLOCK:
        return float(rows * k + 4 * math.ceil(rows / FP8_BLOCK) * math.ceil(k / FP8_BLOCK))
    group = {WeightFormat.INT4_G128: 128, WeightFormat.MXFP4: 32, WeightFormat.NVFP4: 16}[fmt]
    k = math.ceil(k / group) * group
    packed = rows * k / 2
    if fmt is WeightFormat.INT4_G128:
        return float(packed + 2 * rows * k / group + (k // group) * math.ceil(rows / 2))
    if fmt is WeightFormat.MXFP4:
        return float(packed + rows * k / group)
    return float(packed + rows * k / group + 4)


def bytes_per_weight(fmt: WeightFormat | str, d_model: int = 4096, d_ff: int = 4096) -> float:
    """Mean stored bytes per weight of one expert (W1 + W2) in ``fmt``, scales included."""
    return expert_bytes(fmt, d_model, d_ff) / (3 * d_model * d_ff)


def expert_bytes(fmt: WeightFormat | str, d_model: int, d_ff: int, itemsize: float = 2.0) -> float:
    """W1 [2·d_ff, d_model] + W2 [d_model, d_ff] of one expert."""
    return matrix_bytes(fmt, 2 * d_ff, d_model, itemsize) + matrix_bytes(fmt, d_model, d_ff, itemsize)


def compute_dtype(fmt: WeightFormat | str, device: Datasheet) -> str | None:
    """The tensor path a format's GEMMs run on this device (see the module docstring); None: no tensor path."""
    return next((d for d in COMPUTE_PATHS[WeightFormat(fmt)] if device.tensor(d)), None)


def peak(fmt: WeightFormat | str, device: Datasheet) -> float:
    dtype = compute_dtype(fmt, device)
    return float(device.tensor(dtype)) if dtype else float("nan")


@dataclass(frozen=True)
class MoeLayer:
    """One MoE layer on one GPU: E experts of the model, top-k, dimensions, EP degree, shared expert, format."""

    experts: int
    top_k: int
    d_model: int
    d_ff: int
    ep: int = 1
    shared: int = 0
    format: str = WeightFormat.BF16.value
    act_bytes: float = 2.0

    def __post_init__(self):
        if not 1 <= self.top_k <= self.experts or self.ep < 1 or self.experts % self.ep:
            raise ValueError(f"MoE layer needs 1 ≤ top_k ≤ experts and ep dividing experts (got E={self.experts}, "
                             f"k={self.top_k}, ep={self.ep})")
        WeightFormat(self.format)

    @classmethod
    def of(cls, model: MoeModel, fmt: str | None = None, ep: int = 1, shared: bool = True) -> "MoeLayer":
        return cls(model.experts, model.top_k, model.hidden, model.expert_ff, ep,
                   int(bool(model.shared_experts) and shared), fmt or model.native_format)

    def with_format(self, fmt: str) -> "MoeLayer":
        return replace(self, format=fmt)

    @property
    def local_experts(self) -> int:
        return self.experts // self.ep

    @property
    def expert_bytes(self) -> float:
        return expert_bytes(self.format, self.d_model, self.d_ff, self.act_bytes)

    # --- the layer's work for given counts (a drawn routing) ------------------------------------------

    def flops_for(self, tokens, pairs):
        """2·(P + T·shared)·3·d_model·d_ff."""
        return 2.0 * (np.asarray(pairs, float) + self.shared * np.asarray(tokens, float)) * 3 * self.d_model * self.d_ff

    def bytes_for(self, tokens, touched, tokens_in):
        """x rows in + touched (+ shared) experts' weights + routing metadata + out."""
        t = np.asarray(tokens, float)
        rows_in = t if self.shared else np.asarray(tokens_in, float)
        return (rows_in * self.d_model * self.act_bytes + (np.asarray(touched, float) + self.shared) * self.expert_bytes
                + t * self.top_k * ROUTING_BYTES_PER_PAIR + t * self.d_model * self.act_bytes)

    # --- expectations under uniform routing ---------------------------------------------------------

    def touched(self, tokens):
        """E_local·(1 − (1 − k/E)^T): local experts with ≥ 1 of T uniformly routed tokens."""
        return self.local_experts * (1.0 - (1.0 - self.top_k / self.experts) ** np.asarray(tokens, float))

    def pairs(self, tokens):
        return np.asarray(tokens, float) * self.top_k / self.ep

    def tokens_in(self, tokens):
        """T·(1 − C(E − E_local, k)/C(E, k)): tokens with ≥ 1 expert on this GPU."""
        none_here = math.prod((self.experts - self.local_experts - i) / (self.experts - i) for i in range(self.top_k))
        return np.asarray(tokens, float) * (1.0 - max(none_here, 0.0))

    def flops(self, tokens):
        return self.flops_for(tokens, self.pairs(tokens))

    def bytes(self, tokens):
        return self.bytes_for(tokens, self.touched(tokens), self.tokens_in(tokens))

    # --- on a device ----------------------------------------------------------------------------------

    def time(self, tokens, device: Datasheet):
        """PREDICTED seconds: max(FLOPs / the format's tensor peak, bytes / DRAM bandwidth)."""
        compute = self.flops(tokens) / peak(self.format, device)
        return np.maximum(compute, self.bytes(tokens) / device.bandwidth)

    def knee(self, device: Datasheet, bandwidth: float | None = None, peak_flops: float | None = None) -> float:
        """T where FLOPs/peak = bytes/BW on the expectation (a real number of tokens); NaN without a tensor path.

        FLOPs grow linearly in T and the expected bytes are concave in T, so the gap is convex: negative at T = 1
        for any layer that starts memory-bound, it crosses zero once. Bisection in log T."""
        bandwidth = bandwidth or device.bandwidth
        peak_flops = peak_flops or peak(self.format, device)
        if not np.isfinite(peak_flops):
            return float("nan")

        def gap(t: float) -> float:
            return float(self.flops(t) / peak_flops - self.bytes(t) / bandwidth)

        low, high = 1.0, 1.0
        if gap(low) >= 0:
            return low
        while gap(high) < 0:
            high *= 2
            if high > 1e12:
                return float("inf")
        for _ in range(200):
            middle = math.sqrt(low * high)
            low, high = (middle, high) if gap(middle) < 0 else (low, middle)
            if high / low - 1 < 1e-12:
                break
        return high

    def approximate_knee(self, device: Datasheet) -> float:
        """ridge·E/k scaled by the format's bytes per weight / 2 (the large-T limit without activations or
        shared expert): what the issue states; compare with :meth:`knee`."""
        ridge = peak(self.format, device) / device.bandwidth
        return ridge * self.experts / self.top_k * bytes_per_weight(self.format, self.d_model, self.d_ff) / 2.0

    def dense(self) -> "DenseMlp":
        """A dense MLP with the same active FLOPs per token: one GEMM of d_model × 3·d_ff·(k + shared) weights."""
        return DenseMlp(self.d_model, 3 * self.d_ff * (self.top_k + self.shared), self.format, self.act_bytes)


@dataclass(frozen=True)
class DenseMlp:
    """The "if it were dense" comparison: T tokens through d_model × width weights, x in and out once."""

    d_model: int
    width: int
    format: str = WeightFormat.BF16.value
    act_bytes: float = 2.0

    def flops(self, tokens):
        return 2.0 * np.asarray(tokens, float) * self.d_model * self.width

    def bytes(self, tokens):
        t = np.asarray(tokens, float)
        weights = self.d_model * self.width * bytes_per_weight(self.format, self.d_model, self.width // 3)
        return 2 * t * self.d_model * self.act_bytes + weights

    def knee(self, device: Datasheet) -> float:
        """Affine in T, so exact: T = (W/BW) / (2·d·width/P − 2·d·a/BW)."""
        p = peak(self.format, device)
        if not np.isfinite(p):
            return float("nan")
        gain = 2.0 * self.d_model * self.width / p - 2 * self.d_model * self.act_bytes / device.bandwidth
        weights = float(self.bytes(0.0))
        return weights / device.bandwidth / gain if gain > 0 else float("inf")

