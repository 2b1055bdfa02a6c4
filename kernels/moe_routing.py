"""Routing of the ``moe`` family, drawn from the case alone, and the counts its byte model needs.

A case's routing is a pure function of (tokens, experts, top_k, routing, zipf): the seed is a hash of
them, so ``bytes``/``flops`` (which see only the case) count exactly the experts and pairs the
kernels will be handed. Torch only (no Triton): the analysis side may import it.

- uniform: each token's k distinct experts uniformly at random (Gumbel top-k on equal weights);
- skewed: k distinct experts drawn without replacement with P(expert of rank r) ∝ r^(−zipf), the
  ranks dealt to experts by a seeded permutation (so the hot experts are not all on GPU 0 under EP);
- balanced: pair j = t·k + i goes to expert j mod E: every expert gets T·k/E pairs (± 1).
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass
from enum import Enum

import torch


class Routing(str, Enum):
    UNIFORM = "uniform"
    SKEWED = "skewed"
    BALANCED = "balanced"


@functools.lru_cache(maxsize=64)
def route(tokens: int, experts: int, top_k: int, routing: str, zipf: str) -> torch.Tensor:
    """The global expert ids [tokens, top_k] int32 (CPU) of the routing; distinct within a token."""
    kind = Routing(routing)
    if kind is Routing.BALANCED:
        return (torch.arange(tokens * top_k, dtype=torch.int64) % experts).to(torch.int32).reshape(tokens, top_k)
    seed = zlib.crc32(f"moe|{tokens}|{experts}|{top_k}|{kind.value}|{zipf if kind is Routing.SKEWED else ''}".encode())
    gen = torch.Generator().manual_seed(seed)
    log_p = torch.zeros(experts, dtype=torch.float64)
    if kind is Routing.SKEWED:
        ranks = torch.randperm(experts, generator=gen).to(torch.float64) + 1.0
        log_p = -float(zipf) * torch.log(ranks)
    ids = torch.empty((tokens, top_k), dtype=torch.int32)
    chunk = max(1, (1 << 22) // experts)  # bound the [chunk, E] noise
    for first in range(0, tokens, chunk):
        rows = min(chunk, tokens - first)
        uniform = torch.rand((rows, experts), generator=gen, dtype=torch.float64).clamp_(min=1e-300)
        keys = log_p - torch.log(-torch.log(uniform))  # Gumbel top-k = sampling without replacement
        ids[first:first + rows] = keys.topk(top_k, dim=1).indices.to(torch.int32)
    return ids


@dataclass(frozen=True)
class RouteCounts:
    """What the byte and FLOP model needs of a drawn routing, on the GPU holding experts [0, local)."""

    pairs: int  # (token, expert) pairs routed here
    touched: int  # local experts with ≥ 1 pair
    tokens_in: int  # tokens with ≥ 1 pair here (their x rows are read)


@functools.lru_cache(maxsize=256)
def route_counts(tokens: int, experts: int, top_k: int, routing: str, zipf: str, local: int) -> RouteCounts:
    ids = route(tokens, experts, top_k, routing, zipf)
    here = ids < local
    per_expert = torch.bincount(ids[here].long(), minlength=local)
    return RouteCounts(int(here.sum()), int((per_expert > 0).sum()), int(here.any(dim=1).sum()))


def align_reference(ids: torch.Tensor, experts: int, block_m: int, max_slots: int) -> torch.Tensor:
    """The slots the align kernels must produce: local pairs by expert, then pair id; each expert's
    run padded to a multiple of block_m with the sentinel ids.numel(); the tail up to max_slots too."""
    flat = ids.reshape(-1).long().cpu()
    sentinel = flat.numel()
    slots = []
    for e in range(experts):
        mine = torch.nonzero(flat == e).reshape(-1)
        pad = (-mine.numel()) % block_m
        slots.append(torch.cat((mine, torch.full((pad,), sentinel, dtype=torch.long))))
    used = torch.cat(slots) if slots else torch.empty(0, dtype=torch.long)
    tail = torch.full((max_slots - used.numel(),), sentinel, dtype=torch.long)
    return torch.cat((used, tail)).to(torch.int32)
