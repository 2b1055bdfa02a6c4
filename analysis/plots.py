"""PNG figures. The only module that imports matplotlib, and only inside functions: each figure is a
``matplotlib.figure.Figure`` drawn by the Agg canvas, so no global backend or pyplot state is touched."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.sweeps import SweepFit
from analysis.roofline import Roof

MAX_PANELS = 30
ROOF_COLOURS = ("saddlebrown", "darkslateblue", "darkgreen", "darkred", "darkorange", "purple")


def _figure(width: float, height: float, layout: str | None = "constrained"):
    """A figure on an Agg canvas; multi-panel figures pass layout=None (constrained layout costs seconds there)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout=layout)
    FigureCanvasAgg(figure)
    return figure


def _log_axes(ax, x_base: int = 10, y_log: bool = True) -> None:
    """Log axes with plain-text tick labels (the default mathtext labels dominate the drawing time)."""
    from matplotlib.ticker import FuncFormatter

    ax.set_xscale("log", base=x_base)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    if y_log:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0e}" if v < 1e-2 or v >= 1e4 else f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def _time_axis(ax, seconds) -> None:
    """Time in µs: log when the values span a decade or more, else linear (log ticks would be unlabelled)."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    seconds = np.asarray(seconds, dtype=float)
    seconds = seconds[np.isfinite(seconds) & (seconds > 0)]
    if len(seconds) and seconds.max() / seconds.min() >= 10:
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    else:
        ax.yaxis.set_major_locator(MaxNLocator(4))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v * 1e6:.3g}"))


def _colours(names) -> dict:
    from matplotlib import colormaps

    names = list(dict.fromkeys(names))
    palette = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: palette(i % palette.N) for i, name in enumerate(names)}


def _save(figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


@dataclass(frozen=True)
class Ceiling:
    """A line of the roofline plot: a bandwidth (bytes/s, a diagonal) or a peak (FLOP/s, a horizontal)."""

    label: str
    value: float
    measured: bool  # solid if measured, dashed if from the datasheet
    kind: str = "peak"  # "peak" or "bandwidth"


def roofline(sweeps: list[SweepFit], ceilings: list[Ceiling], path: Path, title: str) -> Path:
    """Log-log intensity vs achieved FLOP/s; each sweep joined in batch order, coloured by kernel.

    Bandwidth ceilings are diagonals, compute ceilings horizontals (each starting at its ridge with
    the highest DRAM bandwidth); measured solid, datasheet dashed; hollow markers are L2-resident
    points. Zero-FLOP kernels (copy, fill) have no place on a FLOP/s axis and are left out.
    """
    figure = _figure(9, 6)
    ax = figure.add_subplot()
    drawn = [s for s in sweeps if (s.rows["flops"] > 0).any()]
    low, high = np.inf, 0.0
    colours = _colours(s.kernel for s in drawn)
    for kernel, colour in colours.items():
        # one line call per kernel: sweeps joined in batch order, NaN between sweeps
        xs, ys, inside = [], [], []
        for sweep in (s for s in drawn if s.kernel == kernel):
            rows = sweep.rows[sweep.rows["flops"] > 0]
            xs += [*(rows["flops"] / rows["bytes"]), np.nan]
            ys += [*(rows["flops"] / rows["median_s"]), np.nan]
            inside += [*rows["in_fit"], True]
        x, y, inside = np.array(xs), np.array(ys), np.array(inside, dtype=bool)
        low, high = min(low, np.nanmin(x)), max(high, np.nanmax(x))
        ax.plot(x, y, "-", color=colour, alpha=0.35, linewidth=0.8)
        ax.scatter(x[inside], y[inside], s=12, color=colour, label=kernel, zorder=3)
        ax.scatter(x[~inside], y[~inside], s=14, facecolors="none", edgecolors=colour, zorder=3)
    if not np.isfinite(low):
        low, high = 0.1, 1000.0
    usable = [c for c in ceilings if np.isfinite(c.value) and c.value > 0]
    bandwidths = [c for c in usable if c.kind == "bandwidth"]
    peaks = [c for c in usable if c.kind == "peak"]
    top = max((c.value for c in peaks), default=np.inf)
    fastest = max((c.value for c in bandwidths if "L2" not in c.label), default=np.nan)
    x_low, x_high = low / 4, high * 4
    for ceiling, colour in zip(bandwidths, itertools.cycle(("black", "dimgrey", "grey"))):
        x_end = min(x_high, top / ceiling.value) if np.isfinite(top) else x_high
        ax.plot([x_low, x_end], [x_low * ceiling.value, x_end * ceiling.value], "-" if ceiling.measured else "--",
                color=colour, linewidth=1.2, label=ceiling.label)
    for ceiling, colour in zip(peaks, itertools.cycle(ROOF_COLOURS)):
        x_start = ceiling.value / fastest if np.isfinite(fastest) else x_low
        ax.plot([x_start, x_high], [ceiling.value, ceiling.value], "-" if ceiling.measured else "--",
                color=colour, linewidth=1.2, label=ceiling.label)
    _log_axes(ax)
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("achieved FLOP/s")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.2)
    ax.legend(fontsize=7, loc="lower right")
    return _save(figure, path)


def fit_panels(sweeps: list[SweepFit], path: Path, title: str, roof: Roof | None = None) -> Path:
    """Measured time vs batch per shape (a panel each), the fit drawn through, the measured roofline dotted.

    Series within a panel are impls (and L2 state / launch mode when those vary).
    """
    every = list(dict.fromkeys(s.shape for s in sweeps))
    shapes = every[:MAX_PANELS]
    columns = min(4, len(shapes)) or 1
    rows_n = math.ceil(len(shapes) / columns) or 1
    height = 2.6 * rows_n + 0.7
    figure = _figure(3.4 * columns, height, layout=None)
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.3 / height, top=1 - 0.75 / height, hspace=0.5, wspace=0.35)
    axes = figure.subplots(rows_n, columns, squeeze=False)
    extra = [name for name in ("l2", "launch") if len({getattr(s, name) for s in sweeps}) > 1]

    def series(sweep: SweepFit) -> str:
        return " ".join([sweep.impl, *(getattr(sweep, name) for name in extra)])

    colours = _colours(series(s) for s in sweeps)
    for ax, shape in zip(axes.flat, shapes):
        for sweep in (s for s in sweeps if s.shape == shape):
            colour = colours[series(sweep)]
            rows = sweep.rows
            x, y = rows[sweep.batch].astype(float), rows["median_s"]
            inside = rows["in_fit"].to_numpy()
            ax.scatter(x[inside], y[inside], s=10, color=colour, label=series(sweep))
            ax.scatter(x[~inside], y[~inside], s=12, facecolors="none", edgecolors=colour)
            used = sweep.used
            if used[sweep.batch].nunique() >= 2:
                grid = np.geomspace(used[sweep.batch].min(), used[sweep.batch].max(), 80)
                if np.isfinite(sweep.fit.t0):
                    ax.plot(grid, sweep.predict_at(grid), "-", color=colour, linewidth=1)
                if roof is not None and np.isfinite(roof.bandwidth):
                    ax.plot(grid, sweep.predict_at(grid, roof.time), ":", color="black", linewidth=0.8)
        _log_axes(ax, x_base=2, y_log=False)
        _time_axis(ax, np.concatenate([s.rows["median_s"].to_numpy() for s in sweeps if s.shape == shape]))
        ax.set_title(shape, fontsize=8)
        ax.tick_params(labelsize=7, which="both")
        ax.grid(True, which="both", alpha=0.2)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(shapes):]:
        ax.set_visible(False)
    batch = sweeps[0].batch if sweeps else "batch"
    shown = f" (first {len(shapes)} of {len(every)} shapes)" if len(every) > len(shapes) else ""
    legend = "lines: fit, dotted: roofline, hollow: in L2 (not fitted)"
    figure.suptitle(f"{title}{shown} — time (µs) vs {batch}; {legend}", fontsize=9, y=1 - 0.15 / height)
    return _save(figure, path)


def heatmap(table: pd.DataFrame, path: Path, title: str, label: str = "efficiency") -> Path:
    """A (row label × batch) table of values in [0, ~1] as a colour grid with the numbers written in."""
    figure = _figure(1.2 + 0.55 * max(len(table.columns), 1), 1.0 + 0.32 * max(len(table.index), 1))
    ax = figure.add_subplot()
    values = table.to_numpy(dtype=float)
    image = ax.imshow(values, aspect="auto", cmap="viridis", vmin=0.0, vmax=max(1.0, np.nanmax(values, initial=1.0)))
    ax.set_xticks(range(len(table.columns)), [str(c) for c in table.columns], fontsize=7)
    ax.set_yticks(range(len(table.index)), [str(i) for i in table.index], fontsize=7)
    for (i, j), value in np.ndenumerate(values):
        if np.isfinite(value):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if value < 0.6 else "black")
    ax.set_xlabel("batch")
    figure.colorbar(image, ax=ax, label=label)
    ax.set_title(title, fontsize=9)
    return _save(figure, path)


def speedup(table: pd.DataFrame, crossovers: dict, path: Path, title: str) -> Path:
    """Speed-up vs batch per series (column ``series``); the 1.0 line and each crossover batch marked."""
    figure = _figure(8, 5)
    ax = figure.add_subplot()
    colours = _colours(table["series"])
    for series, rows in table.groupby("series", sort=False):
        rows = rows.sort_values("batch")
        ax.plot(rows["batch"], rows["speedup"], "o-", color=colours[series], markersize=3, label=series)
        crossing = crossovers.get(series)
        if crossing is not None and np.isfinite(crossing):
            ax.axvline(crossing, color=colours[series], linestyle=":", linewidth=1)
    ax.axhline(1.0, color="black", linewidth=1)
    _log_axes(ax, x_base=2, y_log=False)
    ax.set_xlabel("batch (M)")
    ax.set_ylabel("speed-up over fp16 cuBLAS (×)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.2)
    ax.legend(fontsize=7)
    return _save(figure, path)


def device_ratio(table: pd.DataFrame, references: dict[str, tuple[float, float]], path: Path, title: str) -> Path:
    """Ratio of medians (slow / fast device) vs batch per kernel (rows without a batch are left out);
    reference ratios as lines or bands."""
    figure = _figure(8, 5)
    ax = figure.add_subplot()
    table = table[table["batch"].notna()]
    colours = _colours(table["series"])
    for series, rows in table.groupby("series", sort=False):
        rows = rows.groupby("batch")["ratio"].median()
        ax.plot(rows.index, rows.values, "o-", color=colours[series], markersize=3, label=series)
    for (name, (low, high)), style in zip(references.items(), ("--", "-.", ":")):
        if high > low:
            ax.axhspan(low, high, color="grey", alpha=0.15, label=name)
        else:
            ax.axhline(low, color="grey", linestyle=style, label=name)
    ax.axhline(1.0, color="black", linewidth=0.8)
    _log_axes(ax, x_base=2, y_log=False)
    ax.set_xlabel("batch")
    ax.set_ylabel("time ratio (×)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.2)
    ax.legend(fontsize=7)
    return _save(figure, path)
