"""Markdown sections of a device report built on its fitted sweeps: roofline, bandwidth, fraction of the roof,
fits (and fits.csv), efficiency, quantized speed-ups. Everything here is MEASURED (the roofs: measured
ceilings where they exist, else the datasheet, as each section says)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from analysis import plots, plots_sweeps
from analysis.ceilings import best
from analysis.frames import BANDWIDTH_KERNELS
from analysis.markdown import MISSING, exact, number, percent, quantity, slug, table
from analysis.sections import Device, figure
from analysis.sweeps import SweepFit, fits_table, roof_knee
from analysis.tables import efficiency_grid, point_efficiency, quant_speedups

FITS_CSV = "fits.csv"


def plot_ceilings(device: Device) -> list[plots.Ceiling]:
    """The roofline plot's roofs: DRAM (measured and datasheet), L2 (warm, measured), a tensor peak per dtype
    the points use (measured, and the datasheet's), the CUDA-core peak when fma ran."""
    table_, ds = device.roofs.table, device.datasheet
    lines = [plots.Ceiling("DRAM", best(table_, "dram_bw"), True, "bandwidth"),
             plots.Ceiling("L2 (warm)", best(table_, "l2_bw"), True, "bandwidth")]
    if ds is not None:
        lines.append(plots.Ceiling("DRAM", ds.bandwidth, False, "bandwidth"))
    sheet: dict[float, list[str]] = {}  # one dashed line per datasheet peak (fp16 and bf16 share theirs)
    for dtype in sorted(device.points.loc[device.points["flops"] > 0, "dtype"].unique()):
        kind = "tf32" if dtype == "fp32" else dtype
        lines.append(plots.Ceiling(f"{kind} tensor", best(table_, "tensor_flops", dtype), True))
        if ds is not None and ds.tensor(dtype):
            sheet.setdefault(ds.tensor(dtype), []).append(kind)
    lines += [plots.Ceiling(f"{'/'.join(kinds)} tensor", value, False) for value, kinds in sheet.items()]
    if (device.points["kernel"] == "fma").any():
        lines.append(plots.Ceiling("fp32 CUDA cores", best(table_, "vector_flops", "fp32"), True))
    return lines


def roofline_section(device: Device, out_dir: Path) -> str:
    image = figure(out_dir / "roofline.png", lambda p: plots.roofline(
        device.sweeps, plot_ceilings(device), p, f"{device.name}: empirical roofline (MEASURED points)"), "roofline")
    return "\n".join(["## Roofline\n",
                      "Points: measured medians, one marker shape per impl, one colour per family, each series joined "
                      "in batch order; hollow = left out of the fits: not converged or throttled by heat, or warm L2 and fits in L2. Roofs: measured solid, "
                      "datasheet dashed, each labelled with its value; dots mark the ridge points. Zero-FLOP "
                      "kernels are in the bandwidth figure below.\n", image])


def bandwidth_section(device: Device, out_dir: Path) -> str:
    sweeps = [s for s in device.sweeps if s.kernel in BANDWIDTH_KERNELS and s.batch]
    if not sweeps:
        return ""
    table_, ds = device.roofs.table, device.datasheet
    dram = [plots.Ceiling("DRAM", best(table_, "dram_bw"), True, "bandwidth")]
    if ds is not None:
        dram.append(plots.Ceiling("DRAM", ds.bandwidth, False, "bandwidth"))
    l2 = plots.Ceiling("L2 (warm)", best(table_, "l2_bw"), True, "bandwidth")
    image = figure(out_dir / "bandwidth.png", lambda p: plots.bandwidth(
        sweeps, dram, l2, device.l2_bytes, p, f"{device.name}: bandwidth kernels (MEASURED)"), "bandwidth")
    return "\n".join(["## Bandwidth kernels: GB/s against bytes\n",
                      "Achieved bytes/s (bytes moved / median time) against bytes per call; cold L2 solid, warm L2 "
                      "dashed. The L2 roof holds only up to the L2 size; DRAM roofs hold everywhere.\n", image])


def fraction_section(device: Device, out_dir: Path) -> str:
    out = ["## Where each kernel leaves the roof: fraction of the roofline bound vs batch\n",
           "Per family, Triton (colour) and the baseline (grey, dashed) per shape on shared axes, 0–100 %: "
           "fraction = roofline time at the point's FLOPs and bytes / measured time, against the device's roof "
           "(measured ceilings where they exist, else datasheet). Dotted: the knee that roof puts on the sweep.\n"]
    families = {}
    for sweep in device.sweeps:
        if sweep.batch and sweep.kernel not in BANDWIDTH_KERNELS and sweep.rows[sweep.batch].nunique() >= 2:
            families.setdefault(sweep.kernel, []).append(sweep)
    for kernel, sweeps in families.items():
        name = slug(f"fraction-{kernel}") + ".png"
        out.append(figure(out_dir / name, lambda p, sweeps=sweeps, kernel=kernel: plots_sweeps.fraction_of_roof(
            sweeps, device.roofs.roof, p, f"{device.name}: {kernel}"), f"fraction of roof: {kernel}"))
    return "\n".join(out) if families else ""


def _knee_text(sweep: SweepFit) -> str:
    """The fitted knee; "> last" when the sweep never left the bandwidth branch but its intensity grows;
    "–" for families without FLOPs (no knee exists)."""
    if not sweep.has_flops or sweep.batch is None:
        return MISSING
    used = sweep.used
    if np.isnan(sweep.knee) and sweep.fit.n_compute == 0 and sweep.fit.n_memory > 0 and len(used):
        f0, f1, b0, b1 = sweep.cost_in_batch
        low, high = used[sweep.batch].min(), used[sweep.batch].max()
        growing = (f0 + f1 * high) / (b0 + b1 * high) > 1.05 * (f0 + f1 * low) / (b0 + b1 * low)
        return f"> {exact(high)}" if growing else "∞"
    return number(sweep.knee)


def _unfitted(sweeps: list[SweepFit]) -> str:
    if not sweeps:
        return ""
    names = "; ".join(f"{s.kernel} {s.impl} {s.dtype} {s.shape} ({s.fit.n_points} usable, {s.n_l2_excluded} left "
                      f"out): {s.fit.refused.removeprefix('refused: ')}" for s in sweeps)
    return f"Refused (too few points, or figures beyond the physical roof): {names}.\n"


def _peak(sweep: SweepFit) -> str:
    if np.isfinite(sweep.fit.peak):
        return quantity(sweep.fit.peak, "FLOP/s")
    if np.isfinite(sweep.fit.peak_lower_bound):
        return "≥ " + quantity(sweep.fit.peak_lower_bound, "FLOP/s")
    return MISSING


def fit_section(device: Device, out_dir: Path) -> str:
    fits_table(device.pooled, device.sweeps).to_csv(out_dir / FITS_CSV, index=False)
    out = ["## Fits: t = t0 + max(bytes/BW_eff, flops/P_eff)\n",
           "Least squares on relative error (robust, numpy). A series is a kernel × impl × dtype × L2 mode × shape "
           "(preset label and every axis but the swept one), across launch modes (graph and stream). Left out (and "
           "drawn hollow): points that ran with a warm L2 and fit in it (their bytes came from L2), and points not "
           "converged or throttled by heat; cold-L2 points of any size are fitted. ± is the relative standard "
           "error (Huber-robust noise scale, widened for few points: "
           f"the truth lies inside ±2σ in about 95 % of fits); – means the points cannot determine the parameter "
           f"(see notes). Each shape takes its own t0. A fit with fewer than 4 points, or whose figures the "
           f"physical roof forbids, is refused (why: column `why` of fits.csv). Every fit, with its points used and left out and why: [{FITS_CSV}]({FITS_CSV}).\n",
           "### Per kernel (all shapes pooled)\n"]
    pooled = [s for s in device.pooled if s.fit.fitted]
    out.append(table(
        ["kernel", "impl", "dtype", "L2", "launch", "points", "left out", "BW_eff", "±", "P_eff", "±", "t0", "MAPE",
         "notes"],
        [[s.kernel, s.impl, s.dtype, s.l2 or MISSING, s.launch or MISSING, s.fit.n_points, s.n_l2_excluded,
          quantity(s.fit.bandwidth, "B/s"), percent(s.fit.bandwidth_rse, 1), _peak(s), percent(s.fit.peak_rse, 1),
          quantity(s.fit.t0, "s"), percent(s.fit.mape, 1), "; ".join(s.fit.notes)] for s in pooled]))
    out.append(_unfitted([s for s in device.pooled if not s.fit.fitted]))
    out.append("### Per shape\n")
    out.append("Knee = swept value where memory and compute time cross: of the fit, of the measured roof, of the "
               "datasheet roof (– for families without FLOPs: they have no knee).\n")
    rows = []
    for s in (s for s in device.sweeps if s.fit.fitted):
        knees = [roof_knee(s, bw, peak) for bw, peak in (device.roofs.measured(s.kernel, s.dtype),
                                                         device.roofs.sheet(s.kernel, s.dtype))]
        worst = max((abs(r) for r in s.fit.residuals), default=np.nan)
        rows.append([s.kernel, s.impl, s.dtype, s.l2, s.shape, s.batch or MISSING, s.fit.n_points, s.n_l2_excluded,
                     quantity(s.fit.bandwidth, "B/s"), percent(s.fit.bandwidth_rse, 1), _peak(s),
                     quantity(s.fit.t0, "s"), _knee_text(s), *(number(k) for k in knees), percent(s.fit.mape, 1),
                     percent(worst, 1), "; ".join(s.fit.notes)])
    out.append(table(["kernel", "impl", "dtype", "L2", "shape", "swept", "points", "left out", "BW_eff", "±", "P_eff",
                      "t0", "knee (fit)", "knee (measured roof)", "knee (datasheet)", "MAPE", "max abs. resid.",
                      "notes"], rows))
    out.append(_unfitted([s for s in device.sweeps if not s.fit.fitted]))
    groups: dict[tuple, list[SweepFit]] = {}
    for s in device.sweeps:
        if s.batch is not None and s.rows[s.batch].nunique() >= 2:  # a single point is no sweep to draw
            family = "bandwidth" if s.kernel in BANDWIDTH_KERNELS else s.kernel  # one figure for copy/read/…
            groups.setdefault((family, s.dtype), []).append(s)
    for (family, dtype), sweeps in groups.items():
        name = slug(f"fit-{family}-{dtype}") + ".png"
        together = family == "bandwidth"
        caption = (lambda s: f"{s.kernel} {s.shape}".removesuffix(" -")) if together else (lambda s: s.shape)
        out.append(figure(out_dir / name, lambda p, sweeps=sweeps, family=family, dtype=dtype, caption=caption:
                          plots_sweeps.fit_panels(sweeps, p, f"{device.name}: {family} {dtype}",
                                                  device.roofs.roof(sweeps[0].kernel, dtype), caption),
                          f"fits: {family} {dtype}"))
    return "\n".join(out)


def efficiency_section(device: Device, out_dir: Path) -> str:
    points = point_efficiency(device.sweeps, device.roofs)
    out = ["## Efficiency summary\n",
           "Efficiency = roofline time / measured time = achieved / attainable at the point's intensity, against "
           "the measured DRAM ceiling and the dtype's measured tensor ceiling (datasheet where not measured). "
           "Warm-L2 points that fit in L2 are left out.\n"]
    used = points[points["in_fit"] & points["efficiency"].notna()]
    if used.empty:
        out.append("No roof to judge against (unknown GPU and no ceilings measured), or no timed points.\n")
        return "\n".join(out)
    summary = []
    for (kernel, impl, dtype), rows in used.groupby(["kernel", "impl", "dtype"], sort=True):
        top = rows.loc[rows["efficiency"].idxmax()]
        where = f"{top['shape']} @ {top['axis']}={exact(top['batch'])}" if top["axis"] else str(top["shape"])
        summary.append([kernel, impl, dtype, len(rows), percent(rows["efficiency"].median()),
                        percent(top["efficiency"]), where])
    out.append(table(["kernel", "impl", "dtype", "points", "median", "best", "best point"], summary))
    grid = efficiency_grid(points)
    if not grid.empty:
        out.append(figure(out_dir / "efficiency.png", lambda p: plots_sweeps.heatmap(
            grid, p, f"{device.name}: median fraction of the roof over shapes"), "efficiency heatmap"))
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
    out.append(table(["series", *[f"M={exact(b)}" for b in batches], "crossover M"], rows))
    out.append(figure(out_dir / "quant-speedup.png", lambda p: plots_sweeps.speedup(
        speedups, crossings, p, f"{device.name}: quantized vs fp16 cuBLAS"), "quantized speed-up"))
    return "\n".join(out)

