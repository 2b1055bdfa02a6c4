"""The Markdown report and its figures from synthetic H100 + H200 result directories (no GPU, no measurements)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis.report import build_report
from kernels.errors import UsageError
from tests import fixture_results as fx

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ANALYSIS = Path(__file__).resolve().parents[1] / "analysis"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = fx.write_results(tmp_path_factory.mktemp("results"), devices=(fx.H100, fx.H200), interpret=True)
    out = tmp_path_factory.mktemp("report")
    return build_report(root, out), out


def _row(text: str, *cells: str) -> list[str]:
    """The first table row starting with the given cells, split into its cells."""
    prefix = "| " + " | ".join(cells) + " |"
    line = next(line for line in text.splitlines() if line.startswith(prefix))
    return [c.strip() for c in line.strip("|").split("|")]


def _value(cell: str, unit: str) -> float:
    """'2.71 TB/s' → 2.71e12 (SI prefix and unit checked)."""
    number, prefixed = cell.replace("≥ ", "").split(" ")
    scale = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "µ": 1e-6, "m": 1e-3}[prefixed[:-len(unit)]]
    assert prefixed.endswith(unit), cell
    return float(number) * scale


def test_index_lists_devices_runs_links_and_both_kinds_of_numbers(report):
    index, out = report
    text = index.read_text()
    assert index == out / "index.md"
    assert "Built from" in text and "5 runs on 3 devices (2 with timings)" in text
    for slug in (fx.H100.slug, fx.H200.slug, "synthetic-interpreter"):
        assert f"[report]({slug}/report.md)" in text
    assert "| NVIDIA H100 80GB HBM3 (synthetic) | synthetic-h100 | H100 SXM |" in text
    assert "**Measured or predicted?**" in text and "[predicted.md](predicted.md)" in text
    assert "[tokenomics.md](tokenomics.md)" in text


def test_every_figure_is_a_png_every_link_resolves_and_no_number_is_raw(report):
    _, out = report
    names = {p.name for p in (out / fx.H100.slug).glob("*.png")}
    assert {"roofline.png", "bandwidth.png", "efficiency.png", "quant-speedup.png", "fit-gemv-fp16.png",
            "fit-gemm-fp16.png", "fit-attn_decode-fp16.png", "fit-attn_prefill-fp16.png", "fraction-gemm.png",
            "fraction-gemv.png", "fraction-attn_decode.png", "fraction-qgemv.png"} <= names
    for png in out.rglob("*.png"):
        data = png.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, png
    for md in out.rglob("*.md"):
        text = md.read_text()
        for link in re.findall(r"\]\(([^)]+)\)", text):
            assert (md.parent / link).is_file(), (md, link)
        raw = re.search(r"(?<![=\d])\d{9,}|\d+\.\d{6,}", text)  # no 703844799279924.4 (axis values are exact)
        assert not raw, (md, raw)
        assert "e+0" not in text, md


def test_device_report_tables_hold_the_fitted_and_measured_values(report):
    _, out = report
    text = (out / fx.H100.slug / "report.md").read_text()
    assert "| capability | 9.0 |" in text and "| memory_bytes | 80 GB |" in text
    # pooled fit of the fixture's gemv: BW = 0.9 × 3.0 TB/s, t0 = 5 µs, memory-bound throughout
    cells = _row(text, "gemv", "triton", "fp16", "cold")
    assert _value(cells[7], "B/s") == pytest.approx(0.9 * fx.H100.bandwidth, rel=0.05)
    assert _value(cells[11], "s") == pytest.approx(fx.H100.t0, rel=0.15)
    assert "P_eff unidentifiable" in cells[13]
    gemm = _row(text, "gemm", "torch", "fp16", "cold")
    assert _value(gemm[9], "FLOP/s") == pytest.approx(0.95 * fx.H100.peaks["fp16"], rel=0.05)
    assert gemm[4] == "graph+stream"  # one series across launch modes
    dram = _row(text, "dram_bw", "read", "triton", "fp32")
    assert _value(dram[4], "B/s") == pytest.approx(fx.H100.bandwidth, rel=0.05) and dram[5] == "3.35 TB/s"
    assert float(dram[6]) == pytest.approx(fx.H100.bandwidth / 3.35e12, rel=0.05)
    shape = _row(text, "gemm", "torch", "fp16", "cold", "llama3-70b.down")
    assert 200 < float(shape[12]) < 400 and 200 < float(shape[14]) < 400
    copy = _row(text, "copy", "triton", "fp32", "cold", "-")  # no FLOPs: no knee anywhere
    assert copy[12:15] == ["–", "–", "–"]
    quant = _row(text, "qgemv triton fp16 int4 g128 llama3-70b.q")
    assert float(quant[1]) > 2.5 and 16 < float(quant[-1]) < 64
    assert "| skipped | gemm | triton | fp8 | fp8 needs capability >= (8, 9) | 2 |" in text
    assert "| failed | gemv | triton | bf16 | rel_err 0.5 > tolerance 0.01 | 1 |" in text
    assert "6 timed points saw clock throttling (sw_power_cap (6))" in text


def test_fits_csv_keeps_cold_l2_points_and_says_why_warm_ones_are_left_out(report):
    _, out = report
    fits = pd.read_csv(out / fx.H100.slug / "fits.csv")
    square = fits[(fits["kernel"] == "gemv") & (fits["series"] == "square.1024")]
    cold, warm = square[square["l2"] == "cold"].iloc[0], square[square["l2"] == "warm"].iloc[0]
    assert cold["points_used"] == 6 and cold["points_excluded"] == 0  # fits in L2, but L2 was flushed
    assert warm["points_used"] == 0 and warm["points_excluded"] == 6 and "warm L2" in warm["excluded_why"]
    gemv = fits[(fits["kernel"] == "gemv") & (fits["impl"] == "triton") & fits["pooled"] & (fits["l2"] == "cold")]
    assert gemv.iloc[0]["bandwidth_gbs"] == pytest.approx(0.9 * fx.H100.bandwidth / 1e9, rel=0.05)
    assert set(fits.loc[fits["kernel"] == "copy", "knee"].isna()) == {True}
    prefill = fits[(fits["kernel"] == "attn_prefill") & ~fits["pooled"]]
    assert set(prefill["swept_axis"]) == {"seq_kv"} and len(prefill) == 4  # kv_heads × impl, 5 seqs each


def test_predicted_page_overlays_the_measured_devices(report):
    _, out = report
    page = (out / "predicted.md").read_text()
    assert "**Every number on this page is PREDICTED**" in page
    assert "MEASURED** medians of NVIDIA H100 80GB HBM3 (synthetic), NVIDIA H200 (synthetic)" in page
    assert "### bf16" in page and "### fp8" in page
    row = _row(page, "llama3-70b.q = llama3-70b.o = llama2-70b.q (+1)", "8192 × 8192")
    assert row[2:7] and all(150 < float(k) < 400 for k in row[2:7])  # knee M per device


def test_tokenomics_page_has_predicted_and_measured_claims_and_a_csv(report):
    index, out = report
    text = (out / "tokenomics.md").read_text()
    assert "Measured kernel terms from: synthetic-h100, synthetic-h200" in text
    measured = _row(text, "llama3.1-405b fp8 weights, bf16 KV TP8", "1k in / 19k out",
                    "measured terms (synthetic-h100 vs synthetic-h200), with fixed costs")
    assert measured[4] == "38 / 125"  # the bytes each GPU holds (issue 22 §3)
    assert "none of the" in text and "estimates is below it" in text
    curves = pd.read_csv(out / "tokenomics.csv")
    assert {"predicted (datasheet)", "measured: synthetic-h100", "measured: synthetic-h200"} <= set(curves["basis"])
    assert (curves["step_ms"] >= curves["bound_ms"] * (1 - 1e-9)).all()
    assert ("| llama3-8b bf16 TP1 | MLPerf OpenOrca 1k in / 294 out | predicted (datasheets), upper bound (no fixed "
            "costs) | 1.43× |") in index.read_text()


def test_device_comparison_quotes_bandwidth_and_mlperf_ratios(report):
    index, out = report
    text = index.read_text()
    assert "## Device comparison (MEASURED)" in text
    assert "datasheet bandwidth 4.8 / 3.35: 1.43" in text
    assert "MLPerf v4.1 Llama-2-70B tokens/s per GPU: 1.28–1.35" in text
    gemv = _row(text, "gemv triton fp16")
    assert 1.25 < float(gemv[2]) < 1.5  # memory-bound: about the 4.3/3.0 bandwidth ratio of the fixture
    assert (out / "compare-synthetic-h100-vs-synthetic-h200.png").is_file()


def test_interpreter_runs_say_they_have_no_timings(report):
    _, out = report
    text = (out / "synthetic-interpreter" / "report.md").read_text()
    assert "Interpreter runs only: no GPU, no timings." in text
    assert "correctness only, no timings" in text and "No timed points" in text
    assert not list((out / "synthetic-interpreter").glob("*.png"))


def test_interpret_only_results_and_grammar(tmp_path):
    fx.write_interpret_run(tmp_path / "results")
    text = build_report(tmp_path / "results", tmp_path / "out").read_text()
    assert "Only interpret-mode runs so far" in text and "1 run on 1 device (0 with timings)" in text


def test_missing_results_directory_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no results at"):
        build_report(tmp_path / "nowhere", tmp_path / "out")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_analysis_imports_no_torch_and_only_plot_modules_import_matplotlib():
    for module in ANALYSIS.glob("*.py"):
        names = _imports(module)
        torch_free = ("kernels.models", "kernels.errors", "kernels")  # `from kernels import models`
        assert not any(n == "torch" or n.startswith(("torch.", "triton"))
                       or (n.startswith("kernels") and n not in torch_free) for n in names), module
        assert not any("pyplot" in n for n in names), module
        if not module.name.startswith("plots"):
            assert not any(n.startswith("matplotlib") for n in names), module
        source = module.read_text()
        assert "\nimport matplotlib" not in source and "\nfrom matplotlib" not in source  # only inside functions
    loaded = subprocess.run([sys.executable, "-c", "import sys, analysis.report, bench.cli; "
                             "print('torch' in sys.modules, 'triton' in sys.modules)"],
                            capture_output=True, text=True, check=True, cwd=ANALYSIS.parent).stdout.split()
    assert loaded == ["False", "False"]  # `rooflab report` builds without torch or triton
