"""Cost model of the ``moe`` family: FLOPs, bytes and footprint from the case (the table in
:mod:`kernels.moe_spec`'s docstring), for the routing the case draws. Torch only until a block size
is asked for (:func:`block_m` imports the kernels' rule)."""

from __future__ import annotations

import torch

from kernels.moe_formats import MoeFormat, expert_bytes
from kernels.moe_routing import Routing, route, route_counts
from kernels.spec import Case

STAGES = ("layer", "align", "w1", "w2")


def local_experts(case: Case) -> int:
    return max(case["experts"] // case["ep"], 1)


def counts(case: Case):
    return route_counts(case["tokens"], case["experts"], case["top_k"], case["routing"], _zipf(case),
                        local_experts(case))


def _zipf(case: Case) -> str:
    return case["zipf"] if case["routing"] == Routing.SKEWED.value else "0"


def case_ids(case: Case) -> torch.Tensor:
    return route(case["tokens"], case["experts"], case["top_k"], case["routing"], _zipf(case))


def block_m(case: Case) -> int:
    from kernels.moe import moe_block_m  # Triton: only when a launch or the reference needs it

    return moe_block_m(case["tokens"] * case["top_k"], case["experts"])


def slots_used(case: Case) -> int:
    """S: local pairs with each touched expert's run padded to BLOCK_M."""
    ids, bm = case_ids(case).reshape(-1).long(), block_m(case)
    per = torch.bincount(ids[ids < local_experts(case)], minlength=local_experts(case))
    return int(((per + bm - 1) // bm * bm).sum())


# ---------------------------------------------------------------------------------------------
# Cost model
# ---------------------------------------------------------------------------------------------


def _weights(case: Case, experts: int, which: str, itemsize: int | None = None) -> int:
    d, f, a = case["d_model"], case["d_ff"], case.dtype.itemsize
    fmt = MoeFormat.BF16 if itemsize else case["format"]
    rows, k = (2 * f, d) if which == "w1" else (d, f)
    return experts * expert_bytes(fmt, rows, k, itemsize or a)


def moe_flops(case: Case) -> int:
    d, f = case["d_model"], case["d_ff"]
    rows = counts(case).pairs + (case["tokens"] if case["shared"] else 0)
    per_row = {"layer": 3, "w1": 2, "w2": 1, "align": 0}[case["stage"]]
    return 2 * rows * per_row * d * f


def moe_bytes(case: Case, itemsize: int | None = None, experts: int | None = None) -> int:
    """The table in the module docstring; ``itemsize``/``experts``: weights stored dense at that size,
    for that many experts (the baselines), instead of the format's, for the touched ones."""
    c, t, k, d, f, a = counts(case), case["tokens"], case["top_k"], case["d_model"], case["d_ff"], case.dtype.itemsize
    stage, shared = case["stage"], case["shared"]
    n = c.touched if experts is None else experts
    tokens_in = t if shared else c.tokens_in
    w1 = _weights(case, n, "w1", itemsize) + (_weights(case, 1, "w1", itemsize) if shared else 0)
    w2 = _weights(case, n, "w2", itemsize) + (_weights(case, 1, "w2", itemsize) if shared else 0)
    routing, out = t * k * 8, t * d * a
    if stage == "align":
        s = slots_used(case)
        return t * k * 4 + s * 4 + s // block_m(case) * 4 + 4
    if stage == "w1":
        return tokens_in * d * a + w1 + slots_used(case) * 4 + (slots_used(case) + (t if shared else 0)) * f * a
    if stage == "w2":
        return (c.pairs + (t if shared else 0)) * f * a + w2 + routing + out
    return tokens_in * d * a + w1 + w2 + routing + out


def moe_footprint(case: Case) -> int:
    """Resident: every local expert's weights (+ shared), x, out and the layer's workspace."""
    t, k, d, f, a, e = case["tokens"], case["top_k"], case["d_model"], case["d_ff"], case.dtype.itemsize, local_experts(case)
    shared = case["shared"]
    weights = _weights(case, e + shared, "w1") + _weights(case, e + shared, "w2")
    slots = (t * k // block_m(case) + min(t * k, e)) * block_m(case) + (t + 128 if shared else 0)
    return weights + 2 * t * d * a + t * k * 8 + slots * (f * a + 8) + t * (k + shared) * d * a


def dense_footprint(case: Case) -> int:
    """The baselines keep every local expert dequantised to the activation dtype beside the format's."""
    experts, a = local_experts(case) + case["shared"], case.dtype.itemsize
    return moe_footprint(case) + _weights(case, experts, "w1", a) + _weights(case, experts, "w2", a)
