"""Every figure kind, rendered from the synthetic H100 + H200 results (no GPU, nothing measured), checked on its
matplotlib Figure: as many visible panels with data as its inputs imply, a legend where one is expected and
inside the canvas, off the data, and no text cut off at the canvas edge (issue 22 §1)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import pytest

from analysis import plots, plots_moe, plots_sweeps, plots_theory
from analysis.report import build_report
from tests import fixture_results as fx

MODULES = (plots, plots_sweeps, plots_theory, plots_moe)
TOLERANCE_PX = 1.0  # text extents are rounded to whole pixels when drawn


def _drawing_functions() -> dict[str, tuple]:
    """name -> (module, function) for every public function of the plots modules that saves a PNG."""
    found = {}
    for module in MODULES:
        for name, function in inspect.getmembers(module, inspect.isfunction):
            if function.__module__ != module.__name__ or name.startswith("_") or name == "save":
                continue
            if "save(" in inspect.getsource(function):
                found[name] = (module, function)
    return found


DRAWING = _drawing_functions()


@dataclass
class Drawn:
    kind: str  # the drawing function's name
    inputs: dict  # its arguments by parameter name
    path: Path
    figure: object = None

    def __repr__(self) -> str:  # failures name the figure, not its inputs
        return f"{self.kind}: {self.path}"


def _panels(names) -> int:
    return min(len(set(names)), plots_sweeps.MAX_PANELS)


def _fit_panels(inputs: dict) -> int:
    panel = inputs.get("panel", lambda s: s.shape)
    return _panels(panel(s) for s in inputs["sweeps"])


# the number of panels with data each kind's inputs imply
EXPECTED_PANELS = {
    "roofline": lambda inputs: 1,
    "bandwidth": lambda inputs: 1,
    "heatmap": lambda inputs: 1,
    "fit_panels": _fit_panels,
    "fraction_of_roof": lambda inputs: _panels((s.shape, s.dtype) for s in inputs["sweeps"]),
    "speedup": lambda inputs: 1,
    "device_ratio": lambda inputs: 1,
    "rooflines": lambda inputs: 1,
    "layer_curves": lambda inputs: len(inputs["shapes"]),
    "attention_curves": lambda inputs: 2 * len(inputs["shapes"]),
    "tokenomics": lambda inputs: len(set(zip(inputs["curves"]["preset"], inputs["curves"]["scenario"]))),
    "touched_bandwidth": lambda inputs: 2 * plots_moe.panels(inputs["rows"]).nunique(),  # experts read, bandwidth
    "knees": lambda inputs: inputs["table"]["device"].nunique(),
    "skew": lambda inputs: 2 * plots_moe.panels(inputs["rows"]).nunique(),  # time over bandwidth
}
WITHOUT_LEGEND = {"heatmap"}  # a colour bar instead


@pytest.fixture(scope="module")
def drawn(tmp_path_factory) -> list[Drawn]:
    """Every figure a report of the fixture results draws, with the inputs it was drawn from."""
    root = fx.write_results(tmp_path_factory.mktemp("results"), devices=(fx.H100, fx.H200), interpret=True,
                            unsteady=True, moe=True)
    out = tmp_path_factory.mktemp("report")
    calls: list[Drawn] = []
    original_save = plots.save

    def capture(figure, path):
        calls[-1].figure = figure
        return original_save(figure, path)

    def recording(name, function):
        signature = inspect.signature(function)

        def draw(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            calls.append(Drawn(name, dict(bound.arguments), Path(bound.arguments["path"]).relative_to(out)))
            return function(*args, **kwargs)
        return draw

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plots, "_RENDERED", {})  # figures cached by an earlier test in this process are drawn again
        for module in MODULES:
            patch.setattr(module, "save", capture)
        for name, (module, function) in DRAWING.items():
            patch.setattr(module, name, recording(name, function))
        build_report(root, out)
    assert all(call.figure is not None for call in calls)
    return calls


def _has_data(ax) -> bool:
    lines = any(len(line.get_xdata()) for line in ax.lines)
    collections = any(len(c.get_offsets()) or len(c.get_paths()) for c in ax.collections)
    return lines or collections or bool(ax.patches) or bool(ax.images)


def data_axes(figure) -> list:
    """Visible panels with something drawn from data (colour bars are not panels)."""
    return [ax for ax in figure.axes if ax.get_visible() and ax.get_label() != "<colorbar>" and _has_data(ax)]


def legends(figure) -> list:
    on_axes = [ax.get_legend() for ax in figure.axes if ax.get_visible() and ax.get_legend() is not None]
    return [legend for legend in [*figure.legends, *on_axes] if legend.get_visible()]


def _in_view(axis, tick) -> bool:
    low, high = sorted(axis.get_view_interval())
    return low - 1e-9 * abs(high - low) <= tick.get_loc() <= high + 1e-9 * abs(high - low)


def drawn_texts(figure) -> list:
    """The text artists drawing the figure puts on the canvas: titles, labels, tick labels in view, annotations,
    legend text."""
    from matplotlib.text import Text

    texts = list(figure.texts)
    for legend in legends(figure):
        texts += [*legend.get_texts(), legend.get_title()]
    for ax in (ax for ax in figure.axes if ax.get_visible()):
        texts += [child for child in ax.get_children() if isinstance(child, Text)]
        for axis in (ax.xaxis, ax.yaxis):
            texts.append(axis.label)
            ticks = axis.get_major_ticks() + axis.get_minor_ticks()
            texts += [t.label1 for t in ticks if t.label1.get_visible() and _in_view(axis, t)]
    return [t for t in texts if t.get_visible() and t.get_text().strip()]


def _inside(box, canvas) -> bool:
    return (box.x0 >= canvas.x0 - TOLERANCE_PX and box.y0 >= canvas.y0 - TOLERANCE_PX
            and box.x1 <= canvas.x1 + TOLERANCE_PX and box.y1 <= canvas.y1 + TOLERANCE_PX)


def _overlap(a, b) -> bool:
    return min(a.x1, b.x1) - max(a.x0, b.x0) > TOLERANCE_PX and min(a.y1, b.y1) - max(a.y0, b.y0) > TOLERANCE_PX


def _of_kind(drawn: list[Drawn], kind: str) -> list[Drawn]:
    found = [d for d in drawn if d.kind == kind]
    assert found, f"the fixture report draws no {kind} figure"
    return found


def test_every_drawing_function_has_an_expectation():
    assert set(DRAWING) == set(EXPECTED_PANELS), "a new figure kind needs its expected panel count here"


@pytest.mark.parametrize("kind", sorted(DRAWING))
def test_panels_with_data_are_those_the_inputs_imply(drawn, kind):
    for item in _of_kind(drawn, kind):
        assert len(data_axes(item.figure)) == EXPECTED_PANELS[kind](item.inputs), item.path


@pytest.mark.parametrize("kind", sorted(DRAWING))
def test_legend_is_drawn_inside_the_canvas_and_off_the_data(drawn, kind):
    for item in _of_kind(drawn, kind):
        figure = item.figure
        renderer = figure.canvas.get_renderer()
        found = legends(figure)
        if kind in WITHOUT_LEGEND:
            assert not found, item.path
            continue
        assert len(found) == 1, item.path
        box = found[0].get_window_extent(renderer)
        assert _inside(box, figure.bbox), (item.path, box, figure.bbox)
        for ax in data_axes(figure):
            assert not _overlap(box, ax.get_window_extent(renderer)), (item.path, ax.get_title())


@pytest.mark.parametrize("kind", sorted(DRAWING))
def test_no_text_is_cut_off_at_the_canvas_edge(drawn, kind):
    for item in _of_kind(drawn, kind):
        figure = item.figure
        figure.canvas.draw()
        renderer = figure.canvas.get_renderer()
        outside = [t.get_text() for t in drawn_texts(figure) if not _inside(t.get_window_extent(renderer), figure.bbox)]
        assert not outside, (item.path, outside)


def test_fraction_of_roof_shows_every_shape_with_the_legend_on_a_shown_panel(drawn):
    """Issue 22: gemv showed "first 1 of 13 shapes" and attn_decode "0 of 4", the legend on a hidden panel."""
    fractions = {d.path.name: d.figure for d in drawn if d.kind == "fraction_of_roof" and fx.H100.slug in str(d.path)}
    gemv_shapes = len(fx.LINEAR_SHAPES) + 1  # and square.1024
    assert len(data_axes(fractions["fraction-gemv.png"])) == gemv_shapes
    assert len(data_axes(fractions["fraction-attn_decode.png"])) == 4  # heads × context
    for name, figure in fractions.items():
        assert "first" not in figure.get_suptitle(), name
        assert legends(figure), name


def test_quant_speedup_draws_the_ideal_dashed_in_each_series_colour(tmp_path, monkeypatch):
    import pandas as pd

    captured = []
    monkeypatch.setattr(plots_sweeps, "save", lambda figure, path: captured.append(figure) or path)
    batches = [1, 2, 4, 8, 16]
    table = pd.concat([pd.DataFrame(dict(series=name, batch=batches, speedup=[3.0, 2.8, 2.0, 1.0, 0.5], ideal=ideal))
                       for name, ideal in (("int4", 3.8), ("int8", 1.9))])
    plots_sweeps.speedup(table, {"int4": 8.0, "int8": 4.0}, tmp_path / "quant.png", "quantized")
    ax = data_axes(captured[0])[0]
    measured = {line.get_label(): line.get_color() for line in ax.lines if line.get_linestyle() == "-"}
    ideals = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert sorted(max(line.get_ydata()) for line in ideals) == [1.9, 3.8]
    assert {line.get_color() for line in ideals} == {measured["int4"], measured["int8"]}


# figures that draw measured points: the unsteady ones (not converged, throttled by heat) are drawn hollow
AGGREGATED = ("device_ratio", "attention_curves")
MEASURED_KINDS = ("roofline", "bandwidth", "fit_panels", "fraction_of_roof", "speedup", "device_ratio",
                  "layer_curves", "attention_curves")


def _unsteady_in(inputs: dict) -> bool:
    """Whether a figure's inputs (sweeps, or a table of measured points) hold an unsteady point it draws."""
    if "shapes" in inputs and "measured" in inputs and {"N", "K"} <= set(inputs["measured"].columns):
        measured = inputs["measured"]
        drawn_shapes = {(s.n, s.k) for s in inputs["shapes"]}
        inputs = {"measured": measured[[nk in drawn_shapes for nk in zip(measured["N"], measured["K"])]]}
    for value in inputs.values():
        if isinstance(value, list) and value and hasattr(value[0], "rows"):
            if any("unsteady" in s.rows and s.rows["unsteady"].any() for s in value):
                return True
        if hasattr(value, "columns") and "unsteady" in value.columns and value["unsteady"].fillna(False).any():
            return True
    return False


def hollow_markers(figure) -> set[tuple[float, float]]:
    """(x, y) of every marker drawn with no face: Line2D markerfacecolor 'none', scatter faces of alpha 0."""
    import numpy as np

    found = set()
    for ax in data_axes(figure):
        for line in ax.lines:
            if line.get_marker() not in (None, "None", "", " ") and str(line.get_markerfacecolor()) == "none":
                found |= {(float(x), float(y)) for x, y in zip(line.get_xdata(), line.get_ydata())}
        for collection in ax.collections:
            offsets = np.asarray(collection.get_offsets())
            faces = collection.get_facecolors()
            if not len(offsets):
                continue
            clear = np.ones(len(offsets), bool) if len(faces) == 0 else np.broadcast_to(faces[:, 3] == 0, len(offsets))
            found |= {(float(x), float(y)) for (x, y), c in zip(offsets, clear) if c}
    return found


def _close(point, points, rel=1e-6) -> bool:
    return any(abs(point[0] - x) <= rel * abs(x) and abs(point[1] - y) <= rel * abs(y) for x, y in points)


@pytest.mark.parametrize("kind", MEASURED_KINDS)
def test_unsteady_points_are_drawn_hollow_and_the_legend_says_so(drawn, kind):
    """Issue 20 §3: not-converged and throttled rows drawn hollow in every figure of measured points."""
    items = [d for d in _of_kind(drawn, kind) if _unsteady_in(d.inputs)]
    assert items, f"no {kind} figure of the fixture report carries an unsteady point"
    for item in items:
        # the ratio and attention figures draw medians over shapes: hollow only where every point was unsteady
        # (tests/test_figures_details.py)
        assert kind in AGGREGATED or hollow_markers(item.figure), item.path
        texts = " ".join(" ".join(t.get_text().split()) for legend in legends(item.figure) for t in legend.get_texts())
        assert "not converged or" in texts and "throttled" in texts, item.path


def test_fit_panels_and_bandwidth_draw_each_unsteady_point_hollow_where_it_lies(drawn):
    checked = 0
    for item in [*_of_kind(drawn, "fit_panels"), *_of_kind(drawn, "bandwidth")]:
        hollow = hollow_markers(item.figure)
        for sweep in item.inputs["sweeps"]:
            rows = sweep.rows[sweep.rows["unsteady"]]
            if item.kind == "fit_panels":
                points = zip(rows[sweep.batch], rows["median_s"])
            else:
                points = zip(rows["bytes"], rows["bytes"] / rows["median_s"] / 1e9)
            for point in points:
                assert _close((float(point[0]), float(point[1])), hollow), (item.path, sweep.shape, point)
                checked += 1
    assert checked > 5
