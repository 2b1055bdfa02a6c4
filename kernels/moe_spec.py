"""The ``moe`` family: one routed SwiGLU expert layer (kernels in :mod:`kernels.moe`).

Axes (the row contract): tokens T on this GPU before routing, experts E of the model, top_k, d_model,
d_ff (per expert), ep (this GPU holds experts [0, E/ep) and computes only the pairs routed there),
routing uniform | skewed (Zipf exponent ``zipf``) | balanced, shared (a DeepSeek shared expert of d_ff
over every token), format (expert weights: :mod:`kernels.moe_formats`), stage (what the timed closure
runs: ``layer`` = align + w1 + w2 + combine (+ shared), everything an engine runs per layer; ``align``,
``w1``, ``w2`` (with the combine) alone, their inputs prepared outside the timed closure).

Counts, for the routing drawn from the case (:mod:`kernels.moe_routing`); P pairs routed here, U
tokens with ≥ 1 of them (all T with a shared expert), W1(n)/W2(n) the stored bytes of n experts'
weights (+ scales), a the activation itemsize, S the alignment's slots (padded to BLOCK_M):

- flops: layer 2·P·3·d_model·d_ff (+ 2·T·3·d_model·d_ff shared); w1 ⅔ and w2 ⅓ of it; align 0;
- bytes (compulsory: each tensor once; h and the per-pair rows between kernels are not counted):
  layer  U·d_model·a + W1(touched) + W2(touched) (+ shared W1 + W2) + ids and weights T·k·8 + T·d_model·a
  align  ids T·k·4 + slots S·4 + blocks' experts (S/BLOCK_M)·4 + 4
  w1     U·d_model·a + W1(touched) (+ shared) + slots S·4 + h written S·d_ff·a (+ shared T·d_ff·a)
  w2     h read P·d_ff·a (+ T·d_ff·a) + W2(touched) (+ shared) + ids and weights T·k·8 + T·d_model·a
- baselines move their own: ``torch-loop`` and ``grouped-mm`` the touched experts' weights dequantised
  to the activation dtype, ``dense`` every local expert's ("if it were dense").
"""

from __future__ import annotations

import math

import torch

from kernels.moe_baselines import BASELINES, triton_impl
from kernels.moe_cost import (
    STAGES,
    block_m,
    case_ids,
    local_experts,
    moe_bytes,
    moe_flops,
    moe_footprint,
    slots_used,
)
from kernels.moe_formats import ExpertWeights, MoeFormat, dequantize_experts, expert_slice, pack_experts
from kernels.moe_routing import Routing, align_reference
from kernels.spec import Axis, Case, DeviceCaps, DType, Inputs, KernelSpec, poisoned, scaled_randn
CLIP = 4.0  # weights clipped at 4σ, one element per expert at exactly 4σ: every expert has the same amax


# ---------------------------------------------------------------------------------------------
# Inputs and the reference
# ---------------------------------------------------------------------------------------------


def _expert_maker(rows: int, k: int, device, gen: torch.Generator):
    def make(e: int) -> torch.Tensor:
        w = scaled_randn((rows, k), dtype=torch.float32, device=device, generator=gen).clamp_(-CLIP, CLIP)
        w.view(-1)[(e * 7919) % w.numel()] = CLIP  # the same amax in every expert (nvfp4's tensor scale)
        return w / math.sqrt(k)

    return make


def moe_inputs(case: Case, device: torch.device, gen: torch.Generator) -> Inputs:
    """x ~ N(0, 1), weights N(0, 1/K) clipped at 4σ and quantized, the case's routing with softmax
    weights of fresh logits over each token's k experts, a NaN-poisoned out."""
    t, k, d, f, dtype = case["tokens"], case["top_k"], case["d_model"], case["d_ff"], case.dtype.torch
    e, fmt = local_experts(case), case["format"]
    logits = scaled_randn((t, k), dtype=torch.float32, device=device, generator=gen)
    inputs = {
        "x": scaled_randn((t, d), dtype=dtype, device=device, generator=gen),
        "ids": case_ids(case).to(device, copy=True),  # the routing is cached: never hand out the cached tensor
        "weights": torch.softmax(logits, dim=1).contiguous(),
        "w1": pack_experts(_expert_maker(2 * f, d, device, gen), e, fmt, dtype),
        "w2": pack_experts(_expert_maker(d, f, device, gen), e, fmt, dtype),
    }
    if case["shared"]:
        inputs["shared_w1"] = pack_experts(_expert_maker(2 * f, d, device, gen), 1, fmt, dtype)
        inputs["shared_w2"] = pack_experts(_expert_maker(d, f, device, gen), 1, fmt, dtype)
    inputs["out"] = poisoned((t, d), dtype=dtype, device=device)
    return inputs


def _expert_mlp(x: torch.Tensor, w1: ExpertWeights, w2: ExpertWeights | None) -> torch.Tensor:
    """float64 SwiGLU of one expert: h = silu(x·W1_gateᵀ)·(x·W1_upᵀ), then h·W2ᵀ (None: h)."""
    d1 = dequantize_experts(w1)[0].to(torch.float64)
    f = w1.rows // 2
    h = torch.nn.functional.silu(x @ d1[:f].t()) * (x @ d1[f:].t())
    return h if w2 is None else h @ dequantize_experts(w2)[0].to(torch.float64).t()


def moe_reference(inputs: Inputs, case: Case) -> torch.Tensor:
    """THE reference: a float64 loop over the local experts (the stage's own output for align and w1)."""
    if case["stage"] == "align":
        return _align_expected(inputs, case)
    x = inputs["x"].to(torch.float64)
    ids, weights = inputs["ids"].long(), inputs["weights"].to(torch.float64)
    shared = case["shared"] and (inputs["shared_w1"], inputs["shared_w2"])
    if case["stage"] == "w1":
        return _h_expected(inputs, case, x, ids)
    out = torch.zeros((x.shape[0], case["d_model"]), dtype=torch.float64, device=x.device)
    for e in range(local_experts(case)):
        token, slot = torch.nonzero(ids == e, as_tuple=True)
        if token.numel():
            y = _expert_mlp(x[token], expert_slice(inputs["w1"], e), expert_slice(inputs["w2"], e))
            out.index_add_(0, token, y * weights[token, slot][:, None])
    if shared:
        out += _expert_mlp(x, *shared)
    return out


def _align_expected(inputs: Inputs, case: Case) -> torch.Tensor:
    from kernels.moe import max_blocks

    bm = block_m(case)
    slots = max_blocks(case["tokens"] * case["top_k"], local_experts(case), bm) * bm
    return align_reference(inputs["ids"], local_experts(case), bm, slots).view(torch.float32)


def _h_expected(inputs: Inputs, case: Case, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """h rows as the w1 stage leaves them: the shared expert's (padded to its block), then each slot's."""
    from kernels.moe import moe_block_m

    rows = []
    if case["shared"]:
        shared = _expert_mlp(x, inputs["shared_w1"], None)
        pad = (-x.shape[0]) % moe_block_m(x.shape[0], 1)
        rows += [shared, shared.new_zeros((pad, case["d_ff"]))]
    order = align_reference(ids, local_experts(case), block_m(case), slots_used(case)).long().to(x.device)
    flat, pairs = ids.reshape(-1), ids.numel()
    real = order < pairs
    expert = torch.where(real, flat[order.clamp(max=pairs - 1)], -1)
    h = x.new_zeros((order.numel(), case["d_ff"]))
    for e in range(local_experts(case)):
        at = torch.nonzero(expert == e).reshape(-1)
        if at.numel():
            h[at] = _expert_mlp(x[order[at] // case["top_k"]], expert_slice(inputs["w1"], e), None)
    return torch.cat(rows + [h])


# ---------------------------------------------------------------------------------------------
# Skip rules
# ---------------------------------------------------------------------------------------------


def moe_skip(case: Case, caps: DeviceCaps) -> str | None:
    """Shapes the routing or a format's layout cannot take."""
    if case["experts"] % case["ep"]:
        return f"experts {case['experts']} is not a multiple of ep {case['ep']}"
    if case["top_k"] > case["experts"]:
        return f"top_k {case['top_k']} is more than the {case['experts']} experts"
    fmt = MoeFormat(case["format"])
    if fmt.group and (case["d_model"] % fmt.group or case["d_ff"] % fmt.group):
        return f"{fmt.value} needs d_model and d_ff multiples of {fmt.group}"
    if fmt.kernel in ("fp8", "fp8-block") and caps.capability is not None and caps.capability < (8, 9):
        return "e4m3 weights need sm_89+"
    if case["routing"] != Routing.SKEWED.value and case["zipf"] != "0":
        return "zipf applies to skewed routing only (write 0)"
    return None


def _zipf_check(text: str) -> str:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0.0):
        from kernels.errors import UsageError

        raise UsageError(f"axis zipf: {text!r} is not a decimal exponent ≥ 0 (e.g. 1.2)")
    return text


class ZipfAxis(Axis):
    def check(self, value):
        return _zipf_check(str(value))


def _baseline_skip(case: Case, caps: DeviceCaps) -> str | None:
    if case["stage"] != "layer":
        return "the stages are the Triton kernels' split; baselines run the whole layer (stage=layer)"
    return None


def _triton_skip(case: Case, caps: DeviceCaps) -> str | None:
    if caps.interpret and case.dtype is DType.BF16:
        return "tl.dot on bf16 is wrong under the Triton interpreter"
    return None


MOE = KernelSpec(
    name="moe",
    summary="routed SwiGLU expert layer: align, grouped W1 + SwiGLU, grouped W2 + weighted combine (+ shared)",
    axes=(
        Axis("tokens", int, 16, "tokens T on this GPU before routing", minimum=1),
        Axis("experts", int, 8, "experts E of the model (this GPU holds E/ep)", minimum=1),
        Axis("top_k", int, 2, "experts per token", minimum=1),
        Axis("d_model", int, 256, "hidden size", minimum=1),
        Axis("d_ff", int, 128, "expert intermediate size (W1: [2·d_ff, d_model], W2: [d_model, d_ff])", minimum=1),
        Axis("ep", int, 1, "expert parallelism: this GPU holds experts [0, E/ep)", minimum=1),
        Axis("routing", str, "uniform", "how tokens pick experts", choices=tuple(r.value for r in Routing)),
        ZipfAxis("zipf", str, "0", "Zipf exponent of skewed routing (0 otherwise)"),
        Axis("shared", int, 0, "a shared expert of d_ff over every token", choices=(0, 1)),
        Axis("format", str, "bf16", "expert weight format", choices=tuple(f.value for f in MoeFormat)),
        Axis("stage", str, "layer", "what is timed: the whole layer or one stage", choices=STAGES),
    ),
    dtypes=(DType.FP16, DType.BF16, DType.FP32),
    impls=(triton_impl(_triton_skip),) + BASELINES(_baseline_skip),
    make_inputs=moe_inputs,
    reference=moe_reference,
    flops=moe_flops,
    bytes=moe_bytes,
    # roundings of h, of each pair's row and of out (tf32 products for fp32), over O(1) sums
    tolerance={DType.FP16: 3e-3, DType.BF16: 2.4e-2, DType.FP32: 5e-3},
    footprint=moe_footprint,
    skip=moe_skip,
    tags=("compute", "moe"),
)
