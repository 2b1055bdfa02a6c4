"""Suite ``linear``: one linear layer y = x·Wᵀ from batch 1 (GEMV, memory-bound) to 4096 (GEMM,
compute-bound), over the LLM projection presets and square layers, beside cuBLAS."""

from bench.suites import Suite, Sweep
from bench.suites.presets import BATCHES, SMALL_BATCHES, llm_linear_shapes, square_shapes

LINEAR_SHAPES = llm_linear_shapes() + square_shapes()
LINEAR_DTYPES = ("fp16", "bf16", "fp32", "fp8")

LINEAR = Suite(
    "linear",
    "y = x·Wᵀ over Llama-3/Mixtral projections and 1024…16384 squares, batch 1…4096: gemm at every "
    "batch, the dedicated gemv kernel for batch ≤ 64, each beside cuBLAS",
    (
        Sweep.make("gemm", ("triton", "torch"), LINEAR_DTYPES, shapes=LINEAR_SHAPES, M=BATCHES),
        Sweep.make("gemv", ("triton", "torch"), LINEAR_DTYPES, shapes=LINEAR_SHAPES, M=SMALL_BATCHES),
    ),
)
