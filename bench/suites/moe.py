"""Suite ``moe``: routed expert layers of the MoE presets (:data:`kernels.models.MOE_MODELS`), to show
that a layer reads only the experts its tokens touch, stays memory-bound until T ≈ ridge·E/k, and
where expert parallelism and skew move that knee.

Every preset in bf16 and in its checkpoint's format over T = 1 … 16384 (powers of two and ragged
counts no block divides), EP 1 and 8, uniform routing, Triton beside the torch per-expert loop and
``torch._grouped_mm``; skewed routing (Zipf 1.2) and the dense "if it were dense" line at fewer T;
the two headline presets (DeepSeek-V3, gpt-oss-120b) in every format; each stage of the layer alone.
"""

from __future__ import annotations

from bench.suites import Shape, Suite, Sweep
from kernels.models import DEEPSEEK_V3_MOE, GPT_OSS_120B, MOE_MODELS, MoeModel

TOKENS = tuple(2**i for i in range(15)) + (3, 37, 1000, 5000)  # 1 … 16384, ragged
FEW_TOKENS = (1, 16, 256, 4096)
FORMATS = ("bf16", "fp8-channel", "fp8-block", "int4-g128", "mxfp4", "nvfp4")
IMPLS = ("triton", "torch-loop", "grouped-mm")


def moe_shape(model: MoeModel, **values) -> Shape:
    """A preset's routed layer (with its shared expert, if any) and further axis values."""
    return Shape.of(model.name, experts=model.experts, top_k=model.top_k, d_model=model.hidden,
                    d_ff=model.expert_ff, shared=1 if model.shared_experts else 0, **values)


def _sweeps():
    for model in MOE_MODELS:
        formats = tuple(dict.fromkeys(("bf16", model.native_format)))
        shape = (moe_shape(model),)
        yield Sweep.make("moe", IMPLS, ("bf16",), shapes=shape, tokens=TOKENS, ep=(1, 8), format=formats)
        yield Sweep.make("moe", ("triton", "grouped-mm"), ("bf16",), shapes=shape, tokens=FEW_TOKENS, ep=(1, 8),
                         format=formats, routing=("skewed",), zipf=("1.2",))
        yield Sweep.make("moe", ("dense",), ("bf16",), shapes=shape, tokens=(1, 16, 256), ep=(8,), format=("bf16",))
    for model in (DEEPSEEK_V3_MOE, GPT_OSS_120B):
        shape = (moe_shape(model),)
        yield Sweep.make("moe", ("triton",), ("bf16",), shapes=shape, tokens=FEW_TOKENS, ep=(1, 8), format=FORMATS)
        yield Sweep.make("moe", ("triton",), ("bf16",), shapes=shape, tokens=FEW_TOKENS, ep=(8,),
                         format=(model.native_format,), stage=("align", "w1", "w2"))
        yield Sweep.make("moe", ("triton",), ("bf16",), shapes=shape, tokens=(4096,), ep=(8,),
                         format=(model.native_format,), routing=("balanced",))


MOE = Suite(
    "moe",
    "MoE expert layers of Mixtral, DeepSeek-V3, Qwen3, gpt-oss and Kimi K2: T = 1…16384, EP 1/8, uniform and "
    "skewed routing, bf16 and native formats (all six on DeepSeek-V3 and gpt-oss-120b), Triton beside the torch "
    "loop, torch._grouped_mm and the dense line",
    tuple(_sweeps()),
)
