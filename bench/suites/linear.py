"""Suite ``linear``: one linear layer y = x·Wᵀ from batch 1 (GEMV, memory-bound) to 4096 (GEMM,
compute-bound), over the LLM projection presets and square layers, beside cuBLAS."""

from bench.suites import Shape, Suite, Sweep
from bench.suites.presets import BATCHES, SMALL_BATCHES, llm_linear_shapes, square_shapes

LINEAR_SHAPES = llm_linear_shapes() + square_shapes()
LINEAR_DTYPES = ("fp16", "bf16", "fp32", "fp8")
RAGGED_SHAPES = (Shape.of("ragged.4095x4100", N=4095, K=4100), Shape.of("ragged.14337x4104", N=14337, K=4104))

LINEAR = Suite(
    "linear",
    "y = x·Wᵀ over Llama-3/Mixtral projections and 1024…16384 squares, batch 1…4096: gemm at every "
    "batch, the dedicated gemv kernel for batch ≤ 64, each beside cuBLAS",
    (
        Sweep.make("gemm", ("triton", "torch"), LINEAR_DTYPES, shapes=LINEAR_SHAPES, M=BATCHES),
        Sweep.make("gemv", ("triton", "torch"), LINEAR_DTYPES, shapes=LINEAR_SHAPES, M=SMALL_BATCHES),
        # ragged: no block size divides M, N or K, so every masked edge (and TMA's clipping) runs on the GPU
        Sweep.make("gemm", ("triton", "torch"), ("fp16", "bf16"), shapes=RAGGED_SHAPES, M=(3, 17, 257, 1000)),
        Sweep.make("gemv", ("triton", "torch"), ("fp16", "bf16"), shapes=RAGGED_SHAPES, M=(1, 3, 17)),
    ),
)
