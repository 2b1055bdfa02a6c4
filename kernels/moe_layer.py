"""The ``moe`` layer as an engine runs it: one check and allocation, then a fixed launch sequence
(align → w1 → w2 → combine, the shared expert's GEMMs beside w1 and w2) on the same buffers every call.
Kernels and their launchers are :mod:`kernels.moe`'s."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kernels import moe
from kernels.moe import Alignment
from kernels.moe_formats import ExpertWeights


@dataclass(frozen=True)
class Workspace:
    """Buffers of one layer call: the routed alignment, the shared expert's, h (shared rows first), y."""

    alignment: Alignment
    shared_alignment: Alignment | None
    h: torch.Tensor  # [shared slots + routed slots, d_ff]
    y: torch.Tensor  # [T·k, d_model], one row per pair
    y_shared: torch.Tensor | None  # [T, d_model]

    @property
    def shared_slots(self) -> int:
        return 0 if self.shared_alignment is None else self.shared_alignment.sorted_ids.shape[0]

    @property
    def routed_h(self) -> torch.Tensor:
        return self.h[self.shared_slots:]


def workspace(x: torch.Tensor, ids: torch.Tensor, w1: ExpertWeights, shared: bool,
              model_experts: int | None = None) -> Workspace:
    """``model_experts``: the model's E (this GPU holds w1.experts of them): a block holds T·k/E pairs
    on average whatever the expert parallelism."""
    tokens, top_k = ids.shape
    d_ff, d_model = w1.rows // 2, w1.k
    block_m = moe.moe_block_m(ids.numel(), model_experts or w1.experts)
    alignment = moe.empty_alignment(ids.numel(), w1.experts, block_m, x.device)
    shared_alignment = moe.identity_alignment(tokens, moe.moe_block_m(tokens, 1), x.device) if shared else None
    rows = alignment.sorted_ids.shape[0] + (shared_alignment.sorted_ids.shape[0] if shared else 0)
    return Workspace(alignment, shared_alignment, torch.empty((rows, d_ff), dtype=x.dtype, device=x.device),
                     torch.empty((ids.numel(), d_model), dtype=x.dtype, device=x.device),
                     torch.empty((tokens, d_model), dtype=x.dtype, device=x.device) if shared else None)


def check_moe(x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor, w1: ExpertWeights, w2: ExpertWeights,
              out: torch.Tensor) -> None:
    """Shapes, dtypes and devices of one layer call, or a one-line ValueError."""
    tokens, d_model = x.shape
    ok = (x.dtype in (torch.float16, torch.bfloat16, torch.float32) and x.stride(1) == 1
          and ids.dtype == torch.int32 and ids.dim() == 2 and ids.shape[0] == tokens and ids.is_contiguous()
          and weights.dtype == torch.float32 and weights.shape == ids.shape and weights.is_contiguous()
          and w1.k == d_model and w2.rows == d_model and w1.rows == 2 * w2.k and w1.experts == w2.experts
          and out.shape == x.shape and out.dtype == x.dtype and out.is_contiguous())
    if not ok:
        raise ValueError(f"moe needs x [T, d] fp16/bf16/fp32, ids int32 and weights fp32 [T, k], W1 [E, 2f, d], "
                         f"W2 [E, d, f], out like x; got x {x.dtype} {tuple(x.shape)}, ids {ids.dtype} "
                         f"{tuple(ids.shape)}, W1 [{w1.experts}, {w1.rows}, {w1.k}], W2 [{w2.experts}, {w2.rows}, "
                         f"{w2.k}], out {out.dtype} {tuple(out.shape)}")


@dataclass(frozen=True)
class MoeLayer:
    """One layer's launches on fixed buffers: ``align``, ``w1``, ``w2`` (with the combine), or all."""

    x: torch.Tensor
    ids: torch.Tensor
    weights: torch.Tensor
    w1: ExpertWeights
    w2: ExpertWeights
    out: torch.Tensor
    ws: Workspace
    shared_w1: ExpertWeights | None = None
    shared_w2: ExpertWeights | None = None

    def align(self) -> Alignment:
        return moe.moe_align(self.ids, self.w1.experts, self.ws.alignment)

    def up(self) -> torch.Tensor:
        if self.shared_w1 is not None:
            moe.moe_w1(self.x, self.shared_w1, self.ws.shared_alignment, 1, self.ws.h)
        return moe.moe_w1(self.x, self.w1, self.ws.alignment, self.ids.shape[1], self.ws.routed_h)

    def down(self) -> torch.Tensor:
        shared = None
        if self.shared_w2 is not None:
            shared = moe.moe_w2(self.ws.h, self.shared_w2, self.ws.shared_alignment, None, self.ws.y_shared)
        moe.moe_w2(self.ws.routed_h, self.w2, self.ws.alignment, self.weights, self.ws.y)
        return moe.moe_combine(self.ws.y, self.ids, self.w1.experts, shared, self.out)

    def __call__(self) -> torch.Tensor:
        self.align()
        self.up()
        return self.down()


def moe_layer(x, ids, weights, w1: ExpertWeights, w2: ExpertWeights, out: torch.Tensor | None = None,
              shared: tuple[ExpertWeights, ExpertWeights] | None = None, model_experts: int | None = None) -> MoeLayer:
    """Check and allocate once; the returned layer runs the launches on every call."""
    out = torch.empty_like(x) if out is None else out
    check_moe(x, ids, weights, w1, w2, out)
    shared_w1, shared_w2 = shared or (None, None)
    ws = workspace(x, ids, w1, shared is not None, model_experts)
    return MoeLayer(x, ids, weights, w1, w2, out, ws, shared_w1, shared_w2)


def fused_moe(x, ids, weights, w1: ExpertWeights, w2: ExpertWeights, out: torch.Tensor | None = None,
              shared: tuple[ExpertWeights, ExpertWeights] | None = None, model_experts: int | None = None) -> torch.Tensor:
    """The whole layer once: out [T, d_model] (see the module docstring)."""
    return moe_layer(x, ids, weights, w1, w2, out, shared, model_experts)()
