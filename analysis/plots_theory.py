"""PNG figures of predictions (datasheets alone), with measured points overlaid where runs exist."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis import predicted
from analysis.devices import Datasheet
from analysis.plots import (_figure, _legend_outside, device_colour, impl_marker, log_axis, plain, save, si,
                            slope_angle, steady_median, unsteady_flags, unsteady_handle)
from analysis.plots_sweeps import _grid, _title

PREDICTED_NOTE = "lines: PREDICTED from datasheets (no launch cost); markers: MEASURED"
CONTEXT_STYLES = ("--", ":", "-.", (0, (6, 2, 1, 2)))
ROOF_DTYPES = (("bf16", "-"), ("fp8", "--"), ("fp4", ":"))  # dense tensor peaks the predicted rooflines draw


def _measured_points(ax, x, y, hollow, colour: str, impl: str) -> None:
    """Measured medians: marker = impl, filled, hollow where the row was not converged or throttled."""
    x, y, hollow = np.asarray(x, dtype=float), np.asarray(y, dtype=float), np.asarray(hollow, dtype=bool)
    for flags, face in ((~hollow, colour), (hollow, "none")):
        if flags.any():
            ax.plot(x[flags], y[flags], linestyle="", marker=impl_marker(impl), color=colour, markersize=3.5,
                    markerfacecolor=face)


def _measured_handles(impls) -> list:
    """Legend entries for the measured markers (one per impl) and for a hollow one."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], linestyle="", marker=impl_marker(i), color="#333333", markersize=4,
                      label=f"MEASURED {i}") for i in impls]
    return [*handles, unsteady_handle()] if handles else []


def _clusters(items: list[tuple[float, str]], tolerance: float = 0.05) -> list[tuple[float, list[str]]]:
    """(value, names) groups of values within ``tolerance`` of each other, largest first."""
    out: list[tuple[float, list[str]]] = []
    for value, name in sorted(items, key=lambda item: -item[0]):
        if out and abs(out[-1][0] / value - 1) <= tolerance:
            out[-1][1].append(name)
        else:
            out.append((value, [name]))
    return out


def rooflines(devices: list[Datasheet], path: Path) -> Path:
    """Datasheet rooflines (bf16 solid, fp8 dashed, fp4 dotted where the device has an fp4 peak) per device, each
    roof labelled with value and ridge. Devices that share a roof (H100 and H200 peaks) stay visible: each later
    device's line is drawn thinner on top of the earlier ones."""
    from analysis.plots import _margin_labels

    figure = _figure(10.5, 6.4)
    ax = figure.add_axes((0.08, 0.2, 0.56, 0.72))
    low, high = 0.5, 5000.0
    peaks = [d.tensor(t) for d in devices for t, _ in ROOF_DTYPES if d.tensor(t)]
    ax.set_xlim(low, high)
    ax.set_ylim(low * min(d.bandwidth for d in devices) / 1e12 / 1.5, max(peaks) / 1e12 * 2.5)
    log_axis(ax, "x")
    log_axis(ax, "y")
    colours = {d.key: device_colour(d.key, i) for i, d in enumerate(devices)}
    peak_items = []
    for index, device in enumerate(devices):
        width = 1.2 + 1.6 * (len(devices) - 1 - index) / max(len(devices) - 1, 1)
        for dtype, style in ROOF_DTYPES:
            peak = device.tensor(dtype)
            if not peak:
                continue
            x = np.geomspace(low, high, 200)
            ax.plot(x, np.minimum(peak, x * device.bandwidth) / 1e12, linestyle=style, color=colours[device.key],
                    lw=width, label=device.name if dtype == "bf16" else None)
            ax.plot([peak / device.bandwidth], [peak / 1e12], "o", color=colours[device.key], markersize=3.5)
            peak_items.append((peak, f"{device.name} {dtype}|{peak / device.bandwidth:.0f}|{device.key}"))
    labels = []
    for value, names in _clusters(peak_items, 0.0):
        who = " / ".join(n.split("|")[0] for n in names)
        ridges = " / ".join(n.split("|")[1] for n in names)
        labels.append((value / 1e12, f"{who}: {si(value, 'FLOP/s')}\nridge {ridges} FLOP/B",
                       colours[names[0].split("|")[2]]))
    _margin_labels(ax, labels, gap_px=24)
    for index, (value, keys) in enumerate(_clusters([(d.bandwidth, d.key) for d in devices])):
        names = " / ".join(f"{get_name(devices, k)} {si(get_bw(devices, k), 'B/s')}" for k in keys)
        x_text = low * 1.3 * 1.9**index
        y_text = x_text * value / 1e12
        angle = slope_angle(ax, x_text, y_text, 2 * y_text)
        ax.text(x_text, y_text * 1.15, names, rotation=angle, rotation_mode="anchor", fontsize=6.2,
                color=colours[keys[0]])
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("attainable TFLOP/s (dense)")
    ax.set_title("PREDICTED datasheet rooflines: tensor bf16 (solid), fp8 (dashed), fp4 (dotted); DRAM "
                 "diagonals; dots: ridges", fontsize=9)
    ax.grid(True, which="major", alpha=0.2)
    ax.legend(fontsize=7, title="device (datasheet)", title_fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.1),
              ncol=5, frameon=False)
    return save(figure, path)


def get_name(devices: list[Datasheet], key: str) -> str:
    return next(d.name for d in devices if d.key == key)


def get_bw(devices: list[Datasheet], key: str) -> float:
    return next(d.bandwidth for d in devices if d.key == key)


def layer_curves(shapes: list[predicted.LayerShape], devices: list[Datasheet], measured: pd.DataFrame,
                 path: Path, title: str, dtype: str = "bf16") -> Path:
    """Predicted time vs batch per projection shape and device, the knee marked; measured medians of the same
    (N, K) overlaid (``measured``: columns device (datasheet key), impl, M, N, K, median_s)."""
    figure, rows_n, columns = _grid(len(shapes), columns=4 if len(shapes) <= 4 else 3, width=3.8, height=3.0)
    axes = figure.subplots(rows_n, columns, squeeze=False, sharex=True)
    batches = np.geomspace(1, 4096, 100)
    impls: dict[str, None] = {}
    for ax, shape in zip(axes.flat, shapes):
        for index, device in enumerate(devices):
            colour = device_colour(device.key, index)
            times = predicted.linear_time(shape, device, dtype, batches)
            if np.isnan(times).all():
                continue
            ax.plot(batches, times * 1e6, "--", color=colour, lw=1.1, label=device.name)
            knee = predicted.linear_knee(shape, device, dtype)
            if np.isfinite(knee) and 1 <= knee <= 4096:
                t_knee = predicted.linear_time(shape, device, dtype, [knee])[0]
                ax.plot([knee], [t_knee * 1e6], "|", color=colour, markersize=10, mew=1.5)
            rows = measured[(measured["device"] == device.key) & (measured["N"] == shape.n)
                            & (measured["K"] == shape.k)] if not measured.empty else measured
            for impl, group in (rows.groupby("impl") if not rows.empty else []):
                group = group.sort_values("M")
                _measured_points(ax, group["M"], group["median_s"] * 1e6, unsteady_flags(group), colour, impl)
                impls.setdefault(impl)
        log_axis(ax, "x", 2)
        log_axis(ax, "y", formatter=plain, subs=(1.0, 2.0, 5.0))
        ax.set_title(_title(f"{shape.label} (N={shape.n}, K={shape.k})", 46), fontsize=7)
        ax.tick_params(labelsize=6.5, which="both", labelbottom=True)
        ax.set_xlabel("batch M", fontsize=7)
        ax.set_ylabel("time (µs)", fontsize=7)
        ax.grid(True, which="major", alpha=0.2)
    for ax in list(axes.flat)[len(shapes):]:
        ax.set_visible(False)
    figure.suptitle(f"{title}\n{PREDICTED_NOTE} (marker: impl); | marks each device's knee", fontsize=9)
    legend_ax = axes.flat[min(columns, len(shapes)) - 1]
    handles, _ = legend_ax.get_legend_handles_labels()
    _legend_outside(legend_ax, [*handles, *_measured_handles(impls)], title="device (dashed: PREDICTED)")
    return save(figure, path)


def _context_text(context: int) -> str:
    return f"{context // 1024}k" if context % 1024 == 0 else str(context)


def _attention_rows(measured: pd.DataFrame, kind: str, shape: predicted.AttentionShape) -> pd.DataFrame:
    """The measured rows of one attention panel (every device)."""
    if measured.empty:
        return measured
    rows = measured[(measured["kernel"] == f"attn_{kind}") & (measured["heads"] == shape.heads)
                    & (measured["kv_heads"] == shape.kv_heads) & (measured["head_dim"] == shape.head_dim)]
    if kind == "prefill":
        rows = rows[rows["causal"].astype(str).str.lower().isin(("true", "1", "1.0"))]
    return rows


def _with_measured(grid, values) -> list:
    """The prediction's x values: its own grid and every x measured, so each marker has its prediction."""
    return sorted({*(float(v) for v in grid), *(float(v) for v in pd.Series(values).dropna() if float(v) > 0)})


def attention_curves(shapes: list[predicted.AttentionShape], devices: list[Datasheet], measured: pd.DataFrame,
                     path: Path) -> Path:
    """Predicted decode attention time vs batch (one line style per context: the suite's 4k and 32k and every
    context measured) and causal prefill time vs seq per device, each evaluated at the measured batches and
    sequence lengths too; measured medians overlaid (``measured``: device, kernel, impl, heads, kv_heads,
    head_dim, x, context, causal, median_s, unsteady)."""
    panels = [("decode", s) for s in shapes] + [("prefill", s) for s in shapes]
    figure, rows_n, columns = _grid(len(panels), columns=4, width=3.3, height=2.8, top=1.2)
    axes = figure.subplots(rows_n, columns, squeeze=False)
    impls: dict[str, None] = {}
    for ax, (kind, shape) in zip(axes.flat, panels):
        panel_rows = _attention_rows(measured, kind, shape)
        measured_x = panel_rows["x"] if not panel_rows.empty else []
        contexts = sorted({*predicted.DECODE_CONTEXTS,
                           *(int(c) for c in (panel_rows["context"].dropna() if not panel_rows.empty else []))})
        styles = dict(zip(contexts, CONTEXT_STYLES * 3))
        for index, device in enumerate(devices):
            colour = device_colour(device.key, index)
            if kind == "decode":
                xs = _with_measured(predicted.DECODE_BATCHES, measured_x)
                for context, style in styles.items():
                    ax.plot(xs, predicted.decode_time(shape, device, context, xs) * 1e6, linestyle=style,
                            color=colour, lw=1.1, label=device.name if context == contexts[0] else None)
            else:
                xs = _with_measured(predicted.PREFILL_SEQS, measured_x)
                ax.plot(xs, predicted.prefill_time(shape, device, xs, True) * 1e6, "--", color=colour, lw=1.1,
                        label=device.name)
            if panel_rows.empty:
                continue
            rows = panel_rows[panel_rows["device"] == device.key]
            by = ["impl", "context" if kind == "decode" else "causal"]
            for (impl, _), group in rows.groupby(by):
                group = steady_median(group, "x", "median_s")
                _measured_points(ax, group.index, group["median_s"] * 1e6, unsteady_flags(group), colour, impl)
                impls.setdefault(impl)
        log_axis(ax, "x", 2)
        log_axis(ax, "y", formatter=plain)
        names = {"--": "dashed", ":": "dotted", "-.": "dash-dot"}
        lengths = ", ".join(f"{_context_text(c)} ({names.get(st, 'dash-dot-dot')})" for c, st in styles.items())
        label = f"decode, C = {lengths}" if kind == "decode" else "prefill, causal, 16k tokens"
        ax.set_title(_title(f"{label}: {shape.label}", 44), fontsize=7)
        ax.set_xlabel("batch (sequences)" if kind == "decode" else "seq (batch = 16k / seq)", fontsize=7)
        ax.set_ylabel("time (µs)", fontsize=7)
        ax.tick_params(labelsize=6.5, which="both")
        ax.grid(True, which="major", alpha=0.2)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    figure.suptitle("Attention, bf16 — " + PREDICTED_NOTE + "\ndecode lengths as the measured points: evenly from "
                    "the context C down to C/2 (mean ≈ 0.75 C at batch ≥ 2); decode has no knee", fontsize=9)
    legend_ax = axes.flat[min(columns, len(panels)) - 1]
    handles, _ = legend_ax.get_legend_handles_labels()
    _legend_outside(legend_ax, [*handles, *_measured_handles(impls)], title="device (PREDICTED lines)")
    return save(figure, path)


def tokenomics(curves: pd.DataFrame, path: Path, title: str | None = None,
               fixed_costs: str = "all-reduce\nlatency, launches") -> Path:
    """Throughput per GPU vs interactivity per preset × scenario panel (the articles' claim first), one colour per
    device: thin dotted = the upper bound (no fixed costs), thick = with the per-step fixed costs (dashed when
    PREDICTED from datasheets, solid with dots when the kernel terms are MEASURED); batch 1 to the memory cap, the
    cap starred and its batch written on the thick curve."""
    from matplotlib.lines import Line2D

    panels = list(dict.fromkeys(zip(curves["preset"], curves["scenario"])))
    figure, rows_n, columns = _grid(len(panels), columns=3, width=4.0, height=3.4, right=2.9)
    axes = figure.subplots(rows_n, columns, squeeze=False)
    keys = list(dict.fromkeys(curves["device"]))
    costs = curves["costs"] if "costs" in curves else pd.Series("with fixed costs", index=curves.index)
    names = dict(zip(curves["device"], curves["device_name"]))
    for ax, (preset, scenario) in zip(axes.flat, panels):
        panel = curves[(curves["preset"] == preset) & (curves["scenario"] == scenario)].assign(costs=costs)
        for (device, basis, cost), rows in panel.groupby(["device", "basis", "costs"], sort=False):
            rows = rows.sort_values("batch")
            colour = device_colour(device, keys.index(device))
            measured = not basis.startswith("predicted")
            if cost.startswith("upper"):
                ax.plot(rows["interactivity"], rows["throughput_per_gpu"], ":", color=colour, lw=0.9, alpha=0.8)
                continue
            ax.plot(rows["interactivity"], rows["throughput_per_gpu"], "-" if measured else "--", color=colour,
                    marker="o" if measured else None, markersize=3, lw=1.4)
            cap = rows.iloc[-1]
            ax.plot([cap["interactivity"]], [cap["throughput_per_gpu"]], "*", color=colour, markersize=9)
            ax.annotate(f"B={int(cap['batch'])}", (cap["interactivity"], cap["throughput_per_gpu"]), fontsize=6,
                        xytext=(0, -14) if measured else (4, 3), ha="center" if measured else "left",
                        textcoords="offset points", color=colour)
        log_axis(ax, "x", formatter=plain, subs=(1.0, 2.0, 5.0))
        log_axis(ax, "y", formatter=plain, subs=(1.0, 2.0, 5.0))
        ax.set_title(_title(f"{preset} · {scenario}", 44), fontsize=7.5)
        ax.set_xlabel("interactivity (tokens/s per user)", fontsize=7)
        ax.set_ylabel("throughput (tokens/s per GPU)", fontsize=7)
        ax.tick_params(labelsize=6.5, which="both")
        ax.grid(True, which="major", alpha=0.2)
        ax.margins(x=0.12, y=0.12)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    figure.suptitle(title or "Decode economics, PREDICTED unless marked: batch 1 (right) to the memory cap (★, left); "
                    "first panel: the articles' H100-vs-H200 claim", fontsize=9)
    handles = [Line2D([], [], color=device_colour(k, keys.index(k)), lw=2, label=names[k]) for k in keys]
    handles += [Line2D([], [], color="0.3", ls=":", lw=0.9, label="upper bound: no fixed costs"),
                Line2D([], [], color="0.3", ls="--", lw=1.4, label=f"with fixed costs ({fixed_costs})"),
                Line2D([], [], color="0.3", ls="-", marker="o", markersize=3, lw=1.4,
                       label="with fixed costs, MEASURED\nkernel terms (NVLink predicted)")]
    if not curves["basis"].str.startswith("measured").any():
        handles = handles[:-1]
    axes.flat[min(columns, len(panels)) - 1].legend(handles=handles, fontsize=7, loc="upper left",
                                                   bbox_to_anchor=(1.01, 1.0), frameon=False, title="device / curve")
    return save(figure, path)
