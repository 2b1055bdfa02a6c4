"""The report's machine sections: the compile table per target and the node-health table, from files alone."""

import csv

from analysis.report import build_report
from bench.health import HEALTH_COLUMNS
from bench.static import COLUMNS
from tests.fixture_results import H100, write_ceilings_run


def _static_rows(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    base = {c: "" for c in COLUMNS}
    rows = [
        {**base, "arch": "sm_90a", "triton": "3.6.0", "kernel": "gemm", "variant": "tiled", "shape": "M=8192",
         "dtype": "bf16", "config": "BLOCK_M=128", "registers": "168", "spill_stores": "0", "spill_loads": "0",
         "smem_bytes": "131072", "wgmma": "True", "tma": "False", "ld_global_v4": "True", "status": "ok"},
        {**base, "arch": "sm_90a", "triton": "3.6.0", "kernel": "gemm", "variant": "tiled", "shape": "M=8192",
         "dtype": "fp8", "config": "BLOCK_N=256", "registers": "255", "spill_stores": "200", "spill_loads": "236",
         "smem_bytes": "196608", "wgmma": "True", "tma": "False", "ld_global_v4": "True", "status": "ok",
         "note": "compute-bound: kept, the autotuner times it against the others"},
    ]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def test_the_compile_table_is_shown_and_not_taken_for_a_bad_run(tmp_path):
    results = tmp_path / "results"
    _static_rows(results / "static" / "sm_90a.csv")
    bad = []
    index = build_report(results, tmp_path / "report", bad)
    text = index.read_text()
    assert bad == []  # results/static/*.csv has no sidecar, and needs none
    assert "Compile check per target (STATIC" in text
    assert "| gemm | tiled | 2 | 0 | 255 | 1 (max 436 B) | 192 KiB | wgmma 2/2 | 0/2 | 2/2 |" in text
    assert "compute-bound: kept" in text


def test_the_node_health_table_is_on_the_device_page(tmp_path):
    results = tmp_path / "results"
    run = write_ceilings_run(results, H100)
    health = run.with_name("node.health.csv")
    with health.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HEALTH_COLUMNS)
        writer.writeheader()
        writer.writerow(dict(gpu="GPU-1", name=H100.name, metric="dram_bw", dtype="", value=2.7e12, median=3.0e12,
                             ratio=0.9, flagged=True, reason="10.0% below the median of 8", source="x.gpu1.csv"))
    bad = []
    build_report(results, tmp_path / "report", bad)
    page = (tmp_path / "report" / H100.slug / "report.md").read_text()
    assert bad == []
    assert "## Node health" in page and "**FLAGGED**" in page and "2700 GB/s" in page


def test_one_compile_table_per_target_with_its_tensor_core_instructions(tmp_path):
    results = tmp_path / "results"
    base = {c: "" for c in COLUMNS}
    tables = {"sm_100a": ("tcgen05", "True", "12", "0"), "gfx942": ("mfma", "False", "256", "372")}
    for arch, (mma, scaled, regs, spill) in tables.items():
        path = results / "static" / f"{arch}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerow({**base, "arch": arch, "triton": "3.6.0", "kernel": "qgemm", "variant": "scaled",
                             "shape": "M=128", "dtype": "bf16", "config": "BLOCK_M=128", "registers": regs,
                             "spill_stores": spill, "smem_bytes": "65536", "mma": mma, "scaled_mma": scaled,
                             "tma": "False", "ld_global_v4": "True", "status": "ok"})
            writer.writerow({**base, "arch": arch, "triton": "3.6.0", "kernel": "qgemm", "variant": "scaled",
                             "shape": "M=16", "dtype": "bf16", "config": "BLOCK_M=16", "registers": "90",
                             "spill_stores": "0", "smem_bytes": "0", "mma": "", "scaled_mma": "False",
                             "tma": "False", "ld_global_v4": "False", "status": "ok"})
    bad = []
    text = build_report(results, tmp_path / "report", bad).read_text()
    assert bad == []
    assert "### sm_100a (Triton 3.6.0" in text and "### gfx942 (Triton 3.6.0" in text
    assert "| none 1/2, tcgen05+scaled 1/2 |" in text
    assert "| 256 | 1 (max 372 B) | 64 KiB | mfma 1/2, none 1/2 |" in text
