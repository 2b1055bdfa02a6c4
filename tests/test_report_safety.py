"""Issue 21, "nothing lost, nothing split, nothing silent": `rooflab report` and `rooflab compare` on inputs that
used to crash, dirty the checkout or pass without a word. Every run here is synthetic (tests/fixture_results.py or
rows written with ResultWriter into tmp_path); nothing is a measurement."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from analysis import plots, sections_theory
from analysis.frames import batch_axis
from analysis.report import MANIFEST, build_report
from bench.cli import main
from bench.results import ResultsError, ResultWriter, columns_for, load_csv, load_results, write_sidecar
from tests import fixture_results as fx

TEXT = fx.SyntheticDevice(name="NVIDIA H100 80GB HBM3 (synthetic, text axis)", slug="text-h100")
SMALL = fx.SyntheticDevice(name="NVIDIA H100 80GB HBM3 (synthetic, small)", slug="small-h100")
DEVICE = {"name": "NVIDIA H100 80GB HBM3", "slug": "h100", "sm_count": 132, "memory_bytes": 80 << 30,
          "capability": [9, 0]}


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _text_axis_run(root: Path) -> Path:
    """A qgemv sweep over --axis format=int8,fp8,int4 only: the one varied axis is text."""
    run = fx._Run(root, TEXT, "synthetic-text-axis", "text", "cuda", fx.np.random.default_rng(0))
    for fmt in ("int8", "fp8", "int4"):
        nbytes = 4096 * 4096
        run.row("qgemv", "triton", "fp16", 2 * nbytes, nbytes, TEXT.t0 + nbytes / TEXT.bandwidth, M=1, N=4096,
                K=4096, format=fmt, group_size=128)
    return run.close()


def _small_run(root: Path, device=SMALL) -> Path:
    run = fx._Run(root, device, f"synthetic-small-{device.slug}", "small", "cuda", fx.np.random.default_rng(0))
    for exponent in range(18, 31, 2):
        n = 2**exponent
        run.row("copy", "triton", "fp32", 0, 8 * n, device.t0 + 8 * n / device.bandwidth, N=n, launch="graph")
    return run.close()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _row(**over) -> dict:
    """An ok copy row (cold L2), consistent p20 ≤ median ≤ p80."""
    n = over.pop("N", 1 << 26)
    row = dict(schema_version=2, run_id="synthetic", suite="synthetic", device=DEVICE["name"], mode="cuda",
               kernel="copy", impl="triton", dtype="fp32", label="", N=n, flops=0, bytes=8 * n, intensity=0.0,
               footprint_bytes=8 * n, l2_resident=False, l2="cold", median_s=1e-3, p20_s=0.99e-3, p80_s=1.01e-3,
               cv=0.005, samples=50, tflops=0.0, gbps=8 * n / 1e-3 / 1e9, status="ok", rel_err=0.0, error="",
               config="BLOCK=4096", graph="auto", launch="stream", sm_clock_mhz=1980, throttle="",
               timestamp="2026-01-01T00:00:00+00:00", ci_rel=0.002, converged=True, launches_per_sample=1,
               tune_s=0.0, max_elem_err=0.0, gpu="GPU-synthetic")
    row.update(over)
    return row


def _write(path: Path, rows: list[dict]) -> Path:
    with ResultWriter(path, columns_for(("N",))) as writer:
        for row in rows:
            writer.write(row)
    write_sidecar(path, {"run_id": path.stem, "device": DEVICE, "software": {"torch": "2.11", "triton": "3.6"}})
    return path


def _copy_run(path: Path, scale: float = 1.0) -> Path:
    return _write(path, [_row(N=n, median_s=scale * n * 8 / 3e12, p20_s=0.99 * scale * n * 8 / 3e12,
                              p80_s=1.01 * scale * n * 8 / 3e12) for n in (1 << 24, 1 << 26, 1 << 28)])


# ---------------------------------------------------------------------------------------------
# 1. A text axis, a failed build, a figure that cannot be drawn
# ---------------------------------------------------------------------------------------------


def test_the_batch_axis_is_never_a_text_column(tmp_path):
    frame = load_csv(_text_axis_run(tmp_path))
    assert batch_axis(frame, "qgemv") == "M"


def test_a_run_that_varies_only_a_text_axis_is_reported(tmp_path, capsys):
    _text_axis_run(tmp_path / "results")
    _small_run(tmp_path / "results")
    code, out, err = cli(capsys, "report", "--results", tmp_path / "results", "--out", tmp_path / "report")
    assert code == 0, err
    index = (tmp_path / "report" / "index.md").read_text()
    assert "text-h100" in index and "small-h100" in index
    assert "format=fp8" in (tmp_path / "report" / "text-h100" / "report.md").read_text()


def test_a_build_that_fails_leaves_the_previous_report_as_it_was(tmp_path, capsys, monkeypatch):
    _small_run(tmp_path / "results")
    out = tmp_path / "report"
    build_report(tmp_path / "results", out)
    (out / "notes.md").write_text("mine")
    before = _snapshot(out)
    assert {"index.md", "predicted.md", "tokenomics.md", "tokenomics.csv", "tokenomics.png"} <= set(before)

    def broken(*_args, **_kwargs):
        raise RuntimeError("the device table broke")

    monkeypatch.setattr(sections_theory, "predicted_page", broken)
    code, _, err = cli(capsys, "report", "--results", tmp_path / "results", "--out", out)
    assert code == 2 and err.count("\n") == 1 and "the device table broke" in err
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report", "results"]  # nothing left beside it


def test_a_figure_that_cannot_be_drawn_is_named_on_its_page(tmp_path, capsys, monkeypatch):
    _small_run(tmp_path / "results")

    def broken(*_args, **_kwargs):
        raise ValueError("no finite points")

    monkeypatch.setattr(plots, "roofline", broken)
    code, _, err = cli(capsys, "report", "--results", tmp_path / "results", "--out", tmp_path / "report")
    assert code == 0, err
    page = (tmp_path / "report" / "small-h100" / "report.md").read_text()
    assert "roofline.png" in page and "could not be drawn" in page and "ValueError: no finite points" in page
    assert not (tmp_path / "report" / "small-h100" / "roofline.png").exists()
    assert "figure small-h100/roofline.png could not be drawn" in err


# ---------------------------------------------------------------------------------------------
# 2. Byte-for-byte reproducible
# ---------------------------------------------------------------------------------------------


def _png_text_keys(data: bytes) -> list[str]:
    keys, at = [], 8
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        if kind in (b"tEXt", b"iTXt", b"zTXt"):
            keys.append(data[at + 8:at + 8 + length].split(b"\0")[0].decode())
        at += 12 + length
    return keys


def test_two_builds_from_the_same_results_are_byte_identical(tmp_path, monkeypatch):
    _small_run(tmp_path / "results")
    _text_axis_run(tmp_path / "results")
    build_report(tmp_path / "results", tmp_path / "one")
    monkeypatch.setattr(plots, "_RENDERED", {})  # draw every figure again, not from this process's cache
    build_report(tmp_path / "results", tmp_path / "two")
    build_report(tmp_path / "results", tmp_path / "two")
    one, two = _snapshot(tmp_path / "one"), _snapshot(tmp_path / "two")
    assert sorted(one) == sorted(two) and all(one[name] == two[name] for name in one)
    pngs = [name for name in one if name.endswith(".png")]
    assert pngs and all(_png_text_keys(one[name]) == [] for name in pngs)  # no Software, no dates


# ---------------------------------------------------------------------------------------------
# 3. Nothing silent
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("out", ["results", "."])
def test_a_report_into_its_own_results_folder_is_refused(tmp_path, capsys, out):
    _small_run(tmp_path / "results")
    code, _, err = cli(capsys, "report", "--results", tmp_path / "results", "--out", tmp_path / out)
    assert code == 2 and err.count("\n") == 1 and err.startswith("rooflab: error: report --out")
    assert "nothing measured" not in err and not (tmp_path / "results" / "index.md").exists()


@pytest.mark.parametrize("column,value", [("median_s", "inf"), ("cv", -5), ("p20_s", 2e-3), ("samples", -1),
                                          ("gbps", "-inf"), ("p80_s", 1e-4)])
def test_the_loader_names_file_row_and_column_of_a_bad_value(tmp_path, column, value):
    path = _write(tmp_path / "r.csv", [_row(N=1 << 20), _row(**{column: value})])
    with pytest.raises(ResultsError) as error:
        load_csv(path)
    text = str(error.value)
    assert text.startswith(f"{path}: row 2") and column in text and "\n" not in text


def test_the_report_lists_a_file_with_a_bad_value_as_unreadable(tmp_path, capsys):
    _small_run(tmp_path / "results")
    bad = _write(tmp_path / "results" / "h100" / "bad.csv", [_row(median_s="inf")])
    code, _, err = cli(capsys, "report", "--results", tmp_path / "results", "--out", tmp_path / "report")
    index = (tmp_path / "report" / "index.md").read_text()
    assert code == 0 and f"`{bad}`: row 1, column median_s" in index and "## Files not loaded (1)" in index
    assert f"not in the report: {bad}: row 1, column median_s" in err


def test_a_header_only_csv_is_listed_as_having_no_rows(tmp_path, capsys):
    _small_run(tmp_path / "results")
    empty = _write(tmp_path / "results" / "h100" / "empty.csv", [])
    code, _, err = cli(capsys, "report", "--results", tmp_path / "results", "--out", tmp_path / "report")
    index = (tmp_path / "report" / "index.md").read_text()
    assert code == 0 and f"`{empty}`: no rows" in index and "1 run on 1 device" in index
    assert f"not in the report: {empty}: no rows" in err


def test_a_report_elsewhere_skips_the_files_of_the_projects_own_report(tmp_path, capsys):
    results = tmp_path / "results"
    _small_run(results)
    build_report(results, results / "report")
    assert (results / "report" / "tokenomics.csv").is_file()
    (results / "report" / "notes.csv").write_text("a,b\n1,2\n")  # not the report's: still named
    bad: list = []
    build_report(results, tmp_path / "elsewhere", bad)
    assert [p.name for p, _ in bad] == ["notes.csv"]
    assert "fits.csv" not in (tmp_path / "elsewhere" / "index.md").read_text()
    assert len(load_results(results, [])) == 7


def test_compare_refuses_a_point_twice_in_one_file_and_names_it(tmp_path, capsys):
    base = _copy_run(tmp_path / "base.csv")
    new = _write(tmp_path / "new.csv", [_row(N=1 << 26), _row(N=1 << 26, median_s=2e-3, p80_s=2.1e-3)])
    code, _, err = cli(capsys, "compare", base, new)
    assert code == 2 and err.count("\n") == 1
    assert f"{new}: point copy triton fp32 N=67108864" in err and "rows 1 and 2" in err


def test_compare_of_a_file_with_itself_says_so(tmp_path, capsys):
    base = _copy_run(tmp_path / "base.csv")
    code, out, err = cli(capsys, "compare", base, base)
    assert code == 0 and "3 within noise" in out
    assert err.count("\n") == 1 and "rooflab: note:" in err and "the same file" in err


def test_compare_names_the_key_that_keeps_points_apart(tmp_path, capsys):
    base = _write(tmp_path / "base.csv", [_row(N=n, graph="") for n in (1 << 24, 1 << 26)])
    new = _write(tmp_path / "new.csv", [_row(N=n) for n in (1 << 24, 1 << 26)])
    code, _, err = cli(capsys, "compare", base, new)
    assert code == 2 and err.count("\n") == 1
    assert "graph" in err.split(str(new))[-1] and "(empty)" in err and "auto" in err


# ---------------------------------------------------------------------------------------------
# 4. Damaged files: never a traceback, exit 0/1/2, no report file lost
# ---------------------------------------------------------------------------------------------

CELLS = st.sampled_from(["", "nan", "NaN", "inf", "-inf", "-1", "0", "1e400", "abc", "True", "ok", "1,2", '"'])
COLUMNS = st.sampled_from(["median_s", "p20_s", "p80_s", "cv", "samples", "status", "mode", "graph", "l2",
                           "kernel", "N", "schema_version", "converged", "bytes", "timestamp"])
SIDECARS = st.sampled_from(["", "{", "[]", "null", '{"schema_version": 9}', '{"schema_version": 2, "device": 5}',
                            '{"schema_version": 2, "device": {"name": 7, "sm_count": "x"}}', None])


@st.composite
def damaged(draw):
    """A good file with damage: cells replaced, a column dropped, the text truncated, a bad sidecar."""
    frame = pd.DataFrame([_row(N=n) for n in (1 << 24, 1 << 26)]).astype(object)
    for _ in range(draw(st.integers(0, 3))):
        frame.loc[draw(st.integers(0, 1)), draw(COLUMNS)] = draw(CELLS)
    if draw(st.booleans()):
        frame = frame.drop(columns=draw(COLUMNS))
    text = frame.to_csv(index=False)
    if draw(st.booleans()):
        text = text[:draw(st.integers(0, len(text)))]
    return text, draw(SIDECARS)


def _damage(root: Path, case) -> Path:
    text, sidecar = case
    path = root / "h100" / "damaged.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.with_suffix(".json").write_text(sidecar if sidecar is not None else json.dumps(
        {"schema_version": 2, "device": DEVICE}))
    return path


def _contract(code: int, err: str) -> None:
    assert code in (0, 1, 2) and "Traceback" not in err
    assert all(line.startswith("rooflab") for line in err.splitlines()), err


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=damaged())
def test_the_loader_takes_a_damaged_file_or_names_it_in_one_line(tmp_path, case):
    path = _damage(tmp_path / "fuzz", case)
    bad: list = []
    frame = load_results(tmp_path / "fuzz", bad)
    assert len(bad) == (len(frame) == 0)  # loaded with rows, or named with its reason: never silently empty
    for _, reason in bad:
        assert reason.startswith(str(path.with_suffix(""))) and "\n" not in reason  # the CSV or its sidecar
    timed = frame[(frame["status"] == "ok") & (frame["mode"] == "cuda")]
    assert ((timed["median_s"] > 0) & (timed["median_s"] < float("inf"))).all()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=damaged())
def test_compare_with_a_damaged_file_is_a_verdict_or_one_line(tmp_path, capsys, case):
    good = _copy_run(tmp_path / "good.csv")
    bad = _damage(tmp_path / "fuzz", case)
    for base, new in ((good, bad), (bad, good)):
        code, _, err = cli(capsys, "compare", base, new, "--allow-missing", "100%")
        _contract(code, err)
        assert code != 2 or err.count("\n") == 1


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One good report, built once: each example copies it and reports again over a damaged file."""
    root = tmp_path_factory.mktemp("built")
    _small_run(root / "results")
    build_report(root / "results", root / "report")
    return root


GOOD = pd.DataFrame([_row(N=n) for n in (1 << 24, 1 << 26)]).to_csv(index=False)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=damaged())
@example(case=(GOOD, '{"schema_version": 2, "device": 5}'))  # found by this test: an internal error, exit 2
@example(case=(GOOD, '{"schema_version": 2, "device": {"name": 7, "sm_count": "x"}}'))  # likewise
@example(case=(GOOD.replace("0.00099", "inf"), None))
def test_report_over_a_damaged_file_loses_no_report_file(built, tmp_path, capsys, case):
    work = tmp_path / "work"
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(built, work)
    before = set(_snapshot(work / "report"))
    _damage(work / "results", case)
    code, _, err = cli(capsys, "report", "--results", work / "results", "--out", work / "report")
    _contract(code, err)
    assert code == 0 and before <= set(_snapshot(work / "report"))
