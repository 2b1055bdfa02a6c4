"""Report pages built from the device table: the predicted page (theory before measurement) and its
measured overlays, and the data behind them (measured points matched to a datasheet)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis import plots, plots_theory, predicted, sections_moe
from analysis.devices import get
from analysis.frames import unsteady
from analysis.markdown import number, quantity, slug, table
from analysis.sections import Device, figure

PAGE = "predicted.md"
LINEAR_KERNELS = ("gemv", "gemm")
STAND_IN_DTYPES = ("bf16", "fp16")  # same datasheet roofs and bytes: fp16 points sit on the bf16 prediction


def measured_linear(devices: list[Device]) -> pd.DataFrame:
    """Timed gemv/gemm bf16/fp16 rows of every device matched to a datasheet: device (key), impl, M, N, K, median_s."""
    frames = []
    for device in devices:
        if device.datasheet is None or not device.timed:
            continue
        rows = device.points[device.points["kernel"].isin(LINEAR_KERNELS)
                             & device.points["dtype"].isin(STAND_IN_DTYPES)]
        if rows.empty or not {"M", "N", "K"} <= set(rows.columns):
            continue
        frames.append(rows[["impl", "M", "N", "K", "median_s"]].assign(device=device.datasheet.key,
                                                                         unsteady=unsteady(rows)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def measured_attention(devices: list[Device]) -> pd.DataFrame:
    """Timed attention rows (bf16/fp16) matched to a datasheet: decode by batch at its context, prefill by seq
    (square, 16k tokens per point as the suite) — the x of the predicted curves."""
    frames = []
    for device in devices:
        if device.datasheet is None or not device.timed:
            continue
        rows = device.points[device.points["dtype"].isin(STAND_IN_DTYPES)]
        decode = rows[rows["kernel"] == "attn_decode"]
        if not decode.empty and {"batch", "context"} <= set(decode.columns):
            if "q_len" in decode:
                decode = decode[decode["q_len"].fillna(1) == 1]
            frames.append(decode.assign(x=decode["batch"], device=device.datasheet.key, causal=np.nan))
        prefill = rows[rows["kernel"] == "attn_prefill"]
        seq = next((c for c in ("seq", "seq_kv") if c in prefill.columns), None)
        if not prefill.empty and seq:
            if "seq_q" in prefill and seq == "seq_kv":
                prefill = prefill[prefill["seq_q"] == prefill["seq_kv"]]
            prefill = prefill[prefill["batch"] == predicted.PREFILL_TOKENS // prefill[seq]]
            frames.append(prefill.assign(x=prefill[seq], device=device.datasheet.key, context=np.nan))
    if not frames:
        return pd.DataFrame()
    keep = ["device", "kernel", "impl", "heads", "kv_heads", "head_dim", "x", "context", "causal", "median_s",
            "unsteady"]
    return pd.concat([f.assign(unsteady=unsteady(f)).reindex(columns=keep) for f in frames], ignore_index=True)


def _digest(frame: pd.DataFrame) -> str:
    """A content hash of the measured rows a figure overlays (empty: "none")."""
    if frame.empty:
        return "none"
    return str(int(pd.util.hash_pandas_object(frame.astype(str), index=False).sum()))


def _devices(measured: list[Device]):
    """The articles' devices, and any other datasheet a measured device matched."""
    keys = list(predicted.PREDICTED_DEVICES)
    keys += [d.datasheet.key for d in measured if d.datasheet and d.datasheet.key not in keys and d.timed]
    return predicted.devices(tuple(keys))


def _roofline_rows(keys) -> list[list]:
    out = []
    for r in predicted.roofline_table(keys).itertuples():
        out.append([r.name, quantity(r.memory_bytes, "B"), quantity(r.bandwidth, "B/s"), quantity(r.bf16, "FLOP/s"),
                    quantity(r.fp8, "FLOP/s"), quantity(r.fp32, "FLOP/s"), number(r.ridge_bf16),
                    number(r.ridge_fp8), quantity(r.l2_bytes, "B"), quantity(r.nvlink, "B/s"), r.source])
    return out


def _knee_cell(value: float) -> str:
    return "∞ (memory-bound)" if value == np.inf else number(value)


def predicted_page(devices_measured: list[Device], out_dir: Path) -> Path:
    """``predicted.md`` and its figures: datasheet rooflines, every preset layer's and attention shape's
    predicted time and knee per device, measured points overlaid where runs exist."""
    sheets = _devices(devices_measured)
    keys = tuple(d.key for d in sheets)
    linear_measured = measured_linear(devices_measured)
    attention_measured = measured_attention(devices_measured)
    overlaid = sorted({d.name for d in devices_measured if d.datasheet and d.timed})
    out = ["# Theory before measurement: what the datasheets predict\n",
           "**Every number on this page is PREDICTED** from the device table (analysis/devices.py: dense datasheet "
           "peaks and DRAM bandwidth, each with its source): time = max(FLOPs / peak, bytes / bandwidth), no launch "
           "cost, no efficiency factor, so a real kernel is slower. "
           + (f"**MEASURED** medians of {', '.join(overlaid)} are overlaid as markers on the same axes (fp16 "
              "points on the bf16 curves: the same roofs and bytes)." if overlaid else
              "No GPU results yet: nothing measured is overlaid. Run `rooflab run` on a GPU to add the measured "
              "points.") + "\n",
           "## Datasheet rooflines\n",
           table(["device", "memory", "DRAM", "bf16 tensor", "fp8 tensor", "fp32 CUDA cores", "ridge bf16 FLOP/B",
                  "ridge fp8 FLOP/B", "L2", "NVLink (both directions)", "source"], _roofline_rows(keys)),
           "B300 (HGX) has B200's bf16/fp8 peaks and 7.7 TB/s, so B200's roofs stand for it. A figure the datasheet "
           "does not give is –, never guessed.\n"]
    out.append(figure(out_dir / "predicted-rooflines.png", lambda p: plots.cached(
        f"rooflines {keys}", p, lambda q: plots_theory.rooflines(sheets, q)), "datasheet rooflines"))
    out += ["## LLM preset layers: knee batch per device\n",
            "A projection y = x·Wᵀ (W: N × K) at batch M moves (M·K + N·K + M·N) elements and does 2·M·N·K FLOPs; "
            "the knee is the M where the two times cross (M ≈ ridge × bytes per element / 2 for large N, K). "
            "Below the knee the layer is memory-bound: its time barely grows with M.\n"]
    knees = predicted.linear_table(keys)
    for dtype in ("bf16", "fp8"):
        rows = []
        for (shape, n, k), group in knees[knees["dtype"] == dtype].groupby(["shape", "N", "K"], sort=False):
            by_device = dict(zip(group["device"], group["knee"]))
            times = dict(zip(group["device"], group["time_m1_s"]))
            rows.append([shape, f"{n} × {k}", *[_knee_cell(by_device.get(key, np.nan)) for key in keys],
                         *[quantity(times.get(key), "s") for key in keys[:3]]])
        out.append(f"### {dtype} ({'W8A8 fp8 tensor cores, output bf16' if dtype == 'fp8' else 'bf16 tensor cores'})\n")
        out.append(table(["layer", "N × K", *[f"knee M, {d.name}" for d in sheets],
                          *[f"time at M=1, {d.name}" for d in sheets[:3]]], rows))
    for models in predicted.models_by_shapes():
        shapes = predicted.layer_shapes(models)
        names = " = ".join(m.name for m in models)
        name = slug("predicted-layers-" + "+".join(m.name for m in models)) + ".png"
        out.append(figure(out_dir / name, lambda p, shapes=shapes, models=models, names=names: plots.cached(
            f"layers {models} {keys} {_digest(linear_measured)}", p, lambda q: plots_theory.layer_curves(
                shapes, sheets, linear_measured, q, f"{names}: projection time vs batch (bf16)")),
            f"predicted layer times: {names}"))
    out += ["## Attention shapes\n",
            "Decode attention reads every cached K and V byte once per step: its FLOP/byte tends to the GQA group "
            "size (query heads / kv heads), far below any ridge, so it has no knee — its time grows with the batch "
            "at the bandwidth roof. Decode lengths follow the measured points: evenly from the context down to half "
            "of it (mean ≈ 0.75 × context at batch ≥ 2). Prefill (16k tokens per point, batch = 16k / seq) is "
            "compute-bound beyond the knee in seq.\n"]
    rows = []
    for r in predicted.attention_table(keys).itertuples():
        rows.append([r.shape, r.device_name, number(r.decode_intensity),
                     *[quantity(getattr(r, f"decode_c{c}_b{b}_s"), "s") for c in predicted.DECODE_CONTEXTS
                       for b in (1, 64)], _knee_cell(r.prefill_knee_causal), _knee_cell(r.prefill_knee_full)])
    out.append(table(["shape", "device", "decode FLOP/B limit", *[f"decode C={c // 1024}k B={b}" for c in
                                                                   predicted.DECODE_CONTEXTS for b in (1, 64)],
                      "prefill knee seq (causal)", "prefill knee seq (full)"], rows))
    shapes = predicted.attention_shapes()
    out.append(figure(out_dir / "predicted-attention.png", lambda p: plots.cached(
        f"attention {shapes} {keys} {_digest(attention_measured)}", p,
        lambda q: plots_theory.attention_curves(shapes, sheets, attention_measured, q)), "predicted attention times"))
    out.append(sections_moe.predicted_section(devices_measured, out_dir))
    path = out_dir / PAGE
    path.write_text("\n".join(out))
    return path


def index_summary(devices_measured: list[Device]) -> str:
    """The index's short predicted section: the rooflines table and where the rest is."""
    keys = tuple(d.key for d in _devices(devices_measured))
    h100, h200 = get("h100-sxm"), get("h200-sxm")
    return "\n".join([
        "## Predicted: theory before measurement\n",
        f"From the device table alone (no GPU needed); every number here is PREDICTED. Full page: [{PAGE}]({PAGE}) — "
        "every preset layer's and attention shape's predicted time and knee batch per device, with measured points "
        "overlaid where runs exist.\n",
        table(["device", "memory", "DRAM", "bf16 tensor", "fp8 tensor", "fp32 CUDA cores", "ridge bf16 FLOP/B",
               "ridge fp8 FLOP/B", "L2", "NVLink (both directions)", "source"], _roofline_rows(keys)),
        f"H200 / H100 SXM DRAM bandwidth: {h200.bandwidth / h100.bandwidth:.3f}× (the articles' \"43 %\"); same "
        f"tensor peaks ({quantity(h100.tensor('bf16'), 'FLOP/s')} bf16), so the ridge falls from "
        f"{h100.ridge:.0f} to {h200.ridge:.0f} FLOP/B.\n",
        sections_moe.index_line()])

