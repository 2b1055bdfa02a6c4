"""Impls of the ``moe`` family: ours (``triton``, one launch sequence per stage) and the baselines a
user would otherwise call, each on the experts dequantised once to the activation dtype (set-up):

- ``torch-loop``: the per-expert loop of Hugging Face's Mixtral block (the experts hit, one at a time);
- ``grouped-mm``: ``torch._grouped_mm`` over the pairs sorted by expert (no host sync);
- ``dense``: every local expert for every token, the routing weights as a dense [T, E] gate: the
  "if it were dense" line (its bytes: all local experts' weights).
"""

from __future__ import annotations

import torch

from kernels.moe_cost import dense_footprint, local_experts, moe_bytes, slots_used
from kernels.moe_formats import ExpertWeights, dequantize_experts, expert_slice, meta_experts
from kernels.spec import Case, DeviceCaps, DType, Impl, Inputs, Launch, TuneSpace


def _layer(inputs: Inputs, case: Case):
    from kernels.moe_layer import moe_layer

    shared = (inputs["shared_w1"], inputs["shared_w2"]) if case["shared"] else None
    return moe_layer(inputs["x"], inputs["ids"], inputs["weights"], inputs["w1"], inputs["w2"], inputs["out"], shared,
                     case["experts"])


def _config() -> str:
    from kernels.moe import _moe_w1_kernel, _moe_w2_kernel
    from kernels.tuning import describe

    return f"w1: {describe(_moe_w1_kernel.best_config)}; w2: {describe(_moe_w2_kernel.best_config)}"


def _stage(layer, case: Case) -> tuple:
    """(timed closure, scratch) of the case's stage; earlier stages run here, once, untimed."""
    ws, stage = layer.ws, case["stage"]
    if stage == "align":
        sorted_ids = ws.alignment.sorted_ids.view(torch.float32)  # the gate compares its bits
        return (lambda: (layer.align(), sorted_ids)[1]), ()
    scratch = tuple(t for t in (ws.y, ws.y_shared) if t is not None)
    if stage == "layer":
        return layer, scratch + (ws.h,)
    layer.align()
    if stage == "w1":
        h = ws.h[:ws.shared_slots + slots_used(case)]
        return (lambda: (layer.up(), h)[1]), ()
    layer.up()
    return layer.down, scratch


def _build_triton(inputs: Inputs, case: Case) -> Launch:
    run, scratch = _stage(_layer(inputs, case), case)
    return Launch(run=run, config=_config, scratch=scratch)


def _candidates(case: Case, limits) -> tuple[TuneSpace, ...]:
    from kernels import moe
    from kernels.spaces import launch_spaces, meta

    t, k, d, f, dtype = case["tokens"], case["top_k"], case["d_model"], case["d_ff"], case.dtype.torch
    e = local_experts(case)
    inputs = {"x": meta((t, d), dtype), "ids": meta((t, k), torch.int32), "weights": meta((t, k), torch.float32),
              "w1": meta_experts(case["format"], e, 2 * f, d, dtype), "w2": meta_experts(case["format"], e, d, f, dtype),
              "out": meta((t, d), dtype)}
    if case["shared"]:
        inputs["shared_w1"] = meta_experts(case["format"], 1, 2 * f, d, dtype)
        inputs["shared_w2"] = meta_experts(case["format"], 1, d, f, dtype)
    layer = _layer(inputs, case)
    stages = {"layer": layer, "align": layer.align, "w1": layer.up, "w2": layer.down}
    kernels = {"count": moe._moe_count_kernel, "align": moe._moe_align_kernel, "w1": moe._moe_w1_kernel,
               "w2": moe._moe_w2_kernel, "combine": moe._moe_combine_kernel}
    return launch_spaces(stages[case["stage"]], kernels, limits)


def triton_impl(skip) -> Impl:
    return Impl("triton", _build_triton, "Triton: align, grouped W1 + SwiGLU, grouped W2 + weighted combine",
                skip=skip, candidates=_candidates)


# ---------------------------------------------------------------------------------------------
# Baselines
# ---------------------------------------------------------------------------------------------


def dense_experts(w: ExpertWeights, dtype: torch.dtype) -> torch.Tensor:
    """[E, R, K] in ``dtype``: the reference dequantizer, one expert at a time (set-up)."""
    if w.dense is not None:
        return w.dense.reshape(w.experts, w.rows, w.k)
    return torch.stack([dequantize_experts(expert_slice(w, e))[0].to(dtype) for e in range(w.experts)])


def _swiglu(h: torch.Tensor, f: int) -> torch.Tensor:
    return torch.nn.functional.silu(h[..., :f]) * h[..., f:]


def _shared(inputs: Inputs, case: Case):
    """The shared expert as a closure adding its rows to out (None without one)."""
    if not case["shared"]:
        return None
    dtype, f = inputs["x"].dtype, case["d_ff"]
    w1, w2 = dense_experts(inputs["shared_w1"], dtype)[0], dense_experts(inputs["shared_w2"], dtype)[0]
    return lambda x, out: out.add_(_swiglu(x @ w1.t(), f) @ w2.t())


def _build_loop(inputs: Inputs, case: Case) -> Launch:
    x, ids, weights, out = inputs["x"], inputs["ids"], inputs["weights"], inputs["out"]
    w1, w2 = dense_experts(inputs["w1"], x.dtype), dense_experts(inputs["w2"], x.dtype)
    experts, f, shared = local_experts(case), case["d_ff"], _shared(inputs, case)

    def run() -> torch.Tensor:
        out.zero_()
        flat = ids.reshape(-1)
        for e in torch.unique(flat[flat < experts]).tolist():  # the experts hit (one host sync)
            token, slot = torch.where(ids == e)
            y = _swiglu(x[token] @ w1[e].t(), f) @ w2[e].t()
            out.index_add_(0, token, (y * weights[token, slot, None]).to(out.dtype))
        if shared:
            shared(x, out)
        return out

    return Launch(run=run, config=lambda: "torch per-expert loop (experts hit)")


def _build_grouped(inputs: Inputs, case: Case) -> Launch:
    x, ids, weights, out = inputs["x"], inputs["ids"], inputs["weights"], inputs["out"]
    experts, f, k, shared = local_experts(case), case["d_ff"], case["top_k"], _shared(inputs, case)
    # b operands [E, K, N] as transposed views of the row-major experts: the layout CUDA's grouped GEMM takes
    w1t, w2t = dense_experts(inputs["w1"], x.dtype).transpose(1, 2), dense_experts(inputs["w2"], x.dtype).transpose(1, 2)
    rows = torch.arange(ids.numel(), device=x.device)

    def run() -> torch.Tensor:
        flat = ids.reshape(-1).long()
        order = torch.argsort(flat, stable=True)  # other GPUs' experts (≥ E/ep) sort last
        offs = torch.cumsum(torch.bincount(flat.clamp(max=experts), minlength=experts + 1)[:experts], 0).int()
        h = _swiglu(torch._grouped_mm(x[order // k], w1t, offs=offs), f)
        y = torch._grouped_mm(h, w2t, offs=offs) * weights.reshape(-1)[order, None]
        y = torch.where((rows < offs[-1])[:, None], y, 0.0).to(x.dtype)  # rows past the groups: not computed
        pairs = torch.empty_like(y).index_copy_(0, order, y)
        torch.sum(pairs.reshape(ids.shape[0], k, -1), dim=1, out=out)
        if shared:
            shared(x, out)
        return out

    return Launch(run=run, config=lambda: "torch._grouped_mm")


def _build_dense(inputs: Inputs, case: Case) -> Launch:
    x, ids, weights, out = inputs["x"], inputs["ids"], inputs["weights"], inputs["out"]
    experts, f, shared = local_experts(case), case["d_ff"], _shared(inputs, case)
    w1 = dense_experts(inputs["w1"], x.dtype).reshape(experts * 2 * f, -1)
    w2 = dense_experts(inputs["w2"], x.dtype).permute(1, 0, 2).reshape(case["d_model"], experts * f).contiguous()

    def run() -> torch.Tensor:
        gate = torch.zeros((ids.shape[0], experts + 1), dtype=x.dtype, device=x.device)
        gate.scatter_(1, ids.long().clamp(max=experts), weights.to(x.dtype))  # other GPUs' pairs: column E
        h = _swiglu((x @ w1.t()).reshape(ids.shape[0], experts, 2 * f), f) * gate[:, :experts, None]
        torch.matmul(h.reshape(ids.shape[0], experts * f), w2.t(), out=out)
        if shared:
            shared(x, out)
        return out

    return Launch(run=run, config=lambda: "dense: every local expert, dense gate")


def _grouped_skip(case: Case, caps: DeviceCaps) -> str | None:
    if not hasattr(torch, "_grouped_mm"):
        return f"torch {torch.__version__} has no torch._grouped_mm"
    if caps.capability is not None:
        if caps.capability < (9, 0):
            return "torch._grouped_mm needs sm_90+ on CUDA"
        if case.dtype is not DType.BF16:
            return "torch._grouped_mm takes bf16 on CUDA"
        if case["d_model"] % 8 or case["d_ff"] % 8:
            return "torch._grouped_mm needs d_model and d_ff multiples of 8 (16-byte rows)"
    return None


def _touched_dense(case: Case) -> int:
    return moe_bytes(case, itemsize=case.dtype.itemsize)


def _all_dense(case: Case) -> int:
    return moe_bytes(case, itemsize=case.dtype.itemsize, experts=local_experts(case))


def BASELINES(stage_skip) -> tuple[Impl, ...]:
    def both(rule):
        return lambda case, caps: stage_skip(case, caps) or (rule(case, caps) if rule else None)

    return (
        Impl("torch-loop", _build_loop, "per-expert torch loop over the experts hit", skip=both(None),
             bytes=_touched_dense, footprint=dense_footprint),
        Impl("grouped-mm", _build_grouped, "torch._grouped_mm over the pairs sorted by expert",
             skip=both(_grouped_skip), bytes=_touched_dense, footprint=dense_footprint),
        Impl("dense", _build_dense, "every local expert for every token: 'if it were dense'", skip=both(None),
             bytes=_all_dense, footprint=dense_footprint),
    )
