"""LLM layer shapes and batch lists shared by the suites (dimensions in :mod:`kernels.models`).

Mixtral-8x7B's expert MLP: hidden 4096, expert intermediate 14336.
"""

from __future__ import annotations

from bench.suites import Shape
from kernels.models import DEEPSEEK_V3, LLAMA3_8B, LLAMA3_70B, LLAMA31_405B, PHI2, PHI3_MINI, MlaModel, Model

BATCHES = tuple(2**i for i in range(13))  # 1, 2, 4 … 4096
SMALL_BATCHES = tuple(b for b in BATCHES if b <= 64)  # the GEMV regime

MIXTRAL_EXPERT = (
    Shape.of("mixtral-8x7b.expert.w1", N=14336, K=4096),
    Shape.of("mixtral-8x7b.expert.w3", N=14336, K=4096),
    Shape.of("mixtral-8x7b.expert.w2", N=4096, K=14336),
)


def projection_shapes(model: Model) -> tuple[Shape, ...]:
    return tuple(Shape.of(f"{model.name}.{name}", N=n, K=k) for name, (n, k) in model.projections().items())


def llm_linear_shapes() -> tuple[Shape, ...]:
    """Every projection of the presets; k and v share a shape, so a sweep measures it once, as k."""
    return projection_shapes(LLAMA3_8B) + projection_shapes(LLAMA3_70B) + MIXTRAL_EXPERT


def distinct_projection_shapes(model: Model) -> tuple[Shape, ...]:
    """A model's projections with one shape per distinct (N, K) (q = o, k = v, gate = up for Llama)."""
    seen: dict[tuple[int, int], Shape] = {}
    for shape in projection_shapes(model):
        seen.setdefault((dict(shape.values)["N"], dict(shape.values)["K"]), shape)
    return tuple(seen.values())


def square_shapes(sizes=(1024, 2048, 4096, 8192, 16384)) -> tuple[Shape, ...]:
    return tuple(Shape.of(f"square.{s}", N=s, K=s) for s in sizes)


def attention_shape(model: Model, **values) -> Shape:
    """A model's attention heads (query heads, kv heads, head_dim) with further axis values."""
    return Shape.of(model.name, heads=model.heads, kv_heads=model.kv_heads, head_dim=model.head_dim, **values)


# head_dim 80 and 96: tiles padded to 128
ODD_HEAD_DIM_MODELS = (PHI2, PHI3_MINI)
# the Llama-3.1-405B layer the H200-vs-H100 articles simulate (FP8 weights, long contexts)
LLAMA31_405B_SHAPES = distinct_projection_shapes(LLAMA31_405B)


def mla_shape(model: MlaModel = DEEPSEEK_V3, **values) -> Shape:
    """An MLA model's query heads (the latent dims are the attn_mla family's own)."""
    return Shape.of(model.name, heads=model.heads, **values)
