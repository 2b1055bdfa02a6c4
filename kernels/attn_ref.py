"""The one float32 reference attention shared by ``attn_prefill`` and ``attn_decode`` (specs and tests),
plus what both families' specs share: the SDPA backend probe of their ``torch`` baselines.


softmax(q·kᵀ·sm_scale + mask)·v for q [batch, heads, seq_q, head_dim] and k, v
[batch, kv_heads, seq_kv, head_dim] (GQA: query head h reads kv head h // (heads // kv_heads)).
Masks:

* ``kv_lens[b]``: only keys j < kv_lens[b] exist (a ragged KV cache); default seq_kv.
* causal, :attr:`CausalAlign.TOP_LEFT` (prefill, SDPA's ``is_causal``): query i sees keys j ≤ i.
* causal, :attr:`CausalAlign.BOTTOM_RIGHT` (decode): the queries are the last seq_q tokens of the
  sequence, so query i sees keys j ≤ i + kv_lens[b] − seq_q (needs kv_lens[b] ≥ seq_q).

Scores are formed for one sequence, one KV head's query group and a chunk of query rows at a time,
so a 16k × 16k prefill or a 128k-token cache never materialises seq_q × seq_kv for all heads.
"""

from __future__ import annotations

import math
import warnings
from enum import Enum
from typing import Callable, Sequence

import torch


MAX_SCORES = 1 << 24  # score elements (fp32) per chunk: 64 MiB


class CausalAlign(str, Enum):
    TOP_LEFT = "top_left"
    BOTTOM_RIGHT = "bottom_right"


def attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    sm_scale: float | None = None,
    kv_lens: Sequence[int] | torch.Tensor | None = None,
    align: CausalAlign = CausalAlign.TOP_LEFT,
) -> torch.Tensor:
    """Float32 attention [batch, heads, seq_q, head_dim] with the masks in the module docstring."""
    batch, heads, seq_q, head_dim = q.shape
    kv_heads, seq_kv = k.shape[1], k.shape[2]
    if heads % kv_heads:
        raise ValueError(f"kv_heads {kv_heads} must divide heads {heads}")
    group = heads // kv_heads
    scale = 1.0 / math.sqrt(head_dim) if sm_scale is None else sm_scale
    lens = [seq_kv] * batch if kv_lens is None else [int(n) for n in (
        kv_lens.tolist() if isinstance(kv_lens, torch.Tensor) else kv_lens)]
    out = torch.empty((batch, heads, seq_q, head_dim), dtype=torch.float32, device=q.device)
    for b, length in enumerate(lens):
        rows = min(seq_q, max(1, MAX_SCORES // (group * length)))  # query rows per chunk
        kv_block = min(kv_heads, max(1, MAX_SCORES // (group * rows * length)))  # kv heads per chunk
        keys = torch.arange(length, device=q.device)
        for kv0 in range(0, kv_heads, kv_block):
            kv1 = min(kv_heads, kv0 + kv_block)
            kb = k[b, kv0:kv1, :length].float()  # [n_kv, length, head_dim]
            vb = v[b, kv0:kv1, :length].float()
            for start in range(0, seq_q, rows):
                stop = min(seq_q, start + rows)
                qb = q[b, kv0 * group:kv1 * group, start:stop].float()  # [n_kv·group, n_rows, head_dim]
                qb = qb.reshape(kv1 - kv0, group * (stop - start), head_dim)  # a kv head's queries together
                scores = torch.matmul(qb, kb.transpose(1, 2)) * scale  # [n_kv, group·n_rows, length]
                if causal:
                    offset = 0 if align == CausalAlign.TOP_LEFT else length - seq_q
                    last = (torch.arange(start, stop, device=q.device) + offset).repeat(group)  # last visible key
                    scores.masked_fill_(keys[None, None, :] > last[None, :, None], float("-inf"))
                result = torch.matmul(torch.softmax(scores, dim=-1), vb)
                out[b, kv0 * group:kv1 * group, start:stop] = result.reshape(-1, stop - start, head_dim)
    return out


# ---------------------------------------------------------------------------------------------
# SDPA baseline: which backend actually runs a call
# ---------------------------------------------------------------------------------------------

SDPA_PREFERENCE = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH")


def pick_sdpa_backend(call: Callable[[], torch.Tensor]) -> tuple[Callable[[], torch.Tensor], str]:
    """Run ``call`` once under each SDPA backend in :data:`SDPA_PREFERENCE`; the first that works wins.

    Returns a closure that runs ``call`` pinned to that backend (so the timed run cannot silently
    take another one) and the backend's name for ``Launch.config``.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    failures = []
    for name in SDPA_PREFERENCE:
        backend = getattr(SDPBackend, name)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "kernel not used because …" notes for rejected backends
                with sdpa_kernel([backend]):
                    call()
        except RuntimeError as error:
            failures.append(f"{name}: {str(error).splitlines()[0]}")
            continue

        def pinned(backend=backend) -> torch.Tensor:
            with sdpa_kernel([backend]):
                return call()

        return pinned, name
    raise RuntimeError("no SDPA backend runs this call: " + "; ".join(failures))
