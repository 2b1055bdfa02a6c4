"""Result files: schema round trip, validation errors, sidecars."""

import json

import pandas as pd
import pytest

from bench.results import (
    ResultWriter,
    ResultsError,
    columns_for,
    load_csv,
    load_results,
    read_sidecar,
    write_sidecar,
)
from kernels.errors import UsageError


def _row(**over):
    row = dict(schema_version=1, run_id="r1", suite="s", device="h100-80gb-hbm3", mode="cuda", kernel="gemm",
               impl="triton", dtype="fp16", label="llama3-8b.q", M=1, N=4096, K=4096, flops=2 * 4096 * 4096,
               bytes=2 * (4096 + 4096 * 4096 + 4096), intensity=0.99, footprint_bytes=33_570_816,
               l2_resident=True, l2="cold", median_s=1.2e-5, p20_s=1.1e-5, p80_s=1.3e-5, cv=0.004, samples=40,
               tflops=2.8, gbps=2800.0, status="ok", rel_err=1e-4, error="", config="BLOCK=1 warps=4",
               launch="graph", sm_clock_mhz=1980, throttle="", timestamp="2026-11-21T00:00:00+00:00")
    row.update(over)
    return row


def _write(path, rows, axes=("M", "N", "K")):
    with ResultWriter(path, columns_for(axes)) as w:
        for r in rows:
            w.write(r)
    write_sidecar(path, {"run_id": path.stem, "device": {"name": "NVIDIA H100 80GB HBM3"}})


def test_round_trip(tmp_path):
    path = tmp_path / "h100" / "r1.csv"
    rows = [_row(), _row(impl="torch", median_s=2e-5, config="cuBLAS, with, commas"),
            _row(status="failed", median_s=None, error="rel_err 1 > tolerance 0.002"),
            _row(status="skipped", median_s=None, error="gemv covers M ≤ 64")]
    _write(path, rows)
    frame = load_csv(path)
    assert len(frame) == 4
    assert frame.loc[0, "median_s"] == pytest.approx(1.2e-5)
    assert frame.loc[1, "config"] == "cuBLAS, with, commas"
    assert list(frame["status"]) == ["ok", "ok", "failed", "skipped"]
    assert pd.isna(frame.loc[2, "median_s"])
    assert frame.loc[0, "label"] == "llama3-8b.q"
    assert bool(frame.loc[0, "l2_resident"]) is True
    assert read_sidecar(path)["run_id"] == "r1"
    assert len(load_results(tmp_path)) == 4


def test_writer_appends_to_a_matching_file_and_refuses_another_header(tmp_path):
    path = tmp_path / "r.csv"
    _write(path, [_row()])
    with ResultWriter(path, columns_for(("M", "N", "K"))) as w:
        w.write(_row(M=2))
    assert list(load_csv(path)["M"]) == [1, 2]
    with pytest.raises(UsageError, match="other columns"):
        ResultWriter(path, columns_for(("N",)))


def test_writer_rejects_unknown_columns(tmp_path):
    with ResultWriter(tmp_path / "r.csv", columns_for(("N",))) as w:
        with pytest.raises(ValueError, match="columns the file does not"):
            w.write({"N": 1, "bogus": 2})


def test_axis_names_cannot_shadow_columns():
    with pytest.raises(ValueError, match="clash"):
        columns_for(("status",))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda f: f.drop(columns=["median_s"]), "missing columns: median_s"),
        (lambda f: f.assign(status="great"), "bad status values"),
        (lambda f: f.assign(mode="quantum"), "bad mode values"),
        (lambda f: f.assign(gbps="fast"), "column gbps holds non-numeric"),
        (lambda f: f.assign(schema_version=99), "schema_version"),
        (lambda f: f.assign(median_s=0.0), "no positive median_s"),
    ],
)
def test_malformed_files_fail_with_one_clear_line(tmp_path, mutate, message):
    good = tmp_path / "good.csv"
    _write(good, [_row()])
    bad = tmp_path / "bad.csv"
    mutate(pd.read_csv(good)).to_csv(bad, index=False)
    with pytest.raises(ResultsError, match=message) as info:
        load_csv(bad)
    assert "\n" not in str(info.value) and str(bad) in str(info.value)


def test_sidecar_errors(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("x\n")
    with pytest.raises(ResultsError, match="missing run sidecar"):
        read_sidecar(path)
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(ResultsError, match="malformed sidecar"):
        read_sidecar(path)
    path.with_suffix(".json").write_text(json.dumps({"schema_version": 7}))
    with pytest.raises(ResultsError, match="schema_version"):
        read_sidecar(path)


def test_missing_results_dir_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no results at"):
        load_results(tmp_path / "nowhere")
