"""The source articles' H100-vs-H200 claims and MLPerf's per-GPU ratios beside the decode-step model.

Claims (see /work/shared/CONTEXT.md):
* "43 % more interactivity at every batch size" going from H100 to H200 (= 4.8 / 3.35 TB/s);
* "about 3× lower cost": H200's 141 GB holds a larger KV cache, so a larger batch fits (their
  simulation: Llama-3.1-405B FP8 on 8 GPUs, 1k input / 19k output tokens);
* MLPerf Inference v4.1, Llama-2-70B, tokens/s per GPU: H200 3,913 offline / 3,654 server vs H100
  3,066 / 2,701 (1.28× / 1.35×); v5.0 with newer software on both: 4,374 vs 3,913 offline (1.12×). Its scenario:
  OpenOrca (analysis/tokenomics.py SCENARIOS) and, in the server scenario, TTFT ≤ 2 s and TPOT ≤ 200 ms (p99;
  loadgen/mlperf.conf of github.com/mlcommons/inference: llama2-70b.Server.ttft_latency = 2000,
  tpot_latency = 200).

Every ratio comes twice: the model's upper bound (no fixed costs) and the model with the per-step fixed costs
(all-reduce latency, launches: analysis/tokenomics_overheads.py). The verdict table is analysis/tokenomics_verdict.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pandas as pd

from analysis.devices import Datasheet, get
from analysis.tokenomics import (PRESETS, SCENARIOS, Kernels, Preset, Scenario, batch_at_interactivity, curve,
                                 decode_step, in_window, interactivity, max_batch, supports, throughput_per_gpu)
from analysis.tokenomics_overheads import FixedCosts, fixed_costs

BANDWIDTH_RATIO_H200_H100 = 4.8 / 3.35
MLPERF_V41 = {"offline": 3913 / 3066, "server": 3654 / 2701}
MLPERF_V50_OFFLINE = 4374 / 3913
MLPERF_TTFT_S, MLPERF_TPOT_S = 2.0, 0.2  # llama2-70b server scenario (loadgen/mlperf.conf)
UPPER, FIXED = "upper bound (no fixed costs)", "with fixed costs"
ARTICLE_COST_RATIO = 3.0  # "about 3× lower cost"
TOKENOMICS_DEVICES = ("h100-sxm", "h200-sxm", "b200", "gb300")
# the capacity argument (issue 24 §4): which presets fit one 8-GPU node of each, and the batch its memory allows;
# AMD parts stay out of the curves until an Infinity Fabric all-reduce latency is sourced (fixed costs: not guessed)
CAPACITY_DEVICES = TOKENOMICS_DEVICES + ("b300", "mi300x", "mi325x", "mi355x")
PAIR = ("h100-sxm", "h200-sxm")
PREDICTED_BASIS = "predicted (datasheet)"


@dataclass(frozen=True, eq=False)
class Basis:
    """One way to time a device's kernels: the datasheet, or a measured device's fits."""

    device: Datasheet
    label: str  # PREDICTED_BASIS or "measured: <slug>"
    kernels_for: Callable[[Preset], Kernels] | None = None  # None: the datasheet roofline
    fixed: FixedCosts | None = None  # None: the device's fixed costs with no measured launch figure

    def kernels(self, preset: Preset) -> Kernels | None:
        return self.kernels_for(preset) if self.kernels_for else None

    def costs(self, which: str) -> FixedCosts | None:
        """The fixed costs a curve adds: none for the upper bound."""
        return None if which == UPPER else (self.fixed or fixed_costs(self.device))


def predicted_bases(keys=TOKENOMICS_DEVICES, measured_launch: dict[str, tuple[float, str]] | None = None
                    ) -> list[Basis]:
    """Datasheet bases; ``measured_launch`` (datasheet key -> (seconds per kernel, where)) sets their launch cost."""
    return [Basis(get(k), PREDICTED_BASIS, fixed=fixed_costs(get(k), measured_launch)) for k in keys]


def curves(bases: list[Basis], presets=PRESETS, scenarios=SCENARIOS, costs=(UPPER, FIXED)) -> pd.DataFrame:
    """Every decode step from batch 1 to the memory cap, per preset, scenario, basis and costs (the CSV's rows).
    Devices without tensor cores for a preset's precision (FP4 on Hopper) are left out."""
    rows = []
    for preset in presets:
        for scenario in scenarios:
            if not in_window(preset, scenario):
                continue
            for basis in bases:
                if not supports(preset, basis.device):
                    continue
                cap = max_batch(preset, basis.device, scenario.context)
                for which in costs:
                    for step in curve(preset, basis.device, scenario, basis.kernels(preset), basis.costs(which)):
                        rows.append(dict(
                            preset=preset.label, model=preset.model.name, precision=preset.precision.name,
                            tp=preset.tp, scenario=scenario.name, context=scenario.context, device=basis.device.key,
                            device_name=basis.device.name, basis=basis.label, costs=which, batch=step.batch,
                            max_batch=cap, step_ms=step.step_s * 1e3, projections_ms=step.projections_s * 1e3,
                            attention_ms=step.attention_s * 1e3, allreduce_ms=step.allreduce_s * 1e3,
                            lm_head_ms=step.lm_head_s * 1e3, fixed_ms=step.fixed_s * 1e3, launches=step.launches,
                            bound_ms=step.bound_s * 1e3, interactivity=interactivity(step),
                            throughput_per_gpu=throughput_per_gpu(step, preset.tp), sources="; ".join(step.sources)))
    return pd.DataFrame(rows)


def caps_table(presets=PRESETS, scenarios=SCENARIOS, keys=CAPACITY_DEVICES) -> pd.DataFrame:
    """Max batch per preset × scenario × device (0 where the weights alone do not fit; ``supported`` False where
    the device has no tensor cores for the precision)."""
    rows = []
    for preset in presets:
        for scenario in scenarios:
            if in_window(preset, scenario):
                rows += [dict(preset=preset.label, scenario=scenario.name, device=k, supported=supports(preset, get(k)),
                              max_batch=max_batch(preset, get(k), scenario.context)) for k in keys]
    return pd.DataFrame(rows)


def _side(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    return frame[frame["device"] == key].set_index("batch")


def pair_ratios(frame: pd.DataFrame, slow: str = PAIR[0], fast: str = PAIR[1]) -> dict[str, float]:
    """For one preset × scenario × basis pair: interactivity ratio at equal batch (min, max over the
    batches both fit) and throughput-per-GPU ratio with each device at its own max batch."""
    a, b = _side(frame, slow), _side(frame, fast)
    nan = float("nan")
    if a.empty or b.empty:
        return dict(equal_min=nan, equal_max=nan, equal_b1=nan, at_cap=nan, cap_slow=nan, cap_fast=nan)
    common = a.index.intersection(b.index)
    equal = (b.loc[common, "interactivity"] / a.loc[common, "interactivity"]) if len(common) else pd.Series(dtype=float)
    top_a, top_b = a.loc[a.index.max()], b.loc[b.index.max()]
    return dict(equal_min=equal.min() if len(equal) else nan, equal_max=equal.max() if len(equal) else nan,
                equal_b1=equal.get(1, nan), at_cap=top_b["throughput_per_gpu"] / top_a["throughput_per_gpu"],
                cap_slow=int(a.index.max()), cap_fast=int(b.index.max()))


def equal_interactivity(preset: Preset, scenario: Scenario, slow: Basis, fast: Basis, which: str = UPPER) -> float:
    """Throughput per GPU, fast over slow, at the slow GPU's interactivity at its memory cap: the fast GPU runs the
    largest batch that is still as fast per user (NaN when it cannot be)."""
    cap = max_batch(preset, slow.device, scenario.context)
    if cap < 1 or max_batch(preset, fast.device, scenario.context) < 1:
        return float("nan")
    top = decode_step(preset, slow.device, cap, scenario.context, slow.kernels(preset), slow.costs(which))
    same = batch_at_interactivity(preset, fast.device, scenario, interactivity(top), fast.kernels(preset),
                                  fast.costs(which))
    if same is None:
        return float("nan")
    return throughput_per_gpu(same, preset.tp) / throughput_per_gpu(top, preset.tp)


def claims(frame: pd.DataFrame, bases: list[Basis] | None = None) -> pd.DataFrame:
    """Per preset × scenario × basis × costs: the ratios, H200 over H100, beside what the sources claim (the
    equal-interactivity ratio needs ``bases``; NaN without them)."""
    rows = []
    by_label = {(b.device.key, b.label): b for b in bases or []}
    known = frame[["device", "basis"]].drop_duplicates()
    pairs = [(PREDICTED_BASIS, PREDICTED_BASIS)]
    measured = {d: b for d, b in known.itertuples(index=False) if b != PREDICTED_BASIS}
    if PAIR[0] in measured and PAIR[1] in measured:
        pairs.append((measured[PAIR[0]], measured[PAIR[1]]))
    presets = {p.label: p for p in PRESETS}
    scenarios = {s.name: s for s in SCENARIOS}
    costs = frame["costs"] if "costs" in frame else pd.Series(UPPER, index=frame.index)
    for (preset, scenario, which), group in frame.assign(costs=costs).groupby(["preset", "scenario", "costs"],
                                                                                sort=False):
        for slow_basis, fast_basis in pairs:
            chosen = group[((group["device"] == PAIR[0]) & (group["basis"] == slow_basis))
                           | ((group["device"] == PAIR[1]) & (group["basis"] == fast_basis))]
            if chosen.empty:
                continue
            ratios = pair_ratios(chosen)
            slow, fast = by_label.get((PAIR[0], slow_basis)), by_label.get((PAIR[1], fast_basis))
            equal = equal_interactivity(presets[preset], scenarios[scenario], slow, fast, which) \
                if slow and fast and preset in presets and scenario in scenarios else float("nan")
            label = "predicted (datasheets)" if slow_basis == PREDICTED_BASIS else \
                f"measured terms ({slow_basis.split(': ')[-1]} vs {fast_basis.split(': ')[-1]})"
            rows.append(dict(preset=preset, scenario=scenario, basis=f"{label}, {which}", costs=which, **ratios,
                             at_equal=equal))
    return pd.DataFrame(rows)


def mlperf_preset() -> Preset:
    return next(p for p in PRESETS if p.model.name == "llama2-70b")


def articles_scenario() -> tuple[Preset, Scenario]:
    return next(p for p in PRESETS if p.model.name == "llama3.1-405b"), SCENARIOS[0]


def mlperf_scenario() -> Scenario:
    return next(s for s in SCENARIOS if s.name.startswith("MLPerf"))
