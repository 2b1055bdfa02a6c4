"""PNG figures of measured sweeps: fit panels, fraction of the roof vs batch, speed-ups, device ratios, the
efficiency heatmap."""

from __future__ import annotations

import math
import re
import textwrap
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from analysis.plots import (BASELINE_COLOUR, _figure, _legend_outside, family_colour, impl_marker, legend_with_unsteady,
                            log_axis, measured_line, plain, save, si, steady_median, time_axis, unsteady_flags,
                            unsteady_handle)
from analysis.roofline import Roof, predicted_time
from analysis.sweeps import SweepFit, roof_knee

MAX_PANELS = 24
TRITON = "triton"


def _grid(count: int, columns: int = 4, width: float = 3.3, height: float = 2.7, top: float = 0.9, right: float = 1.7):
    """A figure with ``count`` panels and manual margins (inches) that leave room for titles and a legend."""
    columns = max(1, min(columns, count))
    rows = max(1, math.ceil(count / columns))
    total_h = height * rows + top + 0.6
    total_w = width * columns + right + 0.1
    figure = _figure(total_w, total_h)
    figure.subplots_adjust(left=0.7 / total_w, right=1 - right / total_w,
                           bottom=0.55 / total_h, top=1 - top / total_h, hspace=0.62, wspace=0.28)
    return figure, rows, columns


def _title(text: str, width: int = 40) -> str:
    return "\n".join(textwrap.wrap(text, width)[:2])


def _series_style(sweep: SweepFit) -> dict:
    triton = sweep.impl == TRITON
    return dict(color=family_colour(sweep.kernel) if triton else BASELINE_COLOUR, marker=impl_marker(sweep.impl),
                linestyle="-" if triton else "--")


def _fit_text(sweep: SweepFit) -> str:
    fit = sweep.fit
    who = sweep.impl + (" (warm L2)" if sweep.l2 == "warm" else "")
    if fit.refused:  # the reason on the panel, not a row of dashes
        reason = re.sub(r"\(a fit needs (\d+):[^)]*\)", r"(a fit needs \1)", fit.refused.removeprefix("refused: "))
        return "\n  ".join(textwrap.wrap(f"{who}: fit refused: {reason}", 64))
    bw = si(fit.bandwidth, "B/s") if np.isfinite(fit.bandwidth) else "–"
    if np.isfinite(fit.peak):
        peak = si(fit.peak, "FLOP/s")
    elif np.isfinite(fit.peak_lower_bound):
        peak = "≥ " + si(fit.peak_lower_bound, "FLOP/s")
    else:
        peak = "–"
    t0 = f"{fit.t0 * 1e6:.3g} µs" if np.isfinite(fit.t0) else "–"
    knee = f", knee {sweep.knee:.3g}" if np.isfinite(sweep.knee) else ""
    return f"{who}: BW {bw}, P {peak}, t0 {t0}{knee}"


def _swept_axis(ax, sweep: SweepFit, values) -> None:
    values = np.asarray(values, dtype=float)
    base = 2 if sweep.batch in ("M", "batch", "seq", "seq_q", "seq_kv") else 10
    log_axis(ax, "x", base)
    ax.set_xlim(values.min() / 1.4, values.max() * 1.4)


def _time_range(sweeps: list[SweepFit], roof: Roof | None) -> tuple[float, float]:
    """Lowest and highest time among the points (p20–p80), the fits and the roofline."""
    values = [s.rows["p80_s"].fillna(s.rows["median_s"]).to_numpy(float) for s in sweeps]
    values += [s.rows["p20_s"].fillna(s.rows["median_s"]).to_numpy(float) for s in sweeps]
    bottom, top = float(np.nanmin(np.concatenate(values))), float(np.nanmax(np.concatenate(values)))
    for sweep in sweeps:
        if not len(sweep.used):
            continue
        curves = [sweep.predict_at(sweep.used[sweep.batch])]
        if roof is not None and np.isfinite(roof.bandwidth):
            curves.append(sweep.predict_at(sweep.used[sweep.batch], roof.time))
        for curve in curves:
            if np.isfinite(curve).all():
                bottom, top = min(bottom, float(np.min(curve))), max(top, float(np.max(curve)))
    return bottom, top


def _time_limits(ax, bottom: float, top: float, lines: int) -> None:
    """y limits with headroom above for ``lines`` lines of fitted parameters."""
    if ax.get_yscale() == "log":
        ax.set_ylim(bottom / 1.5, top * 1.5 * 2.2**lines)
    else:
        span = max(top - bottom, 0.05 * top)
        ax.set_ylim(bottom - 0.1 * span, top + span * (0.1 + 0.3 * lines))


def _fit_series(ax, sweep: SweepFit, roof: Roof | None) -> None:
    """One series: medians with p20–p80 bars (hollow where left out of the fit), the fit, the roofline dotted
    and the fitted knee as a tick on the fit."""
    style = _series_style(sweep)
    rows = sweep.rows
    x = rows[sweep.batch].to_numpy(float)
    y = rows["median_s"].to_numpy(float)
    low = np.clip(y - rows["p20_s"].fillna(rows["median_s"]).to_numpy(float), 0, None)
    high = np.clip(rows["p80_s"].fillna(rows["median_s"]).to_numpy(float) - y, 0, None)
    face = [style["color"] if i else "none" for i in rows["in_fit"].to_numpy(bool)]
    ax.errorbar(x, y, yerr=[low, high], fmt="none", ecolor=style["color"], elinewidth=0.8, capsize=1.5)
    ax.scatter(x, y, s=14, marker=style["marker"], facecolors=face, edgecolors=style["color"], zorder=3,
               label=f"{sweep.impl} ({sweep.l2 or 'cold'} L2)" if sweep.l2 == "warm" else sweep.impl)
    used = sweep.used
    if not len(used) or used[sweep.batch].nunique() < 2:
        return
    grid = np.geomspace(used[sweep.batch].min(), used[sweep.batch].max(), 60)
    if np.isfinite(sweep.fit.t0):
        ax.plot(grid, sweep.predict_at(grid), linestyle=style["linestyle"], color=style["color"], lw=1)
        if np.isfinite(sweep.knee) and grid[0] <= sweep.knee <= grid[-1]:
            ax.plot([sweep.knee], sweep.predict_at([sweep.knee]), "|", color=style["color"], markersize=11, mew=1.6,
                    zorder=4)
    if roof is not None and np.isfinite(roof.bandwidth):
        ax.plot(grid, sweep.predict_at(grid, roof.time), ":", color="black", lw=0.9)


def _fit_legend(ax, sweeps: list[SweepFit]) -> None:
    from matplotlib.lines import Line2D

    impls = list(dict.fromkeys(s.impl for s in sweeps))
    styles = {i: _series_style(next(s for s in sweeps if s.impl == i)) for i in impls}
    handles = [Line2D([], [], marker=styles[i]["marker"], color=styles[i]["color"],
                      linestyle=styles[i]["linestyle"], label=i) for i in impls]
    handles.append(Line2D([], [], linestyle=":", color="black", label="roofline (no t0)"))
    if any(np.isfinite(s.knee) for s in sweeps):
        handles.append(Line2D([], [], linestyle="", marker="|", markersize=9, mew=1.6, color="#333333",
                              label="fitted knee"))
    handles.append(unsteady_handle(label="hollow: not converged or\nthrottled, or warm L2 and\nin L2 (not fitted)"))
    _legend_outside(ax, handles, "impl")


def fit_panels(sweeps: list[SweepFit], path: Path, title: str, roof: Roof | None = None,
               panel: Callable[[SweepFit], str] = lambda s: s.shape) -> Path:
    """Median time (p20–p80 bars) vs the swept axis, one panel per shape (or per ``panel(sweep)``) on one time
    scale for the whole figure; the fit drawn through with its BW, P, t0 and knee written in the panel; the
    device's roofline dotted."""
    names = list(dict.fromkeys(panel(s) for s in sweeps))
    shown = names[:MAX_PANELS]
    groups = {name: [s for s in sweeps if panel(s) == name] for name in shown}
    drawn = [s for group in groups.values() for s in group]
    bottom, top = _time_range(drawn, roof)
    lines = max(len(group) for group in groups.values())
    medians = np.concatenate([s.rows["median_s"].to_numpy(float) for s in drawn])
    figure, rows_n, columns = _grid(len(shown), height=2.9)
    axes = figure.subplots(rows_n, columns, squeeze=False)
    for ax, (name, group) in zip(axes.flat, groups.items()):
        _swept_axis(ax, group[0], np.concatenate([s.rows[s.batch].to_numpy(float) for s in group]))
        time_axis(ax, medians)
        _time_limits(ax, bottom, top, lines)
        ax.set_autoscale_on(False)
        for sweep in group:
            _fit_series(ax, sweep, roof)
        ax.set_title(_title(name), fontsize=7.5)
        ax.set_xlabel(group[0].batch or "", fontsize=7)
        ax.set_ylabel("time (µs)", fontsize=7)
        ax.tick_params(labelsize=6.5, which="both")
        ax.grid(True, which="major", alpha=0.2)
        ax.text(0.02, 0.98, "\n".join(_fit_text(s) for s in group), transform=ax.transAxes, fontsize=6, va="top",
                bbox=dict(facecolor="white", alpha=0.85, edgecolor="none", pad=1))
    for ax in list(axes.flat)[len(shown):]:
        ax.set_visible(False)
    more = f" — first {len(shown)} of {len(names)} shapes (all in fits.csv)" if len(names) > len(shown) else ""
    caption = ("median time, bars p20–p80; line: fit (|: its knee); dotted: the device roofline; hollow: not fitted "
               "(not converged or throttled, or warm L2 and in L2); one time scale for all panels")
    # about 14 characters per inch at 9 pt: a figure of one or two panels wraps the caption instead of cutting it
    caption = "\n".join(textwrap.wrap(caption, int(figure.get_figwidth() * 14)))
    figure.suptitle(f"{title}{more}\n{caption}", fontsize=9)
    _fit_legend(axes.flat[columns - 1], sweeps)
    return save(figure, path)


def _mark_knees(ax, knees: list[tuple[float, str]], xs: np.ndarray, has_flops: bool) -> None:
    """One dotted line per distinct knee (impls moving different bytes, int4 vs fp16 weights, have their own)
    inside the swept range; a note when there is none to draw."""
    distinct: dict[float, str] = {}
    for knee, colour in knees:
        if np.isfinite(knee) and not any(abs(knee / k - 1) < 0.02 for k in distinct):
            distinct[knee] = colour
    inside = {k: c for k, c in distinct.items() if xs.min() / 1.4 <= k <= xs.max() * 1.4}
    for knee, colour in inside.items():
        ax.axvline(knee, color=colour, linestyle=":", lw=1.1)
        ax.text(knee, 0.03, f" knee ≈ {knee:.0f}", fontsize=6.5, rotation=90, va="bottom", color=colour)
    if not inside and has_flops:
        ax.text(0.98, 0.03, "knee outside range" if distinct else "no knee (memory-bound)",
                transform=ax.transAxes, fontsize=6, ha="right")


def fraction_of_roof(sweeps: list[SweepFit], roof_of: Callable[[str, str], Roof], path: Path, title: str) -> Path:
    """Achieved fraction of the roofline bound vs the swept axis, one panel per shape, Triton and the baseline
    on shared axes and a fixed 0–100 % scale; the roof's knee marked. Fraction = roofline time at the point's
    FLOPs and bytes / measured time (band: the same at p20 and p80)."""
    keys = list(dict.fromkeys((s.shape, s.dtype) for s in sweeps))
    shown = keys[:MAX_PANELS]
    figure, rows_n, columns = _grid(len(shown), height=2.6)
    axes = figure.subplots(rows_n, columns, squeeze=False)
    xs = np.concatenate([s.rows[s.batch].to_numpy(float) for s in sweeps])
    from matplotlib.ticker import PercentFormatter

    for ax in axes.flat:  # the same fixed axes everywhere (set, not shared: sharing costs seconds per figure)
        _swept_axis(ax, sweeps[0], xs)
        ax.set_ylim(0, 1.08)
        ax.set_autoscale_on(False)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    for ax, (name, dtype) in zip(axes.flat, shown):
        knees = []
        for sweep in (s for s in sweeps if s.shape == name and s.dtype == dtype):
            roof = roof_of(sweep.kernel, sweep.dtype)
            rows = sweep.rows.sort_values(sweep.batch)
            bound = predicted_time(rows["flops"], rows["bytes"], roof.peak, roof.bandwidth)
            x = rows[sweep.batch].to_numpy(float)
            style = _series_style(sweep)
            fraction = bound / rows["median_s"].to_numpy(float)
            measured_line(ax, x, np.minimum(fraction, 1.04), unsteady_flags(rows), label=sweep.impl, **style)
            fast, slow = bound / rows["p20_s"].to_numpy(float), bound / rows["p80_s"].to_numpy(float)
            ax.fill_between(x, np.minimum(slow, 1.04), np.minimum(fast, 1.04), color=style["color"], alpha=0.15,
                            linewidth=0)
            above = fraction > 1.04
            ax.plot(x[above], np.full(above.sum(), 1.04), "^", color=style["color"], markersize=4)
            knees.append((roof_knee(sweep, roof.bandwidth, roof.peak), style["color"]))
        _mark_knees(ax, knees, xs, sweeps[0].has_flops)
        ax.set_title(_title(f"{name} · {dtype}"), fontsize=7.5)
        ax.grid(True, which="major", alpha=0.2)
        ax.tick_params(labelsize=6.5, which="both", labelbottom=True, labelleft=True)
    first = sweeps[0]
    for ax in axes.flat:
        ax.set_xlabel(first.batch or "", fontsize=7)
        ax.set_ylabel("fraction of the roof bound (%)", fontsize=7)
    for ax in list(axes.flat)[len(shown):]:
        ax.set_visible(False)
    more = f" — first {len(shown)} of {len(keys)} shapes" if len(keys) > len(shown) else ""
    figure.suptitle(f"{title}{more}\nfraction of the roofline bound = roofline time / measured time (band: p20–p80); "
                    "▲ above 104 %; dotted: the roof's knee", fontsize=9)
    from matplotlib.lines import Line2D

    impls = list(dict.fromkeys(s.impl for s in sweeps))
    handles = [Line2D([], [], **_series_style(next(s for s in sweeps if s.impl == i)), label=i) for i in impls]
    _legend_outside(axes.flat[columns - 1], [*handles, unsteady_handle()], "impl")
    return save(figure, path)


IDEAL = "ideal"  # optional speed-up table column: baseline bytes / quantized bytes at the point


def _ideal_speedup(rows: pd.DataFrame) -> np.ndarray | None:
    """The bytes ratio at each row, the speed-up a purely memory-bound kernel would reach; None when the table
    does not carry it (the packed layouts live in kernels.quant_formats, which needs torch: the report does not)."""
    if IDEAL not in rows or not np.isfinite(rows[IDEAL].to_numpy(float)).any():
        return None
    return rows[IDEAL].to_numpy(float)


def speedup(table: pd.DataFrame, crossovers: dict, path: Path, title: str) -> Path:
    """Speed-up vs batch per series; the 1× line, the ideal (bytes ratio) dashed and each crossover marked."""
    from analysis.plots import OKABE_ITO

    figure = _figure(10, 5)
    ax = figure.add_axes((0.08, 0.12, 0.6, 0.78))
    for index, (series, rows) in enumerate(table.groupby("series", sort=False)):
        rows = rows.sort_values("batch")
        colour = OKABE_ITO[index % 7]
        measured_line(ax, rows["batch"], rows["speedup"], unsteady_flags(rows), color=colour, marker="o", markersize=3,
                      label=series)
        ideal = _ideal_speedup(rows)
        if ideal is not None:
            ax.plot(rows["batch"], ideal, "--", color=colour, lw=1,
                    label=f"ideal {np.nanmax(ideal):.3g}× (bytes ratio)")
        crossing = crossovers.get(series)
        if crossing is not None and np.isfinite(crossing):
            ax.axvline(crossing, color=colour, linestyle=":", linewidth=1)
    ax.axhline(1.0, color="black", linewidth=1)
    log_axis(ax, "x", 2)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("batch (M)")
    ax.set_ylabel("speed-up over fp16 cuBLAS (torch.matmul), ×")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="major", alpha=0.2)
    legend_with_unsteady(ax, title="series (dashed: ideal, dotted: crossover)" if IDEAL in table else
                         "series (dotted: crossover)")
    return save(figure, path)


# Okabe–Ito's seven, then Paul Tol's muted set: up to 15 series in distinct colours (black: the references)
DISTINCT = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#B8A000",
            "#882255", "#44AA99", "#332288", "#999933", "#AA4499", "#661100", "#6699CC", "#117733")


def device_ratio(table: pd.DataFrame, references: dict[str, tuple[float, float]], path: Path, title: str) -> Path:
    """Median time ratio (slow / fast device) vs batch: one colour per series (kernel impl dtype), Triton solid and
    the baseline dashed, marker = dtype; per batch the median over the steady points, hollow where only unsteady
    ones (either device's row not converged or throttled) were measured; reference
    ratios as black lines or a grey band. Rows without a batch (size sweeps, square GEMMs) are in the table only."""
    figure = _figure(11, 5.2)
    ax = figure.add_axes((0.07, 0.12, 0.56, 0.78))
    table = table[table["batch"].notna()]
    dtype_markers = dict(zip(sorted(table["dtype"].unique()), ("o", "s", "^", "D", "v")))
    series = sorted(set(zip(table["kernel"], table["impl"], table["dtype"])))
    colours = {key: DISTINCT[index % len(DISTINCT)] for index, key in enumerate(series)}
    for (kernel, impl, dtype), rows in table.groupby(["kernel", "impl", "dtype"], sort=True):
        by_batch = steady_median(rows, "batch", "ratio")
        measured_line(ax, by_batch.index, by_batch["ratio"], unsteady_flags(by_batch),
                      linestyle="-" if impl == TRITON else "--", marker=dtype_markers[dtype],
                      color=colours[(kernel, impl, dtype)], lw=1.1, label=f"{kernel} {impl} {dtype}")
    for (name, (low, high)), style in zip(references.items(), ("--", "-.", ":")):
        if high > low:
            ax.axhspan(low, high, color="grey", alpha=0.15, label=name)
        else:
            ax.axhline(low, color="black", linestyle=style, lw=1, label=f"{name}: {low:.3g}×")
    ax.axhline(1.0, color="black", linewidth=0.8)
    log_axis(ax, "x", 2)
    ax.set_xlabel("batch (M or sequences)")
    ax.set_ylabel("time ratio (×); > 1: faster on the second device")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="major", alpha=0.2)
    legend_with_unsteady(ax, title="kernel impl dtype (dashed: baseline)")
    return save(figure, path)


def heatmap(table: pd.DataFrame, path: Path, title: str, label: str = "fraction of the roof") -> Path:
    """A (row label × batch) table of values in [0, ~1] as a colour grid with the numbers written in."""
    figure = _figure(2.6 + 0.55 * max(len(table.columns), 1), 1.3 + 0.3 * max(len(table.index), 1), layout="constrained")
    ax = figure.add_subplot()
    values = table.to_numpy(dtype=float)
    image = ax.imshow(values, aspect="auto", cmap="cividis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(table.columns)), [plain(float(c)) for c in table.columns], fontsize=7)
    ax.set_yticks(range(len(table.index)), [str(i) for i in table.index], fontsize=7)
    for (i, j), value in np.ndenumerate(values):
        if np.isfinite(value):
            ax.text(j, i, f"{100 * value:.0f}", ha="center", va="center", fontsize=6,
                    color="white" if value < 0.55 else "black")
    ax.set_xlabel("batch")
    figure.colorbar(image, ax=ax, label=f"{label} (0–1; numbers in %)")
    ax.set_title(title, fontsize=9)
    return save(figure, path)
