"""Markdown sections of a device report and of the cross-device comparison (tables, figures, prose)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import decode, plots
from analysis.ceilings import DeviceRoofs, best
from analysis.devices import Datasheet
from analysis.sweeps import SweepFit
from analysis.frames import batch_axis
from analysis.markdown import MISSING, number, percent, slug, table
from analysis.roofline import knee_batch
from analysis.tables import device_ratios, efficiency_grid, failures, point_efficiency, quant_speedups

BATCH_NAMES = ("M", "batch")  # sweep axes that are a batch (the stream kernels sweep a size N)


@dataclass(eq=False)
class Device:
    """Everything the report knows about one device (one results/<slug>/ directory)."""

    slug: str
    name: str
    info: dict  # the newest run's sidecar "device" block
    runs: pd.DataFrame
    frame: pd.DataFrame
    datasheet: Datasheet | None
    roofs: DeviceRoofs
    points: pd.DataFrame  # timed rows
    pooled: list[SweepFit] = field(default_factory=list)
    sweeps: list[SweepFit] = field(default_factory=list)  # per shape
    decode: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def timed(self) -> bool:
        return not self.points.empty

    def dram_bandwidth(self) -> float:
        """The best measured DRAM ceiling, else the datasheet's, else NaN."""
        measured = best(self.roofs.table, "dram_bw")
        if np.isfinite(measured):
            return measured
        return self.datasheet.bandwidth if self.datasheet else float("nan")


def _flatten(prefix: str, data: dict) -> list[tuple[str, object]]:
    pairs = []
    for key, value in sorted(data.items()):
        if isinstance(value, dict):
            pairs += _flatten(f"{prefix}{key}.", value)
        else:
            pairs.append((f"{prefix}{key}", " ".join(map(str, value)) if isinstance(value, list) else value))
    return pairs


def metadata_section(device: Device) -> str:
    info = device.info
    ds = device.datasheet
    match = f"{ds.name} (datasheet: {ds.source('bandwidth')})" if ds else "unknown GPU: measured ceilings only"
    newest = device.runs.sort_values("started").iloc[-1]["meta"]
    pairs = [("name", info.get("name", device.name)), ("datasheet match", match)]
    pairs += _flatten("", {k: v for k, v in info.items() if k not in ("name", "slug")})
    pairs += _flatten("software.", newest.get("software") or {}) + _flatten("timing.", newest.get("timing") or {})
    pairs += [("git", f"{newest.get('git_commit') or MISSING}" + (" (dirty)" if newest.get("git_dirty") else ""))]
    out = ["## Device and software (newest run)\n", table(["field", "value"], pairs), "## Runs\n",
           table(["run", "suite", "mode", "started", "commit", "rows", "ok", "failed", "skipped", "command"],
                 [[r.run_id, r.suite, r.mode, r.started, r.commit, r.rows, r.ok, r.failed, r.skipped,
                   f"`{r.command}`" if r.command else ""] for r in device.runs.itertuples()])]
    return "\n".join(out)


def ceilings_section(device: Device) -> str:
    measured = device.roofs.table
    ds = device.datasheet
    out = ["## Measured ceilings vs datasheet\n",
           "Rules: see analysis/ceilings.py (DRAM: median of the three largest cold sweeps ≥ 4× L2; L2: slope "
           "of time vs bytes over warm sweeps ≤ L2/2; tensor: best square GEMM ≥ 2048, fp32 GEMMs on tf32 "
           "tensor cores; launch: per kernel, back-to-back). Ratio = measured / datasheet.\n"]
    if measured.empty:
        out.append("No ceilings measured (run `rooflab ceilings`): " +
                   ("datasheet roofs are used instead.\n" if ds else "unknown GPU, so no roofs at all.\n"))
    rows = []
    for r in measured.itertuples():
        sheet = float("nan")
        if ds is not None:
            sheet = {"dram_bw": ds.bandwidth, "tensor_flops": ds.tensor(r.dtype) or np.nan,
                     "vector_flops": ds.fp32_flops if r.dtype == "fp32" else np.nan}.get(r.ceiling, np.nan)
        scale, unit = {"B/s": (1e9, "GB/s"), "FLOP/s": (1e12, "TFLOP/s"), "s": (1e-6, "µs")}[r.unit]
        rows.append([r.ceiling, r.kernel, r.impl, r.dtype, number(r.value, 4, scale), number(sheet, 4, scale), unit,
                     number(r.value / sheet if np.isfinite(sheet) else np.nan), r.source_rows])
    if rows:
        out.append(table(["ceiling", "kernel", "impl", "dtype", "measured", "datasheet", "unit", "ratio",
                          "source rows"], rows))
    return "\n".join(out)


def plot_ceilings(device: Device) -> list[plots.Ceiling]:
    """The roofline plot's lines: DRAM and L2 bandwidths, and a tensor peak per dtype with points."""
    table, ds = device.roofs.table, device.datasheet
    lines = [plots.Ceiling("DRAM (measured)", best(table, "dram_bw"), True, "bandwidth"),
             plots.Ceiling("L2 (measured)", best(table, "l2_bw"), True, "bandwidth")]
    if ds is not None:
        lines.append(plots.Ceiling("DRAM (datasheet)", ds.bandwidth, False, "bandwidth"))
    sheet: dict[float, list[str]] = {}  # one dashed line per datasheet peak (fp16 and bf16 share theirs)
    for dtype in sorted(device.points.loc[device.points["flops"] > 0, "dtype"].unique()):
        kind = "tf32" if dtype == "fp32" else dtype
        lines.append(plots.Ceiling(f"{kind} tensor (measured)", best(table, "tensor_flops", dtype), True))
        if ds is not None and ds.tensor(dtype):
            sheet.setdefault(ds.tensor(dtype), []).append(kind)
    lines += [plots.Ceiling(f"{'/'.join(kinds)} tensor (datasheet)", value, False) for value, kinds in sheet.items()]
    if (device.points["kernel"] == "fma").any():
        lines.append(plots.Ceiling("fp32 CUDA cores (measured)", best(table, "vector_flops", "fp32"), True))
    return lines


def _knee_text(sweep: SweepFit) -> str:
    """The fitted knee; "> last batch" when the sweep never left the bandwidth branch but its intensity grows."""
    used = sweep.used
    if np.isnan(sweep.knee) and sweep.fit.n_compute == 0 and sweep.fit.n_memory > 0 and (used["flops"] > 0).any():
        f0, f1, b0, b1 = sweep.cost_in_batch
        low, high = used[sweep.batch].min(), used[sweep.batch].max()
        growing = (f0 + f1 * high) / (b0 + b1 * high) > 1.05 * (f0 + f1 * low) / (b0 + b1 * low)
        return f"> {number(high)}" if growing else "∞"
    return number(sweep.knee)


def _unfitted(sweeps: list[SweepFit]) -> str:
    if not sweeps:
        return ""
    names = ", ".join(f"{s.kernel} {s.impl} {s.dtype} {s.shape} ({s.fit.n_points} usable, {s.n_l2_excluded} in L2)"
                      for s in sweeps)
    return f"Not fitted (fewer than 3 usable points): {names}.\n"


def fit_section(device: Device, out_dir: Path) -> str:
    out = ["## Fits: t = t0 + max(bytes/BW_eff, flops/P_eff)\n",
           "Least squares on relative error (robust, numpy); points whose footprint fits in L2 are kept out "
           "(L2 excl.). ± is the relative standard error; NaN-like entries (–) mean the points cannot determine "
           "the parameter (see notes). Knee = batch where the two terms cross: fitted, from the measured roof, "
           "from the datasheet.\n", "### Per kernel (all shapes pooled)\n"]
    pooled = [s for s in device.pooled if s.fit.n_points >= 3]
    sweeps = [s for s in device.sweeps if s.fit.n_points >= 3]
    out.append(table(
        ["kernel", "impl", "dtype", "l2 / launch", "points", "L2 excl.", "BW_eff GB/s", "±", "P_eff TFLOP/s", "±",
         "t0 µs", "MAPE", "notes"],
        [[s.kernel, s.impl, s.dtype, f"{s.l2 or MISSING} / {s.launch or MISSING}", s.fit.n_points, s.n_l2_excluded,
          number(s.fit.bandwidth, 4, 1e9), percent(s.fit.bandwidth_rse, 1), number(s.fit.peak, 4, 1e12),
          percent(s.fit.peak_rse, 1), number(s.fit.t0, 3, 1e-6), percent(s.fit.mape, 1), "; ".join(s.fit.notes)]
         for s in pooled]))
    out.append(_unfitted([s for s in device.pooled if s.fit.n_points < 3]))
    out.append("### Per shape\n")
    rows = []
    for s in sweeps:
        used = s.used
        knees = [MISSING, MISSING]
        if s.batch is not None and len(used):
            roofs = (device.roofs.measured(s.kernel, s.dtype), device.roofs.sheet(s.kernel, s.dtype))
            knees = [number(knee_batch(used[s.batch], used["flops"], used["bytes"], peak, bw)) for bw, peak in roofs]
        worst = max((abs(r) for r in s.fit.residuals), default=np.nan)
        rows.append([s.kernel, s.impl, s.dtype, s.shape, s.fit.n_points, s.n_l2_excluded,
                     number(s.fit.bandwidth, 4, 1e9), percent(s.fit.bandwidth_rse, 1), number(s.fit.peak, 4, 1e12),
                     number(s.fit.t0, 3, 1e-6), _knee_text(s), *knees, percent(s.fit.mape, 1),
                     percent(worst, 1), "; ".join(s.fit.notes)])
    out.append(table(["kernel", "impl", "dtype", "shape", "points", "L2 excl.", "BW_eff GB/s", "±", "P_eff TFLOP/s",
                      "t0 µs", "knee (fit)", "knee (measured roof)", "knee (datasheet)", "MAPE", "max |resid.|",
                      "notes"], rows))
    out.append(_unfitted([s for s in device.sweeps if s.fit.n_points < 3]))
    groups: dict[tuple, list[SweepFit]] = {}
    for s in device.sweeps:
        if s.batch is not None and s.rows[s.batch].nunique() >= 2:  # a single point is no sweep to draw
            groups.setdefault((s.kernel, s.dtype), []).append(s)
    for (kernel, dtype), sweeps in groups.items():
        name = slug(f"fit-{kernel}-{dtype}") + ".png"
        plots.fit_panels(sweeps, out_dir / name, f"{device.name}: {kernel} {dtype}", device.roofs.roof(kernel, dtype))
        out.append(f"![{kernel} {dtype}]({name})\n")
    return "\n".join(out)


def efficiency_section(device: Device, out_dir: Path) -> str:
    points = point_efficiency(device.sweeps, device.roofs)
    out = ["## Efficiency\n",
           "Efficiency = roofline time / measured time = achieved / attainable at the point's intensity, against "
           "the measured DRAM ceiling and the dtype's measured tensor ceiling (datasheet where not measured). "
           "L2-resident points are left out.\n"]
    used = points[points["in_fit"] & points["efficiency"].notna()]
    if used.empty:
        out.append("No roof to judge against (unknown GPU and no ceilings measured), or no timed points.\n")
        return "\n".join(out)
    summary = []
    for (kernel, impl, dtype), rows in used.groupby(["kernel", "impl", "dtype"], sort=True):
        top = rows.loc[rows["efficiency"].idxmax()]
        summary.append([kernel, impl, dtype, len(rows), percent(rows["efficiency"].median()),
                        percent(top["efficiency"]), f"{top['shape']} @ {number(top['batch'])}"])
    out.append(table(["kernel", "impl", "dtype", "points", "median", "best", "best point"], summary))
    grid = efficiency_grid(points)
    if not grid.empty:
        plots.heatmap(grid, out_dir / "efficiency.png", f"{device.name}: median efficiency over shapes")
        out.append("![efficiency heatmap](efficiency.png)\n")
    return "\n".join(out)


def quant_section(device: Device, out_dir: Path) -> str:
    speedups, crossings = quant_speedups(device.points)
    if speedups.empty:
        return ""
    out = ["## Quantized speed-up over fp16 cuBLAS\n",
           "Speed-up = time of the torch (fp16 cuBLAS, unquantized weight) row / time of the quantized kernel at the "
           "same M, N, K. Crossover = first batch where it falls below 1.0 (log-interpolated; ∞: never in range).\n"]
    batches = sorted(speedups["batch"].unique())
    rows = []
    for series, group in speedups.groupby("series", sort=True):
        by_batch = dict(zip(group["batch"], group["speedup"]))
        rows.append([series, *[number(by_batch.get(b), 3) for b in batches], number(crossings.get(series))])
    out.append(table(["series", *[f"M={number(b)}" for b in batches], "crossover M"], rows))
    plots.speedup(speedups, crossings, out_dir / "quant-speedup.png", f"{device.name}: quantized vs fp16 cuBLAS")
    out.append("![quantized speed-up](quant-speedup.png)\n")
    return "\n".join(out)


def failures_section(device: Device) -> str:
    bad = failures(device.frame)
    counts = device.frame["status"].value_counts()
    out = ["## Failed and skipped points\n",
           f"ok {int(counts.get('ok', 0))}, failed {int(counts.get('failed', 0))}, "
           f"skipped {int(counts.get('skipped', 0))}.\n"]
    if not bad.empty:
        out.append(table(["status", "kernel", "impl", "dtype", "reason", "count"], bad.itertuples(index=False)))
    throttled = device.points[device.points["throttle"].astype(str).str.strip() != ""]
    if not throttled.empty:
        reasons = ", ".join(f"{reason} ({count})" for reason, count in throttled["throttle"].value_counts().items())
        out.append(f"{len(throttled)} timed points saw clock throttling ({reasons}); they stay in the fits, "
                   "so their kernels' efficiencies include it.\n")
    return "\n".join(out)


def interpret_section(device: Device) -> str:
    rows = device.frame[device.frame["mode"] == "interpret"]
    if rows.empty:
        return ""
    out = ["## Interpreter runs: correctness only, no timings\n",
           "These rows ran under the Triton interpreter on a CPU: they check results, they time nothing.\n"]
    summary = []
    for (kernel, impl, dtype), group in rows.groupby(["kernel", "impl", "dtype"], sort=True):
        counts = group["status"].value_counts()
        summary.append([kernel, impl, dtype, int(counts.get("ok", 0)), int(counts.get("failed", 0)),
                        int(counts.get("skipped", 0)), number(group["rel_err"].max())])
    out.append(table(["kernel", "impl", "dtype", "ok", "failed", "skipped", "max rel. error"], summary))
    return "\n".join(out)


def decode_section(device: Device) -> str:
    out = ["## Decode-step estimate (Llama-3 layers)\n",
           "Per decoder layer: q, k, v, o, gate, up, down projections (the faster of gemv/gemm at each batch; "
           "k and v share the measured k shape) + decode attention at the context shown. Times come from the "
           "per-shape fits (from the measured medians, log-interpolated, where the points fit in L2 and were left "
           "out of the fit), only between measured batches; norms, RoPE, sampling and the LM head are left out. "
           "Step = layers × layer time = per-token latency; tokens/s = batch / step. Utilisation is "
           "against the tensor roof of the dtype (measured where a ceiling exists, else datasheet). "
           "FLOP/B (weights) is the projections' 2·batch/itemsize; FLOP/B (layer) adds the activations and KV "
           "cache.\n"]
    estimates = device.decode
    if estimates.empty or estimates["linear_us"].isna().all():
        out.append("**Estimate owed:** no gemv/gemm rows on the Llama-3 projection shapes in these runs, so no "
                   "time, tokens/s or utilisation is given.\n")
    for (model, impl, dtype, context), rows in (estimates.groupby(["model", "impl", "dtype", "context"], sort=True)
                                                if not estimates.empty else []):
        if rows["linear_us"].isna().all():
            continue
        out.append(f"### {model} · {impl} · {dtype} · context {context}\n")
        out.append(table(
            ["batch", "FLOP/B (weights)", "FLOP/B (layer)", "projections µs", "projections util.", "attention µs",
             "layer µs", "step ms", "tokens/s", "TFLOP/s", "util.", "datasheet bound ms", "missing"],
            [[r.batch, number(r.weight_intensity), number(r.intensity), number(r.linear_us),
              percent(r.linear_utilisation, 1), number(r.attention_us), number(r.layer_us), number(r.step_ms),
              number(r.tokens_s, 4), number(r.tflops), percent(r.utilisation, 1), number(r.datasheet_step_ms),
              r.missing or ""] for r in rows.itertuples()]))
    out.append("### The source articles' batch table (70B-class layer, fp16) against these measurements\n")
    measured = estimates[estimates["model"] == "llama3-70b"] if not estimates.empty else estimates
    rows = []
    for batch, intensity, utilisation in decode.ARTICLE_TABLE:
        found = measured[measured["batch"] == batch] if not measured.empty else measured
        ours = "; ".join(f"{r.impl} {r.dtype}: {percent(r.linear_utilisation, 1)}" for r in found.itertuples()
                         if np.isfinite(r.linear_utilisation)) or "owed (not measured)"
        rows.append([batch, number(intensity), percent(utilisation), number(2.0 * batch / 2), ours])
    out.append(table(["batch", "article FLOP/B", "article util.", "fp16 weights FLOP/B (exact)",
                      "measured projections util."], rows))
    out.append("The articles' intensities are loose: a fp16 GEMV does 2 FLOPs per 2-byte weight, so batch b has "
               "≈ b FLOP/B, a quarter of the table's figure. Where a measured utilisation differs from the "
               "table's by more than a factor 1.5, it is listed here:\n")
    notes = []
    for batch, _, utilisation in decode.ARTICLE_TABLE:
        found = measured[measured["batch"] == batch] if not measured.empty else measured
        for r in found.itertuples():
            ours = r.linear_utilisation
            if np.isfinite(ours) and not utilisation / 1.5 <= ours <= utilisation * 1.5:
                notes.append(f"- batch {batch}, {r.impl} {r.dtype}: {percent(r.linear_utilisation, 1)} measured vs "
                             f"≈{percent(utilisation)} in the article")
    out.append("\n".join(notes) + "\n" if notes else "- none (or not measured)\n")
    return "\n".join(out)


def _batch_of(frame: pd.DataFrame) -> pd.Series:
    """Each row's batch (M or batch axis); NaN for size sweeps (stream kernels), which are not plotted by batch."""
    batch = pd.Series(np.nan, index=frame.index)
    for kernel in frame["kernel"].unique():
        axis = batch_axis(frame, kernel)
        if axis in BATCH_NAMES:
            mask = frame["kernel"] == kernel
            batch[mask] = frame.loc[mask, axis]
    return batch


def comparison(slow: Device, fast: Device, out_dir: Path) -> str:
    ratios = device_ratios(slow.points, fast.points, _batch_of)
    title = f"### {fast.name} vs {slow.name}\n"
    if ratios.empty:
        return title + "No point was measured on both devices.\n"
    references = {}
    bw_ratio = fast.dram_bandwidth() / slow.dram_bandwidth()
    if np.isfinite(bw_ratio):
        references["DRAM bandwidth ratio (measured ceilings, else datasheet)"] = (bw_ratio, bw_ratio)
    keys = {slow.datasheet.key if slow.datasheet else None, fast.datasheet.key if fast.datasheet else None}
    hopper_pair = keys == {"h100-sxm", "h200-sxm"}
    if hopper_pair:
        ratio = decode.BANDWIDTH_RATIO_H200_H100
        references["datasheet bandwidth 4.8 / 3.35"] = (ratio, ratio)
        references["MLPerf v4.1 Llama-2-70B tokens/s per GPU"] = decode.MLPERF_RATIO_H200_H100
    name = slug(f"compare-{slow.slug}-vs-{fast.slug}") + ".png"
    plots.device_ratio(ratios, references, out_dir / name, f"time on {slow.name} / time on {fast.name}")
    rows = [[series, len(g), number(g["ratio"].median()), number(g["ratio"].min()), number(g["ratio"].max())]
            for series, g in ratios.groupby("series", sort=True)]
    out = [title, f"Ratio = median time on {slow.slug} / on {fast.slug} per point measured on both "
           f"({len(ratios)} points); > 1 means {fast.slug} is faster. References: "
           + "; ".join(f"{k}: {number(v[0])}" + (f"–{number(v[1])}" if v[1] != v[0] else "")
                       for k, v in references.items()) + ".\n",
           table(["kernel impl dtype", "points", "median ratio", "min", "max"], rows), f"![comparison]({name})\n"]
    if not slow.decode.empty and not fast.decode.empty:
        tokens = decode.device_ratio(slow.decode, fast.decode).dropna(subset=["ratio"])
        if not tokens.empty:
            out.append("Decode-step tokens/s ratio (estimates above):\n")
            out.append(table(["model", "impl", "dtype", "context", "batch", "ratio"],
                             [[r.model, r.impl, r.dtype, r.context, r.batch, number(r.ratio)]
                              for r in tokens.itertuples()]))
    if hopper_pair:
        out.append(f"The memory-bound claim predicts {decode.BANDWIDTH_RATIO_H200_H100:.2f}× (bandwidth); MLPerf "
                   "measured 1.28–1.35× for whole-model serving. Compare the memory-bound rows (gemv, "
                   "attn_decode, small-batch gemm) with the first and the whole-step ratios with the second.\n")
    return "\n".join(out)
