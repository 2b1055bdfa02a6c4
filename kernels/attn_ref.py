"""The one float32 reference attention shared by ``attn_prefill``, ``attn_decode`` and ``attn_mla`` (specs
and tests), plus what their specs share: the count of visible (query, key) pairs and the SDPA backend
probe of their ``torch`` baselines.

softmax(q·kᵀ·sm_scale + mask)·v for q [batch, heads, seq_q, d_qk], k [batch, kv_heads, seq_kv, d_qk]
and v [batch, kv_heads, seq_kv, d_v] (GQA: query head h reads kv head h // (heads // kv_heads)).
d_v may differ from d_qk: MLA's latent form is q [batch, heads, seq_q, 512 + 64] against one shared
latent cache k = c [batch, 1, seq_kv, 512 + 64] with v = c[..., :512]. Masks:

* ``kv_lens[b]``: only keys j < kv_lens[b] exist (a ragged KV cache); default seq_kv.
* causal, :attr:`CausalAlign.TOP_LEFT` (SDPA's ``is_causal``): query i sees keys j ≤ i.
* causal, :attr:`CausalAlign.BOTTOM_RIGHT` (FlashAttention ≥ 2.1, chunked prefill, decode): the
  queries are the last seq_q tokens of the sequence, so query i sees keys j ≤ i + kv_lens[b] − seq_q.
  When seq_q > kv_lens[b] the first seq_q − kv_lens[b] queries see no key at all; their output is
  zero, as FlashAttention's (not the NaN of a softmax over nothing).

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


def causal_pairs(seq_q: int, seq_kv: int) -> int:
    """(query, key) pairs a bottom-right causal mask keeps: Σ_i max(0, i + seq_kv − seq_q + 1) over
    queries i < seq_q (never more than seq_kv: only the last query sees every key)."""
    offset = seq_kv - seq_q
    first = max(0, -offset)  # queries before this one see no key
    count = seq_q - first
    return count * (first + seq_q - 1 + 2 * (offset + 1)) // 2  # an arithmetic series


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
    """Float32 attention [batch, heads, seq_q, d_v] with the masks in the module docstring.

    ``sm_scale`` defaults to 1/√d_qk.
    """
    batch, heads, seq_q, head_dim = q.shape
    kv_heads, seq_kv, v_dim = k.shape[1], k.shape[2], v.shape[3]
    if heads % kv_heads:
        raise ValueError(f"kv_heads {kv_heads} must divide heads {heads}")
    group = heads // kv_heads
    scale = 1.0 / math.sqrt(head_dim) if sm_scale is None else sm_scale
    lens = [seq_kv] * batch if kv_lens is None else [int(n) for n in (
        kv_lens.tolist() if isinstance(kv_lens, torch.Tensor) else kv_lens)]
    out = torch.empty((batch, heads, seq_q, v_dim), dtype=torch.float32, device=q.device)
    for b, length in enumerate(lens):
        rows = min(seq_q, max(1, MAX_SCORES // (group * max(1, length))))  # query rows per chunk
        kv_block = min(kv_heads, max(1, MAX_SCORES // (group * rows * max(1, length))))  # kv heads per chunk
        keys = torch.arange(length, device=q.device)
        for kv0 in range(0, kv_heads, kv_block):
            kv1 = min(kv_heads, kv0 + kv_block)
            kb = k[b, kv0:kv1, :length].float()  # [n_kv, length, d_qk]
            vb = v[b, kv0:kv1, :length].float()  # [n_kv, length, d_v]
            for start in range(0, seq_q, rows):
                stop = min(seq_q, start + rows)
                qb = q[b, kv0 * group:kv1 * group, start:stop].float()  # [n_kv·group, n_rows, d_qk]
                qb = qb.reshape(kv1 - kv0, group * (stop - start), head_dim)  # a kv head's queries together
                scores = torch.matmul(qb, kb.transpose(1, 2)) * scale  # [n_kv, group·n_rows, length]
                seen = torch.full((group * (stop - start),), length, device=q.device)  # keys each row sees
                if causal:
                    offset = 0 if align == CausalAlign.TOP_LEFT else length - seq_q
                    last = (torch.arange(start, stop, device=q.device) + offset).repeat(group)  # last visible key
                    scores.masked_fill_(keys[None, None, :] > last[None, :, None], float("-inf"))
                    seen = (last + 1).clamp(0, length)
                result = torch.matmul(torch.softmax(scores, dim=-1), vb)
                result = result.masked_fill((seen == 0)[None, :, None], 0.0)  # no key: zero, not NaN
                out[b, kv0 * group:kv1 * group, start:stop] = result.reshape(-1, stop - start, v_dim)
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
