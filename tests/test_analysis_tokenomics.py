"""Decode economics (issue 14): the TP split, the memory cap and the context definition against hand-computed
values, and the claims' ratios; measured terms from synthetic fits never beat the datasheet."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis import claims, tokenomics as tk
from analysis.ceilings import DeviceRoofs, derive_ceilings
from analysis.devices import get
from analysis.frames import timed
from analysis.sweeps import fit_sweeps
from analysis.workloads import decode_attention_cost, decode_lengths, decode_point_cost, mean_decode_context
from bench.results import load_results
from kernels.models import LLAMA2_70B, LLAMA3_8B, LLAMA3_70B, LLAMA31_405B
from tests import fixture_results as fx

H100, H200 = get("h100-sxm"), get("h200-sxm")


def test_tp_splits_columns_and_rows_by_hand():
    assert tk.shard_shapes(LLAMA3_70B, 4) == {
        "q": (2048, 8192), "k": (256, 8192), "v": (256, 8192), "o": (8192, 2048),
        "gate": (7168, 8192), "up": (7168, 8192), "down": (8192, 7168)}
    assert tk.shard_shapes(LLAMA31_405B, 8)["k"] == (128, 16384)  # 8 kv heads over 8 GPUs: one each
    assert tk.shard_shapes(LLAMA3_70B, 16)["k"] == (128, 8192)  # more GPUs than kv heads: replicated
    assert tk.shard_shapes(LLAMA3_8B, 1) == dict(LLAMA3_8B.projections())
    with pytest.raises(ValueError, match="does not divide"):
        tk.shard_shapes(LLAMA3_8B, 3)


def test_weights_and_kv_per_gpu_by_hand():
    per_layer = 4096 * 4096 * 2 + 1024 * 4096 * 2 + 14336 * 4096 * 3  # q, o; k, v; gate, up, down
    params = 32 * per_layer + 2 * 128256 * 4096  # + embedding and LM head
    assert tk.parameters(LLAMA3_8B) == params == 8_029_995_008
    preset = tk.Preset(LLAMA3_8B, tk.BF16, 1)
    assert tk.weight_bytes_per_gpu(preset) == 2 * params
    assert tk.kv_bytes_per_token(preset) == 32 * 2 * 8 * 128 * 2 == 131_072
    big = tk.Preset(LLAMA31_405B, tk.FP8, 8)
    shard = 2048 * 16384 * 2 + 128 * 16384 * 2 + 6656 * 16384 * 3
    assert tk.weight_bytes_per_gpu(big) == 126 * shard + 2 * 128256 * 16384 / 8 == 50_731_155_456
    assert tk.kv_bytes_per_token(big) == 126 * 2 * 1 * 128 * 2 == 64_512


def test_memory_cap_by_hand():
    preset = tk.Preset(LLAMA3_8B, tk.BF16, 1)
    free = 81_559 * 2**20 * 0.9 - 16_059_990_016  # usable H100 memory (bytes it holds × 0.9) − weights
    assert tk.max_batch(preset, H100, 4096) == math.floor(free / (131_072 * 4096)) == 113
    big = tk.Preset(LLAMA31_405B, tk.FP8, 8)
    context = tk.SCENARIOS[0].context
    assert context == 1000 + 18999 / 2  # 1k in, 19k out: the mean context over the output
    assert tk.max_batch(big, H100, context) == 38 and tk.max_batch(big, H200, context) == 125
    assert tk.max_batch(tk.Preset(LLAMA3_70B, tk.BF16, 1), H100, 4096) == 0  # 141 GB of weights do not fit


def test_decode_lengths_mean_is_three_quarters_of_the_context():
    assert decode_lengths(1, 4096) == [4096]
    lengths = decode_lengths(8, 4096)
    assert lengths[0] == 4096 and lengths[-1] == 2048 and len(lengths) == 8
    assert mean_decode_context(64, 4096) == pytest.approx(0.75 * 4096, rel=0.01)
    flops, nbytes = decode_point_cost(8, 4096, 32, 8, 128)
    assert nbytes == 2 * 8 * 32 * 128 * 2 + 2 * sum(lengths) * 8 * 128 * 2 + 4 * 8
    assert flops == 4 * 32 * 128 * sum(lengths)


def test_decode_lengths_match_the_kernel_spec():
    pytest.importorskip("torch")
    try:
        from kernels.attn_decode_spec import ATTN_DECODE as spec, decode_lengths as kernel_lengths
    except ImportError:
        from kernels.attn_decode import ATTN_DECODE as spec, decode_lengths as kernel_lengths
    from kernels.spec import DType

    for batch, context, q_len in ((1, 4096, 1), (7, 1000, 1), (64, 32768, 1), (16, 4097, 4)):
        case = spec.case(DType.FP16, batch=batch, context=context, q_len=q_len, heads=32, kv_heads=8, head_dim=128,
                         cache="contiguous")
        assert decode_lengths(batch, context, q_len) == kernel_lengths(case)
        assert decode_point_cost(batch, context, 32, 8, 128, q_len=q_len) == (spec.flops(case), spec.bytes(case))


def test_allreduce_uses_one_direction_of_the_datasheet_nvlink():
    seconds = tk.allreduce_time(H100, 8, 1e6)
    assert seconds == pytest.approx(2 * 7 / 8 * 1e6 / 450e9)
    assert tk.allreduce_time(H100, 1, 1e6) == 0.0
    assert math.isnan(tk.allreduce_time(get("l4"), 2, 1e6))  # no NVLink figure: never guessed


def test_predicted_equal_batch_ratio_is_the_bandwidth_ratio_when_memory_bound():
    preset = tk.Preset(LLAMA3_8B, tk.BF16, 1)
    slow, fast = tk.decode_step(preset, H100, 1, 4096), tk.decode_step(preset, H200, 1, 4096)
    assert slow.step_s / fast.step_s == pytest.approx(4.8 / 3.35, rel=1e-3)
    assert slow.step_s == pytest.approx(slow.bound_s)  # the datasheet model is its own bound
    scenario = claims.mlperf_scenario()
    frame = claims.curves(claims.predicted_bases(), presets=(preset,), scenarios=(scenario,), costs=(claims.UPPER,))
    ratios = claims.pair_ratios(frame)
    assert ratios["equal_b1"] == pytest.approx(4.8 / 3.35, rel=1e-3)
    assert ratios["equal_min"] <= ratios["equal_max"] <= 4.8 / 3.35 + 1e-9
    assert ratios["cap_slow"] == tk.max_batch(preset, H100, scenario.context)
    assert ratios["cap_fast"] == tk.max_batch(preset, H200, scenario.context)


def test_the_articles_scenario_gives_a_larger_batch_and_a_throughput_ratio_near_three():
    preset, scenario = claims.articles_scenario()
    assert (preset.model, preset.precision, preset.tp) == (LLAMA31_405B, tk.FP8, 8)
    frame = claims.curves(claims.predicted_bases(), presets=(preset,), scenarios=(scenario,), costs=(claims.UPPER,))
    ratios = claims.pair_ratios(frame)
    assert (ratios["cap_slow"], ratios["cap_fast"]) == (38, 125)
    assert 2.0 < ratios["at_cap"] < 3.0  # the larger batch the 141 GB holds, predicted: below the articles' 3×
    assert claims.mlperf_preset().model is LLAMA2_70B


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = fx.write_results(tmp_path_factory.mktemp("results"), devices=(fx.H100,))
    points = timed(load_results(root))
    roofs = DeviceRoofs(derive_ceilings(points), H100)
    pooled, _ = fit_sweeps(points, roofs.caps)
    return pooled, roofs


def test_measured_attention_is_charged_for_the_context_the_model_asks_for(fitted):
    """The fixture's decode points ran ragged lengths (mean 0.75·C); the model asks for X tokens per sequence:
    the attention term is the fit applied to X, so it matches the synthetic truth at X (issue 14)."""
    pooled, roofs = fitted
    kernels = tk.FittedKernels(tuple(pooled), roofs.roof, tk.RooflineKernels(H100, tk.BF16))
    for batch, context in ((1, 4096), (16, 4096), (32, 10_000)):
        seconds, source = kernels.attention(batch, 32, 8, 128, context)
        assert source.startswith("measured (attn_decode triton fit")
        flops, nbytes = decode_attention_cost(batch, 32, 8, 128, [context] * batch)
        truth = fx.model_time(fx.H100, flops, nbytes, "fp16", 0.93)  # the fixture's triton attention
        assert seconds == pytest.approx(truth, rel=0.05)
        assert seconds >= tk.RooflineKernels(H100, tk.BF16).attention(batch, 32, 8, 128, context)[0]


def test_interpolating_measured_medians_at_the_label_context_would_beat_the_datasheet(fitted):
    """Why the context must be the measurement's: the old estimate read the batch-64 point's median as attention
    at context C, but that point read only ≈ 0.75·C per sequence — it comes out below the datasheet bound."""
    pooled, _ = fitted
    rows = next(s for s in pooled if s.kernel == "attn_decode" and s.impl == "triton").rows
    point = rows[(rows["batch"] == 64) & (rows["heads"] == 32) & (rows["context"] == 4096)].iloc[0]
    bound = tk.RooflineKernels(H100, tk.BF16).attention(64, 32, 8, 128, 4096)[0]
    assert point["median_s"] < bound  # full-context bytes at 3.35 TB/s take longer than the ragged point did
    assert mean_decode_context(64, 4096) == pytest.approx(0.75 * 4096, rel=0.01)


def test_no_measured_estimate_beats_its_datasheet_bound(fitted):
    pooled, roofs = fitted
    for preset in (p for p in tk.PRESETS if tk.supports(p, H100)):
        kernels = tk.FittedKernels(tuple(pooled), roofs.roof, tk.RooflineKernels(H100, preset.precision))
        for scenario in tk.SCENARIOS:
            if not tk.in_window(preset, scenario):
                continue
            steps = tk.curve(preset, H100, scenario, kernels)
            assert steps, (preset.label, scenario.name)
            for step in steps:
                assert step.step_s >= step.bound_s * (1 - 1e-9), (preset.label, scenario.name, step.batch)
            if preset.precision is tk.BF16:
                assert any("measured" in s for s in steps[0].sources)


def test_terms_say_where_they_come_from(fitted):
    pooled, roofs = fitted
    preset = tk.Preset(LLAMA3_70B, tk.BF16, 4)
    measured = tk.decode_step(preset, H100, 8, 4096,
                              tk.FittedKernels(tuple(pooled), roofs.roof, tk.RooflineKernels(H100, tk.BF16)))
    predicted = tk.decode_step(preset, H100, 8, 4096)
    assert measured.measured and not predicted.measured
    assert any(s.startswith("all-reduce: predicted (NVLink datasheet)") for s in measured.sources)
    assert all("predicted" in s for s in predicted.sources)
    assert np.isfinite(measured.step_s) and measured.step_s > predicted.step_s


# ---------------------------------------------------------------------------------------------
# Issue 22 §3: the decode economics test the articles' claims instead of reproducing them
# ---------------------------------------------------------------------------------------------


def test_memory_cap_counts_the_bytes_the_gpu_holds_not_the_marketed_figure():
    """An H100 "80 GB" holds 81,559 MiB = 85.5e9 bytes (nvidia-smi); the 405B FP8 cap on 8×H100 moves from 31 to 38."""
    assert H100.capacity_bytes == 81_559 * 2**20 == pytest.approx(85.5e9, rel=1e-3)
    assert H200.capacity_bytes == pytest.approx(150.8e9, rel=1e-3)
    big = tk.Preset(LLAMA31_405B, tk.FP8, 8)
    context = tk.SCENARIOS[0].context
    per_seq = 64_512 * context
    assert tk.max_batch(big, H100, context) == math.floor((0.9 * 81_559 * 2**20 - 50_731_155_456) / per_seq) == 38
    assert tk.max_batch(big, H200, context) == math.floor((0.9 * 143_771 * 2**20 - 50_731_155_456) / per_seq) == 125


def test_fixed_costs_are_in_the_step_and_equal_on_gpus_of_one_nvlink_generation():
    """405B TP8: 2 all-reduces per layer = 252 per step, each with a per-call latency, plus a launch per kernel."""
    from analysis.tokenomics_overheads import allreduce_calls, fixed_costs

    preset = tk.Preset(LLAMA31_405B, tk.FP8, 8)
    assert allreduce_calls(preset.model, preset.tp) == 252 and allreduce_calls(LLAMA3_8B, 1) == 0
    assert H100.nvlink_generation == H200.nvlink_generation == 4
    slow = tk.decode_step(preset, H100, 1, 4096, fixed=fixed_costs(H100))
    fast = tk.decode_step(preset, H200, 1, 4096, fixed=fixed_costs(H200))
    assert slow.fixed_s > 0 and slow.fixed_s == pytest.approx(fast.fixed_s)
    assert 1e-3 <= slow.fixed_s <= 5e-3  # ≈ 1–4 ms of all-reduce latency and launches, the same on both GPUs
    assert slow.step_s == pytest.approx(slow.ideal_s + slow.fixed_s)
    assert any(s.startswith("fixed costs:") for s in slow.sources)
    # the fixed time does not shrink with bandwidth: the batch-1 ratio falls below 4.8 / 3.35
    assert slow.step_s / fast.step_s < 0.97 * 4.8 / 3.35
    assert tk.decode_step(preset, H100, 1, 4096).fixed_s == 0.0  # the upper bound leaves them out


def test_fp4_roofs_and_an_fp4_row_for_blackwell():
    assert get("b200").tensor("fp4") == 9e15 and get("gb300").tensor("fp4") == 15e15
    assert H100.tensor("fp4") is None and H200.tensor("fp4") is None  # no FP4 tensor cores on Hopper: never guessed
    fp4 = [p for p in tk.PRESETS if p.precision.compute == "fp4"]
    assert fp4 and fp4[0].model is LLAMA31_405B
    caps = claims.caps_table(presets=fp4)
    b200 = caps[caps["device"] == "b200"]["max_batch"]
    assert len(b200) and (b200 > 0).all()
    frame = claims.curves(claims.predicted_bases(), presets=fp4)
    assert {"b200", "gb300"} <= set(frame["device"]) and not {"h100-sxm", "h200-sxm"} & set(frame["device"])


def test_mlperf_scenario_is_openorca_with_the_server_latency_limits():
    scenario = claims.mlperf_scenario()
    assert (scenario.input_tokens, scenario.output_tokens) == (1024, 294)
    assert claims.MLPERF_TTFT_S == 2.0 and claims.MLPERF_TPOT_S == 0.2
    assert scenario in tk.SCENARIOS and all(s.name != "fixed 4k context" for s in tk.SCENARIOS)


def test_equal_interactivity_ratio_is_below_the_ratio_at_the_memory_caps():
    from analysis import tokenomics_verdict as tv

    preset, scenario = claims.articles_scenario()
    caps, equal = tv.throughput_ratios(preset, scenario, fixed=False)
    assert 2.0 < caps < 4.0 and 1.0 < equal < caps


def test_verdict_table_has_a_row_per_claim_with_model_and_mlperf_columns():
    from analysis import tokenomics_verdict as tv

    table = tv.verdicts()
    assert list(table.columns) == list(tv.COLUMNS) == [
        "claim", "source", "model upper bound (no fixed costs)", "model with overheads", "MLPerf", "holds?"]
    assert list(table["claim"]) == [c.text for c in tv.CLAIMS] and len(table) >= 4
    for cells in table.itertuples(index=False):
        assert all(str(c).strip() for c in cells)
        assert "predicted" in cells[2] and "predicted" in cells[3]  # every model number says it is a prediction
    cost = table[table["claim"].str.contains("3×")].iloc[0]
    assert cost["holds?"].startswith("No") and "measured" in cost["MLPerf"]


def test_the_capacity_table_holds_the_amd_parts_and_their_larger_memory_buys_batch():
    """Issue 24 §4, the articles' AMD-capacity argument: on one 8-GPU node the 192/256/288 GB parts hold a larger
    batch than the 141 GB H200 for the same preset, and FP4 presets are refused where no FP4 tensor cores exist."""
    caps = claims.caps_table()
    assert {"mi300x", "mi325x", "mi355x", "b300"} <= set(caps["device"])
    fp8 = caps[caps["preset"].str.contains("fp8 weights") & caps["supported"]]
    by = fp8.pivot_table(index=["preset", "scenario"], columns="device", values="max_batch", aggfunc="first")
    fits = by[by["h200-sxm"] > 0]
    assert len(fits) and (fits["mi300x"] > fits["h200-sxm"]).all() and (fits["mi325x"] > fits["mi300x"]).all()
    assert (fits["mi355x"] >= fits["mi325x"]).all()
    fp4 = caps[caps["preset"].str.contains("fp4")]
    assert not fp4[fp4["device"].isin(["mi300x", "mi325x"])]["supported"].any()  # CDNA 3: no FP4 matrix rate
    assert fp4[fp4["device"] == "mi355x"]["supported"].all()
