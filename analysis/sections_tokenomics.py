"""The tokenomics page: decode-step model per preset, memory caps, the H100-vs-H200 claims, figure and CSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis import claims, plots, plots_theory, sections_moe_tokenomics, tokenomics_verdict
from analysis.ceilings import best
from analysis.markdown import MISSING, exact, number, percent, quantity, table
from analysis.sections import Device, figure
from analysis.tokenomics import (BF16, HEADROOM, PRESETS, SCENARIOS, FittedKernels, Preset, RooflineKernels,
                                 decode_step, kv_bytes_per_token, parameters, shard_shapes, weight_bytes_per_gpu)
from analysis.tokenomics_overheads import ALLREDUCE_LATENCY_S, fixed_costs

PAGE = "tokenomics.md"
CSV = "tokenomics.csv"
ARTICLE_TABLE = ((1, 4.0, 0.05), (8, 32.0, 0.30), (32, 128.0, 0.65), (128, 512.0, 0.85))  # batch, FLOP/B, util.


def measured_launch(devices: list[Device]) -> dict[str, tuple[float, str]]:
    """Datasheet key -> (seconds per kernel, where): each matched device's measured CUDA-graph launch ceiling."""
    found = {}
    for device in devices:
        if device.datasheet is None:
            continue
        seconds = best(device.roofs.table, "launch_graph_s")
        if np.isfinite(seconds):
            found[device.datasheet.key] = (seconds, f"launch ceiling of results/{device.slug}")
    return found


def measured_bases(devices: list[Device]) -> list[claims.Basis]:
    """A basis per timed device matched to a datasheet (its memory and NVLink), with its fitted kernels."""
    out = []
    launch = measured_launch(devices)
    for device in devices:
        if device.datasheet is None or not device.timed or not device.pooled:
            continue

        def kernels_for(preset: Preset, device: Device = device) -> FittedKernels:
            return FittedKernels(tuple(device.pooled), device.roofs.roof,
                                 RooflineKernels(device.datasheet, preset.precision))

        out.append(claims.Basis(device.datasheet, f"measured: {device.slug}", kernels_for,
                                fixed_costs(device.datasheet, launch)))
    return out


def _assumptions() -> list[list]:
    rows = []
    for preset in PRESETS:
        model = preset.model
        shards = shard_shapes(model, preset.tp)
        rows.append([preset.label, f"{parameters(model) / 1e9:.1f} B", preset.precision.name, preset.tp,
                     quantity(weight_bytes_per_gpu(preset), "B"), quantity(kv_bytes_per_token(preset), "B"),
                     " ".join(f"{k} {n}×{kk}" for k, (n, kk) in shards.items() if k in ("q", "k", "o", "down"))])
    return rows


def _claims_rows(table: pd.DataFrame) -> list[list]:
    rows = []
    for r in table.itertuples():
        equal = f"{number(r.equal_b1)}× at batch 1; {number(r.equal_min)}–{number(r.equal_max)}× up to batch " \
                f"{exact(r.cap_slow)}" if np.isfinite(r.equal_min) else MISSING
        rows.append([r.preset, r.scenario, r.basis, equal, f"{exact(r.cap_slow)} / {exact(r.cap_fast)}",
                     f"{number(r.at_cap)}×", f"{number(r.at_equal)}×" if np.isfinite(r.at_equal) else MISSING])
    return rows


def _breakdown(frame: pd.DataFrame) -> list[list]:
    preset, scenario = claims.articles_scenario()
    rows = []
    chosen = frame[(frame["preset"] == preset.label) & (frame["scenario"] == scenario.name)
                   & (frame["costs"] == claims.FIXED)]
    for (device, basis), group in chosen.groupby(["device", "basis"], sort=False):
        for r in (group.iloc[0], group.iloc[-1]):
            rows.append([r["device_name"], basis, int(r["batch"]), number(r["step_ms"]), number(r["projections_ms"]),
                         number(r["attention_ms"]), number(r["allreduce_ms"]), number(r["lm_head_ms"]),
                         f"{number(r['fixed_ms'])} ({int(r['launches'])} launches)", number(r["bound_ms"]),
                         number(r["interactivity"]), number(r["throughput_per_gpu"]), r["sources"]])
    return rows


def _article_rows(bases: list[claims.Basis]) -> list[list]:
    """The articles' 70B-class fp16 layer at batch b: predicted (H100 datasheet) and measured utilisation of the
    seven projections against the device's tensor roof."""
    from analysis.devices import get
    from kernels.models import LLAMA3_70B

    preset = Preset(LLAMA3_70B, BF16, 1)
    sheet = get("h100-sxm")
    rows = []
    for batch, intensity, utilisation in ARTICLE_TABLE:
        flops = sum(2.0 * batch * n * k for n, k in LLAMA3_70B.projections().values())
        predicted_s = decode_step(preset, sheet, batch, 1.0).projections_s / LLAMA3_70B.layers
        cells = [batch, number(intensity), percent(utilisation), number(float(batch)),
                 percent(flops / predicted_s / sheet.tensor("bf16"), 1)]
        measured = []
        for basis in bases:
            if basis.kernels_for is None:
                continue
            step = decode_step(preset, basis.device, batch, 1.0, basis.kernels(preset))
            if step.measured:
                peak = basis.device.tensor("bf16")
                measured.append(f"{basis.label.split(': ')[-1]}: "
                                f"{percent(flops / (step.projections_s / LLAMA3_70B.layers) / peak, 1)}")
        rows.append(cells + ["; ".join(measured) or "owed (not measured)"])
    return rows


def _bound_check(frame: pd.DataFrame) -> str:
    """Say how many estimates lie below their datasheet bound (none should: each would be a bug or a bad fit)."""
    below = frame[frame["step_ms"] < frame["bound_ms"] * (1 - 1e-9)]
    if below.empty:
        return f"none of the {len(frame)} estimates is below it."
    listed = ", ".join(f"{r.preset} {r.scenario} {r.device_name} ({r.basis}) batch {r.batch}"
                       for r in below.head(5).itertuples())
    return f"**{len(below)} of {len(frame)} estimates are below it — check their fits**: {listed}."


def _cap_rows() -> list[list]:
    caps = claims.caps_table()
    rows = []
    for (preset, scenario), group in caps.groupby(["preset", "scenario"], sort=False):
        rows.append([preset, scenario, *[(exact(v) if v else "does not fit") if ok else "no tensor cores for it"
                                         for v, ok in zip(group["max_batch"], group["supported"])]])
    return rows


def tokenomics_page(devices: list[Device], out_dir: Path) -> tuple[Path, pd.DataFrame]:
    """``tokenomics.md``, its figure and ``tokenomics.csv``; returns the page and the claims table."""
    measured = measured_bases(devices)
    launch = measured_launch(devices)
    bases = claims.predicted_bases(measured_launch=launch) + measured
    frame = claims.curves(bases)
    frame.to_csv(out_dir / CSV, index=False)
    digest = str(int(pd.util.hash_pandas_object(frame.astype(str), index=False).sum()))
    image = figure(out_dir / "tokenomics.png", lambda p: plots.cached(
        f"tokenomics {digest}", p, lambda q: plots_theory.tokenomics(frame, q)), "throughput per GPU vs interactivity")
    claims_table = claims.claims(frame, bases)
    verdict = tokenomics_verdict.verdicts(launch)
    h100, h200 = "H100 SXM", "H200 SXM"
    sheet_h100 = claims.get("h100-sxm")
    scenarios = "; ".join(f"{s.name}: mean context {number(s.context)} tokens" for s in SCENARIOS)
    out = ["# Decode economics: the articles' H100-vs-H200 claims, tested\n",
           "A decode-step model per model, device, precision, tensor-parallel degree (TP), batch and context "
           "(analysis/tokenomics.py). Each term says where it comes from: **PREDICTED** = the device's datasheet "
           "roofline or an assumed figure; **MEASURED** = the device's own fitted kernels (pooled fits of gemv/gemm "
           "and attn_decode, fastest impl) or its measured launch ceiling. Inter-GPU communication under TP is "
           "**never measured here** (one GPU): two ring all-reduces per layer move their bytes at the device "
           "table's NVLink bandwidth (half the bidirectional figure per direction). "
           + (f"Measured kernel terms from: {', '.join(b.label.split(': ')[-1] for b in measured)}."
              if measured else "No GPU results yet: every number on this page is PREDICTED.") + "\n",
           "Every result comes twice. The **upper bound** leaves out every fixed cost: it is as fast as the model "
           "allows. **With fixed costs** adds, per step, each all-reduce's per-call latency "
           f"({ALLREDUCE_LATENCY_S * 1e6:.0f} µs assumed, PREDICTED: 252 calls for Llama-3.1-405B at TP 8) and a "
           "launch per kernel in a CUDA graph (MEASURED from the device's launch ceiling where it has one, "
           "else labelled): time that is the same on GPUs of one NVLink generation and does not shrink with "
           "bandwidth (analysis/tokenomics_overheads.py).\n",
           "## Verdict: the claims against the model and MLPerf\n",
           "Model columns are PREDICTED (model); the MLPerf column is MEASURED by MLPerf's submitters. A claim holds "
           f"when the model with fixed costs reaches it within {tokenomics_verdict.TOLERANCE:.0%}.\n",
           table(list(tokenomics_verdict.COLUMNS), verdict.values.tolist()),
           "## Presets\n",
           table(["preset", "parameters", "precision", "TP", "weights per GPU", "KV per token per GPU",
                  "per-GPU shards (N×K)"], _assumptions()),
           f"Memory cap: usable = the bytes the GPU holds × {1 - HEADROOM:.0%} (vLLM's default "
           "gpu_memory_utilization; the rest for activations, the CUDA context and fragmentation); max batch = "
           "(usable − weights per GPU) / (KV per token × context). The bytes a GPU holds are the driver's total, not "
           f"the marketed figure: the \"80 GB\" {h100} holds {sheet_h100.capacity_bytes / 1e9:.1f}e9 B "
           f"({sheet_h100.source('capacity_bytes')}). Scenarios — {scenarios}. MLPerf's is its llama2-70b dataset "
           "(OpenOrca prompts capped at 1,024 tokens, the cap standing in for the unpublished mean; 294.45 output "
           "tokens per sample: github.com/mlcommons/inference language/llama2-70b/README.md), with its server "
           "limits TTFT ≤ 2 s and TPOT ≤ 200 ms (loadgen/mlperf.conf). Llama-3-8B/70B use the Llama-3.1 window "
           "(same dimensions, 128k); Llama-2-70B's 4k window rules out the 1k/19k scenario. The FP4 preset "
           "(NVFP4: 0.5625 B per weight with its scales) runs only where the datasheet gives FP4 tensor cores.\n",
           "## Memory caps: largest batch that fits (PREDICTED from the bytes each GPU holds)\n",
           table(["preset", "scenario", *[claims.get(k).name for k in claims.CAPACITY_DEVICES]], _cap_rows()),
           "## H200 over H100: the ratios\n",
           "The articles: \"43 % more interactivity at every batch size\" (4.8 / 3.35 = 1.43×) and \"about 3× lower "
           "cost\" from the larger batch H200's 141 GB holds (Llama-3.1-405B FP8 on 8 GPUs, 1k in / 19k out). "
           f"MLPerf Inference v4.1, Llama-2-70B, tokens/s per GPU (MEASURED): {number(claims.MLPERF_V41['offline'])}× "
           f"offline, {number(claims.MLPERF_V41['server'])}× server (v5.0 with newer software on both: "
           f"{number(claims.MLPERF_V50_OFFLINE)}× offline).\n",
           table(["preset", "scenario", "basis", f"interactivity {h200} / {h100} at equal batch",
                  f"max batch {h100} / {h200}", "throughput per GPU at each max batch",
                  f"throughput per GPU at equal interactivity (the {h100}'s at its cap)"], _claims_rows(claims_table)),
           "Equal batch: memory-bound terms scale with bandwidth (1.43×), but compute-bound terms, NVLink and the fixed "
           "costs do not, so the ratio can only fall below 1.43×. At each device's max batch the ratio adds the larger "
           "batch H200's memory allows, each GPU at its own (slower) interactivity; at equal interactivity the H200 "
           "runs the largest batch that is still as fast per user as the H100 at its cap. Compare both with the "
           "articles' ~3× (cost per token at equal GPU-hour price) and with MLPerf's measured 1.28–1.35×.\n",
           image,
           f"Every step of every curve, with its terms, fixed costs and their sources: [{CSV}]({CSV}).\n",
           "### Llama-3.1-405B FP8 TP8, 1k in / 19k out: terms at batch 1 and at the memory cap, with fixed costs "
           "(ms)\n",
           table(["device", "basis", "batch", "step", "projections", "attention", "all-reduce", "LM head",
                  "fixed costs", "datasheet bound", "tokens/s per user", "tokens/s per GPU", "sources"],
                 _breakdown(frame)),
           "The datasheet bound is the same work at the datasheet roofline (and NVLink at its datasheet figure), "
           "without fixed costs: " + _bound_check(frame) + "\n",
           "## The articles' batch table (70B-class layer, fp16) against the roofline\n",
           table(["batch", "article FLOP/B", "article utilisation", "fp16 weights FLOP/B (exact)",
                  "PREDICTED utilisation, H100 SXM datasheet", "MEASURED utilisation (projections)"],
                 _article_rows(bases)),
           "A fp16 GEMV does 2 FLOPs per 2-byte weight, so batch b has ≈ b FLOP/B, a quarter of the articles' "
           "figure; on the roofline a memory-bound layer's utilisation is b × bandwidth / peak.\n",
           sections_moe_tokenomics.economics_section(out_dir)]
    path = out_dir / PAGE
    path.write_text("\n".join(out))
    return path, claims_table
