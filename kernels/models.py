"""LLM dimensions from the published configs, shared by the suites and the decode-step estimate.

Torch-free, so the analysis can use it without importing torch. A linear layer is y = x·Wᵀ with
W: [N, K] = [out_features, in_features].
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Model:
    name: str
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    layers: int

    def projections(self) -> dict[str, tuple[int, int]]:
        """The seven per-layer projections (q, k, v, o, gate, up, down) as (N, K)."""
        q, kv, h, f = self.heads * self.head_dim, self.kv_heads * self.head_dim, self.hidden, self.intermediate
        return {"q": (q, h), "k": (kv, h), "v": (kv, h), "o": (h, q), "gate": (f, h), "up": (f, h), "down": (h, f)}


LLAMA3_8B = Model("llama3-8b", hidden=4096, intermediate=14336, heads=32, kv_heads=8, head_dim=128, layers=32)
LLAMA3_70B = Model("llama3-70b", hidden=8192, intermediate=28672, heads=64, kv_heads=8, head_dim=128, layers=80)
# Llama-3.1-405B (config.json of meta-llama/Llama-3.1-405B) and Llama-2-70B (the MLPerf Inference model)
LLAMA31_405B = Model("llama3.1-405b", hidden=16384, intermediate=53248, heads=128, kv_heads=8, head_dim=128,
                     layers=126)
LLAMA2_70B = Model("llama2-70b", hidden=8192, intermediate=28672, heads=64, kv_heads=8, head_dim=128, layers=80)
MODELS = (LLAMA3_8B, LLAMA3_70B)
# head_dim 96 and 80 (config.json of microsoft/Phi-3-mini-4k-instruct and microsoft/phi-2): attention
# tiles padded to 128
PHI3_MINI = Model("phi3-mini", hidden=3072, intermediate=8192, heads=32, kv_heads=32, head_dim=96, layers=32)
PHI2 = Model("phi-2", hidden=2560, intermediate=10240, heads=32, kv_heads=32, head_dim=80, layers=32)


@dataclass(frozen=True)
class MlaModel:
    """Multi-head latent attention dimensions (DeepSeek-V2/V3): every query head attends over one shared
    latent cache row of kv_lora_rank + rope_dim values per token; decode absorbs W_UK into the queries
    and W_UV after the output, so q and the cache rows are kv_lora_rank + rope_dim wide and the
    attention output kv_lora_rank wide."""

    name: str
    heads: int
    kv_lora_rank: int
    rope_dim: int  # qk_rope_head_dim
    nope_dim: int  # qk_nope_head_dim: with rope_dim, sets the softmax scale 1/√(nope_dim + rope_dim)
    layers: int


# config.json of deepseek-ai/DeepSeek-V3 (R1 shares it)
DEEPSEEK_V3 = MlaModel("deepseek-v3", heads=128, kv_lora_rank=512, rope_dim=64, nope_dim=128, layers=61)
