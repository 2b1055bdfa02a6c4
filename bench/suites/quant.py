"""Suite ``quant``: weight-only quantized linear layers, to show how much fewer weight bytes speed up
decode (M small, memory-bound) and the batch where the gain vanishes (past the roofline knee).

Every weight format at its settings (int4 with groups 32/64/128; int8, fp8 per-channel; mxfp4 with
its 32-wide blocks) over the LLM projection presets plus an 8192² layer: qgemv for M ≤ 64, qgemm up
to M = 1024, each beside cuBLAS on a dense fp16 weight (``torch``) and the naive dequantize-then-
matmul (``torch_dequant``); ``dequant`` alone over the same weights; a bf16 slice on the 8192² layer
that also holds NVFP4 and int4 with 256-wide groups. The Llama-3.1-405B layer in FP8 and NVFP4
(its projections, a few batches) and ragged layers (N and M no tile divides) are targeted sweeps.
Duplicate (N, K) presets collapse to one point when the suite expands.
"""

from bench.suites import Shape, Suite, Sweep
from bench.suites.presets import BATCHES, LLAMA31_405B_SHAPES, SMALL_BATCHES, llm_linear_shapes

SQUARE_8192 = Shape.of("square.8192", N=8192, K=8192)
QUANT_SHAPES = llm_linear_shapes() + (SQUARE_8192,)
QUANT_BATCHES = tuple(b for b in BATCHES if b <= 1024)
IMPLS = ("triton", "torch", "torch_dequant")
# one sweep per format family: the axes cross, and only int4 takes several group sizes
WEIGHTS = (
    {"format": ("int4",), "group_size": (32, 64, 128)},
    {"format": ("int8", "fp8"), "group_size": (128,)},  # per-channel: the default group_size only
    {"format": ("mxfp4",), "group_size": (32,)},  # the MX block
)
NEWER_WEIGHTS = (
    {"format": ("nvfp4",), "group_size": (16,)},  # NVFP4's e4m3-scaled 16-element blocks
    {"format": ("int4",), "group_size": (256,)},
)
LLAMA31_405B_WEIGHTS = (
    {"format": ("fp8",), "group_size": (128,)},  # the FP8 checkpoint's per-channel weights
    {"format": ("nvfp4",), "group_size": (16,)},
)
RAGGED = (Shape.of("ragged.14335x4096", N=14335, K=4096), Shape.of("ragged.8191x8192", N=8191, K=8192))


def _sweeps():
    for weights in WEIGHTS:
        yield Sweep.make("qgemv", IMPLS, ("fp16",), shapes=QUANT_SHAPES, M=SMALL_BATCHES, **weights)
        yield Sweep.make("qgemm", IMPLS, ("fp16",), shapes=QUANT_SHAPES, M=QUANT_BATCHES, **weights)
        yield Sweep.make("dequant", ("triton", "torch"), ("fp16",), shapes=QUANT_SHAPES, **weights)
    for weights in WEIGHTS + NEWER_WEIGHTS:
        yield Sweep.make("qgemv", IMPLS, ("bf16",), shapes=(SQUARE_8192,), M=(1, 16, 64), **weights)
        yield Sweep.make("qgemm", IMPLS, ("bf16",), shapes=(SQUARE_8192,), M=(1, 16, 256, 1024), **weights)
    for weights in NEWER_WEIGHTS:
        yield Sweep.make("dequant", ("triton", "torch"), ("bf16",), shapes=(SQUARE_8192,), **weights)
    for weights in LLAMA31_405B_WEIGHTS:
        yield Sweep.make("qgemv", IMPLS, ("bf16",), shapes=LLAMA31_405B_SHAPES, M=(1, 16), **weights)
        yield Sweep.make("qgemm", IMPLS, ("bf16",), shapes=LLAMA31_405B_SHAPES, M=(256, 1024), **weights)
    for weights in ({"format": ("int4",), "group_size": (128,)}, {"format": ("nvfp4",), "group_size": (16,)}):
        yield Sweep.make("qgemv", IMPLS, ("fp16",), shapes=RAGGED, M=(3,), **weights)
        yield Sweep.make("qgemm", IMPLS, ("fp16",), shapes=RAGGED, M=(17, 333), **weights)


QUANT = Suite(
    "quant",
    "weight-only int8/int4/fp8/mxfp4/nvfp4 linear layers, batch 1…1024 over the LLM presets and the "
    "Llama-3.1-405B layer, beside cuBLAS fp16/bf16",
    tuple(_sweeps()),
)
