"""Decode economics of MoE models: one decode step on G GPUs, what fits in memory, throughput vs interactivity.

Layout (PREDICTED, the way DeepSeek-V3 and SGLang's DP attention serve it; one GPU for G = 1): the routed experts
are split over the G GPUs (expert parallelism, E/G each); everything else — attention, shared experts, the dense
layers, embeddings — is replicated, and each GPU runs attention for its own B/G sequences, holding their KV cache.
Per GPU and decode step at B sequences in all, of mean context X:

* routed experts, per MoE layer: the weights of the experts that receive ≥ 1 of the B·k pairs —
  (E/G)·(1 − (1 − k/E)^B) in expectation (analysis/moe.py) — and 2·(B·k/G)·3·d_model·d_ff FLOPs;
* the rest of the active weights (published active parameters − k routed experts per MoE layer) read once, and
  2·(B/G)·that FLOPs;
* attention over the cache: B/G sequences × X tokens × the cached values per token per layer (MLA's 576-value
  latent, or 2·kv_heads·head_dim; gpt-oss's sliding-window layers hold at most their 128-token window);
* G > 1: a dispatch and a combine all-to-all per MoE layer, each moving (B/G)·k·d_model bf16 values ·(G−1)/G
  over one direction of NVLink (the device table's figure);
* with fixed costs: a launch per kernel in a CUDA graph and each all-to-all's per-call latency
  (analysis/tokenomics_overheads.py figures).

Each term is max(bytes / DRAM bandwidth, FLOPs / the tensor peak) on the datasheet: nothing here is measured.
Memory: the GPU's bytes × (1 − HEADROOM) − weights per GPU ⇒ the KV cache that fits ⇒ the largest batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.devices import Datasheet, get
from analysis.moe import MoeLayer, expert_bytes, peak
from analysis.tokenomics import HEADROOM, SCENARIOS, Scenario, batches_up_to
from analysis.tokenomics_overheads import ALLREDUCE_LATENCY_S, PUBLIC_LAUNCH_S
from kernels.models import DEEPSEEK_V3_MOE, GPT_OSS_120B, MoeModel

UPPER, FIXED = "upper bound (no fixed costs)", "with fixed costs"
BASIS = "predicted (datasheet)"
# (layers with a sliding window, its tokens): gpt-oss alternates full and 128-token banded attention (config.json
# "sliding_window": 128, "layer_types"); the others attend over the whole context in every layer
SLIDING = {"gpt-oss-120b": (18, 128), "gpt-oss-20b": (12, 128)}
# max_position_embeddings of each config.json
WINDOW = {"deepseek-v3": 163840, "gpt-oss-120b": 131072, "gpt-oss-20b": 131072}
KERNELS_PER_LAYER = 12  # norms, attention projections and kernel, router, align, two grouped GEMMs, shared, combine
KERNELS_PER_STEP = 4  # embedding, final norm, LM head, sampling


@dataclass(frozen=True)
class MoePreset:
    model: MoeModel
    expert_format: str  # the routed experts' stored format
    other_bytes: float  # bytes per weight of everything else
    other_compute: str  # the tensor dtype of the non-expert GEMMs
    gpus: int
    kv_bytes: float = 2.0  # bf16 cache

    @property
    def label(self) -> str:
        return f"{self.model.name} {self.expert_format} on {self.gpus} GPU{'s' if self.gpus > 1 else ''}"

    @property
    def layer(self) -> MoeLayer:
        return MoeLayer.of(self.model, self.expert_format, ep=self.gpus, shared=False)


# DeepSeek-V3's checkpoint is fp8 with 128 × 128 block scales throughout; gpt-oss keeps only its experts in mxfp4
# (attention, router and embeddings in bf16)
DEEPSEEK_FP8 = MoePreset(DEEPSEEK_V3_MOE, "fp8-block", 1.0, "fp8", 8)
GPT_OSS = MoePreset(GPT_OSS_120B, "mxfp4", 2.0, "bf16", 1)
PRESETS = (DEEPSEEK_FP8, GPT_OSS)
DEVICES = ("h100-sxm", "h200-sxm")


def routed_params(model: MoeModel) -> float:
    return float(model.moe_layers * model.experts * 3 * model.hidden * model.expert_ff)


def weight_bytes(preset: MoePreset) -> float:
    """Every weight of the model in its formats (routed experts with their scales)."""
    model = preset.model
    experts = model.moe_layers * model.experts * expert_bytes(preset.expert_format, model.hidden, model.expert_ff)
    return experts + (model.total_params - routed_params(model)) * preset.other_bytes


def weight_bytes_per_gpu(preset: MoePreset) -> float:
    """Routed experts split over the GPUs, the rest replicated."""
    model = preset.model
    experts = model.moe_layers * model.experts * expert_bytes(preset.expert_format, model.hidden, model.expert_ff)
    return experts / preset.gpus + (model.total_params - routed_params(model)) * preset.other_bytes


def active_other_params(model: MoeModel) -> float:
    """Active parameters that are not routed experts (attention, shared experts, dense layers, LM head)."""
    return model.active_params - model.moe_layers * model.top_k * 3 * model.hidden * model.expert_ff


def kv_bytes_per_sequence(preset: MoePreset, context: float) -> float:
    """Cache bytes of one sequence of ``context`` tokens, every layer (sliding-window layers capped)."""
    model = preset.model
    windowed, window = SLIDING.get(model.name, (0, 0))
    per_token = model.kv_values_per_token() * preset.kv_bytes
    return per_token * ((model.layers - windowed) * context + windowed * min(context, window))


def free_bytes(preset: MoePreset, device: Datasheet, headroom: float = HEADROOM) -> float:
    """Bytes per GPU left for the KV cache (negative: the weights alone do not fit)."""
    return device.capacity_bytes * (1 - headroom) - weight_bytes_per_gpu(preset)


def max_batch(preset: MoePreset, device: Datasheet, context: float, headroom: float = HEADROOM) -> int:
    """Sequences in all (G GPUs, each holding its own sequences' cache) whose KV fits beside the weights."""
    free = free_bytes(preset, device, headroom)
    if free <= 0:
        return 0
    return preset.gpus * int(free // kv_bytes_per_sequence(preset, context))


@dataclass(frozen=True)
class MoeStep:
    batch: int
    experts_s: float
    other_s: float
    attention_s: float
    comm_s: float
    fixed_s: float
    touched: float  # routed experts read per MoE layer per GPU

    @property
    def step_s(self) -> float:
        return self.experts_s + self.other_s + self.attention_s + self.comm_s + self.fixed_s


def _roof(flops: float, nbytes: float, flop_rate: float, bandwidth: float) -> float:
    compute = flops / flop_rate if np.isfinite(flop_rate) else 0.0
    return max(compute, nbytes / bandwidth)


def decode_step(preset: MoePreset, device: Datasheet, batch: int, context: float, fixed: bool = False) -> MoeStep:
    """One decode step per GPU at ``batch`` sequences in all (PREDICTED; see the module docstring)."""
    model, gpus, layer = preset.model, preset.gpus, preset.layer
    per_gpu = batch / gpus
    touched = float(layer.touched(batch))
    experts = model.moe_layers * _roof(float(layer.flops(batch)), touched * layer.expert_bytes,
                                       peak(preset.expert_format, device), device.bandwidth)
    other = active_other_params(model)
    other_s = _roof(2 * per_gpu * other, other * preset.other_bytes, device.tensor(preset.other_compute) or np.nan,
                    device.bandwidth)
    if model.mla_kv_width:  # per head and cached token: q·k over the latent + rope, p·v over the latent
        flops_per = 2 * (model.mla_kv_width + (model.mla_kv_width - 64)) * model.heads
    else:
        flops_per = 4 * model.heads * model.head_dim
    cache = kv_bytes_per_sequence(preset, context)
    attention = _roof(per_gpu * flops_per * cache / (model.kv_values_per_token() * preset.kv_bytes),
                      per_gpu * cache, device.tensor("bf16") or np.nan, device.bandwidth)
    comm = 0.0
    if gpus > 1:
        one_way = device.nvlink_one_way or np.nan
        comm = model.moe_layers * 2 * per_gpu * model.top_k * model.hidden * 2 * (gpus - 1) / gpus / one_way
    fixed_s = 0.0
    if fixed:
        fixed_s = (model.layers * KERNELS_PER_LAYER + KERNELS_PER_STEP) * PUBLIC_LAUNCH_S
        fixed_s += model.moe_layers * 2 * ALLREDUCE_LATENCY_S if gpus > 1 else 0.0
    return MoeStep(batch, experts, other_s, attention, comm, fixed_s, touched)


def curves(presets=PRESETS, scenarios=SCENARIOS, keys=DEVICES) -> pd.DataFrame:
    """Every step from batch 1 to the memory cap, per preset × scenario × device × costs (PREDICTED)."""
    rows = []
    for preset in presets:
        for scenario in scenarios:
            if scenario.longest > WINDOW.get(preset.model.name, np.inf):
                continue
            for key in keys:
                device = get(key)
                cap = max_batch(preset, device, scenario.context)
                for costs in (UPPER, FIXED):
                    for batch in batches_up_to(cap):
                        step = decode_step(preset, device, batch, scenario.context, costs == FIXED)
                        rows.append(dict(preset=preset.label, scenario=scenario.name, device=key,
                                         device_name=device.name, basis=BASIS, costs=costs, batch=batch,
                                         step_ms=step.step_s * 1e3, experts_ms=step.experts_s * 1e3,
                                         other_ms=step.other_s * 1e3, attention_ms=step.attention_s * 1e3,
                                         comm_ms=step.comm_s * 1e3, fixed_ms=step.fixed_s * 1e3,
                                         experts_touched=step.touched, interactivity=1 / step.step_s,
                                         throughput_per_gpu=batch / step.step_s / preset.gpus))
    return pd.DataFrame(rows)


def scenario_named(name: str) -> Scenario:
    return next(s for s in SCENARIOS if s.name == name)
