"""The Markdown report and its figures from synthetic result directories (no GPU, no measurements)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

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


def test_index_lists_devices_runs_and_links(report):
    index, out = report
    text = index.read_text()
    assert index == out / "index.md"
    for slug in (fx.H100.slug, fx.H200.slug, "synthetic-interpreter"):
        assert f"[report]({slug}/report.md)" in text
        assert (out / slug / "report.md").is_file()
    assert "| NVIDIA H100 80GB HBM3 (synthetic) | synthetic-h100 | H100 SXM |" in text
    assert "synthetic-llm-synthetic-h200" in text


def test_every_figure_is_a_non_empty_png_and_every_link_resolves(report):
    _, out = report
    pngs = sorted(out.rglob("*.png"))
    names = {p.name for p in pngs if p.parent.name == fx.H100.slug}
    assert {"roofline.png", "efficiency.png", "quant-speedup.png", "fit-gemv-fp16.png", "fit-gemm-fp16.png",
            "fit-attn_decode-fp16.png"} <= names
    for png in pngs:
        data = png.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, png
    for md in out.rglob("*.md"):
        for link in re.findall(r"\]\(([^)]+)\)", md.read_text()):
            assert (md.parent / link).is_file(), (md, link)


def test_device_report_tables_hold_the_fitted_and_measured_values(report):
    _, out = report
    text = (out / fx.H100.slug / "report.md").read_text()
    # pooled fit of the fixture's gemv: BW = 0.9 × 3.0 TB/s, t0 = 5 µs, memory-bound throughout
    cells = _row(text, "gemv", "triton", "fp16", "cold / graph")
    bandwidth, t0 = float(cells[6]), float(cells[10])
    assert bandwidth == pytest.approx(0.9 * fx.H100.bandwidth / 1e9, rel=0.05)
    assert t0 == pytest.approx(fx.H100.t0 * 1e6, rel=0.15)
    assert "P_eff unidentifiable" in cells[12]
    gemm = _row(text, "gemm", "torch", "fp16", "cold / graph")
    assert float(gemm[8]) == pytest.approx(0.95 * fx.H100.peaks["fp16"] / 1e12, rel=0.05)
    # measured ceilings beside the datasheet, with their ratio
    dram = _row(text, "dram_bw", "read", "triton", "fp32")
    assert float(dram[4]) == pytest.approx(fx.H100.bandwidth / 1e9, rel=0.05) and dram[5] == "3350"
    assert float(dram[7]) == pytest.approx(fx.H100.bandwidth / 3.35e12, rel=0.05)
    # per-shape knee of a gemm sweep next to the roofs' knees
    shape = _row(text, "gemm", "torch", "fp16", "llama3-70b.down")
    assert 200 < float(shape[10]) < 400 and 200 < float(shape[12]) < 400
    # quantized crossover between the fixture's batch 32 and 64 (speed-up 3.2× at batch 1)
    quant = _row(text, "qgemv triton fp16 int4 g128 llama3-70b.q")
    assert float(quant[1]) > 2.5 and 16 < float(quant[-1]) < 64
    assert "L2 excl." in text and "Not fitted (fewer than 3 usable points)" in text
    assert "| launch |" not in text.split("## Fits")[1].split("## Efficiency")[0]  # a latency, not a roofline
    assert "| skipped | gemm | triton | fp8 | fp8 needs capability >= (8, 9) | 2 |" in text
    assert "| failed | gemv | triton | bf16 | rel_err 0.5 > tolerance 0.01 | 1 |" in text
    assert "6 timed points saw clock throttling (sw_power_cap (6))" in text


def test_decode_estimate_is_given_where_measured_and_owed_beyond(report):
    _, out = report
    text = (out / fx.H100.slug / "report.md").read_text()
    section = text.split("## Decode-step estimate")[1]
    assert "### llama3-70b · triton · fp16 · context 4096" in section
    batch8 = _row(section.split("### llama3-70b · triton")[1], "8")
    assert float(batch8[8]) > 0 and batch8[-1] == "–"  # tokens/s given, nothing missing
    batch128 = _row(section.split("### llama3-70b · triton")[1], "128")
    assert batch128[8] == "–" and batch128[-1] == "attention"  # attention measured to batch 64 only
    assert "The source articles' batch table" in section and "≈5 % in the article" in section


def test_device_comparison_quotes_bandwidth_and_mlperf_ratios(report):
    index, out = report
    text = index.read_text()
    assert "## Device comparison" in text
    assert "datasheet bandwidth 4.8 / 3.35: 1.43" in text
    assert "MLPerf v4.1 Llama-2-70B tokens/s per GPU: 1.28–1.35" in text
    gemv = _row(text, "gemv triton fp16")
    assert 1.25 < float(gemv[2]) < 1.5  # memory-bound: about the 4.3/3.0 bandwidth ratio of the fixture
    assert (out / "compare-synthetic-h100-vs-synthetic-h200.png").is_file()
    assert "Decode-step tokens/s ratio" in text


def test_interpreter_runs_say_they_have_no_timings(report):
    _, out = report
    text = (out / "synthetic-interpreter" / "report.md").read_text()
    assert "Interpreter runs only: no GPU, no timings." in text
    assert "correctness only, no timings" in text and "No timed points" in text
    assert not list((out / "synthetic-interpreter").glob("*.png"))


def test_empty_results_directory_gives_an_index_saying_so(tmp_path):
    (tmp_path / "results").mkdir()
    index = build_report(tmp_path / "results", tmp_path / "out")
    assert "No runs under" in index.read_text()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["index.md"]


def test_interpret_only_results(tmp_path):
    fx.write_interpret_run(tmp_path / "results")
    index = build_report(tmp_path / "results", tmp_path / "out")
    assert "Only interpret-mode runs so far" in index.read_text()


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


def test_analysis_imports_no_torch_and_only_plots_imports_matplotlib():
    for module in ANALYSIS.glob("*.py"):
        names = _imports(module)
        torch_free = ("kernels.models", "kernels.errors")  # the kernels modules written to need no torch
        assert not any(n == "torch" or n.startswith(("torch.", "triton"))
                       or (n.startswith("kernels") and n not in torch_free) for n in names), module
        assert not any("pyplot" in n for n in names), module
        if module.name != "plots.py":
            assert not any(n.startswith("matplotlib") for n in names), module
    plots = (ANALYSIS / "plots.py").read_text()
    assert "\nimport matplotlib" not in plots and "\nfrom matplotlib" not in plots  # only inside functions
    loaded = subprocess.run([sys.executable, "-c", "import sys, analysis.report, bench.cli; "
                             "print('torch' in sys.modules, 'triton' in sys.modules)"],
                            capture_output=True, text=True, check=True, cwd=ANALYSIS.parent).stdout.split()
    assert loaded == ["False", "False"]  # `rooflab report` builds without torch or triton
