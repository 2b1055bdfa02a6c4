"""LLM layer shapes and batch lists shared by the suites.

A linear layer is y = x·Wᵀ with W: [N, K] = [out_features, in_features]; the batch is M.
Model dimensions from the published configs: Llama-3-8B (hidden 4096, MLP 14336, 32 heads, 8 KV
heads, head_dim 128), Llama-3-70B (hidden 8192, MLP 28672, 64 heads, 8 KV heads, head_dim 128),
Mixtral-8x7B (hidden 4096, expert MLP 14336).
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.suites import Shape

BATCHES = tuple(2**i for i in range(13))  # 1, 2, 4 … 4096
SMALL_BATCHES = tuple(b for b in BATCHES if b <= 64)  # the GEMV regime


@dataclass(frozen=True)
class Model:
    name: str
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    layers: int

    def projections(self) -> tuple[Shape, ...]:
        """The seven per-layer projections (q, k, v, o, gate, up, down) as (N, K) shapes."""
        q = self.heads * self.head_dim
        kv = self.kv_heads * self.head_dim
        h, f = self.hidden, self.intermediate
        dims = {"q": (q, h), "k": (kv, h), "v": (kv, h), "o": (h, q), "gate": (f, h), "up": (f, h), "down": (h, f)}
        return tuple(Shape.of(f"{self.name}.{name}", N=n, K=k) for name, (n, k) in dims.items())


LLAMA3_8B = Model("llama3-8b", hidden=4096, intermediate=14336, heads=32, kv_heads=8, head_dim=128, layers=32)
LLAMA3_70B = Model("llama3-70b", hidden=8192, intermediate=28672, heads=64, kv_heads=8, head_dim=128, layers=80)
MODELS = (LLAMA3_8B, LLAMA3_70B)

MIXTRAL_EXPERT = (
    Shape.of("mixtral-8x7b.expert.w1", N=14336, K=4096),
    Shape.of("mixtral-8x7b.expert.w3", N=14336, K=4096),
    Shape.of("mixtral-8x7b.expert.w2", N=4096, K=14336),
)


def llm_linear_shapes() -> tuple[Shape, ...]:
    """Every projection of the presets; k and v share a shape, so a sweep measures it once, as k."""
    return LLAMA3_8B.projections() + LLAMA3_70B.projections() + MIXTRAL_EXPERT


def square_shapes(sizes=(1024, 2048, 4096, 8192, 16384)) -> tuple[Shape, ...]:
    return tuple(Shape.of(f"square.{s}", N=s, K=s) for s in sizes)
