"""Decode-step estimate: model dimensions, layer cost, and the estimate against a known synthetic truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis import decode
from analysis.ceilings import DeviceRoofs, derive_ceilings
from analysis.devices import get
from analysis.sweeps import fit_sweeps
from analysis.frames import timed
from bench.results import load_results
from kernels.models import LLAMA3_8B, LLAMA3_70B, MODELS, Model
from tests import fixture_results as fx


def test_model_projections_are_the_published_shapes():
    assert LLAMA3_8B.projections()["k"] == (1024, 4096)
    assert LLAMA3_70B.projections()["down"] == (8192, 28672)
    assert MODELS == (LLAMA3_8B, LLAMA3_70B)


def test_layer_cost_by_hand_for_llama3_8b_at_batch_1():
    flops, nbytes, weights = decode.layer_cost(LLAMA3_8B, batch=1, context=1024)
    weight_elements = 4096 * 4096 * 2 + 1024 * 4096 * 2 + 3 * 14336 * 4096  # q, o; k, v; gate, up, down
    assert weights == 2 * weight_elements
    attention_flops = 4 * 32 * 1024 * 128
    assert flops == 2 * weight_elements + attention_flops
    activations = (4096 + 4096) * 2 + (1024 + 4096) * 2 + (14336 + 4096) * 3
    kv = 2 * 8 * 1024 * 128 + 2 * 32 * 128
    assert nbytes == 2 * (weight_elements + activations + kv)


def test_reference_figures():
    assert decode.BANDWIDTH_RATIO_H200_H100 == pytest.approx(1.43, abs=0.005)
    low, high = sorted(decode.MLPERF_RATIO_H200_H100)
    assert low == pytest.approx(1.28, abs=0.005) and high == pytest.approx(1.35, abs=0.005)
    assert [row[0] for row in decode.ARTICLE_TABLE] == [1, 8, 32, 128]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = fx.write_results(tmp_path_factory.mktemp("results"))
    points = timed(load_results(root))
    roofs = DeviceRoofs(derive_ceilings(points), get("h100-sxm"))
    return fit_sweeps(points, roofs.caps)[1], roofs


def _truth(model: Model, batch: int, context: int) -> float:
    """The fixture's model time of one layer: fastest of gemv/gemm per projection + attention."""
    device, total = fx.H100, 0.0
    for n, k in model.projections().values():
        flops, nbytes = 2 * batch * n * k, 2 * (batch * k + n * k + batch * n)
        options = [fx.model_time(device, flops, nbytes, "fp16", 0.85, 0.8)]
        if min(fx.GEMV_BATCHES) <= batch <= max(fx.GEMV_BATCHES):  # the estimate interpolates gemv in range
            options.append(fx.model_time(device, flops, nbytes, "fp16", 0.9))
        total += min(options)
    flops = 4 * batch * model.heads * context * model.head_dim
    nbytes = 2 * (2 * batch * model.kv_heads * context * model.head_dim + 2 * batch * model.heads * model.head_dim)
    return total + fx.model_time(device, flops, nbytes, "fp16", 0.85)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_estimate_recovers_the_synthetic_truth_between_measured_batches(fitted, model):
    sweeps, roofs = fitted
    roof = roofs.roof("gemm", "fp16")
    table = decode.estimate(sweeps, model, "triton", "fp16", 4096, peak=roof.peak, datasheet=(989e12, 3.35e12),
                            batches=(1, 3, 8, 48, 64, 128))
    inside = table[table["batch"] <= 64]
    for row in inside.itertuples():
        assert row.layer_us == pytest.approx(_truth(model, row.batch, 4096) * 1e6, rel=0.05), row.batch
        assert row.step_ms == pytest.approx(row.layer_us * model.layers / 1e3)
        assert row.tokens_s == pytest.approx(row.batch / (row.step_ms / 1e3))
        assert row.missing == ""
        assert row.datasheet_step_ms < row.step_ms  # the datasheet roof is a lower bound
    assert "q:gemv" in inside.iloc[0]["parts"]
    beyond = table[table["batch"] == 128].iloc[0]  # attention was measured up to batch 64 only
    assert math.isnan(beyond["layer_us"]) and math.isnan(beyond["tokens_s"])
    assert beyond["missing"] == "attention" and np.isfinite(beyond["linear_us"])


def test_estimate_is_owed_without_measurements():
    table = decode.estimate([], LLAMA3_70B, "triton", "fp16", 4096, peak=700e12)
    assert table["layer_us"].isna().all() and table["tokens_s"].isna().all()
    assert table["linear_utilisation"].isna().all()
    assert set(table["missing"]) == {"q k v o gate up down attention"}
    assert table["weight_intensity"].tolist() == [float(b) for b in decode.DECODE_BATCHES]  # fp16: b FLOP/B


def test_device_ratio_of_tokens_per_second():
    import pandas as pd

    keys = dict(model="m", impl="triton", dtype="fp16", context=4096)
    slow = pd.DataFrame([dict(keys, batch=1, tokens_s=100.0), dict(keys, batch=8, tokens_s=700.0)])
    fast = pd.DataFrame([dict(keys, batch=1, tokens_s=143.0), dict(keys, batch=8, tokens_s=910.0)])
    ratio = decode.device_ratio(slow, fast)
    assert ratio["ratio"].tolist() == pytest.approx([1.43, 1.3])
