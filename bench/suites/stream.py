"""Suites for the STREAM-style memory kernels, and the install-check suite."""

from bench.suites import Shape, Suite, Sweep

# 1 MiB … 4 GiB per array in fp32 (2^18 … 2^30 elements); odd sizes show the masked tail's cost
STREAM_SIZES = tuple(2**i for i in range(18, 31)) + (2**24 + 1, 3 * 2**26 + 7)

STREAM = Suite(
    "stream",
    "copy and triad from 1 MiB to 4 GiB per array, Triton beside torch",
    (
        Sweep.make("copy", ("triton", "torch"), ("fp32", "fp16"), N=STREAM_SIZES),
        Sweep.make("triad", ("triton", "torch"), ("fp32", "fp16"), N=STREAM_SIZES),
    ),
)

ODD_LINEAR = (Shape.of("odd.77x131", N=77, K=131),)

SMOKE = Suite(
    "smoke",
    "tiny odd-sized points of every family, for checking an install (runs under --interpret)",
    (
        Sweep.make("copy", ("triton", "torch"), ("fp32", "fp16"), N=(1, 4097)),
        Sweep.make("triad", ("triton", "torch"), ("fp32",), N=(1000,)),
        Sweep.make("read", ("triton",), ("fp32",), N=(5000,)),
        Sweep.make("write", ("triton", "torch"), ("fp16",), N=(4097,)),
        Sweep.make("fma", ("triton",), ("fp32",), N=(1000,), iters=(16,)),
        Sweep.make("launch", ("triton", "torch"), ("fp32",), count=(2,)),
        Sweep.make("gemv", ("triton", "torch"), ("fp16", "fp32"), shapes=ODD_LINEAR, M=(1, 3)),
        Sweep.make("gemm", ("triton", "torch"), ("fp16", "fp32"), shapes=ODD_LINEAR, M=(17,)),
        Sweep.make("attn_prefill", ("triton", "torch"), ("fp16",), batch=(1,), heads=(2,), kv_heads=(1,),
                   seq_q=(37,), seq_kv=(37,), head_dim=(32,), causal=(True, False)),
        # a padded head_dim, chunked prefill (seq_q < seq_kv) and queries that see no key (seq_q > seq_kv)
        Sweep.make("attn_prefill", ("triton", "torch"), ("fp16",), batch=(1,), heads=(2,), kv_heads=(1,),
                   seq_q=(19,), seq_kv=(45,), head_dim=(40,), causal=(True,)),
        Sweep.make("attn_prefill", ("triton", "torch"), ("fp16",), batch=(1,), heads=(2,), kv_heads=(1,),
                   seq_q=(45,), seq_kv=(19,), head_dim=(59,), causal=(True,)),
        Sweep.make("attn_decode", ("triton", "torch"), ("fp16",), batch=(2,), heads=(4,), kv_heads=(2,),
                   q_len=(1, 3), context=(67,), head_dim=(32,), cache=("contiguous", "paged")),
        # fp8 cache, one-token pages, 16 draft tokens, a padded head_dim
        Sweep.make("attn_decode", ("triton", "torch"), ("fp16",), batch=(2,), heads=(4,), kv_heads=(2,),
                   q_len=(16,), context=(45,), head_dim=(40,), cache=("paged",), page_size=(1,),
                   kv_dtype=("auto", "fp8")),
        Sweep.make("attn_mla", ("triton", "torch"), ("fp16",), batch=(2,), heads=(4,), q_len=(2,), context=(37,),
                   page_size=(16,)),
        Sweep.make("dequant", ("triton", "torch"), ("fp16",), format=("int4", "mxfp4"), group_size=(32,),
                   N=(33,), K=(128,)),
        Sweep.make("dequant", ("triton", "torch"), ("fp16",), format=("int8", "fp8"), N=(33,), K=(128,)),
        Sweep.make("qgemv", ("triton", "torch"), ("fp16",), format=("int4", "mxfp4"), group_size=(32,),
                   M=(1, 3), N=(33,), K=(96,)),
        Sweep.make("qgemm", ("triton", "torch_dequant"), ("fp16",), format=("int8",), group_size=(128,),
                   M=(17,), N=(33,), K=(256,)),
        Sweep.make("dequant", ("triton", "torch"), ("fp16",), format=("nvfp4",), group_size=(16,), N=(33,), K=(48,)),
        Sweep.make("dequant", ("triton", "torch"), ("fp16",), format=("int4",), group_size=(256,), N=(33,), K=(256,)),
        Sweep.make("qgemv", ("triton", "torch_dequant"), ("fp16",), format=("nvfp4",), group_size=(16,),
                   M=(1, 3), N=(33,), K=(80,)),
        Sweep.make("qgemm", ("triton", "torch_dequant"), ("fp16",), format=("nvfp4",), group_size=(16,),
                   M=(17,), N=(33,), K=(80,)),
        Sweep.make("qgemv", ("triton",), ("fp16",), format=("int4",), group_size=(256,), M=(1,), N=(33,), K=(512,)),
        # MoE: odd sizes, a shared expert under EP, skewed routing in a 4-bit format
        Sweep.make("moe", ("triton", "torch-loop"), ("fp16",), tokens=(1, 37), experts=(8,), top_k=(2,), d_model=(40,),
                   d_ff=(24,), ep=(2,), shared=(1,)),
        Sweep.make("moe", ("triton",), ("fp16",), tokens=(3,), experts=(40,), top_k=(4,), d_model=(96,), d_ff=(32,),
                   routing=("skewed",), zipf=("1.2",), format=("mxfp4",)),
    ),
)
