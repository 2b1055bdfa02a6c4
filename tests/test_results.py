"""Result files: schema round trip, validation errors, sidecars."""

import json

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.results import (
    V2_COLUMNS,
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


def test_a_schema_1_file_still_loads_with_the_new_columns_not_recorded(tmp_path):
    path = tmp_path / "old.csv"
    v1_columns = [c for c in columns_for(("M", "N", "K")) if c not in V2_COLUMNS]
    rows = [_row(), _row(impl="torch", error="noise 2.1% above target at timeout")]
    pd.DataFrame([{c: r.get(c) for c in v1_columns} for r in rows]).to_csv(path, index=False)
    path.with_suffix(".json").write_text(json.dumps({"schema_version": 1, "run_id": "old"}))
    frame = load_csv(path)
    assert list(frame["converged"]) == [True, False]  # v1 said "noise … at timeout" in the error
    assert frame["ci_rel"].isna().all() and frame["tune_s"].isna().all()
    assert list(frame["launches_per_sample"]) == [1, 1]
    assert read_sidecar(path)["run_id"] == "old"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_load_csv_on_garbage_is_one_line_or_a_frame(tmp_path, data):
    path = tmp_path / "fuzz.csv"
    path.write_bytes(data)
    try:
        load_csv(path)
    except ResultsError as error:
        assert "\n" not in str(error) and str(path) in str(error)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=1, max_value=400), column=st.sampled_from(["status", "median_s", "mode", "M"]),
       value=st.text(max_size=12))
def test_load_csv_on_damaged_results_is_one_line(tmp_path, cut, column, value):
    path = tmp_path / "d.csv"
    path.unlink(missing_ok=True)  # hypothesis reuses tmp_path across examples
    _write(path, [_row(), _row(impl="torch")])
    frame = pd.read_csv(path)
    frame[column] = frame[column].astype(object)
    frame.loc[0, column] = value
    frame.to_csv(path, index=False)
    path.write_bytes(path.read_bytes()[:-cut])
    try:
        load_csv(path)
    except ResultsError as error:
        assert "\n" not in str(error)
