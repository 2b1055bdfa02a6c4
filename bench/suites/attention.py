"""Attention suites: compute-bound prefill and bandwidth-bound KV-cache decode, Triton beside torch.

Prefill keeps ~16k tokens per point (batch = 16384 // seq, 32 heads, as in the FlashAttention
papers), so every point does comparable work and only the sequence length moves. Decode crosses
batch × context × GQA ratio × cache layout with head_dim 128 (Llama-3 style); points whose cache
does not fit in device memory are skipped by the specs' footprint rule, not left out here.

Beside those grids, a few targeted sweeps for what served models need, at ragged lengths (no
multiple of any block size): head_dim 80/96 models (Phi-2, Phi-3-mini) and odd head dims (59, 111 and
vLLM's 72, 120); chunked prefill (seq_q < seq_kv, bottom-right causal), also as query chunks over a
paged cache (vLLM's unified attention, q_len 64 and 129); page sizes 1 and 256; 16 speculative
tokens; an fp8 KV cache beside bf16 at long context (Llama-3.1-405B's heads); DeepSeek-V3's MLA decode.
"""

from bench.suites import Shape, Suite, Sweep
from bench.suites.presets import ODD_HEAD_DIM_MODELS, attention_shape, mla_shape
from kernels.models import LLAMA3_8B, LLAMA31_405B

PREFILL_TOKENS = 16384
PREFILL_SEQS = (512, 1024, 2048, 4096, 8192, 16384)
DECODE_BATCHES = tuple(2**i for i in range(9))  # 1 … 256
DECODE_CONTEXTS = tuple(2**i for i in range(9, 18, 2))  # 512, 2k, 8k, 32k, 128k: a 4× step keeps the curve
GQA_KV_HEADS = (32, 8, 4)  # with 32 query heads: ratios 1, 4, 8
DTYPES = ("bf16", "fp16")
IMPLS = ("triton", "torch")
RAGGED_SEQS = (1021, 4093)  # prefill lengths no block divides
RAGGED_CONTEXTS = (4099, 32771)  # decode contexts no page or tile divides


def prefill_shapes(seqs=PREFILL_SEQS) -> tuple[Shape, ...]:
    return tuple(Shape.of(f"seq{seq}", seq_q=seq, seq_kv=seq, batch=max(1, PREFILL_TOKENS // seq)) for seq in seqs)


PREFILL = (
    Sweep.make("attn_prefill", IMPLS, DTYPES, shapes=prefill_shapes(),
               heads=(32,), kv_heads=(32,), head_dim=(64, 128), causal=(False, True)),
    # GQA (Llama-3-8B: 32 heads, 8 KV heads) on a few lengths
    Sweep.make("attn_prefill", IMPLS, ("bf16",), shapes=prefill_shapes((2048, 8192)),
               heads=(32,), kv_heads=(8,), head_dim=(128,), causal=(True,)),
    # head_dim 80 and 96 (Phi-2, Phi-3-mini) at ragged lengths: the padded tile's cost
    Sweep.make("attn_prefill", IMPLS, ("bf16",), shapes=tuple(attention_shape(m) for m in ODD_HEAD_DIM_MODELS),
               batch=(4,), seq_q=RAGGED_SEQS, seq_kv=RAGGED_SEQS, causal=(True,)),
    # odd head dims FlashAttention tests (59, 111), vLLM's (72, 120) and the largest real one (192)
    Sweep.make("attn_prefill", IMPLS, ("bf16",), batch=(4,), heads=(32,), kv_heads=(8,), seq_q=(4093,),
               seq_kv=(4093,), head_dim=(59, 72, 111, 120, 192), causal=(True,)),
    # chunked prefill / prefix caching: a chunk of new tokens after a cached prefix (bottom-right causal)
    Sweep.make("attn_prefill", IMPLS, ("bf16",), shapes=(attention_shape(LLAMA3_8B, batch=1),),
               seq_q=(509, 2039), seq_kv=(4093, 16381), causal=(True,)),
)

DECODE = (
    Sweep.make("attn_decode", IMPLS, ("bf16",), batch=DECODE_BATCHES, context=DECODE_CONTEXTS,
               heads=(32,), kv_heads=GQA_KV_HEADS, q_len=(1,), head_dim=(128,),
               cache=("contiguous", "paged"), page_size=(16,)),
    # fp16 beside bf16 on the Llama-3 GQA ratio only: the element type barely moves a bandwidth-bound kernel
    Sweep.make("attn_decode", IMPLS, ("fp16",), batch=DECODE_BATCHES, context=DECODE_CONTEXTS,
               heads=(32,), kv_heads=(8,), q_len=(1,), head_dim=(128,),
               cache=("contiguous", "paged"), page_size=(16,)),
    # speculative decoding: 4 new tokens per sequence
    Sweep.make("attn_decode", IMPLS, ("bf16",), batch=(1, 8, 64, 256), context=(1024, 8192, 32768),
               heads=(32,), kv_heads=(8,), q_len=(4,), head_dim=(128,),
               cache=("contiguous", "paged"), page_size=(16,)),
    # 16 draft tokens per sequence (the launcher's limit)
    Sweep.make("attn_decode", IMPLS, ("bf16",), batch=(8, 64), context=(8191,), heads=(32,), kv_heads=(8,),
               q_len=(16,), head_dim=(128,), cache=("paged",), page_size=(16,)),
    # chunked prefill over a paged cache (vLLM's unified attention: 64 … 129-token query chunks)
    Sweep.make("attn_decode", IMPLS, ("bf16",), batch=(1, 8), context=RAGGED_CONTEXTS, heads=(32,), kv_heads=(8,),
               q_len=(64, 129), head_dim=(128,), cache=("paged",), page_size=(16,)),
    # larger pages (fewer block-table lookups, more over-read at each sequence's end)
    Sweep.make("attn_decode", IMPLS, ("bf16",), batch=(1, 16, 128), context=(4096, 32768),
               heads=(32,), kv_heads=(8,), q_len=(1,), head_dim=(128,), cache=("paged",), page_size=(64,)),
    # one token per page (FlashInfer, SGLang) and FlashAttention's 256
    Sweep.make("attn_decode", IMPLS, ("bf16",), batch=(16, 128), context=RAGGED_CONTEXTS,
               heads=(32,), kv_heads=(8,), q_len=(1,), head_dim=(128,), cache=("paged",), page_size=(1, 256)),
    # head_dim 80 and 96, multi-head (Phi-2, Phi-3-mini)
    Sweep.make("attn_decode", IMPLS, ("bf16",), shapes=tuple(attention_shape(m) for m in ODD_HEAD_DIM_MODELS),
               batch=(16, 64), context=(4099,), q_len=(1,), cache=("paged",), page_size=(16,)),
    # fp8 (e4m3) KV cache beside bf16 at long context: Llama-3.1-405B's 128 heads over 8 kv heads
    Sweep.make("attn_decode", IMPLS, ("bf16",), shapes=(attention_shape(LLAMA31_405B),), batch=(1, 16, 64),
               context=(32771, 131071), q_len=(1,), cache=("paged",), page_size=(16,), kv_dtype=("auto", "fp8")),
)

MLA = (
    # DeepSeek-V3/R1: 128 heads over one latent cache, FlashMLA's 64-token pages
    Sweep.make("attn_mla", IMPLS, ("bf16",), shapes=(mla_shape(),), batch=(1, 16, 64, 128),
               context=RAGGED_CONTEXTS, q_len=(1,), page_size=(64,)),
    # multi-token prediction: 2 tokens per step
    Sweep.make("attn_mla", IMPLS, ("bf16",), shapes=(mla_shape(),), batch=(16, 64), context=(32771,),
               q_len=(2,), page_size=(64,)),
)

ATTENTION = Suite(
    "attention",
    "flash-attention prefill (seq 512…16k, d 64/128, causal/not; d 59…192, Phi-2/3 d 80/96, chunked prefill), "
    "paged/contiguous GQA decode (batch 1…256, context 512…128k, pages 1…256, q_len ≤ 16, fp8 KV; "
    "query chunks of 64/129 over pages), "
    "DeepSeek-V3 MLA decode; Triton beside torch",
    PREFILL + DECODE + MLA,
)
