"""Theory before measurement (issue 12): the workloads' FLOPs and bytes are the kernels', the predicted knees are
the closed form, and a report with no GPU results shows the predicted section."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis import predicted
from analysis.devices import get
from analysis.report import build_report
from analysis.roofline import predicted_time
from analysis.workloads import linear_cost, prefill_cost
from kernels.models import LLAMA3_70B


def test_linear_cost_is_the_gemm_specs():
    pytest.importorskip("torch")
    from kernels.gemm import GEMM
    from kernels.spec import DType

    for dtype, itemsize, out in ((DType.FP16, 2, 2), (DType.BF16, 2, 2)):
        case = GEMM.case(dtype, M=7, N=4096, K=1024)
        assert linear_cost(7, 4096, 1024, itemsize, out) == (GEMM.flops(case), GEMM.bytes(case))


def test_prefill_cost_is_the_prefill_specs():
    pytest.importorskip("torch")
    from kernels.attn_prefill import ATTN_PREFILL
    from kernels.spec import DType

    axes = {a.name for a in ATTN_PREFILL.axes}
    for seq_q, seq_kv, causal in ((1024, 1024, True), (1024, 1024, False), (100, 300, True), (300, 100, True)):
        if "seq" in axes:
            if seq_q != seq_kv:
                continue
            case = ATTN_PREFILL.case(DType.FP16, batch=2, heads=32, kv_heads=8, seq=seq_q, head_dim=128, causal=causal)
        else:
            case = ATTN_PREFILL.case(DType.FP16, batch=2, heads=32, kv_heads=8, seq_q=seq_q, seq_kv=seq_kv,
                                     head_dim=128, causal=causal)
        ours = prefill_cost(2, 32, 8, 128, seq_q, seq_kv, causal)
        assert ours == (ATTN_PREFILL.flops(case), ATTN_PREFILL.bytes(case)), (seq_q, seq_kv, causal)


def test_layer_knee_is_the_closed_form():
    h100 = get("h100-sxm")
    shape = next(s for s in predicted.layer_shapes((LLAMA3_70B,)) if (s.n, s.k) == (8192, 8192))
    assert "llama3-70b.q" in shape.layers and "llama3-70b.o" in shape.layers
    n = k = 8192
    peak, bw = 989e12, 3.35e12
    # 2MNK/P = 2(MK + NK + MN)/BW  ⇒  M = NK/BW / (NK/P − (K + N)/BW)
    expected = (n * k / bw) / (n * k / peak - (n + k) / bw)
    assert predicted.linear_knee(shape, h100, "bf16") == pytest.approx(expected, rel=1e-9)
    times = predicted.linear_time(shape, h100, "bf16", [1.0, 4096.0])
    flops, nbytes = linear_cost(np.array([1.0, 4096.0]), n, k)
    assert times == pytest.approx(predicted_time(flops, nbytes, peak, bw))
    assert math.isnan(predicted.linear_knee(shape, get("a100-80gb-sxm"), "fp8"))  # no fp8 on Ampere: no guess


def test_every_preset_layer_and_device_has_a_prediction():
    table = predicted.linear_table()
    shapes = predicted.layer_shapes()
    assert set(table["device"]) == set(predicted.PREDICTED_DEVICES) == {
        "a100-80gb-sxm", "h100-sxm", "h200-sxm", "b200", "b300", "gb300", "rtx-pro-6000", "mi300x", "mi325x", "mi355x"}
    assert len(table) == len(shapes) * 2 * len(predicted.PREDICTED_DEVICES)
    every = {f"{m.name}.{p}" for m in predicted.preset_models() for p in m.projections()}
    assert every == {name for s in shapes for name in s.layers}
    bf16 = table[(table["dtype"] == "bf16") & table["device"].isin(["h100-sxm", "h200-sxm"])]
    assert bf16["knee"].between(150, 700).all()  # at the ridge (≈ 295 / 206 FLOP/B) in batch units


def test_attention_predictions_decode_has_no_knee_prefill_does():
    table = predicted.attention_table()
    assert (table["decode_intensity"] <= 16).all()
    h100 = table[table["device"] == "h100-sxm"]
    assert np.isfinite(h100["prefill_knee_full"]).all() and (h100["prefill_knee_full"] > 0).all()
    shape = predicted.attention_shapes()[0]
    times = predicted.decode_time(shape, get("h100-sxm"), 4096, (1, 2, 4))
    assert (np.diff(times) > 0).all()  # more sequences, more cache bytes


def test_gb300_is_in_the_table_with_sources_and_no_guessed_figures():
    gb300 = get("gb300")
    assert gb300.bandwidth == 8e12 and gb300.tensor("bf16") == 2.5e15 and gb300.tensor("fp8") == 5e15
    assert gb300.l2_bytes is None and gb300.sm_count is None  # not published: not guessed
    assert "gb300-nvl72" in gb300.source("bandwidth") and gb300.nvlink == 1.8e12


def test_a_report_without_gpu_results_shows_the_predicted_section(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    index = build_report(results, tmp_path / "report")
    text = index.read_text()
    assert "nothing measured yet" in text and "## Predicted: theory before measurement" in text
    assert "| H100 SXM | 80 GB | 3.35 TB/s | 989 TFLOP/s |" in text
    assert "| GB300 (per GPU) |" in text and "| B200 (HGX) |" in text and "| A100 80GB SXM |" in text
    page = (tmp_path / "report" / "predicted.md").read_text()
    assert "**Every number on this page is PREDICTED**" in page and "No GPU results yet" in page
    for name in ("predicted-rooflines.png", "predicted-attention.png", "predicted-layers-llama3.1-405b.png",
                 "tokenomics.png"):
        data = (tmp_path / "report" / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 20_000, name
    tokenomics = (tmp_path / "report" / "tokenomics.md").read_text()
    assert "every number on this page is PREDICTED" in tokenomics
    assert "| llama3.1-405b fp8 weights, bf16 KV TP8 | 1k in / 19k out | 38 | 125 |" in tokenomics  # bytes, not GB
    assert (tmp_path / "report" / "tokenomics.csv").read_text().startswith("preset,model,precision,tp,scenario")
