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


@dataclass(frozen=True)
class MoeModel:
    """A mixture-of-experts model's routed MLP and what decode economics need around it.

    Each MoE layer routes every token to ``top_k`` of ``experts`` SwiGLU experts (W1: [2·expert_ff,
    hidden] gate+up, W2: [hidden, expert_ff]) plus ``shared_experts`` always-on experts of
    ``shared_ff``; the first ``layers − moe_layers`` layers are dense MLPs of ``dense_ff``.
    Attention is GQA (``kv_heads`` × ``head_dim``) or MLA (``mla_kv_width`` cached values per token).
    ``total_params``/``active_params`` are the published counts (the economics price weights by them).
    """

    name: str
    hidden: int
    expert_ff: int
    experts: int
    top_k: int
    layers: int
    moe_layers: int
    total_params: float
    active_params: float
    heads: int
    kv_heads: int = 0
    head_dim: int = 0
    mla_kv_width: int = 0  # kv_lora_rank + rope_dim for MLA models, 0 for GQA
    shared_experts: int = 0
    shared_ff: int = 0
    dense_ff: int = 0
    native_format: str = "bf16"  # the checkpoint's expert weight format

    def kv_values_per_token(self) -> int:
        """Cached values per token per layer: 2·kv_heads·head_dim (GQA) or the MLA latent row."""
        return self.mla_kv_width or 2 * self.kv_heads * self.head_dim

    def tokens_per_expert(self, tokens: int) -> float:
        """Mean routed tokens an expert receives at ``tokens`` tokens: T·k/E."""
        return tokens * self.top_k / self.experts

    def experts_touched(self, tokens: int) -> float:
        """Expected experts receiving ≥ 1 of ``tokens`` uniformly routed tokens: E·(1 − (1 − k/E)^T)."""
        return self.experts * (1.0 - (1.0 - self.top_k / self.experts) ** tokens)


# Dimensions from each model's config.json on Hugging Face; parameter counts from the model cards.
MIXTRAL_8X7B = MoeModel("mixtral-8x7b", hidden=4096, expert_ff=14336, experts=8, top_k=2, layers=32, moe_layers=32,
                        total_params=46.7e9, active_params=12.9e9, heads=32, kv_heads=8, head_dim=128)
DEEPSEEK_V3_MOE = MoeModel("deepseek-v3", hidden=7168, expert_ff=2048, experts=256, top_k=8, layers=61,
                           moe_layers=58, total_params=671e9, active_params=37e9, heads=128, mla_kv_width=576,
                           shared_experts=1, shared_ff=2048, dense_ff=18432, native_format="fp8-block")
QWEN3_235B = MoeModel("qwen3-235b-a22b", hidden=4096, expert_ff=1536, experts=128, top_k=8, layers=94, moe_layers=94,
                      total_params=235e9, active_params=22e9, heads=64, kv_heads=4, head_dim=128)
QWEN3_30B = MoeModel("qwen3-30b-a3b", hidden=2048, expert_ff=768, experts=128, top_k=8, layers=48, moe_layers=48,
                     total_params=30.5e9, active_params=3.3e9, heads=32, kv_heads=4, head_dim=128)
GPT_OSS_120B = MoeModel("gpt-oss-120b", hidden=2880, expert_ff=2880, experts=128, top_k=4, layers=36, moe_layers=36,
                        total_params=117e9, active_params=5.1e9, heads=64, kv_heads=8, head_dim=64,
                        native_format="mxfp4")
GPT_OSS_20B = MoeModel("gpt-oss-20b", hidden=2880, expert_ff=2880, experts=32, top_k=4, layers=24, moe_layers=24,
                       total_params=21e9, active_params=3.6e9, heads=64, kv_heads=8, head_dim=64,
                       native_format="mxfp4")
KIMI_K2 = MoeModel("kimi-k2", hidden=7168, expert_ff=2048, experts=384, top_k=8, layers=61, moe_layers=60,
                   total_params=1.04e12, active_params=32e9, heads=64, mla_kv_width=576, shared_experts=1,
                   shared_ff=2048, dense_ff=18432, native_format="fp8-block")
MOE_MODELS = (MIXTRAL_8X7B, DEEPSEEK_V3_MOE, QWEN3_235B, QWEN3_30B, GPT_OSS_120B, GPT_OSS_20B, KIMI_K2)


def moe_model(name: str) -> MoeModel:
    for model in MOE_MODELS:
        if model.name == name:
            return model
    raise KeyError(f"unknown MoE model {name!r}; valid: {', '.join(m.name for m in MOE_MODELS)}")
