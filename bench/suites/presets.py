"""LLM layer shapes and batch lists shared by the suites (dimensions in :mod:`kernels.models`).

Mixtral-8x7B's expert MLP: hidden 4096, expert intermediate 14336.
"""

from __future__ import annotations

from bench.suites import Shape
from kernels.models import LLAMA3_8B, LLAMA3_70B, Model

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


def square_shapes(sizes=(1024, 2048, 4096, 8192, 16384)) -> tuple[Shape, ...]:
    return tuple(Shape.of(f"square.{s}", N=s, K=s) for s in sizes)
