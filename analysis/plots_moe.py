"""PNG figures of the ``moe`` family: experts read and bandwidth on touched bytes vs T, the MoE knee beside the
dense knee per device, and skew's effect. Lines are PREDICTED (analysis/moe.py), markers MEASURED."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.moe import FORMATS, MoeLayer
from analysis.plots import BASELINE_COLOUR, OKABE_ITO, ROOF_COLOURS, impl_marker, log_axis, plain, save, si
from analysis.plots_sweeps import _grid, _title
from analysis.roofline import predicted_time

TRITON = "triton"
FORMAT_COLOURS = dict(zip(FORMATS, OKABE_ITO))
ROUTING_COLOURS = {"uniform": OKABE_ITO[0], "skewed": OKABE_ITO[1], "balanced": OKABE_ITO[2]}
TOKENS = np.geomspace(1, 16384, 120)
IMPL_MARKERS = {TRITON: "o", "torch-loop": "s", "grouped-mm": "^", "dense": "D"}


def _marker(impl: str) -> str:
    return IMPL_MARKERS.get(impl, impl_marker(impl))


def layer_of(row) -> MoeLayer:
    """The layer a result row (or a Series of its axes) measured."""
    return MoeLayer(int(row["experts"]), int(row["top_k"]), int(row["d_model"]), int(row["d_ff"]), int(row["ep"]),
                    int(row["shared"]), str(row["format"]))


def preset_name(rows: pd.DataFrame) -> str:
    layer = layer_of(rows.iloc[0])
    label = str(rows["label"].iloc[0]) if "label" in rows and str(rows["label"].iloc[0]) else "moe"
    return (f"{label}: E={layer.experts} k={layer.top_k} d={layer.d_model} ff={layer.d_ff}"
            + (f" EP{layer.ep}" if layer.ep > 1 else "") + (" +shared" if layer.shared else ""))


PANEL_COLUMNS = 4
SHAPE_AXES = ("label", "experts", "top_k", "d_model", "d_ff", "ep", "shared")


def panels(rows: pd.DataFrame) -> pd.Series:
    """Each row's panel: its preset and layer shape (one preset measured at EP 1 and EP 8 is two layers)."""
    if rows.empty:
        return pd.Series([], index=rows.index, dtype=object)
    shape = rows.reindex(columns=list(SHAPE_AXES)).astype(str).agg("|".join, axis=1)
    names = {key: preset_name(rows[shape == key]) for key in shape.unique()}
    return shape.map(names)


def _pairs(count: int):
    """A figure of ``count`` panel pairs (top over bottom), PANEL_COLUMNS pairs a row; (figure, [(top, bottom)])."""
    columns = min(PANEL_COLUMNS, count)
    pair_rows = -(-count // columns)
    figure, _, _ = _grid(2 * columns * pair_rows, columns=columns, width=3.6, height=2.7, top=1.3, right=2.2)
    axes = figure.subplots(2 * pair_rows, columns, squeeze=False)
    pairs = [(axes[2 * (i // columns)][i % columns], axes[2 * (i // columns) + 1][i % columns]) for i in range(count)]
    for index in range(count, pair_rows * columns):
        for ax in (axes[2 * (index // columns)][index % columns], axes[2 * (index // columns) + 1][index % columns]):
            ax.set_visible(False)
    figure.subplots_adjust(hspace=0.45)
    return figure, pairs, axes[0][columns - 1]


def touched_from_bytes(row) -> float:
    """Experts read, recovered from a row's bytes (x rows in: all T, or the expectation under EP without shared)."""
    layer = layer_of(row)
    tokens = float(row["tokens"])
    fixed = float(layer.bytes_for(tokens, 0, layer.tokens_in(tokens)))
    return (float(row["bytes"]) - fixed) / layer.expert_bytes


def _legend(figure, axes, handles, title: str) -> None:
    axes.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.03, 1.0), frameon=False,
                title=title, title_fontsize=7)


def _roof_line(ax, value: float, text: str, colour: str, style: str) -> None:
    ax.axhline(value / 1e12, color=colour, lw=1.0, ls=style)
    ax.annotate(text, (0.02, value / 1e12), xycoords=("axes fraction", "data"), xytext=(0, 2),
                textcoords="offset points", fontsize=6, color=colour, va="bottom")


def touched_bandwidth(rows: pd.DataFrame, dram: list[tuple[str, float, bool]], peak_of, path: Path,
                      title: str) -> Path:
    """Per preset (columns): experts read vs T (top: drawn, recovered from each row's bytes, beside the PREDICTED
    expectation E_local·(1 − (1 − k/E)^T)) and bandwidth on touched bytes vs T (bottom: MEASURED bytes / median,
    the PREDICTED curve bytes / max(bytes/BW, FLOPs/peak) per format, the DRAM roofs labelled on their lines).

    ``rows``: timed stage=layer uniform rows; ``dram``: (label, bytes/s, measured?) roofs, the first the one the
    predicted curve uses; ``peak_of(format)``: FLOP/s of the format's tensor path on this device."""
    from matplotlib.lines import Line2D

    names = panels(rows)
    presets = list(dict.fromkeys(names))
    figure, pairs, corner = _pairs(len(presets))
    formats = [f for f in FORMATS if f in set(rows["format"])]
    bandwidth = dram[0][1]
    for (top, bottom), preset in zip(pairs, presets):
        group = rows[names == preset]
        base = layer_of(group.iloc[0])
        top.plot(TOKENS, base.touched(TOKENS), "--", color="0.3", lw=1.1)
        top.axhline(base.local_experts, color=ROOF_COLOURS[2], lw=0.8, ls=":")
        top.annotate(f"E_local = {base.local_experts}", (0.02, base.local_experts), xycoords=("axes fraction", "data"),
                     xytext=(0, -9), textcoords="offset points", fontsize=6, color=ROOF_COLOURS[1])
        for fmt in formats:
            series = group[group["format"] == fmt]
            if series.empty:
                continue
            layer = base.with_format(fmt)
            colour = FORMAT_COLOURS[fmt]
            seconds = predicted_time(layer.flops(TOKENS), layer.bytes(TOKENS), peak_of(fmt), bandwidth)
            bottom.plot(TOKENS, layer.bytes(TOKENS) / seconds / 1e12, "--", color=colour, lw=1.1)
            for impl, points in series.groupby("impl"):
                points = points.sort_values("tokens")
                face = colour if impl == TRITON else "none"
                edge = colour if impl == TRITON else BASELINE_COLOUR
                if impl == TRITON:
                    top.plot(points["tokens"], points.apply(touched_from_bytes, axis=1), linestyle="",
                             marker="o", color=colour, markersize=3.5)
                bottom.plot(points["tokens"], points["bytes"] / points["median_s"] / 1e12, linestyle="",
                            marker=_marker(impl), markerfacecolor=face, markeredgecolor=edge, markersize=3.5)
        for (label, value, measured), style in zip(dram, ("-", "--")):
            _roof_line(bottom, value, f"{label} {si(value, 'B/s')}", ROOF_COLOURS[0 if measured else 1], style)
        top.set_title(_title(preset, 44), fontsize=7)
        top.set_ylabel("experts read (of E_local)", fontsize=7)
        bottom.set_ylabel("bandwidth on touched bytes (TB/s)", fontsize=7)
        for ax in (top, bottom):
            log_axis(ax, "x", 4, formatter=plain)
            ax.set_xlabel("tokens T", fontsize=7)
            ax.tick_params(labelsize=6.5, which="both")
            ax.grid(True, which="major", alpha=0.2)
        log_axis(top, "y", formatter=plain, subs=(1.0, 2.0, 5.0))
        bottom.set_ylim(0, max(v for _, v, _ in dram) / 1e12 * 1.25)
    handles = [Line2D([], [], color=FORMAT_COLOURS[f], marker="o", lw=0, label=f) for f in formats]
    impls = sorted(set(rows["impl"]) - {TRITON})
    handles += [Line2D([], [], color=BASELINE_COLOUR, marker=_marker(i), markerfacecolor="none", lw=0,
                       label=f"{i} (MEASURED)") for i in impls]
    handles += [Line2D([], [], color="0.3", ls="--", lw=1.1, label="PREDICTED: expected experts\ntouched (uniform) /"
                       "\nroofline on its bytes")]
    _legend(figure, corner, handles, "format (filled: triton, MEASURED)")
    figure.suptitle(f"{title}\nmarkers MEASURED (stage = layer, uniform routing); dashed lines PREDICTED", fontsize=9,
                    y=1 - 0.12 / figure.get_figheight(), va="top")
    return save(figure, path)


def knees(table: pd.DataFrame, path: Path) -> Path:
    """The MoE knee (T where the layer turns compute-bound) per preset and format beside the dense knee of the same
    active FLOPs, one panel per device (PREDICTED; MEASURED knees as stars where rows exist).

    ``table``: device, device_name, preset, format, knee, dense_knee, measured_knee."""
    from matplotlib.lines import Line2D

    devices = list(dict.fromkeys(table["device"]))
    names = dict(zip(table["device"], table["device_name"]))
    presets = list(dict.fromkeys(table["preset"]))
    formats = [f for f in FORMATS if f in set(table["format"])]
    figure, rows_n, columns = _grid(len(devices), columns=3, width=4.0, height=2.9, top=1.0, right=2.3)
    axes = figure.subplots(rows_n, columns, squeeze=False)
    offsets = dict(zip(formats, np.linspace(-0.3, 0.3, len(formats))))
    for ax, device in zip(axes.flat, devices):
        panel = table[table["device"] == device]
        for fmt in formats:
            rows = panel[panel["format"] == fmt]
            x = np.array([presets.index(p) for p in rows["preset"]]) + offsets[fmt]
            ax.plot(x, rows["knee"], "o", color=FORMAT_COLOURS[fmt], markersize=4)
            ax.plot(x, rows["dense_knee"], "_", color=FORMAT_COLOURS[fmt], markersize=7, mew=1.5)
            if rows["measured_knee"].notna().any():
                ax.plot(x, rows["measured_knee"], "*", color=FORMAT_COLOURS[fmt], markersize=9, markeredgecolor="k",
                        markeredgewidth=0.5)
        log_axis(ax, "y", formatter=plain)
        ax.set_xticks(range(len(presets)))
        ax.set_xticklabels(presets, rotation=35, ha="right", fontsize=6)
        ax.set_xlim(-0.6, len(presets) - 0.4)
        ax.set_title(names[device], fontsize=8)
        ax.set_ylabel("knee: tokens T per GPU", fontsize=7)
        ax.tick_params(labelsize=6.5, which="both")
        ax.grid(True, which="major", axis="y", alpha=0.2)
    for ax in list(axes.flat)[len(devices):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=FORMAT_COLOURS[f], marker="o", lw=0, label=f) for f in formats]
    handles += [Line2D([], [], color="0.3", marker="o", lw=0, label="MoE knee (PREDICTED)"),
                Line2D([], [], color="0.3", marker="_", mew=1.5, markersize=7, lw=0,
                       label="dense knee, same active\nFLOPs (PREDICTED)")]
    if table["measured_knee"].notna().any():
        handles.append(Line2D([], [], color="0.3", marker="*", markeredgecolor="k", lw=0, markersize=8,
                              label="MoE knee, MEASURED roofs\n(fitted triton rows, W·A16)"))
    _legend(figure, axes.flat[min(columns, len(devices)) - 1], handles, "format / knee")
    figure.suptitle("MoE knee vs dense knee: T where a layer turns compute-bound, per device (datasheet roofline; the "
                    "format's tensor path)", fontsize=9)
    figure.subplots_adjust(hspace=0.9, bottom=1.1 / figure.get_figheight())
    return save(figure, path)


def skew(rows: pd.DataFrame, path: Path, title: str) -> Path:
    """Time per layer (top) and bandwidth on touched bytes (bottom) vs T for uniform, skewed and balanced routing,
    per preset that has more than one (MEASURED, triton, stage = layer); the dashed line is the PREDICTED uniform
    expectation's time on the given roof. ``rows`` carry ``roof_bw`` and ``roof_peak`` columns for it."""
    from matplotlib.lines import Line2D

    names = panels(rows)
    presets = list(dict.fromkeys(names))
    figure, pairs, corner = _pairs(len(presets))
    routings = [r for r in ROUTING_COLOURS if r in set(rows["routing"])]
    for (top, bottom), preset in zip(pairs, presets):
        group = rows[names == preset]
        layer = layer_of(group.iloc[0])
        seconds = predicted_time(layer.flops(TOKENS), layer.bytes(TOKENS), group["roof_peak"].iloc[0],
                                 group["roof_bw"].iloc[0])
        top.plot(TOKENS, seconds * 1e6, "--", color=ROUTING_COLOURS["uniform"], lw=1.0)
        for (routing, zipf), series in group.groupby(["routing", "zipf"], sort=False):
            series = series.sort_values("tokens")
            colour = ROUTING_COLOURS.get(routing, "0.3")
            top.plot(series["tokens"], series["median_s"] * 1e6, "-o", color=colour, markersize=3, lw=1.0)
            bottom.plot(series["tokens"], series["bytes"] / series["median_s"] / 1e12, "-o", color=colour,
                        markersize=3, lw=1.0)
        top.set_title(_title(preset, 44), fontsize=7)
        top.set_ylabel("time per layer (µs)", fontsize=7)
        bottom.set_ylabel("bandwidth on touched bytes (TB/s)", fontsize=7)
        log_axis(top, "y", formatter=plain, subs=(1.0, 2.0, 5.0))
        bottom.set_ylim(bottom=0)
        for ax in (top, bottom):
            log_axis(ax, "x", 4, formatter=plain)
            ax.set_xlabel("tokens T", fontsize=7)
            ax.tick_params(labelsize=6.5, which="both")
            ax.grid(True, which="major", alpha=0.2)
    zipfs = dict(zip(rows["routing"], rows["zipf"]))
    handles = [Line2D([], [], color=ROUTING_COLOURS[r], marker="o", markersize=3, label=r + (
        f" (Zipf {zipfs[r]})" if r == "skewed" else "")) for r in routings]
    handles.append(Line2D([], [], color=ROUTING_COLOURS["uniform"], ls="--", label="PREDICTED, uniform\n(expected "
                          "experts touched)"))
    _legend(figure, corner, handles, "routing (MEASURED, triton)")
    figure.suptitle(f"{title}\nskewed routing reads fewer experts (fewer bytes) but piles pairs onto hot experts",
                    fontsize=9, y=1 - 0.12 / figure.get_figheight(), va="top")
    return save(figure, path)
