"""Measured ceilings derived from (synthetic) ceilings-suite rows, and the roofs built from them."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from tests import fixture_results as fx
from analysis.ceilings import DeviceRoofs, best, ceilings_path, derive_ceilings, write_ceilings
from analysis.devices import get
from bench.results import load_csv, load_results


@pytest.fixture
def ceilings_csv(tmp_path, seed):
    return fx.write_ceilings_run(tmp_path, fx.H100, seed=seed)


def test_derives_dram_l2_tensor_vector_and_launch_ceilings(ceilings_csv):
    table = derive_ceilings(load_csv(ceilings_csv))
    truth = fx.H100
    assert set(table["ceiling"]) == {"dram_bw", "l2_bw", "vector_flops", "tensor_flops", "launch_stream_s",
                                     "launch_graph_s"}
    dram = table[table["ceiling"] == "dram_bw"]
    assert set(dram["kernel"]) == {"read", "write", "copy", "triad"}
    # the best of four kernels' 3-row medians: biased up by the fixture's noise (seed 1078794478: +5.1 %)
    assert best(table, "dram_bw") == pytest.approx(truth.bandwidth, rel=0.08)
    # L2-sized runs last microseconds, comparable to t0: the ceiling is a slope, not a plateau
    assert best(table, "l2_bw") == pytest.approx(truth.l2_bandwidth, rel=0.15)
    assert all(table.loc[table["ceiling"] == "l2_bw", "source_rows"].str.startswith("slope over"))
    for dtype in ("fp16", "bf16", "fp32"):  # the best of a few noisy rows: biased up by the noise
        assert best(table, "tensor_flops", dtype) == pytest.approx(truth.peaks[dtype], rel=0.08)
    torch_rows = table[(table["ceiling"] == "tensor_flops") & (table["impl"] == "torch")]
    triton_rows = table[(table["ceiling"] == "tensor_flops") & (table["impl"] == "triton")]
    assert triton_rows["value"].max() < torch_rows["value"].max()  # the fixture's triton GEMM is 0.9× cuBLAS
    assert best(table, "vector_flops", "fp32") == pytest.approx(truth.vector_flops, rel=0.05)
    assert best(table, "launch_graph_s") == pytest.approx(truth.launch_graph_s, rel=0.1)
    assert best(table, "launch_stream_s") == pytest.approx(truth.launch_stream_s, rel=0.1)
    launch = table[table["ceiling"] == "launch_graph_s"].iloc[0]
    assert launch["source_rows"].startswith("median_s / count over 1 rows at count=100")
    assert table[table["ceiling"] == "vector_flops"].iloc[0]["source_rows"].startswith("best of 4 rows (N=")
    assert math.isnan(best(table, "tensor_flops", "fp8"))
    assert all(table["source_rows"].str.contains("synthetic-ceilings"))


def test_dram_rule_uses_only_footprints_of_four_times_l2(ceilings_csv):
    frame = load_csv(ceilings_csv)
    table = derive_ceilings(frame, l2_bytes=fx.H100.l2_bytes)
    row = table[(table["ceiling"] == "dram_bw") & (table["kernel"] == "copy")].iloc[0]
    scale = {"kB": 1e3, "MB": 1e6, "GB": 1e9}
    texts = row["source_rows"].split("footprints ")[1].split(";")[0].split(", ")
    sizes = [float(t.split()[0]) * scale[t.split()[1]] for t in texts]  # e.g. "8.59 GB", rounded to 3 figures
    assert min(sizes) >= 0.99 * 4 * fx.H100.l2_bytes and len(sizes) == 3
    # an L2 of 1 GiB leaves only the largest sweeps for DRAM, and the warm L2 rows then qualify for L2
    assert len(derive_ceilings(frame, l2_bytes=2**30).query("ceiling == 'dram_bw'")) == 4


def test_write_ceilings_writes_beside_the_run_and_is_not_read_as_a_run(ceilings_csv):
    path = write_ceilings(ceilings_csv)
    assert path == ceilings_path(ceilings_csv) == ceilings_csv.with_name(f"{ceilings_csv.stem}.ceilings.csv")
    written = pd.read_csv(path)
    assert list(written.columns) == ["ceiling", "value", "unit", "kernel", "impl", "dtype", "source_rows"]
    assert len(written) > 0
    assert set(load_results(ceilings_csv.parent)["run_id"]) == {ceilings_csv.stem}


def test_device_roofs_prefer_measured_figures_and_fall_back_to_the_datasheet(ceilings_csv):
    table = derive_ceilings(load_csv(ceilings_csv))
    roofs = DeviceRoofs(table, get("h100-sxm"))
    roof = roofs.roof("gemm", "fp16")
    assert roof.measured and roof.bandwidth == best(table, "dram_bw")
    assert roof.peak == best(table, "tensor_flops", "fp16")
    fp8 = roofs.roof("gemm", "fp8")  # not measured: datasheet peak, measured bandwidth
    assert not fp8.measured and fp8.peak == 1979e12 and fp8.bandwidth == best(table, "dram_bw")
    assert roofs.roof("fma", "fp32").peak == best(table, "vector_flops", "fp32")
    max_bw, max_peak = roofs.caps("gemm", "fp16")
    assert max_bw == pytest.approx(1.25 * 3.35e12) and max_peak == pytest.approx(1.25 * 989e12)
    unknown = DeviceRoofs(table.iloc[0:0], None)
    assert unknown.caps("gemm", "fp16") == (None, None)
    assert math.isnan(unknown.roof("gemm", "fp16").bandwidth)
