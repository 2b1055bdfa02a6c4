"""PNG figures: shared style, the empirical roofline and the bandwidth-vs-bytes figure.

Only the plots*.py modules import matplotlib, and only inside functions: each figure is a
``matplotlib.figure.Figure`` drawn by the Agg canvas, so no global backend or pyplot state is touched.
Conventions (/work/shared/notes/figures.md): colour = kernel family (Okabe–Ito, colour-blind safe),
marker = implementation, roofs in black/grey and labelled in place with value, unit and ridge point,
measured solid and datasheet dashed, legends outside the data, units on every axis. A measured point whose
time is not to be trusted (not converged, or throttled by heat: ``analysis.frames.unsteady``) is drawn hollow in
every figure, and the legend says so.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.sweeps import SweepFit

# Okabe & Ito (2008), "Color Universal Design": distinguishable under the common colour-vision deficiencies
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#B8A000", "#000000")
FAMILY_COLOURS = {
    "gemv": OKABE_ITO[0], "gemm": OKABE_ITO[1], "qgemv": OKABE_ITO[2], "qgemm": OKABE_ITO[3],
    "attn_decode": OKABE_ITO[4], "attn_prefill": OKABE_ITO[5], "fma": OKABE_ITO[6],
    "copy": OKABE_ITO[0], "triad": OKABE_ITO[1], "read": OKABE_ITO[2], "write": OKABE_ITO[4],
    "dequant": OKABE_ITO[3],
}
# one hue per device (A100 sky blue beside H100 blue read as one device): blue, vermillion, green, olive, purple
IMPL_MARKERS = {"triton": "o", "torch": "s", "torch_dequant": "^"}
ROOF_COLOURS = ("#000000", "#555555", "#888888")  # roofs never take a point colour
BASELINE_COLOUR = "#555555"


UNSTEADY_LABEL = "hollow: not converged\nor throttled"


def unsteady_flags(rows: pd.DataFrame) -> np.ndarray:
    """The rows' ``unsteady`` column as booleans (all False where a table does not carry it)."""
    if "unsteady" not in rows:
        return np.zeros(len(rows), dtype=bool)
    return rows["unsteady"].fillna(False).to_numpy(bool)


def steady_median(rows: pd.DataFrame, by: str, value: str) -> pd.DataFrame:
    """Median of ``value`` per ``by`` over the steady rows; where every row at a ``by`` is unsteady, the median of
    those, flagged ``unsteady`` (drawn hollow). One shaky shape among a dozen does not hollow the whole batch."""
    flags = pd.Series(unsteady_flags(rows), index=rows.index)
    out = {}
    for key, group in rows.groupby(by, sort=True):
        steady = group[~flags[group.index]]
        out[key] = (steady if len(steady) else group)[value].median(), not len(steady)
    return pd.DataFrame.from_dict(out, orient="index", columns=[value, "unsteady"])


def unsteady_handle(colour: str = "#333333", marker: str = "o", label: str = UNSTEADY_LABEL):
    from matplotlib.lines import Line2D

    return Line2D([], [], color=colour, marker=marker, linestyle="", markerfacecolor="none", label=label)


def measured_line(ax, x, y, hollow, *, color, marker, linestyle="-", markersize=3.5, lw=1.0, label=None, **kwargs):
    """Measured points joined in order: filled markers, hollow (face 'none') where ``hollow`` (unsteady rows)."""
    x, y, hollow = np.asarray(x, dtype=float), np.asarray(y, dtype=float), np.asarray(hollow, dtype=bool)
    ax.plot(x, y, linestyle=linestyle, marker=marker, markevery=np.flatnonzero(~hollow).tolist(), color=color,
            markersize=markersize, lw=lw, label=label, **kwargs)
    if hollow.any():
        ax.plot(x[hollow], y[hollow], linestyle="", marker=marker, color=color, markerfacecolor="none",
                markersize=markersize, **kwargs)


def legend_with_unsteady(ax, title: str | None = None) -> None:
    """The axes' own legend entries, then what a hollow marker means, outside the data."""
    handles, _ = ax.get_legend_handles_labels()
    _legend_outside(ax, [*handles, unsteady_handle()], title)


def family_colour(kernel: str) -> str:
    return FAMILY_COLOURS.get(kernel, OKABE_ITO[len(kernel) % 7])


def device_colour(key: str, index: int = 0) -> str:
    """A hue of its own per device of the table, stable across figures: positions stepped by ~0.38 of the
    circle so neighbours in the table (H100, H200) are far apart; a device not in the table by ``index``."""
    from analysis.devices import DEVICES

    keys = [d.key for d in DEVICES]
    if key not in keys:
        return OKABE_ITO[(index + 4) % len(OKABE_ITO)]
    count = len(keys)
    step = next(s for s in range(round(0.38 * count), count) if math.gcd(s, count) == 1)
    hue = (keys.index(key) * step % count) / count
    red, green, blue = colorsys.hls_to_rgb(hue, 0.42, 0.8)
    return f"#{round(red * 255):02x}{round(green * 255):02x}{round(blue * 255):02x}"


def impl_marker(impl: str) -> str:
    return IMPL_MARKERS.get(impl, "D")


def _figure(width: float, height: float, layout: str | None = None):
    """A figure on an Agg canvas (manual layout by default: constrained layout costs seconds on big grids)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout=layout)
    FigureCanvasAgg(figure)
    return figure


def plain(value: float) -> str:
    """Tick text: 1, 64, 4096, 16k, 1M — never 1e+03 or mathtext."""
    if value <= 0 or not math.isfinite(value):
        return ""
    if value >= 1e4 and value < 1e6 and value % 1024 == 0:
        return f"{value / 1024:g}k"  # 16384 → 16k, as sequence lengths are spoken of
    for threshold, scale, suffix in ((1e12, 1e12, "T"), (1e9, 1e9, "G"), (1e6, 1e6, "M"), (1e4, 1e3, "k")):
        if value >= threshold:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}" if value < 1 else f"{value:g}"


def log_axis(ax, which: str = "x", base: int = 10, formatter=plain, subs=(1.0,)) -> None:
    """Make ``ax``'s x or y axis log with plain tick labels (at ``subs`` × powers) and no minor labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    (ax.set_xscale if which == "x" else ax.set_yscale)("log", base=base)
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_locator(LogLocator(base=base, subs=subs, numticks=12))
    axis.set_major_formatter(FuncFormatter(lambda v, _: formatter(v)))
    axis.set_minor_formatter(NullFormatter())


def time_axis(ax, seconds) -> None:
    """Time in µs: log when the values span a decade or more, else linear (log ticks would be unlabelled)."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

    seconds = np.asarray(seconds, dtype=float)
    seconds = seconds[np.isfinite(seconds) & (seconds > 0)]
    if len(seconds) and seconds.max() / seconds.min() >= 10:
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        ax.yaxis.set_major_locator(MaxNLocator(4))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: plain(round(v * 1e6, 6))))


_RENDERED: dict[str, bytes] = {}  # figure key -> PNG bytes, for figures drawn from the same inputs again


def cached(key: str, path: Path, draw) -> Path:
    """Write the PNG ``draw(path)`` makes, reusing the bytes when this process drew the same key before (the
    predicted figures depend on the device table alone until something is measured)."""
    path = Path(path)
    if key in _RENDERED:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_RENDERED[key])
        return path
    draw(path)
    _RENDERED[key] = path.read_bytes()
    return path


# No software version, no dates: the same inputs give the same bytes on any machine (committed figures stay put)
FIXED_METADATA = {"png": {"Software": None}, "svg": {"Creator": None, "Date": None},
                  "pdf": {"Creator": None, "Producer": None, "CreationDate": None}}


def save(figure, path: Path) -> Path:
    """Write the figure beside ``path`` and swap it in, so no reader ever sees half a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kind = path.suffix.lstrip(".").lower()
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        figure.savefig(tmp, format=kind, metadata=FIXED_METADATA.get(kind))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def si(value: float, unit: str) -> str:
    """3 significant figures with an SI prefix: 3.35 TB/s, 989 TFLOP/s, 50 MB."""
    if not np.isfinite(value):
        return "–"
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def slope_angle(ax, x: float, y0: float, y1_at_2x: float) -> float:
    """On-screen angle (degrees) of the line through (x, y0) and (2x, y1_at_2x)."""
    a = ax.transData.transform((x, y0))
    b = ax.transData.transform((2 * x, y1_at_2x))
    return math.degrees(math.atan2(b[1] - a[1], b[0] - a[0]))


@dataclass(frozen=True)
class Ceiling:
    """A roof: a bandwidth (bytes/s, a diagonal) or a peak (FLOP/s, a horizontal)."""

    label: str  # e.g. "DRAM", "bf16 tensor", "L2 (warm)"
    value: float
    measured: bool  # solid if measured, dashed if from the datasheet
    kind: str = "peak"  # "peak" or "bandwidth"

    @property
    def text(self) -> str:
        unit = "B/s" if self.kind == "bandwidth" else "FLOP/s"
        return f"{self.label} {si(self.value, unit)} ({'measured' if self.measured else 'datasheet'})"


def _margin_labels(ax, labels: list[tuple[float, str, str]], gap_px: float = 22.0) -> None:
    """Labels for horizontal lines in the right margin, each at its line's height, pushed apart to ``gap_px``."""
    if not labels:
        return
    to_px = ax.transData.transform
    placed = []
    for y, text, colour in sorted(labels, key=lambda item: -item[0]):
        pixel = to_px((1.0, y))[1]
        if placed and placed[-1] - pixel < gap_px:
            pixel = placed[-1] - gap_px
        placed.append(pixel)
        y_data = ax.transData.inverted().transform((0, pixel))[1]
        ax.text(1.01, y_data, text, transform=ax.get_yaxis_transform(), fontsize=6.5, color=colour, va="center",
                clip_on=False)


def _roof_labels(ax, labels: list[tuple[float | None, float, str, str]], x_end: float, gap_px: float = 11.0) -> None:
    """Compute-roof labels written on their roofs' height: ending just left of the ridge dot, in the corner above
    the memory roofs that no point can reach; at the roof's right end where no ridge is known or the text would
    run off the axes. Roofs a few per cent apart get their labels pushed apart (``gap_px``)."""
    renderer = ax.figure.canvas.get_renderer()
    to_px, from_px = ax.transData.transform, ax.transData.inverted().transform
    left_px = ax.transAxes.transform((0.0, 0.0))[0]
    placed: list[float] = []  # pixel rows of the ridge-side labels so far, highest first
    for ridge, y, text, colour in sorted(labels, key=lambda item: -item[1]):
        label = ax.text(ridge / 1.3 if ridge else x_end, y, text, fontsize=6.5, color=colour, ha="right",
                        va="center", zorder=4, bbox=dict(facecolor="white", edgecolor="none", alpha=0.8, pad=0.3))
        if ridge is None or label.get_window_extent(renderer).x0 < left_px + 4:
            label.set_position((x_end, y))
            label.set_verticalalignment("bottom")
            continue
        pixel = to_px((ridge, y))[1]
        if placed and placed[-1] - pixel < gap_px:
            pixel = placed[-1] - gap_px
            label.set_y(from_px((ridge, pixel))[1])
        placed.append(pixel)


def _legend_outside(ax, handles=None, title: str | None = None) -> None:
    ax.legend(handles=handles, fontsize=7, title=title, title_fontsize=7, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)


def _point_legend(kernels, impls):
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=family_colour(k), marker="o", linestyle="", label=k) for k in kernels]
    handles += [Line2D([], [], color="#333333", marker=impl_marker(i), linestyle="", markerfacecolor="none",
                       label=f"impl: {i}") for i in impls]
    handles.append(Line2D([], [], color="#333333", marker="o", linestyle="", markerfacecolor="none",
                          markersize=4,
                          label="hollow: not converged or throttled,\nor warm L2 and fits in L2 (not fitted)"))
    return handles


def _merge_peaks(peaks: list[Ceiling]) -> list[Ceiling]:
    """One roof per distinct value and kind (fp16 and bf16 share their tensor peak): "fp16/bf16 tensor"."""
    merged: dict[tuple[bool, float], list[Ceiling]] = {}
    for ceiling in peaks:
        key = next((k for k in merged if k[0] == ceiling.measured and abs(k[1] / ceiling.value - 1) < 0.01),
                   (ceiling.measured, ceiling.value))
        merged.setdefault(key, []).append(ceiling)
    out = []
    for (measured, value), group in merged.items():
        names = list(dict.fromkeys(c.label.replace(" tensor", "") for c in group))
        label = "/".join(names) + (" tensor" if all(" tensor" in c.label for c in group) else "")
        out.append(Ceiling(label, max(c.value for c in group), measured, "peak"))
    return sorted(out, key=lambda c: -c.value)


def roofline(sweeps: list[SweepFit], ceilings: list[Ceiling], path: Path, title: str) -> Path:
    """Log-log intensity (FLOP/byte) vs achieved TFLOP/s; colour = family, marker = impl.

    Bandwidth roofs run up to the ridge of the highest compute roof; compute roofs start at their ridge
    with the DRAM roof; each roof is labelled on its line, ridges are marked and written as FLOP/B.
    Zero-FLOP kernels (copy, fill) have no place on a FLOP/s axis: they are in the bandwidth figure."""
    figure = _figure(10.5, 6.8)
    ax = figure.add_axes((0.07, 0.2, 0.88, 0.74))
    drawn = [s for s in sweeps if s.has_flops]
    xs_all, ys_all = [], []
    for sweep in drawn:
        rows = sweep.rows[sweep.rows["flops"] > 0]
        x = (rows["flops"] / rows["bytes"]).to_numpy()
        y = (rows["flops"] / rows["median_s"]).to_numpy() / 1e12
        inside = rows["in_fit"].to_numpy(bool)
        colour = family_colour(sweep.kernel)
        ax.plot(x, y, "-", color=colour, alpha=0.3, linewidth=0.7)
        marker = impl_marker(sweep.impl)
        ax.scatter(x[inside], y[inside], s=16, color=colour, marker=marker, zorder=3, linewidths=0)
        ax.scatter(x[~inside], y[~inside], s=18, facecolors="none", edgecolors=colour, marker=marker, zorder=3)
        xs_all += list(x)
        ys_all += list(y)
    usable = [c for c in ceilings if np.isfinite(c.value) and c.value > 0]
    bandwidths = sorted((c for c in usable if c.kind == "bandwidth"), key=lambda c: -c.value)
    peaks = _merge_peaks([c for c in usable if c.kind == "peak"])
    drams = {c.measured: c for c in bandwidths if c.label.startswith("DRAM")}

    def dram_for(ceiling: Ceiling) -> Ceiling | None:
        """Ridges pair like with like: a measured peak with the measured DRAM roof, a datasheet one with the
        datasheet's (either, when only one is known)."""
        return drams.get(ceiling.measured) or next(iter(drams.values()), None)

    ridges = [p.value / d.value for p in peaks if (d := dram_for(p))]
    low = min([*xs_all, *(r / 30 for r in ridges)], default=0.1) / 20  # room for the slope labels
    high = max([*xs_all, *(r * 8 for r in ridges)], default=1000.0) * 2
    top = max([*ys_all, *(p.value / 1e12 for p in peaks)], default=1.0) * 3
    bottom = min([*ys_all, *(b.value * low / 1e12 for b in bandwidths)], default=1e-3) / 2
    ax.set_xlim(low, high)
    ax.set_ylim(bottom, top)
    log_axis(ax, "x")
    log_axis(ax, "y")
    for index, (ceiling, colour) in enumerate(zip(bandwidths, (ROOF_COLOURS * 3))):
        same = [p.value for p in peaks if p.measured == ceiling.measured] or [p.value for p in peaks]
        end = min(high, max(same) / ceiling.value) if same else high
        style = "-" if ceiling.measured else "--"
        ax.plot([low, end], [low * ceiling.value / 1e12, end * ceiling.value / 1e12], style, color=colour, lw=1.3)
        x_text = low * 1.5 * 2.0**index  # staggered along the slope so neighbouring labels never overlap
        angle = slope_angle(ax, x_text, x_text * ceiling.value / 1e12, 2 * x_text * ceiling.value / 1e12)
        below = ceiling.label.startswith("DRAM") and ceiling.measured  # the two DRAM roofs: one label each side
        ax.text(x_text, x_text * ceiling.value / 1e12 * (0.72 if below else 1.3), ceiling.text, rotation=angle,
                rotation_mode="anchor", fontsize=7, color=colour, va="top" if below else "baseline")
    labels = []
    for ceiling, colour in zip(peaks, (ROOF_COLOURS * 3)):
        dram = dram_for(ceiling)
        start = ceiling.value / dram.value if dram else low
        style = "-" if ceiling.measured else "--"
        ax.plot([start, high], [ceiling.value / 1e12] * 2, style, color=colour, lw=1.3)
        if dram:
            ax.plot([start], [ceiling.value / 1e12], "o", color=colour, markersize=3)
        ridge = f" · ridge {start:.3g} FLOP/B" if dram else ""
        labels.append((start if dram else None, ceiling.value / 1e12, ceiling.text + ridge, colour))
    _roof_labels(ax, labels, high / 1.15)
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("achieved TFLOP/s")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.2)
    ax.legend(handles=_point_legend(dict.fromkeys(s.kernel for s in drawn), dict.fromkeys(s.impl for s in drawn)),
              fontsize=7, title="family (colour), impl (marker)", title_fontsize=7, loc="upper left",
              bbox_to_anchor=(0.0, -0.1), ncol=5, frameon=False)
    return save(figure, path)


def bandwidth(sweeps: list[SweepFit], dram: list[Ceiling], l2: Ceiling | None, l2_bytes: float | None, path: Path,
              title: str) -> Path:
    """Achieved bandwidth against bytes moved, log–log, for bandwidth kernels; DRAM roofs across, the L2 roof
    (a value fitted to the warm-L2 points) only up to the L2 size, beyond which nothing stays cached."""
    figure = _figure(10, 5.4)
    ax = figure.add_axes((0.08, 0.12, 0.66, 0.8))
    xs, ys = [], []
    for sweep in sweeps:
        rows = sweep.rows.sort_values("bytes")
        x = rows["bytes"].to_numpy(float)
        y = (rows["bytes"] / rows["median_s"]).to_numpy() / 1e9
        measured_line(ax, x, y, unsteady_flags(rows), linestyle="--" if sweep.l2 == "warm" else "-",
                      color=family_colour(sweep.kernel), marker=impl_marker(sweep.impl),
                      label=f"{sweep.kernel} {sweep.impl} {sweep.dtype} ({sweep.l2 or 'cold'} L2)")
        xs += list(x)
        ys += list(y[np.isfinite(y) & (y > 0)])
    low, high = (min(xs) / 2, max(xs) * 2) if xs else (1e3, 1e10)
    roofs = [c.value / 1e9 for c in [*dram, *([l2] if l2 else [])] if np.isfinite(c.value) and c.value > 0]
    ax.set_xlim(low, high)
    ax.set_ylim(min([*ys, *roofs], default=1.0) / 1.5, max([*ys, *roofs], default=1e3) * 1.8)
    log_axis(ax, "x", 2 if high / low < 1e3 else 10, formatter=lambda v: si(v, "B").replace(" ", ""))
    log_axis(ax, "y", formatter=plain, subs=(1.0, 2.0, 5.0))
    _bandwidth_roofs(ax, dram, l2, l2_bytes, low)
    ax.set_xlabel("bytes moved per call (B, log)")
    ax.set_ylabel("achieved bandwidth (GB/s, log)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.2)
    legend_with_unsteady(ax, title="kernel impl dtype (L2)")
    return save(figure, path)


def _bandwidth_roofs(ax, dram: list[Ceiling], l2: Ceiling | None, l2_bytes: float | None, low: float) -> None:
    for ceiling, colour in zip(dram, ROOF_COLOURS):
        ax.axhline(ceiling.value / 1e9, color=colour, linestyle="-" if ceiling.measured else "--", lw=1.2)
        # measured below its line, datasheet above: the two DRAM roofs are a few per cent apart
        ax.text(low * 1.1, ceiling.value / 1e9 * (0.99 if ceiling.measured else 1.01), ceiling.text, fontsize=7,
                va="top" if ceiling.measured else "bottom", color=colour)
    if l2 is not None and np.isfinite(l2.value) and l2_bytes:
        ax.plot([low, l2_bytes], [l2.value / 1e9] * 2, ":", color=ROOF_COLOURS[1], lw=1.4)
        ax.text(low * 1.1, l2.value / 1e9 * 1.01, f"L2 (fitted) {si(l2.value, 'B/s')}, warm L2, up to the L2 size",
                fontsize=7, va="bottom", color=ROOF_COLOURS[1])
    if l2_bytes:
        ax.axvline(l2_bytes, color=ROOF_COLOURS[2], linestyle=":", lw=1)
        ax.text(l2_bytes * 1.05, 0.02, f"L2 size {si(l2_bytes, 'B')}", fontsize=7, color=ROOF_COLOURS[2],
                transform=ax.get_xaxis_transform(), va="bottom")
