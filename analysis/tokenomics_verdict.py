"""The verdict table: each claim about decode economics beside the model's upper bound (no fixed costs), the
model with the per-step fixed costs, MLPerf's measurement, and whether the claim holds — said plainly.

Every model number is PREDICTED (datasheet roofline, analysis/tokenomics.py; fixed costs from
analysis/tokenomics_overheads.py, the launch cost measured where a device has it); MLPerf's are MEASURED by
its submitters. Sources of the claims: /work/shared/CONTEXT.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from analysis import claims as cl
from analysis.devices import get
from analysis.tokenomics import (INT4, Preset, Scenario, batch_at_interactivity, decode_step, max_batch,
                                 throughput_per_gpu)
from analysis.tokenomics_overheads import ALLREDUCE_RANGE_S
from kernels.models import LLAMA3_8B

COLUMNS = ("claim", "source", "model upper bound (no fixed costs)", "model with overheads", "MLPerf", "holds?")
TOLERANCE = 0.05  # a predicted ratio within 5 % of the claim counts as reproducing it


@dataclass(frozen=True)
class Claim:
    text: str
    source: str


INTERACTIVITY = Claim("H200 gives 43 % more interactivity (tokens/s per user) than H100 at every batch size",
                      "the articles (= 4.8 / 3.35 TB/s)")
COST = Claim("H200 serves at about 3× lower cost than H100: its 141 GB holds a larger batch",
             "the articles (their simulation: Llama-3.1-405B FP8, 8 GPUs, 1k in / 19k out)")
MLPERF = Claim("MLPerf v4.1 Llama-2-70B: H200 gives 1.28× (offline) – 1.35× (server) the tokens/s per GPU of H100",
               "MLPerf Inference v4.1 results (H200 3,913 / 3,654 vs H100 3,066 / 2,701 tokens/s per GPU)")
INT4_CLAIM = Claim("INT4 weights make decode ≈ 4× faster than fp16, and it stays memory-bound",
                   "the articles")
CLAIMS = (INTERACTIVITY, COST, MLPERF, INT4_CLAIM)
MLPERF_MEASURED = (f"measured: {cl.MLPERF_V41['offline']:.2f}× offline, {cl.MLPERF_V41['server']:.2f}× server per GPU "
                   f"(v4.1, Llama-2-70B); {cl.MLPERF_V50_OFFLINE:.2f}× offline (v5.0, newer software on both)")


def _pair(measured_launch=None) -> tuple[cl.Basis, cl.Basis]:
    slow, fast = cl.predicted_bases(cl.PAIR, measured_launch)
    return slow, fast


def _which(fixed: bool) -> str:
    return cl.FIXED if fixed else cl.UPPER


def throughput_ratios(preset: Preset, scenario: Scenario, fixed: bool, measured_launch=None) -> tuple[float, float]:
    """Throughput per GPU, H200 over H100: each at its memory cap, and at equal interactivity (PREDICTED)."""
    slow, fast = _pair(measured_launch)
    which = _which(fixed)
    tops = []
    for basis in (slow, fast):
        cap = max_batch(preset, basis.device, scenario.context)
        tops.append(decode_step(preset, basis.device, cap, scenario.context, None, basis.costs(which)))
    caps = throughput_per_gpu(tops[1], preset.tp) / throughput_per_gpu(tops[0], preset.tp)
    return caps, cl.equal_interactivity(preset, scenario, slow, fast, which)


def interactivity_ratios(preset: Preset, scenario: Scenario, fixed: bool, measured_launch=None):
    """Tokens/s per user, H200 over H100, at batch 1 and at the H100's memory cap (equal batch; PREDICTED)."""
    slow, fast = _pair(measured_launch)
    which = _which(fixed)
    cap = max_batch(preset, slow.device, scenario.context)
    out = []
    for batch in (1, cap):
        a, b = (decode_step(preset, x.device, batch, scenario.context, None, x.costs(which)) for x in (slow, fast))
        out.append(a.step_s / b.step_s)
    return out[0], out[1], cap


def mlperf_ratios(fixed: bool, measured_launch=None) -> tuple[float, float, tuple[int, int]]:
    """MLPerf's scenario: offline = each GPU at its memory cap; server = the largest batch within the cap whose
    step meets TPOT ≤ 200 ms (TTFT ≤ 2 s needs prefill, which the model leaves out). PREDICTED."""
    preset, scenario = cl.mlperf_preset(), cl.mlperf_scenario()
    slow, fast = _pair(measured_launch)
    which = _which(fixed)
    offline, _ = throughput_ratios(preset, scenario, fixed, measured_launch)
    served = [batch_at_interactivity(preset, x.device, scenario, 1 / cl.MLPERF_TPOT_S, None, x.costs(which))
              for x in (slow, fast)]
    server = throughput_per_gpu(served[1], preset.tp) / throughput_per_gpu(served[0], preset.tp)
    return offline, server, (served[0].batch, served[1].batch)


def int4_speedup(fixed: bool, measured_launch=None) -> tuple[float, float]:
    """Batch-1 decode step, bf16 over int4 weights, Llama-3-8B on one H100 at MLPerf's context (PREDICTED); and the
    int4 GEMV's FLOP per byte."""
    slow, _ = _pair(measured_launch)
    context = cl.mlperf_scenario().context
    steps = [decode_step(Preset(LLAMA3_8B, p, 1), slow.device, 1, context, None, slow.costs(_which(fixed)))
             for p in (cl.PRESETS[-2].precision, INT4)]
    return steps[0].step_s / steps[1].step_s, 2.0 / INT4.weight_bytes


def _x(value: float) -> str:
    return f"{value:.2f}×"


def _holds(predicted: float, claimed: float, what: str) -> str:
    if predicted >= claimed * (1 - TOLERANCE):
        return f"Yes: {what} {_x(predicted)} predicted ≥ the {_x(claimed)} claimed"
    return f"No — lower than claimed: {_x(predicted)} predicted with the fixed costs, not {_x(claimed)}"


def verdicts(measured_launch: dict[str, tuple[float, str]] | None = None) -> pd.DataFrame:
    """One row per claim in ``CLAIMS`` with the columns ``COLUMNS``."""
    preset, scenario = cl.articles_scenario()
    h100 = get(cl.PAIR[0]).name
    cells = {}
    b1, at_cap, cap = interactivity_ratios(preset, scenario, False, measured_launch)
    f1, f_cap, _ = interactivity_ratios(preset, scenario, True, measured_launch)
    low, high = (2 * preset.model.layers * s * 1e3 for s in ALLREDUCE_RANGE_S)
    cells[INTERACTIVITY] = (
        f"predicted: {_x(b1)} at batch 1, {_x(at_cap)} at batch {cap} ({preset.label}, {scenario.name})",
        f"predicted: {_x(f1)} at batch 1, {_x(f_cap)} at batch {cap}; the fixed costs are the same on both GPUs "
        f"(all-reduce latency alone {low:.0f}–{high:.0f} ms per step at 4–16 µs per call)",
        "not measured by MLPerf (it reports tokens/s per GPU, not per user)",
        _holds(f1, cl.BANDWIDTH_RATIO_H200_H100, "at batch 1") + (
            f"; {_x(b1)} is the bandwidth ratio, reached only without fixed costs at batch 1"
            if f1 < cl.BANDWIDTH_RATIO_H200_H100 * (1 - TOLERANCE) else ""))
    caps, equal = throughput_ratios(preset, scenario, False, measured_launch)
    f_caps, f_equal = throughput_ratios(preset, scenario, True, measured_launch)
    batches = " / ".join(str(max_batch(preset, get(k), scenario.context)) for k in cl.PAIR)
    best = max(caps, f_caps)
    cells[COST] = (
        f"predicted: {_x(caps)} throughput per GPU at each memory cap (batch {batches}); {_x(equal)} at equal "
        f"interactivity (the {h100}'s at its cap)",
        f"predicted: {_x(f_caps)} at each memory cap; {_x(f_equal)} at equal interactivity",
        MLPERF_MEASURED,
        _holds(best, cl.ARTICLE_COST_RATIO, "at the memory caps") if best >= cl.ARTICLE_COST_RATIO * (1 - TOLERANCE)
        else f"No — lower than claimed: at most {_x(best)} predicted (each GPU at its memory cap), {_x(f_equal)} at "
             f"equal interactivity with the fixed costs; MLPerf measured 1.28–1.35× per GPU")
    offline, server, served = mlperf_ratios(False, measured_launch)
    f_offline, f_server, f_served = mlperf_ratios(True, measured_launch)
    measured = cl.MLPERF_V41["server"]
    mlperf = cl.mlperf_preset()
    cells[MLPERF] = (
        f"predicted: {_x(offline)} offline (memory caps), {_x(server)} server (TPOT ≤ 200 ms: batch "
        f"{served[0]} / {served[1]}) — {mlperf.label}, {cl.mlperf_scenario().name}",
        f"predicted: {_x(f_offline)} offline, {_x(f_server)} server (batch {f_served[0]} / {f_served[1]})",
        MLPERF_MEASURED,
        f"Measured, so it stands; the model predicts {'more' if f_server > measured else 'less'} "
        f"({_x(f_server)} server vs {_x(measured)} measured): it leaves out prefill (compute-bound, the same on both "
        f"GPUs, so it pulls the measured ratio toward 1) and the TTFT ≤ 2 s limit")
    up, intensity = int4_speedup(False, measured_launch)
    f_up, _ = int4_speedup(True, measured_launch)
    ridge = get(cl.PAIR[0]).ridge
    cells[INT4_CLAIM] = (
        f"predicted: {_x(up)} at batch 1 (Llama-3-8B, one {h100}; int4 with its scales is "
        f"{INT4.weight_bytes:.3f} B per weight)",
        f"predicted: {_x(f_up)} at batch 1",
        "not an MLPerf result; measured kernels at batch 1 on H100: Marlin W4A16 2.17×, torchao int4 1.90× "
        "(CONTEXT.md)",
        (_holds(f_up, 4.0, "at batch 1") if f_up >= 4.0 * (1 - TOLERANCE) else
         f"No — lower than claimed: {_x(f_up)} predicted, ≤ {_x(up)} even on the roofline (scales, KV cache and "
         f"fixed costs do not shrink 4×)")
        + f"; memory-bound: yes ({intensity:.1f} FLOP/B against a {ridge:.0f} FLOP/B knee)")
    return pd.DataFrame([[c.text, c.source, *cells[c]] for c in CLAIMS], columns=list(COLUMNS))
