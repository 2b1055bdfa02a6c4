"""FLOPs and bytes of the workloads the predictions use, from shapes alone and without torch.

The same formulas as the kernel specs (``kernels/linear.py`` linear_flops/linear_bytes,
``attn_decode`` and ``attn_prefill`` _flops/_bytes), so a prediction and a measured row of the same
shape count the same work; tests/test_analysis_predicted.py checks them against the specs.

Context, one definition everywhere: a decode point of context C at batch B holds B sequences whose
lengths run evenly from C down to ⌈C/2⌉ (``decode_lengths``), so its mean context is ≈ 0.75·C at
B ≥ 2 and exactly C at B = 1. A model that wants a mean context X per sequence must ask for the
lengths it means; :func:`decode_context_for_mean` inverts the rule.
"""

from __future__ import annotations

import math

import numpy as np

BF16_BYTES = 2


def linear_cost(m, n: int, k: int, itemsize: float = BF16_BYTES, out_itemsize: float | None = None):
    """(flops, bytes) of y[M, N] = x[M, K]·W[N, K]ᵀ: x and W read once, y written once."""
    m = np.asarray(m, dtype=float)
    out = itemsize if out_itemsize is None else out_itemsize
    return 2.0 * m * n * k, (m * k + n * k) * itemsize + m * n * out


def decode_lengths(batch: int, context: int, q_len: int = 1) -> list[int]:
    """Sequence lengths of a decode point: evenly from ``context`` down to max(⌈context/2⌉, q_len)
    (kernels.attn_decode_spec.decode_lengths, which the measured rows used)."""
    low = max(context - context // 2, q_len)
    if batch == 1:
        return [context]
    return [context - (context - low) * i // (batch - 1) for i in range(batch)]


def mean_decode_context(batch: int, context: int, q_len: int = 1) -> float:
    """Mean length of a decode point's sequences: ≈ 0.75·context at batch ≥ 2."""
    return float(np.mean(decode_lengths(batch, context, q_len)))


def decode_attention_cost(batch: int, heads: int, kv_heads: int, head_dim: int, lengths,
                          itemsize: float = BF16_BYTES, kv_itemsize: float | None = None, q_len: int = 1):
    """(flops, bytes) of one decode step's attention over caches of the given lengths (contiguous cache).

    FLOPs: 4·d per (query, visible key) pair and query head. Bytes: Q and O once, K and V of every
    valid position once per kv head, the lengths array (4 bytes per sequence)."""
    kv_item = itemsize if kv_itemsize is None else kv_itemsize
    lengths = np.asarray(lengths, dtype=float)
    pairs = float(np.sum(q_len * lengths - q_len * (q_len - 1) / 2))
    flops = 4.0 * heads * head_dim * pairs
    nbytes = (2.0 * batch * heads * q_len * head_dim * itemsize + 2.0 * float(np.sum(lengths)) * kv_heads * head_dim
              * kv_item + 4.0 * batch)
    return flops, nbytes


def decode_point_cost(batch: int, context: int, heads: int, kv_heads: int, head_dim: int,
                      itemsize: float = BF16_BYTES, q_len: int = 1):
    """(flops, bytes) of a measured decode point (contiguous cache) of this batch and context."""
    return decode_attention_cost(batch, heads, kv_heads, head_dim, decode_lengths(batch, context, q_len), itemsize,
                                 q_len=q_len)


def causal_pairs(seq_q: int, seq_kv: int) -> int:
    """Visible pairs of a bottom-right aligned causal mask: query i sees keys ≤ i + seq_kv − seq_q."""
    offset = seq_kv - seq_q
    first = max(0, -offset)  # queries before this one see no key
    count = seq_q - first
    return count * (first + seq_q - 1 + 2 * (offset + 1)) // 2  # an arithmetic series


def prefill_cost(batch: int, heads: int, kv_heads: int, head_dim: int, seq_q: int, seq_kv: int | None = None,
                 causal: bool = True, itemsize: float = BF16_BYTES):
    """(flops, bytes) of a flash-attention forward: 4·d per visible pair and head; Q and O once per
    query head, K and V once per kv head."""
    seq_kv = seq_q if seq_kv is None else seq_kv
    pairs = causal_pairs(seq_q, seq_kv) if causal else seq_q * seq_kv
    flops = 4.0 * batch * heads * head_dim * pairs
    nbytes = (2.0 * heads * seq_q + 2.0 * kv_heads * seq_kv) * batch * head_dim * itemsize
    return flops, nbytes


def decode_context_for_mean(batch: int, mean: float) -> int:
    """The context C whose decode lengths at this batch average ``mean`` (C itself at batch 1)."""
    if batch == 1:
        return int(round(mean))
    low, high = int(math.floor(mean)), int(math.ceil(2 * mean)) + 2
    while low < high:  # mean_decode_context is non-decreasing in C
        middle = (low + high) // 2
        if mean_decode_context(batch, middle) < mean:
            low = middle + 1
        else:
            high = middle
    return low
