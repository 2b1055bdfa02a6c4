"""Per-step fixed costs of a decode step: what the roofline leaves out and no faster memory shortens.

* All-reduce latency: tensor parallelism (TP > 1) runs two all-reduces per layer (after o and after down), each
  paying a per-call latency on top of its bytes over NVLink — 252 calls per step for Llama-3.1-405B. The latency
  is per NVLink generation, so GPUs of one generation (H100 and H200: NVLink 4) pay the same. PREDICTED, never
  measured here (one GPU): ``ALLREDUCE_LATENCY_S`` per call, from public NCCL numbers on HGX 8×H100 (NVLSTree
  under CUDA graphs ≈ 6 µs at 2 GPUs, more at 8: github.com/NVIDIA/nccl/issues/1259); a custom one-shot
  all-reduce is quicker, NCCL's ring slower — 4–16 µs brackets it, i.e. 1–4 ms per 252-call step.
* Kernel launches: serving engines replay the decode step as a CUDA graph, and each kernel in it costs at least
  the graph's per-kernel launch time. MEASURED where the device has a ``launch_graph_s`` ceiling (the ``launch``
  rows of results/<device>/*-ceilings.csv and *-headline.csv: median_s / count); a device of the same
  architecture stands in for one without (labelled); else ``PUBLIC_LAUNCH_S`` (≈ 1.3 µs per kernel in a CUDA
  graph on an H200, /work/shared/CONTEXT.md), labelled as such.

Kernels per layer (as vLLM / TensorRT-LLM run a Llama layer): 2 RMSNorms, fused QKV GEMM, RoPE + KV-cache write,
attention, o GEMM, fused gate/up GEMM, SiLU·mul, down GEMM = 9; per step: embedding, final norm, LM head and
sampling = 4. A term whose time comes from a measured fit already carries its launch (the fit's t0), so its
kernels are not charged again.
"""

from __future__ import annotations

from dataclasses import dataclass

from analysis.devices import Datasheet
from kernels.models import Model

ALLREDUCE_LATENCY_S = 8e-6  # per call on NVLink 4 and 5 (no public NVLink-5 figure: assumed the same)
ALLREDUCE_RANGE_S = (4e-6, 16e-6)  # the spread quoted beside every result that uses it
ALLREDUCE_SOURCE = ("predicted: 8 µs per call assumed (NCCL on HGX 8×H100: github.com/NVIDIA/nccl/issues/1259; "
                    "4–16 µs brackets it)")
PUBLIC_LAUNCH_S = 1.3e-6
PUBLIC_LAUNCH_SOURCE = "predicted: 1.3 µs per kernel in a CUDA graph (public H200 measurement, CONTEXT.md)"
# serving-engine kernels: (per layer, with a modelled time) + (per layer, not modelled) ; per step likewise
GEMMS_PER_LAYER = 4  # fused QKV, o, fused gate/up, down
ATTENTION_PER_LAYER = 1
UNMODELLED_PER_LAYER = 4  # 2 RMSNorms, RoPE + cache write, SiLU·mul
LM_HEAD_PER_STEP = 1
UNMODELLED_PER_STEP = 3  # embedding, final norm, sampling
ARCHITECTURES = {"a100-80gb-sxm": "ampere", "h100-sxm": "hopper", "h100-pcie": "hopper", "h200-sxm": "hopper",
                 "b200": "blackwell", "gb200": "blackwell", "b300": "blackwell", "gb300": "blackwell",
                 "l4": "ada", "l40s": "ada", "mi300x": "cdna3", "mi325x": "cdna3"}


@dataclass(frozen=True)
class FixedCosts:
    """Per-call all-reduce latency and per-kernel launch cost of one device, with where each comes from."""

    allreduce_s: float
    launch_s: float
    allreduce_source: str = ALLREDUCE_SOURCE
    launch_source: str = PUBLIC_LAUNCH_SOURCE

    @property
    def label(self) -> str:
        return f"all-reduce latency {self.allreduce_source}; launches {self.launch_source}"


def allreduce_calls(model: Model, tp: int) -> int:
    """All-reduces per decode step: two per layer under TP, none on one GPU."""
    return 2 * model.layers if tp > 1 else 0


def launches(model: Model, projections_predicted: bool, attention_predicted: bool, lm_head_predicted: bool) -> int:
    """Kernels per step charged a launch: the unmodelled ones always, a modelled one when its time is PREDICTED."""
    per_layer = UNMODELLED_PER_LAYER + GEMMS_PER_LAYER * projections_predicted + ATTENTION_PER_LAYER * attention_predicted
    return model.layers * per_layer + UNMODELLED_PER_STEP + LM_HEAD_PER_STEP * lm_head_predicted


def fixed_costs(device: Datasheet, measured_launch: dict[str, tuple[float, str]] | None = None) -> FixedCosts:
    """The device's fixed costs. ``measured_launch`` maps a datasheet key to (seconds per kernel, where measured):
    the device's own figure wins, else one of the same architecture stands in, else the public figure."""
    measured_launch = measured_launch or {}
    if device.key in measured_launch:
        seconds, where = measured_launch[device.key]
        launch = (seconds, f"measured: {seconds * 1e6:.3g} µs per kernel, CUDA graph ({where})")
    else:
        family = ARCHITECTURES.get(device.key)
        sibling = next((k for k in sorted(measured_launch) if family and ARCHITECTURES.get(k) == family), None)
        if sibling is not None:
            seconds, where = measured_launch[sibling]
            launch = (seconds, f"measured on {sibling} ({where}): {seconds * 1e6:.3g} µs per kernel, standing in "
                               f"for the same {family} architecture")
        else:
            launch = (PUBLIC_LAUNCH_S, PUBLIC_LAUNCH_SOURCE)
    allreduce = ALLREDUCE_LATENCY_S if device.nvlink_generation else float("nan")
    source = ALLREDUCE_SOURCE if device.nvlink_generation else "no NVLink figure: not guessed"
    return FixedCosts(allreduce, launch[0], source, launch[1])
