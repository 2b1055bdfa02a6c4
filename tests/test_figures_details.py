"""Figure details from issues 20 and 22, each on a small hand-built input: medians over steady points with hollow
markers where only unsteady ones exist, the device-ratio figure's colours and batch axis, the predicted figures'
roofs, sequence lengths and legends, a refused fit's reason on its panel."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import plots, plots_sweeps, plots_theory
from tests.test_figures import data_axes, hollow_markers, legends


@pytest.fixture
def captured(monkeypatch):
    figures = []
    for module in (plots, plots_sweeps, plots_theory):
        monkeypatch.setattr(module, "save", lambda figure, path: figures.append(figure) or path)
    return figures


def _ratio_rows(series: list[tuple[str, str, str]], batches=(1, 2, 4, 8), unsteady_at=()) -> pd.DataFrame:
    rows = []
    rng = np.random.default_rng(7)
    for kernel, impl, dtype in series:
        for batch in batches:
            for shape in range(3):
                rows.append(dict(kernel=kernel, impl=impl, dtype=dtype, batch=batch,
                                 ratio=1.4 + 0.01 * shape + 0.02 * rng.standard_normal(),
                                 unsteady=(batch, shape) in unsteady_at or batch in unsteady_at))
    frame = pd.DataFrame(rows)
    frame["series"] = frame["kernel"] + " " + frame["impl"] + " " + frame["dtype"]
    return frame


def test_device_ratio_gives_every_series_its_own_colour(tmp_path, captured):
    """Issue 22: with more than seven kernel × dtype pairs the palette wrapped and two series shared a colour."""
    series = [(k, i, d) for k in ("gemv", "gemm", "qgemv", "attn_decode", "attn_prefill") for i in ("triton", "torch")
              for d in ("fp16",)]
    plots_sweeps.device_ratio(_ratio_rows(series), {}, tmp_path / "ratio.png", "ratio")
    ax = data_axes(captured[0])[0]
    colours = {line.get_label(): line.get_color() for line in ax.lines if not line.get_label().startswith("_")}
    drawn = {f"{k} {i} {d}" for k, i, d in series}
    assert drawn <= set(colours)
    assert len({colours[name] for name in drawn}) == len(drawn)


def test_device_ratio_hollow_only_where_every_point_at_a_batch_is_unsteady(tmp_path, captured):
    # batch 2: one shape of three unsteady (median of the two steady ones, filled); batch 8: all three unsteady
    table = _ratio_rows([("gemv", "triton", "fp16")], unsteady_at=((2, 0), 8))
    table.loc[(table["batch"] == 2) & (table["unsteady"]), "ratio"] = 9.0  # a wild unsteady ratio
    plots_sweeps.device_ratio(table, {}, tmp_path / "ratio.png", "ratio")
    hollow = hollow_markers(captured[0])
    assert {x for x, _ in hollow} == {8.0}
    line = next(line for line in data_axes(captured[0])[0].lines if line.get_label() == "gemv triton fp16")
    at_two = dict(zip(line.get_xdata(), line.get_ydata()))[2]
    assert at_two < 2.0  # the wild unsteady ratio is not in the median
    steady = table[(table["batch"] == 2) & ~table["unsteady"]]["ratio"].median()
    assert at_two == pytest.approx(steady)


def test_square_gemms_are_off_the_batch_axis():
    """Issue 22: the tensor-core ceilings' square GEMMs (M = N = K) were drawn at "batch" 2048…8192."""
    from analysis.comparison import _batch_of

    frame = pd.DataFrame(dict(
        kernel=["gemm"] * 5, label=["square.4096", "square.8192", "llama3-8b.q", "llama3-8b.q", "square.1024"],
        M=[4096, 8192, 4096, 16, 8], N=[4096, 8192, 4096, 4096, 1024], K=[4096, 8192, 4096, 4096, 1024]))
    batch = _batch_of(frame)
    assert batch.isna().tolist() == [True, True, False, False, False]


def _sweep(points: int, refused: str = ""):
    from analysis.fit import fit_roofline
    from analysis.sweeps import SweepFit

    batches = np.array([1, 2, 4, 8, 16, 32][:points], dtype=float)
    flops, nbytes = 2 * batches * 4096 * 4096, 2 * (batches * 4096 * 2 + 4096 * 4096)
    seconds = 5e-6 + nbytes / 3e12
    rows = pd.DataFrame(dict(M=batches, flops=flops, bytes=nbytes, median_s=seconds, p20_s=seconds * 0.99,
                             p80_s=seconds * 1.01, in_fit=True, excluded="", launch="graph"))
    fit = fit_roofline(rows["flops"], rows["bytes"], rows["median_s"], 4e12 if refused else None)
    return SweepFit("gemv", "triton", "fp16", "llama3-8b.q", "cold", "M", rows, fit)


def test_a_refused_fit_states_its_reason_on_the_panel(tmp_path, captured):
    """Issue 22: a refused fit left its panel with a row of dashes, the reason only in fits.csv."""
    sweep = _sweep(3)
    assert sweep.fit.refused
    plots_sweeps.fit_panels([sweep], tmp_path / "fit.png", "fits")
    texts = " ".join(t.get_text() for ax in data_axes(captured[0]) for t in ax.texts)
    assert "refused" in texts and "3 usable points" in texts and "needs 4" in texts


def test_predicted_rooflines_draw_an_fp4_roof_where_the_datasheet_has_one_in_distinct_hues(tmp_path, captured):
    """Issue 22: FP4 roofs for Blackwell; A100's sky blue beside H100's blue read as one device."""
    import colorsys

    from matplotlib.colors import to_rgb

    from analysis import predicted

    sheets = predicted.devices()
    plots_theory.rooflines(sheets, tmp_path / "rooflines.png")
    ax = data_axes(captured[0])[0]
    dotted_tops = {round(float(max(line.get_ydata())), 6) for line in ax.lines if line.get_linestyle() == ":"}
    with_fp4 = [d for d in sheets if d.tensor("fp4")]
    assert with_fp4, "the device table has Blackwell fp4 peaks"
    assert dotted_tops == {round(d.tensor("fp4") / 1e12, 6) for d in with_fp4}
    hues = [colorsys.rgb_to_hls(*to_rgb(plots.device_colour(d.key, i)))[0] for i, d in enumerate(sheets)]
    gaps = [min(abs(a - b), 1 - abs(a - b)) for i, a in enumerate(hues) for b in hues[i + 1:]]
    assert min(gaps) > 0.04, hues


def test_predicted_attention_is_drawn_at_the_measured_lengths_and_contexts(tmp_path, captured):
    """Issue 22: predictions at the measured sequence lengths (a 16k-context decode point sat on no curve)."""
    from analysis import predicted
    from analysis.devices import get

    shape = predicted.AttentionShape(32, 8, 128, ())
    h100 = get("h100-sxm")
    measured = pd.DataFrame([
        dict(device="h100-sxm", kernel="attn_decode", impl="triton", heads=32, kv_heads=8, head_dim=128, x=3,
             context=16384, causal=np.nan, median_s=1e-4, unsteady=False),
        dict(device="h100-sxm", kernel="attn_prefill", impl="triton", heads=32, kv_heads=8, head_dim=128, x=3072,
             context=np.nan, causal=True, median_s=1e-3, unsteady=True)])
    plots_theory.attention_curves([shape], [h100], measured, tmp_path / "attention.png")
    decode, prefill = data_axes(captured[0])
    expected = predicted.decode_time(shape, h100, 16384, [3])[0] * 1e6
    curves = [line for line in decode.lines if line.get_linestyle() not in ("None", "")]
    assert any(3.0 in list(line.get_xdata()) and np.isclose(
        dict(zip(line.get_xdata(), line.get_ydata()))[3.0], expected) for line in curves)
    assert "16k" in decode.get_title()
    assert any(3072.0 in list(line.get_xdata()) for line in prefill.lines if line.get_linestyle() not in ("None", ""))
    assert (3072.0, 1e3) in {(x, round(y, 6)) for x, y in hollow_markers(captured[0])}


def test_predicted_layers_name_the_measured_markers_and_share_a_figure_per_shape_set(tmp_path, captured):
    """Issue 22: measured points were missing from the legend; llama2-70b and llama3-70b drew the same figure."""
    from analysis import predicted
    from analysis.devices import get

    groups = [[m.name for m in group] for group in predicted.models_by_shapes()]
    assert ["llama3-70b", "llama2-70b"] in groups
    assert all(len(group) == 1 for group in groups if "llama3-8b" in group)
    shapes = predicted.layer_shapes(next(g for g in predicted.models_by_shapes() if len(g) > 1))
    shape = shapes[0]
    measured = pd.DataFrame(dict(device="h100-sxm", impl=["triton", "torch"], M=[4, 4], N=shape.n, K=shape.k,
                                 median_s=[1e-4, 1.2e-4], unsteady=[False, False]))
    plots_theory.layer_curves(shapes, [get("h100-sxm")], measured, tmp_path / "layers.png", "layers")
    texts = [t.get_text() for legend in legends(captured[0]) for t in legend.get_texts()]
    assert "MEASURED triton" in texts and "MEASURED torch" in texts
