"""The tokenomics page: decode-step model per preset, memory caps, the H100-vs-H200 claims, figure and CSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis import claims, plots, plots_theory
from analysis.markdown import MISSING, exact, number, percent, quantity, table
from analysis.sections import Device, figure
from analysis.tokenomics import (BF16, HEADROOM, PRESETS, FittedKernels, Preset, RooflineKernels,
                                 decode_step, kv_bytes_per_token, parameters, shard_shapes, weight_bytes_per_gpu)

PAGE = "tokenomics.md"
CSV = "tokenomics.csv"
ARTICLE_TABLE = ((1, 4.0, 0.05), (8, 32.0, 0.30), (32, 128.0, 0.65), (128, 512.0, 0.85))  # batch, FLOP/B, util.


def measured_bases(devices: list[Device]) -> list[claims.Basis]:
    """A basis per timed device matched to a datasheet (its memory and NVLink), with its fitted kernels."""
    out = []
    for device in devices:
        if device.datasheet is None or not device.timed or not device.pooled:
            continue

        def kernels_for(preset: Preset, device: Device = device) -> FittedKernels:
            return FittedKernels(tuple(device.pooled), device.roofs.roof,
                                 RooflineKernels(device.datasheet, preset.precision))

        out.append(claims.Basis(device.datasheet, f"measured: {device.slug}", kernels_for))
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


def _claims_rows(frame: pd.DataFrame) -> list[list]:
    rows = []
    for r in claims.claims(frame).itertuples():
        equal = f"{number(r.equal_b1)}× at batch 1; {number(r.equal_min)}–{number(r.equal_max)}× up to batch " \
                f"{exact(r.cap_slow)}" if np.isfinite(r.equal_min) else MISSING
        rows.append([r.preset, r.scenario, r.basis, equal, f"{exact(r.cap_slow)} / {exact(r.cap_fast)}",
                     f"{number(r.at_cap)}×"])
    return rows


def _breakdown(frame: pd.DataFrame) -> list[list]:
    preset, scenario = claims.articles_scenario()
    rows = []
    chosen = frame[(frame["preset"] == preset.label) & (frame["scenario"] == scenario.name)]
    for (device, basis), group in chosen.groupby(["device", "basis"], sort=False):
        for r in (group.iloc[0], group.iloc[-1]):
            rows.append([r["device_name"], basis, int(r["batch"]), number(r["step_ms"]), number(r["projections_ms"]),
                         number(r["attention_ms"]), number(r["allreduce_ms"]), number(r["lm_head_ms"]),
                         number(r["bound_ms"]), number(r["interactivity"]), number(r["throughput_per_gpu"]),
                         r["sources"]])
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


def tokenomics_page(devices: list[Device], out_dir: Path) -> tuple[Path, pd.DataFrame]:
    """``tokenomics.md``, its figure and ``tokenomics.csv``; returns the page and the claims table."""
    measured = measured_bases(devices)
    bases = claims.predicted_bases() + measured
    frame = claims.curves(bases)
    frame.to_csv(out_dir / CSV, index=False)
    digest = str(int(pd.util.hash_pandas_object(frame.astype(str), index=False).sum()))
    image = figure(out_dir / "tokenomics.png", lambda p: plots.cached(
        f"tokenomics {digest}", p, lambda q: plots_theory.tokenomics(frame, q)), "throughput per GPU vs interactivity")
    caps = claims.caps_table()
    cap_rows = [[p, s, *[exact(v) if v else "does not fit" for v in g["max_batch"]]]
                for (p, s), g in caps.groupby(["preset", "scenario"], sort=False)]
    h100, h200 = "H100 SXM", "H200 SXM"
    out = ["# Decode economics: the articles' H100-vs-H200 claims, checked\n",
           "A decode-step model per model, device, precision, tensor-parallel degree (TP), batch and context "
           "(analysis/tokenomics.py). Each term says where it comes from: **PREDICTED** = the device's datasheet "
           "roofline; **MEASURED** = the device's own fitted kernels (pooled fits of gemv/gemm and attn_decode, "
           "fastest impl). Inter-GPU communication under TP is **never measured here** (one GPU): two ring "
           "all-reduces per layer are modelled from the device table's NVLink bandwidth (half the bidirectional "
           "figure per direction), without NCCL's per-call latency. "
           + (f"Measured kernel terms from: {', '.join(b.label.split(': ')[-1] for b in measured)}."
              if measured else "No GPU results yet: every number on this page is PREDICTED.") + "\n",
           "Context: the mean number of cached tokens per sequence while it decodes — input + (output − 1)/2 for "
           "\"1k in / 19k out\" (10,500), 4,096 for the fixed scenario. The measured decode points use the same "
           "definition of their lengths (evenly from the context down to half of it), so attention from measured "
           "fits is charged for the bytes the model asks for.\n",
           "## Presets\n",
           table(["preset", "parameters", "precision", "TP", "weights per GPU", "KV per token per GPU",
                  "per-GPU shards (N×K)"], _assumptions()),
           f"Memory cap: usable = memory × {1 - HEADROOM:.0%} (vLLM's default gpu_memory_utilization; the rest for "
           "activations, the CUDA context and fragmentation); max batch = (usable − weights per GPU) / (KV per "
           "token × context). Llama-3-8B/70B use the Llama-3.1 window (same dimensions, 128k); Llama-2-70B's 4k "
           "window rules out the 1k/19k scenario.\n",
           "## Memory caps: largest batch that fits (PREDICTED from datasheet memory)\n",
           table(["preset", "scenario", *[claims.get(k).name for k in claims.TOKENOMICS_DEVICES]], cap_rows),
           "## H200 over H100: the claims\n",
           "The articles: \"43 % more interactivity at every batch size\" (4.8 / 3.35 = 1.43×) and \"about 3× lower "
           "cost\" from the larger batch H200's 141 GB holds (Llama-3.1-405B FP8 on 8 GPUs, 1k in / 19k out). "
           f"MLPerf Inference v4.1, Llama-2-70B, tokens/s per GPU: {number(claims.MLPERF_V41['offline'])}× offline, "
           f"{number(claims.MLPERF_V41['server'])}× server (v5.0 with newer software on both: "
           f"{number(claims.MLPERF_V50_OFFLINE)}× offline).\n",
           table(["preset", "scenario", "basis", f"interactivity {h200} / {h100} at equal batch",
                  f"max batch {h100} / {h200}", "throughput per GPU at each max batch"], _claims_rows(frame)),
           "Equal batch: memory-bound terms scale with bandwidth (1.43×), but compute-bound and NVLink terms do not, "
           "so the ratio can only fall below 1.43× as the batch grows. At each device's max batch the ratio adds "
           "the larger batch H200's memory allows: compare it with the articles' ~3× (cost per token at equal "
           "GPU-hour price) and with MLPerf's measured 1.28–1.35× (a different serving stack and configuration).\n",
           image,
           f"Every step of every curve, with its terms and their sources: [{CSV}]({CSV}).\n",
           "### Llama-3.1-405B FP8 TP8, 1k in / 19k out: terms at batch 1 and at the memory cap (ms)\n",
           table(["device", "basis", "batch", "step", "projections", "attention", "all-reduce", "LM head",
                  "datasheet bound", "tokens/s per user", "tokens/s per GPU", "sources"], _breakdown(frame)),
           "The datasheet bound is the same work at the datasheet roofline (and NVLink at its datasheet figure): "
           + _bound_check(frame) + "\n",
           "## The articles' batch table (70B-class layer, fp16) against the roofline\n",
           table(["batch", "article FLOP/B", "article utilisation", "fp16 weights FLOP/B (exact)",
                  "PREDICTED utilisation, H100 SXM datasheet", "MEASURED utilisation (projections)"],
                 _article_rows(bases)),
           "A fp16 GEMV does 2 FLOPs per 2-byte weight, so batch b has ≈ b FLOP/B, a quarter of the articles' "
           "figure; on the roofline a memory-bound layer's utilisation is b × bandwidth / peak.\n"]
    path = out_dir / PAGE
    path.write_text("\n".join(out))
    return path, claims.claims(frame)
