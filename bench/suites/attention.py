"""Attention suites: compute-bound prefill and bandwidth-bound KV-cache decode, Triton beside SDPA.

Prefill keeps ~16k tokens per point (batch = 16384 // seq, 32 heads, as in the FlashAttention
papers), so every point does comparable work and only the sequence length moves. Decode crosses
batch × context × GQA ratio × cache layout with head_dim 128 (Llama-3 style); points whose cache
does not fit in device memory are skipped by the specs' footprint rule, not left out here.
"""

from bench.suites import Shape, Suite, Sweep

PREFILL_TOKENS = 16384
PREFILL_SEQS = (512, 1024, 2048, 4096, 8192, 16384)
DECODE_BATCHES = tuple(2**i for i in range(9))  # 1 … 256
DECODE_CONTEXTS = tuple(2**i for i in range(9, 18))  # 512 … 128k
GQA_KV_HEADS = (32, 8, 4)  # with 32 query heads: ratios 1, 4, 8
DTYPES = ("bf16", "fp16")
IMPLS = ("triton", "torch")


def prefill_shapes(seqs=PREFILL_SEQS) -> tuple[Shape, ...]:
    return tuple(Shape.of(f"seq{seq}", seq=seq, batch=max(1, PREFILL_TOKENS // seq)) for seq in seqs)


PREFILL = (
    Sweep.make("attn_prefill", IMPLS, DTYPES, shapes=prefill_shapes(),
               heads=(32,), kv_heads=(32,), head_dim=(64, 128), causal=(False, True)),
    # GQA (Llama-3-8B: 32 heads, 8 KV heads) on a few lengths
    Sweep.make("attn_prefill", IMPLS, ("bf16",), shapes=prefill_shapes((2048, 8192)),
               heads=(32,), kv_heads=(8,), head_dim=(128,), causal=(True,)),
)

DECODE = (
    Sweep.make("attn_decode", IMPLS, DTYPES, batch=DECODE_BATCHES, context=DECODE_CONTEXTS,
               heads=(32,), kv_heads=GQA_KV_HEADS, q_len=(1,), head_dim=(128,),
               cache=("contiguous", "paged"), page_size=(16,)),
    # speculative decoding: 4 new tokens per sequence
    Sweep.make("attn_decode", IMPLS, ("bf16",), batch=(1, 8, 64, 256), context=(1024, 8192, 32768),
               heads=(32,), kv_heads=(8,), q_len=(4,), head_dim=(128,),
               cache=("contiguous", "paged"), page_size=(16,)),
    # larger pages (fewer block-table lookups, more over-read at each sequence's end)
    Sweep.make("attn_decode", IMPLS, ("bf16",), batch=(1, 16, 128), context=(4096, 32768),
               heads=(32,), kv_heads=(8,), q_len=(1,), head_dim=(128,), cache=("paged",), page_size=(64,)),
)

ATTENTION = Suite(
    "attention",
    "flash-attention prefill (seq 512…16k, d 64/128, causal/not) and paged/contiguous GQA decode "
    "(batch 1…256, context 512…128k), Triton beside torch SDPA",
    PREFILL + DECODE,
)
