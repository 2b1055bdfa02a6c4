"""Decode economics: one decode step of a whole model under tensor parallelism, and how many sequences fit.

Per (model, device, precision, tensor-parallel degree TP, batch B, mean context X), per GPU:

* projections: each layer's q, k, v, gate, up split by columns (N/TP) and o, down by rows (K/TP);
  kv heads are split too, one per GPU at least (replicated when TP > kv heads); the LM head once per
  step (vocab/TP columns). Embedding lookups, norms, RoPE and sampling are left out.
* attention over the cache: heads/TP query heads over B sequences of X cached tokens.
* two all-reduces per layer (after o and after down) of B × hidden activations: a ring moves
  2·(TP−1)/TP of them over one direction of the GPU's NVLink (half the datasheet's figure). Modelled
  from the device table, never measured here (one GPU).
* fixed costs (only when asked: ``fixed=``): the all-reduces' per-call latency and a launch per kernel
  (analysis/tokenomics_overheads.py). Without them a step is the model's upper bound on speed; they are the same
  on GPUs of one NVLink generation, so they pull the H200/H100 ratio below the bandwidth ratio.

Each kernel term is MEASURED where the device has fitted sweeps of that kernel (the pooled fit of the
fastest impl: t0 + max(bytes/BW_eff, FLOPs/P_eff), a branch the points could not determine taken from
the device's roof), else PREDICTED from the datasheet roofline; every term says which. The datasheet
roofline of the same work is every term's lower bound.

Memory: the bytes the GPU holds (``Datasheet.capacity_bytes``: an "80 GB" H100 holds 85.5e9) less headroom,
weights (parameters × bytes per weight, split over TP) and KV cache (layers × 2 × kv heads per GPU × head_dim ×
bytes per element, per token) ⇒ the largest batch that fits at a context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from analysis.devices import Datasheet
from analysis.roofline import Roof, predicted_time
from analysis.sweeps import SweepFit
from analysis.tokenomics_overheads import FixedCosts, allreduce_calls, launches
from analysis.workloads import decode_attention_cost, linear_cost
from kernels.models import LLAMA2_70B, LLAMA3_8B, LLAMA3_70B, LLAMA31_405B, Model

# vocab_size of each config.json (meta-llama/Meta-Llama-3-8B, -70B, Llama-3.1-405B; Llama-2-70b-hf); the
# embedding and the LM head are separate matrices in all four
VOCAB = {"llama3-8b": 128256, "llama3-70b": 128256, "llama3.1-405b": 128256, "llama2-70b": 32000}
# max_position_embeddings: Llama-2 4k, Llama-3 8k (Llama-3.1-8B/70B: the same dimensions with 128k)
WINDOW = {"llama3-8b": 131072, "llama3-70b": 131072, "llama3.1-405b": 131072, "llama2-70b": 4096}
HEADROOM = 0.10  # memory kept for activations, CUDA context and fragmentation: vLLM's gpu_memory_utilization 0.9
MEASURED, PREDICTED = "measured", "predicted"


@dataclass(frozen=True)
class Precision:
    name: str
    weight_bytes: float  # per parameter
    kv_bytes: float  # per cached K or V element
    compute: str  # the tensor-core dtype of the GEMMs
    act_bytes: float = 2.0  # activations stay bf16

    @property
    def out_bytes(self) -> float:
        return self.act_bytes


BF16 = Precision("bf16", 2.0, 2.0, "bf16")
FP8 = Precision("fp8 weights, bf16 KV", 1.0, 2.0, "fp8")
# NVFP4: 4-bit values + one fp8 scale per 16 (0.5 + 1/16 B per weight), activations fp4 too (W4A4 tensor cores)
FP4 = Precision("nvfp4 weights, bf16 KV", 0.5 + 1 / 16, 2.0, "fp4")
# W4A16 (Marlin/AWQ-style): 4-bit weights + a bf16 scale per 128, dequantised to bf16 GEMMs; x read as 0.5 B/elem
# by linear_cost, which is negligible at the small batches the claim is about
INT4 = Precision("int4 weights (W4A16), bf16 KV", 0.5 + 2 / 128, 2.0, "bf16")


@dataclass(frozen=True)
class Preset:
    model: Model
    precision: Precision
    tp: int

    @property
    def label(self) -> str:
        return f"{self.model.name} {self.precision.name} TP{self.tp}"


# the articles' preset first, then MLPerf's model, the FP4 variant (Blackwell only), and the smaller Llama-3s
PRESETS = (Preset(LLAMA31_405B, FP8, 8), Preset(LLAMA2_70B, FP8, 2), Preset(LLAMA31_405B, FP4, 8),
           Preset(LLAMA3_8B, BF16, 1), Preset(LLAMA3_70B, BF16, 4))


@dataclass(frozen=True)
class Scenario:
    name: str
    input_tokens: int
    output_tokens: int = 0  # 0: every sequence sits at input_tokens (a fixed context)

    @property
    def context(self) -> float:
        """Mean cached tokens per sequence while decoding: the input plus half the output on average."""
        return self.input_tokens + max(self.output_tokens - 1, 0) / 2

    @property
    def longest(self) -> int:
        return self.input_tokens + self.output_tokens


# The articles' simulation, and MLPerf Inference llama2-70b's dataset: OpenOrca prompts capped at 1,024 tokens
# (processorca.py --seqlen_limit=1024; the mean input is not published, so the cap stands in: an upper bound on
# the KV it needs) and 294.45 output tokens per sample (the accuracy target's "Tokens per sample";
# github.com/mlcommons/inference language/llama2-70b/README.md). Its server limits are in analysis/claims.py.
SCENARIOS = (Scenario("1k in / 19k out", 1000, 19000), Scenario("MLPerf OpenOrca 1k in / 294 out", 1024, 294))


# ---------------------------------------------------------------------------------------------
# Shapes and memory
# ---------------------------------------------------------------------------------------------


def kv_heads_per_gpu(model: Model, tp: int) -> int:
    return max(1, math.ceil(model.kv_heads / tp))


def shard_shapes(model: Model, tp: int) -> dict[str, tuple[int, int]]:
    """Per-GPU (N, K) of each projection: q, k, v, gate, up split by columns; o, down by rows."""
    if model.heads % tp or model.intermediate % tp:
        raise ValueError(f"TP {tp} does not divide {model.name}'s heads or intermediate size")
    q = model.heads // tp * model.head_dim
    kv = kv_heads_per_gpu(model, tp) * model.head_dim
    f = model.intermediate // tp
    h = model.hidden
    return {"q": (q, h), "k": (kv, h), "v": (kv, h), "o": (h, q), "gate": (f, h), "up": (f, h), "down": (h, f)}


def parameters(model: Model) -> float:
    """Every weight: the layers' projections and the embedding and LM head (norms are negligible)."""
    per_layer = sum(n * k for n, k in model.projections().values())
    return float(model.layers * per_layer + 2 * VOCAB.get(model.name, 0) * model.hidden)


def weight_bytes_per_gpu(preset: Preset) -> float:
    """Weights per GPU. kv projections replicated when TP exceeds the kv heads are counted once per GPU."""
    model, tp = preset.model, preset.tp
    shards = shard_shapes(model, tp)
    per_layer = sum(n * k for n, k in shards.values())
    embeddings = 2 * VOCAB.get(model.name, 0) * model.hidden / tp
    return (model.layers * per_layer + embeddings) * preset.precision.weight_bytes


def kv_bytes_per_token(preset: Preset) -> float:
    """KV cache bytes per cached token per GPU: layers × 2 (K and V) × kv heads per GPU × head_dim × bytes."""
    model = preset.model
    return model.layers * 2 * kv_heads_per_gpu(model, preset.tp) * model.head_dim * preset.precision.kv_bytes


def max_batch(preset: Preset, device: Datasheet, context: float, headroom: float = HEADROOM) -> int:
    """Largest number of sequences of ``context`` cached tokens whose KV fits beside the weights (0: none)."""
    free = device.capacity_bytes * (1 - headroom) - weight_bytes_per_gpu(preset)
    if free <= 0:
        return 0
    return int(free // (kv_bytes_per_token(preset) * context))


# ---------------------------------------------------------------------------------------------
# Kernel times
# ---------------------------------------------------------------------------------------------


class Kernels(Protocol):
    """Time of the kernels a decode step runs, with where the time comes from."""

    def linear(self, batch: int, n: int, k: int) -> tuple[float, str]: ...

    def attention(self, batch: int, heads: int, kv_heads: int, head_dim: int, context: float) -> tuple[float, str]: ...


@dataclass(frozen=True)
class RooflineKernels:
    """Every kernel exactly on the datasheet roofline (the PREDICTED terms, and every term's lower bound)."""

    device: Datasheet
    precision: Precision

    def _time(self, flops, nbytes, dtype: str) -> float:
        peak = self.device.tensor(dtype) or float("nan")
        return float(predicted_time(flops, nbytes, peak, self.device.bandwidth))

    def linear(self, batch: int, n: int, k: int) -> tuple[float, str]:
        p = self.precision
        flops, nbytes = linear_cost(batch, n, k, p.weight_bytes, p.out_bytes)  # fp8: x quantised too (W8A8)
        return self._time(flops, nbytes, p.compute), PREDICTED

    def attention(self, batch, heads, kv_heads, head_dim, context) -> tuple[float, str]:
        flops, nbytes = decode_attention_cost(batch, heads, kv_heads, head_dim, [context] * batch,
                                              self.precision.act_bytes, self.precision.kv_bytes)
        return self._time(flops, nbytes, "bf16"), PREDICTED


def fit_time(sweep: SweepFit, roof: Roof, flops: float, nbytes: float) -> float:
    """A pooled fit's time for new work: t0 + max(bytes/BW_eff, FLOPs/P_eff); a branch the fit could not
    determine (NaN) comes from the device's roof (measured ceiling, else datasheet)."""
    fit = sweep.fit
    bandwidth = fit.bandwidth if np.isfinite(fit.bandwidth) else roof.bandwidth
    peak = fit.peak if np.isfinite(fit.peak) else roof.peak
    return float(predicted_time(flops, nbytes, peak, bandwidth, fit.t0))


def _usable(sweep: SweepFit) -> bool:
    fit = sweep.fit
    return bool(np.isfinite(fit.t0) and (np.isfinite(fit.bandwidth) or np.isfinite(fit.peak)))


STAND_INS = {"bf16": ("bf16", "fp16"), "fp8": ("fp8",)}  # fp16 kernels stand in for bf16: same roofs and bytes


@dataclass(frozen=True, eq=False)
class FittedKernels:
    """Kernel times from a device's pooled fits (MEASURED), the datasheet roofline where none fits."""

    pooled: tuple[SweepFit, ...]
    roof: Callable[[str, str], Roof]  # (kernel, dtype) -> the device's roof (DeviceRoofs.roof)
    fallback: RooflineKernels

    def _fits(self, kernels: tuple[str, ...], dtype: str) -> list[SweepFit]:
        for wanted in STAND_INS.get(dtype, (dtype,)):
            found = [s for s in self.pooled if s.kernel in kernels and s.dtype == wanted and s.l2 != "warm"
                     and _usable(s)]
            if found:
                return found
        return []

    def _best(self, fits: list[SweepFit], flops: float, nbytes: float, batch: int, stand_in: str) -> tuple[float, str]:
        times = []
        for sweep in fits:
            if sweep.kernel == "gemv" and batch > float(sweep.used[sweep.batch].max()):
                continue  # a GEMV kernel is only measured (and only meant) for small batches
            times.append((fit_time(sweep, self.roof(sweep.kernel, sweep.dtype), flops, nbytes), sweep))
        if not times:
            return float("nan"), ""
        seconds, sweep = min(times, key=lambda pair: pair[0])
        note = f", {sweep.dtype} standing in for {stand_in}" if sweep.dtype != stand_in else ""
        return seconds, f"{MEASURED} ({sweep.kernel} {sweep.impl} fit{note})"

    def linear(self, batch: int, n: int, k: int) -> tuple[float, str]:
        p = self.fallback.precision
        flops, nbytes = linear_cost(batch, n, k, p.weight_bytes, p.out_bytes)
        seconds, source = self._best(self._fits(("gemv", "gemm"), p.compute), flops, nbytes, batch, p.compute)
        return (seconds, source) if source else self.fallback.linear(batch, n, k)

    def attention(self, batch, heads, kv_heads, head_dim, context) -> tuple[float, str]:
        p = self.fallback.precision
        flops, nbytes = decode_attention_cost(batch, heads, kv_heads, head_dim, [context] * batch, p.act_bytes,
                                              p.kv_bytes)
        seconds, source = self._best(self._fits(("attn_decode",), "bf16"), flops, nbytes, batch, "bf16")
        return (seconds, source) if source else self.fallback.attention(batch, heads, kv_heads, head_dim, context)


def allreduce_time(device: Datasheet, tp: int, nbytes: float) -> float:
    """Ring all-reduce over NVLink: 2·(TP−1)/TP of the data over one direction (PREDICTED, datasheet)."""
    if tp == 1:
        return 0.0
    one_way = device.nvlink_one_way
    if not one_way:
        return float("nan")
    return 2 * (tp - 1) / tp * nbytes / one_way


# ---------------------------------------------------------------------------------------------
# The decode step
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One decode step per GPU, its terms in seconds, where each came from, and the datasheet bound."""

    batch: int
    context: float
    projections_s: float
    attention_s: float
    allreduce_s: float
    lm_head_s: float
    sources: tuple[str, ...]  # "projections: measured (…)" etc.
    bound_s: float  # the same work at the datasheet roofline, NVLink at its datasheet figure, no fixed costs
    fixed_s: float = 0.0  # all-reduce latency + launches (0: the upper bound, fixed costs left out)
    launches: int = 0

    @property
    def ideal_s(self) -> float:
        """The step without fixed costs: the model's upper bound on speed."""
        return self.projections_s + self.attention_s + self.allreduce_s + self.lm_head_s

    @property
    def step_s(self) -> float:
        return self.ideal_s + self.fixed_s

    @property
    def measured(self) -> bool:
        return any(source.split(": ", 1)[1].startswith(MEASURED) for source in self.sources)


def decode_step(preset: Preset, device: Datasheet, batch: int, context: float, kernels: Kernels | None = None,
                fixed: FixedCosts | None = None) -> Step:
    """One decode step of ``preset`` on ``device`` at ``batch`` sequences of ``context`` cached tokens; with
    ``fixed``, the all-reduces' per-call latency and a launch per kernel are added (see tokenomics_overheads)."""
    sheet = RooflineKernels(device, preset.precision)
    kernels = kernels or sheet
    model, tp = preset.model, preset.tp
    totals = {"projections": [0.0, 0.0], "attention": [0.0, 0.0], "lm head": [0.0, 0.0]}
    sources: dict[str, set[str]] = {name: set() for name in totals}

    def add(name: str, timed: tuple[float, str], bound: tuple[float, str], count: float = 1.0) -> None:
        totals[name][0] += count * timed[0]
        totals[name][1] += count * bound[0]
        sources[name].add(timed[1])

    for n, k in shard_shapes(model, tp).values():
        add("projections", kernels.linear(batch, n, k), sheet.linear(batch, n, k), model.layers)
    heads, kv_heads = model.heads // tp, kv_heads_per_gpu(model, tp)
    add("attention", kernels.attention(batch, heads, kv_heads, model.head_dim, context),
        sheet.attention(batch, heads, kv_heads, model.head_dim, context), model.layers)
    vocab = VOCAB.get(model.name, 0)
    if vocab:
        add("lm head", kernels.linear(batch, vocab // tp, model.hidden), sheet.linear(batch, vocab // tp, model.hidden))
    comm = 2 * model.layers * allreduce_time(device, tp, batch * model.hidden * preset.precision.act_bytes)
    labels = tuple(f"{name}: {' + '.join(sorted(found))}" for name, found in sources.items() if found)
    labels += (f"all-reduce: {PREDICTED} (NVLink datasheet)",) if tp > 1 else ()
    bound = sum(b for _, b in totals.values()) + comm
    fixed_s, count = 0.0, 0
    if fixed is not None:
        predicted = {name: all(s.startswith(PREDICTED) for s in found) for name, found in sources.items()}
        count = launches(model, predicted["projections"], predicted["attention"], predicted["lm head"] and vocab > 0)
        calls = allreduce_calls(model, tp)
        fixed_s = count * fixed.launch_s + calls * fixed.allreduce_s
        labels += (f"fixed costs: {count} launches, {calls} all-reduce calls ({fixed.label})",)
    return Step(batch, context, totals["projections"][0], totals["attention"][0], comm, totals["lm head"][0], labels,
                bound, fixed_s, count)


def batches_up_to(cap: int) -> list[int]:
    """Powers of two below the memory cap, and the cap itself."""
    if cap < 1:
        return []
    out = [b for b in (2**i for i in range(20)) if b < cap]
    return out + [cap]


def curve(preset: Preset, device: Datasheet, scenario: Scenario, kernels: Kernels | None = None,
          fixed: FixedCosts | None = None) -> list[Step]:
    """The decode steps from batch 1 to the memory cap at the scenario's mean context."""
    cap = max_batch(preset, device, scenario.context)
    return [decode_step(preset, device, b, scenario.context, kernels, fixed) for b in batches_up_to(cap)]


def supports(preset: Preset, device: Datasheet) -> bool:
    """Whether the device has tensor cores for the preset's GEMMs (no FP4 on Hopper: such rows are left out)."""
    return device.tensor(preset.precision.compute) is not None


def interactivity(step: Step) -> float:
    """Tokens per second each user sees."""
    return 1.0 / step.step_s


def throughput_per_gpu(step: Step, tp: int) -> float:
    """Tokens per second per GPU: batch sequences served by TP GPUs."""
    return step.batch / step.step_s / tp


def in_window(preset: Preset, scenario: Scenario) -> bool:
    return scenario.longest <= WINDOW.get(preset.model.name, np.inf)


def batch_at_interactivity(preset: Preset, device: Datasheet, scenario: Scenario, target: float,
                           kernels: Kernels | None = None, fixed: FixedCosts | None = None) -> Step | None:
    """The largest batch (up to the memory cap) whose tokens/s per user is still ≥ ``target``; None when even
    batch 1 is slower. A step only lengthens with the batch, so a bisection finds it."""
    cap = max_batch(preset, device, scenario.context)

    def step(b: int) -> Step:
        return decode_step(preset, device, b, scenario.context, kernels, fixed)

    if cap < 1 or not interactivity(step(1)) >= target:
        return None
    low, high = 1, cap
    while low < high:
        mid = (low + high + 1) // 2
        if interactivity(step(mid)) >= target:
            low = mid
        else:
            high = mid - 1
    return step(low)
