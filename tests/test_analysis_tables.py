"""Derived report tables: crossovers, quantized speed-ups, device ratios, failure summaries."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.tables import crossover, device_ratios, efficiency_grid, failures, quant_speedups


def test_crossover_is_log_interpolated_between_the_last_win_and_the_first_loss():
    assert crossover([1, 2, 4, 8], [3.0, 2.0, 1.5, 0.8]) == pytest.approx(2 ** (2 + 0.5 / 0.7))
    assert crossover([1, 2, 4], [3.0, 2.0, 1.5]) == math.inf
    assert math.isnan(crossover([1, 2], [0.9, 0.5]))


def _quant_rows():
    rows = []
    for m, triton, torch in ((1, 10e-6, 30e-6), (16, 15e-6, 31e-6), (64, 40e-6, 32e-6)):
        for impl, seconds in (("triton", triton), ("torch", torch)):
            rows.append(dict(kernel="qgemv", impl=impl, dtype="fp16", label="llama3-8b.q", format="int4",
                             group_size=128, M=m, N=4096, K=4096, median_s=seconds))
    rows.append(dict(kernel="gemv", impl="triton", dtype="fp16", label="x", format=np.nan, group_size=np.nan,
                     M=1, N=8, K=8, median_s=1e-6))
    return pd.DataFrame(rows)


def test_quant_speedup_pairs_each_point_with_its_fp16_baseline():
    table, crossings = quant_speedups(_quant_rows())
    assert table["series"].unique().tolist() == ["qgemv triton fp16 int4 g128 llama3-8b.q"]
    assert table["speedup"].tolist() == pytest.approx([3.0, 31 / 15, 0.8])
    (series, crossing), = crossings.items()
    assert 16 < crossing < 64


def test_quant_speedup_without_a_baseline_is_empty():
    rows = _quant_rows()
    table, crossings = quant_speedups(rows[rows["impl"] != "torch"])
    assert table.empty and crossings == {}


def test_device_ratios_match_points_across_devices():
    def frame(scale):
        return pd.DataFrame([dict(kernel="gemv", impl="triton", dtype="fp16", label="a", l2="cold", launch="graph",
                                  M=m, N=4096, K=4096, median_s=scale * m * 1e-6) for m in (1, 2, 4)])
    slow, fast = frame(1.43), frame(1.0)
    fast = fast[fast["M"] != 4]  # measured on one device only: not compared
    ratios = device_ratios(slow, fast, lambda rows: rows["M"])
    assert len(ratios) == 2
    assert ratios["ratio"].tolist() == pytest.approx([1.43, 1.43])
    assert set(ratios["series"]) == {"gemv triton fp16"}


def test_efficiency_grid_keeps_batch_sweeps_and_drops_l2_points():
    points = pd.DataFrame([
        dict(kernel="gemv", impl="triton", dtype="fp16", shape="a", axis="M", batch=1, in_fit=True, efficiency=0.8),
        dict(kernel="gemv", impl="triton", dtype="fp16", shape="b", axis="M", batch=1, in_fit=True, efficiency=0.6),
        dict(kernel="gemv", impl="triton", dtype="fp16", shape="c", axis="M", batch=1, in_fit=False, efficiency=2.0),
        dict(kernel="copy", impl="triton", dtype="fp32", shape="-", axis="N", batch=2**20, in_fit=True, efficiency=0.9),
    ])
    grid = efficiency_grid(points)
    assert grid.index.tolist() == ["gemv triton fp16"]
    assert grid.loc["gemv triton fp16", 1] == pytest.approx(0.7)


def test_failures_are_counted_by_reason():
    frame = pd.DataFrame([
        dict(status="ok", kernel="gemv", impl="triton", dtype="fp16", error=""),
        dict(status="skipped", kernel="gemm", impl="triton", dtype="fp8", error="fp8 needs sm_89"),
        dict(status="skipped", kernel="gemm", impl="triton", dtype="fp8", error="fp8 needs sm_89"),
        dict(status="failed", kernel="gemv", impl="triton", dtype="bf16", error=""),
    ])
    table = failures(frame)
    assert table.to_dict("records") == [
        dict(status="failed", kernel="gemv", impl="triton", dtype="bf16", reason="(no reason given)", count=1),
        dict(status="skipped", kernel="gemm", impl="triton", dtype="fp8", reason="fp8 needs sm_89", count=2),
    ]


def test_quant_speedup_carries_the_ideal_bytes_ratio_and_either_sides_unsteadiness():
    """Issue 22: the quant figure's ideal (dashed) needs the bytes ratio per point; issue 20: a speed-up with an
    unconverged or throttled side is marked so it is drawn hollow."""
    rows = _quant_rows()
    n = k = 4096
    fp16 = 2 * (n * k + rows["M"] * (n + k))
    int4 = n * k // 2 + 2 * n * k // 128 + 2 * rows["M"] * (n + k)
    rows["bytes"] = np.where(rows["impl"] == "torch", fp16, int4)
    rows["converged"] = pd.array([True] * len(rows), dtype="boolean")
    rows["throttle"] = ""
    rows.loc[(rows["impl"] == "torch") & (rows["M"] == 16), "throttle"] = "hw_thermal"
    rows.loc[(rows["impl"] == "triton") & (rows["M"] == 64), "converged"] = False
    table, _ = quant_speedups(rows)
    expected = [(2 * (n * k + m * (n + k))) / (n * k // 2 + 2 * n * k // 128 + 2 * m * (n + k)) for m in (1, 16, 64)]
    assert table["ideal"].tolist() == pytest.approx(expected)
    assert table["unsteady"].tolist() == [False, True, True]
