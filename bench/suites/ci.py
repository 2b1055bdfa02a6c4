"""The ``ci`` suite: a few minutes on an H100, run by the GPU workflow and gated by ``rooflab compare``.

The large size is N = 2²⁸ elements (1 GiB per fp32 array, far past 4× any Hopper L2), so the
copy/triad/read/write rows double as the run's own DRAM ceiling for ``rooflab compare --normalize
dram``; the smaller 2²⁴ (64 MiB per fp32 array) is nearer where launch and tail effects show.

Beside them, one small point per kernel family: a regression in any kernel shows here first; and
one ragged point per family (sizes no block divides), so masked edges are gated on hardware too.
"""

from bench.suites import Shape, Suite, Sweep
from bench.suites.moe import moe_shape
from kernels.models import DEEPSEEK_V3_MOE, GPT_OSS_20B

GIB_FP32 = 1 << 28  # elements: 1 GiB per fp32 array
SIZES = (1 << 24, GIB_FP32)  # 64 MiB and 1 GiB per fp32 array
WARM = {"l2": "warm"}

# sizes that are no multiple of any block: masks and TMA edges run on hardware, not only in the interpreter
RAGGED = (
    Sweep.make("copy", ("triton",), ("fp16",), N=((1 << 24) + 3,)),
    Sweep.make("gemm", ("triton", "torch"), ("fp16",), shapes=(Shape.of("ragged.4095x4100", N=4095, K=4100),),
               M=(257,)),
    Sweep.make("gemv", ("triton", "torch"), ("fp16",), shapes=(Shape.of("ragged.14335x4104", N=14335, K=4104),),
               M=(1, 3)),
    Sweep.make("attn_decode", ("triton", "torch"), ("fp16",), batch=(5,), heads=(32,), kv_heads=(8,),
               context=(4099,), cache=("paged",)),
    Sweep.make("attn_prefill", ("triton", "torch"), ("fp16",), batch=(1,), heads=(32,), kv_heads=(8,),
               seq_q=(1000,), seq_kv=(1000,), causal=(True,)),
    Sweep.make("qgemv", ("triton", "torch"), ("fp16",), shapes=(Shape.of("ragged.14335x4096", N=14335, K=4096),),
               format=("int4",), group_size=(128,), M=(3,)),
)

CI = Suite(
    "ci",
    "regression-gate points: copy/triad/read/write at 64 MiB and 1 GiB, fp32 FMA peak, launch latency, "
    "and one small point per kernel family",
    (
        Sweep.make("copy", ("triton", "torch"), ("fp32", "fp16"), N=SIZES),
        Sweep.make("triad", ("triton", "torch"), ("fp32", "fp16"), N=SIZES),
        Sweep.make("read", ("triton",), ("fp32",), N=SIZES),
        Sweep.make("write", ("triton", "torch"), ("fp32",), N=(GIB_FP32,)),
        Sweep.make("fma", ("triton",), ("fp32",), N=(1 << 24,), iters=(1024,)),
        Sweep.make("launch", ("triton",), ("fp32",), count=(1, 100), timing={**WARM, "graph": "never"}),
        Sweep.make("launch", ("triton",), ("fp32",), count=(100,), timing={**WARM, "graph": "always"}),
        Sweep.make("gemm", ("triton", "torch"), ("fp16", "bf16"), shapes=(Shape.of("square.4096", N=4096, K=4096),),
                   M=(4096,)),
        Sweep.make("gemm", ("triton", "torch"), ("fp16",), shapes=(Shape.of("llama3-8b.q", N=4096, K=4096),),
                   M=(256, 4096)),
        Sweep.make("gemv", ("triton", "torch"), ("fp16",), shapes=(Shape.of("llama3-8b.gate", N=14336, K=4096),),
                   M=(1, 16)),
        Sweep.make("attn_decode", ("triton", "torch"), ("fp16",), batch=(1, 32), heads=(32,), kv_heads=(8,),
                   context=(4096, 32768), cache=("paged",)),
        Sweep.make("attn_prefill", ("triton", "torch"), ("fp16", "bf16"), batch=(1,), heads=(32,), kv_heads=(8,),
                   seq_q=(4096,), seq_kv=(4096,), causal=(True,)),
        Sweep.make("qgemv", ("triton", "torch"), ("fp16",), shapes=(Shape.of("llama3-8b.gate", N=14336, K=4096),),
                   format=("int4",), group_size=(128,), M=(1,)),
        Sweep.make("qgemm", ("triton", "torch"), ("fp16",), shapes=(Shape.of("llama3-8b.gate", N=14336, K=4096),),
                   format=("int4",), group_size=(128,), M=(256,)),
        Sweep.make("dequant", ("triton",), ("fp16",), shapes=(Shape.of("llama3-8b.gate", N=14336, K=4096),),
                   format=("int4",), group_size=(128,)),
        Sweep.make("moe", ("triton", "grouped-mm"), ("bf16",), shapes=(moe_shape(GPT_OSS_20B),), tokens=(1, 256),
                   format=("mxfp4",)),
        Sweep.make("moe", ("triton",), ("bf16",), shapes=(moe_shape(DEEPSEEK_V3_MOE),), tokens=(37,), ep=(8,),
                   format=("fp8-block",)),
    ) + RAGGED,
)
