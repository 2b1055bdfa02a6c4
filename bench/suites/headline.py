"""The headline plan: what the first minutes on a GPU must answer, tier by tier, in order.

``rooflab run`` on a GPU runs these tiers under a time budget (``bench/plan.py``): each tier is the
evidence for one of the project's claims, and a budget that runs out still leaves the earlier
answers whole. Tier 1's ceilings are what every later figure is a fraction of.

1. ceilings: DRAM read and copy at ≥ 4× L2, L2 bandwidth, cuBLAS bf16/fp8 8192³, launch latency;
2. GEMV at M = 1 (fp16, bf16) on 8192² and Llama-3 shapes, Triton vs cuBLAS — fraction of DRAM;
3. one layer's batch sweep M = 1 … 4096 (Llama-3-70B o, 8192×8192, bf16) — the knee;
4. GEMM bf16 and fp8 at 8192³, Triton vs cuBLAS / _scaled_mm;
5. prefill bf16 d128 causal at 4k and 16k vs SDPA; decode bf16 GQA-8 paged, batch 1/16/64 ×
   context 8k/32k vs SDPA — fraction of DRAM;
6. weight-only M = 1 on 8192²: int8, int4 g128, fp8, mxfp4 vs fp16 cuBLAS; int4 over M = 1 … 256;
7. MoE: gpt-oss-120b in mxfp4 over T = 1 … 4096 vs torch._grouped_mm, DeepSeek-V3 fp8-block at EP 8
   (shared expert) vs the torch loop — the experts-touched bytes and the MoE knee;
8. one ragged point per family, then (in their own files) a repeat of ten tier 2–6 points for
   run-to-run noise, and the rest of the suites as time remains.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.suites import Shape, Suite, Sweep
from bench.suites.ci import RAGGED
from bench.suites.moe import moe_shape
from kernels.models import DEEPSEEK_V3_MOE, GPT_OSS_120B, LLAMA3_8B, LLAMA3_70B

WARM = {"l2": "warm"}
GIB_FP32 = 1 << 28  # elements: 1 GiB per fp32 array, ≥ 4× any Hopper L2
SQUARE = Shape.of("square.8192", N=8192, K=8192)
BATCHES = tuple(2**i for i in range(13))  # 1 … 4096


def _shape(model, projection: str) -> Shape:
    n, k = model.projections()[projection]
    return Shape.of(f"{model.name}.{projection}", N=n, K=k)


GEMV_SHAPES = (SQUARE, _shape(LLAMA3_70B, "down"), _shape(LLAMA3_8B, "q"), _shape(LLAMA3_8B, "gate"))
LAYER = _shape(LLAMA3_70B, "o")  # 8192 × 8192


@dataclass(frozen=True)
class Tier:
    number: int
    name: str
    claim: str  # what the tier answers
    sweeps: tuple[Sweep, ...]


TIERS = (
    Tier(1, "ceilings", "what the card can do: DRAM, L2, tensor peaks, launch latency", (
        Sweep.make("read", ("triton",), ("fp32",), N=(1 << 26, GIB_FP32)),
        Sweep.make("copy", ("triton", "torch"), ("fp32",), N=(1 << 26, GIB_FP32)),
        Sweep.make("read", ("triton",), ("fp32",), N=(1 << 20, 1 << 22), timing=WARM),
        Sweep.make("gemm", ("torch",), ("bf16", "fp8"), shapes=(SQUARE,), M=(8192,)),
        Sweep.make("launch", ("triton", "torch"), ("fp32",), count=(100,), timing={**WARM, "graph": "never"}),
        Sweep.make("launch", ("triton", "torch"), ("fp32",), count=(100,), timing={**WARM, "graph": "always"}),
    )),
    Tier(2, "gemv", "batch-1 decode is a memory problem: GEMV as a fraction of the DRAM ceiling", (
        Sweep.make("gemv", ("triton", "torch"), ("fp16", "bf16"), shapes=GEMV_SHAPES, M=(1,)),
    )),
    Tier(3, "knee", "batching raises intensity up to the knee: one layer from M = 1 to 4096", (
        Sweep.make("gemv", ("triton", "torch"), ("bf16",), shapes=(LAYER,), M=tuple(b for b in BATCHES if b <= 64)),
        Sweep.make("gemm", ("triton", "torch"), ("bf16",), shapes=(LAYER,), M=BATCHES),
    )),
    Tier(4, "gemm", "the compute roof: Triton GEMM vs cuBLAS at 8192³", (
        Sweep.make("gemm", ("triton", "torch"), ("bf16", "fp8"), shapes=(SQUARE,), M=(8192,)),
    )),
    Tier(5, "attention", "prefill is compute-bound, decode reads the KV cache at DRAM speed", (
        Sweep.make("attn_prefill", ("triton", "torch"), ("bf16",), batch=(4,), heads=(32,), kv_heads=(8,),
                   seq_q=(4096,), seq_kv=(4096,), head_dim=(128,), causal=(True,)),
        Sweep.make("attn_prefill", ("triton", "torch"), ("bf16",), batch=(1,), heads=(32,), kv_heads=(8,),
                   seq_q=(16384,), seq_kv=(16384,), head_dim=(128,), causal=(True,)),
        Sweep.make("attn_decode", ("triton", "torch"), ("bf16",), batch=(1, 16, 64), heads=(64,), kv_heads=(8,),
                   context=(8192, 32768), head_dim=(128,), cache=("paged",), page_size=(16,)),
    )),
    Tier(6, "quant", "quantization cuts bytes: weight-only formats at batch 1, and where the gain ends", (
        Sweep.make("qgemv", ("triton", "torch"), ("fp16",), shapes=(SQUARE,), M=(1,), format=("int4",),
                   group_size=(128,)),
        Sweep.make("qgemv", ("triton",), ("fp16",), shapes=(SQUARE,), M=(1,), format=("int8", "fp8"),
                   group_size=(128,)),
        Sweep.make("qgemv", ("triton",), ("fp16",), shapes=(SQUARE,), M=(1,), format=("mxfp4",), group_size=(32,)),
        Sweep.make("qgemv", ("triton", "torch"), ("fp16",), shapes=(SQUARE,), M=(2, 4, 8, 16, 32, 64),
                   format=("int4",), group_size=(128,)),
        Sweep.make("qgemm", ("triton", "torch"), ("fp16",), shapes=(SQUARE,), M=(64, 128, 256), format=("int4",),
                   group_size=(128,)),
    )),
    Tier(7, "moe", "an MoE layer reads only the experts its tokens touch: memory-bound until T ≈ ridge·E/k", (
        Sweep.make("moe", ("triton", "grouped-mm"), ("bf16",), shapes=(moe_shape(GPT_OSS_120B),), tokens=(1, 64, 4096),
                   format=("mxfp4",)),
        Sweep.make("moe", ("triton", "torch-loop"), ("bf16",), shapes=(moe_shape(DEEPSEEK_V3_MOE),), tokens=(1, 256),
                   ep=(8,), format=("fp8-block",)),
    )),
    Tier(8, "ragged", "masks and TMA edges on hardware: one size no block divides, per family", RAGGED),
)

# ten tier 2–6 points measured again, in a second run: the run-to-run noise of the headline figures
REPEAT = (
    Sweep.make("gemv", ("triton", "torch"), ("bf16",), shapes=(SQUARE,), M=(1,)),
    Sweep.make("gemm", ("triton", "torch"), ("bf16",), shapes=(LAYER,), M=(64, 1024)),
    Sweep.make("gemm", ("triton",), ("bf16",), shapes=(SQUARE,), M=(8192,)),
    Sweep.make("attn_decode", ("triton",), ("bf16",), batch=(16,), heads=(64,), kv_heads=(8,), context=(32768,),
               head_dim=(128,), cache=("paged",), page_size=(16,)),
    Sweep.make("qgemv", ("triton", "torch"), ("fp16",), shapes=(SQUARE,), M=(1,), format=("int4",), group_size=(128,)),
)
REST = ("ceilings", "linear", "attention", "quant", "moe")  # then the full suites, each in its own file

HEADLINE = Suite("headline", "the budgeted first-contact plan: ceilings, GEMV at batch 1, one layer's knee, "
                             "GEMM, attention, weight-only formats, MoE layers, ragged sizes (tiers 1–8)",
                 tuple(sweep for tier in TIERS for sweep in tier.sweeps))
HEADLINE_REPEAT = Suite("headline-repeat", "ten headline points measured again: run-to-run noise", REPEAT)
