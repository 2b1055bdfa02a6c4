"""The MoE cost model (analysis/moe.py), its knee, the MoE decode economics, and the report built from fixture MoE
rows (tests/fixture_results.py write_moe_run). Hand-computed values; nothing measured."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis import moe_tokenomics as mt
from analysis.devices import DEVICES, get
from analysis.moe import FORMATS, DenseMlp, MoeLayer, compute_dtype, expert_bytes, matrix_bytes
from analysis.report import build_report
from kernels.models import DEEPSEEK_V3_MOE, GPT_OSS_120B, MIXTRAL_8X7B, MOE_MODELS
from tests import fixture_results as fx

H100 = get("h100-sxm")


# ---------------------------------------------------------------------------------------------
# Bytes per format, per layer
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt, rows, k, expected", [
    ("bf16", 256, 128, 256 * 128 * 2),
    ("fp8-channel", 256, 128, 256 * 128 + 4 * 256),
    ("fp8-block", 256, 130, 256 * 130 + 4 * 2 * 2),  # 2 × 2 blocks of 128 × 128
    ("int4-g128", 3, 256, 3 * 128 + 2 * 3 * 2 + 2 * 2),  # nibbles, fp16 scales per group, 4-bit zeros packed by 2
    ("mxfp4", 2, 64, 64 + 2 * 2),  # one E8M0 byte per 32
    ("nvfp4", 2, 32, 32 + 2 * 2 + 4),  # one e4m3 byte per 16 and the fp32 tensor scale
])
def test_matrix_bytes_are_the_formats_tensors(fmt, rows, k, expected):
    assert matrix_bytes(fmt, rows, k) == expected


def test_matrix_bytes_match_the_kernel_side_on_any_shape():
    """The analysis mirrors kernels/moe_formats.expert_bytes (merged from the kernel branch): same bytes on shapes
    drawn afresh, so predicted and measured bandwidth count one number."""
    formats = pytest.importorskip("kernels.moe_formats")
    rng = np.random.default_rng()
    for _ in range(40):
        fmt = str(rng.choice(FORMATS))
        rows, k = int(rng.integers(1, 700)), int(rng.integers(1, 900))
        if fmt in ("int4-g128", "mxfp4", "nvfp4"):
            k = int(np.ceil(k / 128) * 128)
        assert matrix_bytes(fmt, rows, k) == formats.expert_bytes(fmt, rows, k, 2), (fmt, rows, k)


def test_layer_bytes_and_flops_match_the_kernel_rows_on_drawn_routings():
    """The layer row's bytes and FLOPs (kernels/moe_cost.py, for the routing the case draws) are the analysis model's
    for the same counts, on cases drawn afresh: every format, EP, shared, routing."""
    pytest.importorskip("kernels.moe_cost")
    from kernels.moe_cost import counts, moe_bytes, moe_flops
    from kernels.moe_spec import MOE

    rng = np.random.default_rng()
    for _ in range(20):
        experts, top_k, ep = int(rng.choice([8, 16, 40])), int(rng.integers(1, 5)), int(rng.choice([1, 2, 4, 8]))
        ep = ep if experts % ep == 0 else 1
        routing = str(rng.choice(["uniform", "skewed", "balanced"]))
        values = dict(tokens=int(rng.integers(1, 300)), experts=experts, top_k=top_k, d_model=256, d_ff=384, ep=ep,
                      routing=routing, zipf="1.2" if routing == "skewed" else "0", shared=int(rng.integers(2)),
                      format=str(rng.choice(FORMATS)), stage="layer")
        case = MOE.case("bf16", **values)
        drawn = counts(case)
        layer = MoeLayer(experts, top_k, 256, 384, ep, values["shared"], values["format"])
        assert float(layer.bytes_for(values["tokens"], drawn.touched, drawn.tokens_in)) == moe_bytes(case), values
        assert float(layer.flops_for(values["tokens"], drawn.pairs)) == moe_flops(case), values


def test_layer_bytes_and_flops_by_hand():
    layer = MoeLayer(experts=8, top_k=2, d_model=64, d_ff=32)
    expert = (64 * 64 + 64 * 32) * 2  # W1 [2·32, 64] + W2 [64, 32], bf16
    assert layer.expert_bytes == expert == 12288
    touched = 8 * (1 - (6 / 8) ** 3)  # 4.625
    assert float(layer.touched(3)) == pytest.approx(touched)
    assert float(layer.bytes(3)) == pytest.approx(3 * 64 * 2 + touched * expert + 3 * 2 * 8 + 3 * 64 * 2)
    assert float(layer.flops(3)) == 2 * 3 * 2 * 3 * 64 * 32


def test_one_token_reads_exactly_k_experts_not_all_of_them():
    """Fails if untouched experts were counted (E instead of k at T = 1) or k/E were swapped in the expectation."""
    for model in MOE_MODELS:
        layer = MoeLayer.of(model, "bf16", shared=False)
        assert float(layer.touched(1)) == pytest.approx(model.top_k)
        weights = float(layer.bytes(1)) - 4 * model.hidden - 8 * model.top_k
        assert weights == pytest.approx(model.top_k * layer.expert_bytes)
    layer = MoeLayer.of(GPT_OSS_120B, "bf16")
    assert float(layer.touched(10)) == pytest.approx(128 * (1 - (124 / 128) ** 10))
    assert float(layer.touched(10)) < 4 * 10  # distinct experts, fewer than the pairs


def test_expectation_matches_drawn_uniform_routings_on_any_shape():
    rng = np.random.default_rng()
    for _ in range(6):
        experts = int(rng.integers(4, 64))
        top_k, tokens = int(rng.integers(1, min(experts, 8) + 1)), int(rng.integers(1, 40))
        ep = int(rng.choice([d for d in (1, 2, 4) if experts % d == 0]))
        layer = MoeLayer(experts, top_k, 32, 16, ep)
        draws = [fx.draw_routing(tokens, experts, top_k, "uniform", "0", layer.local_experts, rng) for _ in range(300)]
        touched = np.array([d.touched for d in draws], float)
        pairs = np.array([d.pairs for d in draws], float)
        tokens_in = np.array([d.tokens_in for d in draws], float)
        for drawn, expected in ((touched, layer.touched(tokens)), (pairs, layer.pairs(tokens)),
                                (tokens_in, layer.tokens_in(tokens))):
            spread = max(drawn.std(), 0.5) / math.sqrt(len(drawn))  # counts: a sample may show no spread at all
            assert abs(drawn.mean() - float(expected)) < 5 * spread, (experts, top_k, tokens, ep)


def test_skewed_routing_touches_fewer_experts_and_balanced_spreads_pairs_evenly():
    rng = np.random.default_rng()
    uniform = fx.draw_routing(64, 128, 4, "uniform", "0", 128, rng)
    skewed = fx.draw_routing(64, 128, 4, "skewed", "1.2", 128, rng)
    balanced = fx.draw_routing(64, 128, 4, "balanced", "0", 128, rng)
    assert skewed.touched < uniform.touched
    assert balanced.touched == 128 and balanced.pairs == 256


# ---------------------------------------------------------------------------------------------
# The knee
# ---------------------------------------------------------------------------------------------


def test_knee_is_where_the_two_times_cross_on_any_layer():
    rng = np.random.default_rng()
    for _ in range(10):
        model = MOE_MODELS[int(rng.integers(len(MOE_MODELS)))]
        device = DEVICES[int(rng.integers(len(DEVICES)))]
        layer = MoeLayer.of(model, str(rng.choice(FORMATS)), shared=bool(rng.integers(2)))
        knee = layer.knee(device)
        peak = device.tensor(compute_dtype(layer.format, device))
        assert float(layer.flops(knee * 0.99)) / peak < float(layer.bytes(knee * 0.99)) / device.bandwidth
        assert float(layer.flops(knee * 1.01)) / peak > float(layer.bytes(knee * 1.01)) / device.bandwidth


def test_issue_knees_from_the_model_bf16_on_h100():
    """ridge·E/k ≈ 9,450 for DeepSeek-V3 and gpt-oss-120b, ≈ 1,180 for Mixtral: the exact crossing lies 0.5–3 % above
    (activations), and DeepSeek's shared expert pulls it below."""
    ridge = H100.ridge
    for model in (DEEPSEEK_V3_MOE, GPT_OSS_120B, MIXTRAL_8X7B):
        routed = MoeLayer.of(model, "bf16", shared=False)
        approx = ridge * model.experts / model.top_k
        assert routed.approximate_knee(H100) == pytest.approx(approx * routed.expert_bytes / (3 * model.hidden
                                                              * model.expert_ff * 2))
        assert 1.005 * approx < routed.knee(H100) < 1.03 * approx
    shared = MoeLayer.of(DEEPSEEK_V3_MOE, "bf16")
    assert shared.knee(H100) == pytest.approx(ridge * 257 / 9, rel=0.03)
    assert shared.knee(H100) < ridge * 256 / 8


def test_dense_knee_is_the_ridge_and_moe_knee_is_e_over_k_times_it():
    for model in (GPT_OSS_120B, MIXTRAL_8X7B):
        layer = MoeLayer.of(model, "bf16")
        dense = layer.dense()
        assert isinstance(dense, DenseMlp) and dense.width == 3 * model.expert_ff * model.top_k
        assert dense.knee(H100) == pytest.approx(H100.ridge, rel=0.03)
        t = dense.knee(H100)
        assert float(dense.flops(t)) / H100.tensor("bf16") == pytest.approx(float(dense.bytes(t)) / H100.bandwidth)
        assert layer.knee(H100) / dense.knee(H100) == pytest.approx(model.experts / model.top_k, rel=0.05)


def test_tensor_path_per_format_and_device():
    assert compute_dtype("fp8-block", H100) == "fp8"
    assert compute_dtype("fp8-block", get("a100-80gb-sxm")) == "bf16"  # no fp8 tensor cores on Ampere
    assert compute_dtype("mxfp4", H100) == "bf16" and compute_dtype("mxfp4", get("b200")) == "fp4"
    assert compute_dtype("int4-g128", get("b200")) == "bf16"


def test_bad_layer_is_refused():
    for bad in (dict(experts=8, top_k=9), dict(experts=8, top_k=2, ep=3), dict(experts=8, top_k=0)):
        with pytest.raises(ValueError, match="top_k"):
            MoeLayer(d_model=8, d_ff=8, **bad)
    with pytest.raises(ValueError):
        MoeLayer(8, 2, 8, 8, format="fp6")
    assert expert_bytes("bf16", 8, 4) == (8 * 8 + 8 * 4) * 2


# ---------------------------------------------------------------------------------------------
# Decode economics
# ---------------------------------------------------------------------------------------------


def test_deepseek_fp8_does_not_fit_8_h100_and_fits_8_h200():
    assert mt.weight_bytes(mt.DEEPSEEK_FP8) == pytest.approx(671e9, rel=0.01)
    assert mt.max_batch(mt.DEEPSEEK_FP8, H100, 1000) == 0
    assert mt.weight_bytes(mt.DEEPSEEK_FP8) > 8 * H100.capacity_bytes * (1 - mt.HEADROOM)
    h200 = get("h200-sxm")
    free = mt.free_bytes(mt.DEEPSEEK_FP8, h200)
    per_sequence = 576 * 2 * 61 * 1000.0
    assert mt.max_batch(mt.DEEPSEEK_FP8, h200, 1000) == 8 * int(free // per_sequence)


def test_gpt_oss_fits_one_h100_with_a_small_cache_and_sliding_layers_cap_their_cache():
    cap = mt.max_batch(mt.GPT_OSS, H100, 10000)
    assert 0 < cap < mt.max_batch(mt.GPT_OSS, get("h200-sxm"), 10000)
    per_token_layer = 2 * 8 * 64 * 2
    assert mt.kv_bytes_per_sequence(mt.GPT_OSS, 10000) == per_token_layer * (18 * 10000 + 18 * 128)


def test_decode_step_reads_the_experts_the_batch_touches():
    one = mt.decode_step(mt.GPT_OSS, H100, 1, 1000)
    layer = MoeLayer.of(GPT_OSS_120B, "mxfp4")
    assert one.experts_s == pytest.approx(36 * 4 * layer.expert_bytes / H100.bandwidth)  # k experts, not E
    many = mt.decode_step(mt.GPT_OSS, H100, 256, 1000)
    assert many.touched == pytest.approx(128 * (1 - (124 / 128) ** 256))
    assert many.experts_s < 256 * one.experts_s and many.experts_s > 20 * one.experts_s
    ds = mt.decode_step(mt.DEEPSEEK_FP8, get("h200-sxm"), 8, 1000)
    assert ds.touched == pytest.approx(32 * (1 - (248 / 256) ** 8))  # 32 experts per GPU under EP 8
    assert ds.comm_s > 0 and one.comm_s == 0


def test_curves_stop_at_the_kv_cap_and_leave_out_what_does_not_fit():
    frame = mt.curves()
    deepseek = frame[frame["preset"] == mt.DEEPSEEK_FP8.label]
    assert set(deepseek["device"]) == {"h200-sxm"}
    for (preset, scenario, device), group in frame.groupby(["preset", "scenario", "device"]):
        chosen = next(p for p in mt.PRESETS if p.label == preset)
        assert group["batch"].max() == mt.max_batch(chosen, get(device), mt.scenario_named(scenario).context)
    assert (frame["basis"].str.startswith("predicted")).all()


# ---------------------------------------------------------------------------------------------
# The report from fixture rows
# ---------------------------------------------------------------------------------------------


def test_one_preset_at_two_ep_degrees_is_two_panels():
    from analysis import plots_moe

    row = dict(label="gpt-oss-120b", experts=128, top_k=4, d_model=2880, d_ff=2880, shared=0, format="bf16")
    rows = pd.DataFrame([dict(row, ep=1), dict(row, ep=8), dict(row, ep=8)])
    names = plots_moe.panels(rows)
    assert names.nunique() == 2 and "EP8" in names.iloc[1] and "EP8" not in names.iloc[0]
    assert plots_moe.panels(rows.iloc[0:0]).empty


def test_fixture_rows_follow_the_contract(tmp_path):
    path = fx.write_moe_run(tmp_path)
    rows = pd.read_csv(path)
    header = list(rows.columns)
    axes = header[header.index("label") + 1:header.index("flops")]
    assert axes == list(fx.MOE_AXES)
    layer_rows = rows[rows["stage"] == "layer"]
    for r in layer_rows.sample(20, random_state=0).itertuples():
        layer = MoeLayer(r.experts, r.top_k, r.d_model, r.d_ff, r.ep, r.shared, r.format)
        assert r.flops % (6 * r.d_model * r.d_ff) == 0
        pairs = r.flops / (6 * r.d_model * r.d_ff) - r.shared * r.tokens
        assert pairs <= r.tokens * r.top_k
        if r.impl == "dense":
            assert r.bytes >= layer.with_format("bf16").local_experts * layer.with_format("bf16").expert_bytes
    ours = layer_rows[(layer_rows["impl"] == "triton") & (layer_rows["ep"] == 1)]
    for r in ours.itertuples():  # x rows = T without EP: the weights must be touched × one expert's bytes
        layer = MoeLayer(r.experts, r.top_k, r.d_model, r.d_ff, r.ep, r.shared, r.format)
        touched = (r.bytes - float(layer.bytes_for(r.tokens, 0, r.tokens))) / layer.expert_bytes
        assert touched == pytest.approx(round(touched)) and 1 <= round(touched) <= min(r.experts, r.tokens * r.top_k)
    assert set(rows["stage"]) == {"layer", "w1", "w2"} and set(rows["routing"]) == {"uniform", "skewed", "balanced"}


@pytest.fixture(scope="module")
def moe_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    fx.write_ceilings_run(root)
    fx.write_moe_run(root)
    out = tmp_path_factory.mktemp("report")
    failed = []
    build_report(root, out, failed=failed)
    return out, failed


def test_report_shows_the_moe_figures_and_economics_from_fixture_rows(moe_report):
    out, failed = moe_report
    assert not failed
    page = (out / fx.H100.slug / "report.md").read_text()
    assert "## Mixture-of-experts layers (MEASURED)" in page
    for image in ("moe-touched-bandwidth.png", "moe-skew.png"):
        assert f"]({image})" in page and (out / fx.H100.slug / image).stat().st_size > 10_000
    predicted = (out / "predicted.md").read_text()
    assert "](predicted-moe-knees.png)" in predicted and (out / "predicted-moe-knees.png").is_file()
    assert all(d.name in predicted for d in DEVICES)  # every device in the table
    assert "| deepseek-v3 | 256 | 8 | ≈ 9,000 | 9450 |" in predicted
    economics = (out / "tokenomics.md").read_text()
    assert "## Mixture-of-experts models (PREDICTED)" in economics and "](tokenomics-moe.png)" in economics
    assert "**Holds** (PREDICTED)" in economics and "does not fit on H100 SXM" in economics
    assert len(pd.read_csv(out / "tokenomics-moe.csv")) > 10


def test_moe_section_is_left_out_without_moe_rows(tmp_path):
    from analysis import sections_moe
    from analysis.report import _device, _run_table
    from bench.results import load_results

    fx.write_ceilings_run(tmp_path)
    frame = load_results(tmp_path)
    device = _device(fx.H100.slug, _run_table(frame), frame)
    assert sections_moe.device_section(device, tmp_path) == ""
