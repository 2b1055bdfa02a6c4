"""`rooflab report` on bad and stale inputs (issue 13): every readable run is reported, every unreadable file is
named with its reason, stale pages are removed, files the report did not write are kept, bad --out is one line."""

from __future__ import annotations

import json

import pytest

from analysis.report import MANIFEST, build_report
from bench.cli import main
from tests import fixture_results as fx

SMALL = fx.SyntheticDevice(name="NVIDIA H100 80GB HBM3 (synthetic, small)", slug="small-h100")


def _small_run(root, device=SMALL):
    """A short timed run: copy sizes only (cheap to report)."""
    run = fx._Run(root, device, f"synthetic-small-{device.slug}", "small", "cuda", fx.np.random.default_rng(0))
    for exponent in range(18, 31, 2):
        n = 2**exponent
        run.row("copy", "triton", "fp32", 0, 8 * n, device.t0 + 8 * n / device.bandwidth, N=n, launch="graph")
    return run.close()


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_sidecar_that_is_not_an_object_is_named_not_a_traceback(tmp_path, capsys):
    good = _small_run(tmp_path / "results")
    bad = _small_run(tmp_path / "results", fx.SyntheticDevice(name="other (synthetic)", slug="other"))
    bad.with_suffix(".json").write_text("[1, 2]")
    code, out, err = run(capsys, "report", "--results", tmp_path / "results", "--out", tmp_path / "report")
    assert code == 0 and "Traceback" not in err
    assert f"not in the report: {bad.with_suffix('.json')}: malformed sidecar" in err
    text = (tmp_path / "report" / "index.md").read_text()
    assert "## Files not loaded (1)" in text and f"`{bad}`" in text and "JSON object is expected" in text
    assert "small-h100" in text and (tmp_path / "report" / "small-h100" / "report.md").is_file()
    assert good.exists()


def test_a_csv_without_a_sidecar_is_named_and_a_bad_csv_does_not_hide_the_rest(tmp_path, capsys):
    _small_run(tmp_path / "results")
    lone = tmp_path / "results" / "elsewhere" / "lone.csv"
    lone.parent.mkdir(parents=True)
    lone.write_text("schema_version,kernel\n2,copy\n")
    garbage = tmp_path / "results" / "junk" / "junk.csv"
    garbage.parent.mkdir()
    garbage.write_bytes(b"\xff\xfe\x00garbage\n,,,\n")
    garbage.with_suffix(".json").write_text(json.dumps({"schema_version": 2, "device": {"name": "x"}}))
    code, out, err = run(capsys, "report", "--results", tmp_path / "results", "--out", tmp_path / "report")
    assert code == 0
    text = (tmp_path / "report" / "index.md").read_text()
    assert "nothing measured yet" not in text and "1 run on 1 device (1 with timings)" in text
    assert f"`{lone}`: no run sidecar lone.json beside it" in text
    assert f"`{garbage}`:" in text and "## Files not loaded (2)" in text
    assert err.count("not in the report:") == 2


def test_only_a_csv_without_a_sidecar_says_so(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "run.csv").write_text("a,b\n1,2\n")
    text = build_report(tmp_path / "results", tmp_path / "report").read_text()
    assert "nothing measured yet" in text and "run.csv`: no run sidecar run.json beside it" in text


def test_a_new_report_removes_its_stale_pages_and_keeps_everything_else(tmp_path):
    results, out = tmp_path / "results", tmp_path / "report"
    _small_run(results)
    other = _small_run(results, fx.SyntheticDevice(name="NVIDIA H200 (synthetic, small)", slug="small-h200",
                                                   bandwidth=4.3e12))
    build_report(results, out)
    assert (out / "small-h200" / "report.md").is_file() and (out / "small-h200" / "fits.csv").is_file()
    (out / "notes.md").write_text("mine")  # the user's files, not the report's
    (out / "small-h200" / "annotated.png").write_bytes(b"mine")
    owned = json.loads((out / MANIFEST).read_text())["files"]
    assert "small-h200/report.md" in owned and "notes.md" not in owned
    other.unlink()
    other.with_suffix(".json").unlink()
    build_report(results, out)
    assert not (out / "small-h200" / "report.md").exists() and not (out / "small-h200" / "roofline.png").exists()
    assert (out / "notes.md").read_text() == "mine" and (out / "small-h200" / "annotated.png").read_bytes() == b"mine"
    assert "small-h200" not in (out / "index.md").read_text()
    assert not (out / "compare-small-h100-vs-small-h200.png").exists()


def test_a_report_written_before_the_manifest_is_replaced_without_touching_other_files(tmp_path):
    results, out = tmp_path / "results", tmp_path / "report"
    _small_run(results)
    (out / "gone-device").mkdir(parents=True)
    (out / "index.md").write_text("# rooflab report\n\nold\n")
    (out / "gone-device" / "report.md").write_text("# old device\n")
    (out / "gone-device" / "roofline.png").write_bytes(b"old")
    (out / "keep.txt").write_text("mine")
    build_report(results, out)
    assert not (out / "gone-device").exists()
    assert (out / "keep.txt").read_text() == "mine" and "\nold\n" not in (out / "index.md").read_text()


@pytest.mark.parametrize("target", ["file", "/proc/rooflab-report", "/sys/rooflab-report"])
def test_an_out_that_cannot_be_written_is_one_line_and_exit_2(tmp_path, capsys, target):
    _small_run(tmp_path / "results")
    if target == "file":
        target = tmp_path / "existing.txt"
        target.write_text("not a directory")
    code, out, err = run(capsys, "report", "--results", tmp_path / "results", "--out", target)
    assert code == 2 and err.count("\n") == 1 and err.startswith("rooflab: error: report --out")
    assert "Traceback" not in err
    if isinstance(target, type(tmp_path)):
        assert target.read_text() == "not a directory"
