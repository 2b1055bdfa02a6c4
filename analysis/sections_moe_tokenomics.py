"""The MoE part of tokenomics.md: what fits (DeepSeek-V3 FP8 on 8×H100 vs 8×H200, gpt-oss-120b on one H100 vs one
H200), the claim about it judged, throughput vs interactivity with the KV cap, figure and CSV. All PREDICTED."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis import moe_tokenomics as mt
from analysis import plots, plots_theory
from analysis.devices import get
from analysis.markdown import MISSING, exact, number, quantity, table
from analysis.sections import figure
from analysis.tokenomics import HEADROOM, SCENARIOS

CSV = "tokenomics-moe.csv"
CLAIM = ("DeepSeek-V3 in FP8 is ≈ 671 GB: it does not fit 8×H100 with room for a KV cache; it fits 8×H200",
         "issue 23")


def _fit_rows() -> list[list]:
    rows = []
    for preset in mt.PRESETS:
        for key in mt.DEVICES:
            device = get(key)
            free = mt.free_bytes(preset, device)
            even = device.capacity_bytes * (1 - HEADROOM) - mt.weight_bytes(preset) / preset.gpus
            caps = [mt.max_batch(preset, device, s.context) for s in SCENARIOS]
            rows.append([preset.label, f"{preset.gpus} × {device.name}", quantity(mt.weight_bytes(preset), "B"),
                         quantity(mt.weight_bytes_per_gpu(preset), "B"),
                         quantity(device.capacity_bytes * (1 - HEADROOM), "B"),
                         quantity(free, "B") if free > 0 else f"none (short by {quantity(-free, 'B')})",
                         quantity(even, "B") if even > 0 else f"none (short by {quantity(-even, 'B')})",
                         *[exact(c) if c else "does not fit" for c in caps]])
    return rows


def _verdict() -> str:
    preset = mt.DEEPSEEK_FP8
    h100, h200 = get("h100-sxm"), get("h200-sxm")
    total = mt.weight_bytes(preset)
    usable = preset.gpus * h100.capacity_bytes * (1 - HEADROOM)
    raw = preset.gpus * h100.capacity_bytes
    free_h200 = mt.free_bytes(preset, h200)
    cap = mt.max_batch(preset, h200, SCENARIOS[0].context)
    holds = total > usable and free_h200 > 0
    return (f"**{'Holds' if holds else 'Does not hold'}** (PREDICTED): the FP8 checkpoint's weights come to "
            f"{quantity(total, 'B')} with their block scales. Eight H100s hold {quantity(raw, 'B')} in all, "
            f"{quantity(usable, 'B')} at {1 - HEADROOM:.0%} utilisation: "
            + ("the weights alone do not fit even split evenly over all 8, so there is no room for any KV cache. "
               if total > usable else "the weights fit. ")
            + f"On 8 H200s each GPU keeps {quantity(free_h200, 'B')} for the cache with the experts split and the rest "
            f"replicated: {exact(cap)} sequences of the 1k/19k scenario in all. (MTP weights, 14 B parameters in the "
            "released 685 B, are left out, as the claim's 671 B does.)\n")


def _ratio_rows(frame: pd.DataFrame) -> list[list]:
    rows = []
    fixed = frame[frame["costs"] == mt.FIXED]
    for (preset, scenario), group in fixed.groupby(["preset", "scenario"], sort=False):
        sides = {k: group[group["device"] == k].sort_values("batch") for k in mt.DEVICES}
        if any(s.empty for s in sides.values()):
            missing = [get(k).name for k, s in sides.items() if s.empty]
            rows.append([preset, scenario, f"does not fit on {', '.join(missing)}", MISSING,
                         " / ".join(exact(s["batch"].max()) if not s.empty else "0" for s in sides.values()),
                         MISSING])
            continue
        slow, fast = sides["h100-sxm"], sides["h200-sxm"]
        b1 = fast.iloc[0]["interactivity"] / slow.iloc[0]["interactivity"]
        at_cap = fast.iloc[-1]["throughput_per_gpu"] / slow.iloc[-1]["throughput_per_gpu"]
        rows.append([preset, scenario, f"{number(b1)}×", f"{number(slow.iloc[0]['interactivity'])} / "
                     f"{number(fast.iloc[0]['interactivity'])}", f"{exact(slow['batch'].max())} / "
                     f"{exact(fast['batch'].max())}", f"{number(at_cap)}×"])
    return rows


def _term_rows(frame: pd.DataFrame) -> list[list]:
    rows = []
    chosen = frame[(frame["costs"] == mt.FIXED) & (frame["scenario"] == SCENARIOS[1].name)]
    for (preset, device), group in chosen.groupby(["preset", "device_name"], sort=False):
        group = group.sort_values("batch")
        for r in (group.iloc[0], group.iloc[len(group) // 2], group.iloc[-1]):
            rows.append([preset, device, int(r["batch"]), number(r["experts_touched"]), number(r["step_ms"]),
                         number(r["experts_ms"]), number(r["other_ms"]), number(r["attention_ms"]),
                         number(r["comm_ms"]), number(r["fixed_ms"]), number(r["interactivity"]),
                         number(r["throughput_per_gpu"])])
    return rows


def economics_section(out_dir: Path) -> str:
    """The MoE section of tokenomics.md, its figure and CSV."""
    frame = mt.curves()
    frame.to_csv(out_dir / CSV, index=False)
    digest = str(int(pd.util.hash_pandas_object(frame.astype(str), index=False).sum()))
    image = figure(out_dir / "tokenomics-moe.png", lambda p: plots.cached(
        f"tokenomics moe {digest}", p, lambda q: plots_theory.tokenomics(
            frame, q, "MoE decode economics, PREDICTED: batch 1 (right) to the KV cap (★, left); fixed costs = "
                      "launches and all-to-all latency", fixed_costs="all-to-all\nlatency, launches")),
        "MoE throughput per GPU vs interactivity")
    sample = mt.PRESETS[0].model
    return "\n".join([
        "## Mixture-of-experts models (PREDICTED)\n",
        "A decode step of an MoE model reads, per MoE layer, only the experts the batch's tokens are routed to — "
        "(E/G)·(1 − (1 − k/E)^B) of a GPU's E/G experts in expectation (uniform routing) — plus attention over the "
        "cache and the shared and dense parts (analysis/moe_tokenomics.py). Layout: routed experts split over the G "
        "GPUs (expert parallelism); attention, shared experts, dense layers and embeddings replicated, each GPU "
        "running attention for its own B/G sequences and holding their cache (DeepSeek's deployment, SGLang's DP "
        "attention); a dispatch and a combine all-to-all per MoE layer over NVLink (datasheet). Every term is the "
        "datasheet roofline; nothing is measured. The KV cache is bf16: "
        f"{sample.name} caches its {sample.mla_kv_width}-value MLA latent per token per layer; gpt-oss caches "
        "2·8·64 values per layer, its alternate sliding-window layers at most 128 tokens. The non-routed active "
        "weights are the published active parameters less k routed experts per MoE layer (they include the LM "
        "head and the embedding matrix, whose one-row lookups read far less: an overcount of ≈ 5 %).\n",
        "### The claim\n",
        table(["claim", "source", "model (PREDICTED)"], [[CLAIM[0], CLAIM[1], _verdict()]]),
        "### What fits\n",
        table(["preset", "GPUs", "weights", "weights per GPU (experts split, rest replicated)",
               f"usable per GPU ({1 - HEADROOM:.0%})", "left for KV per GPU", "left if every weight were split "
               "evenly", *[f"max batch, {s.name}" for s in SCENARIOS]], _fit_rows()),
        "### H200 over H100\n",
        table(["preset", "scenario", "interactivity H200 / H100 at batch 1", "tokens/s per user at batch 1 (H100 / "
               "H200)", "max batch H100 / H200", "throughput per GPU at each max batch"], _ratio_rows(frame)),
        "Equal batch: the step is memory-bound (expert and attention weights), so interactivity tracks bandwidth "
        "(4.8 / 3.35 = 1.43×) less the fixed costs; at each GPU's KV cap the H200's larger free memory holds a "
        "larger batch, and a larger batch touches more experts per step — the MoE step grows with the batch far "
        "faster than a dense model's until every expert is read.\n",
        image,
        f"Every step with its terms: [{CSV}]({CSV}).\n",
        f"### Terms of the step ({SCENARIOS[1].name}, with fixed costs; ms)\n",
        table(["preset", "device", "batch", "experts read per layer per GPU", "step", "routed experts",
               "other weights", "attention", "all-to-all", "fixed costs", "tokens/s per user", "tokens/s per GPU"],
              _term_rows(frame))])
