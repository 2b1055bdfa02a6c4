"""`rooflab compile --arch` beyond Hopper: each target's limits, what the compiled text is read for (PTX and
AMDGCN), occupancy, the gate's failure classes on synthetic rows, one real compile per vendor, the committed
tables, and pricing a plan for the new devices."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from bench import cli
from bench.static import ARCHS, COLUMNS, Job, compile_jobs, compile_rows, gate_subset, violations
from bench.static_compile import (ARCH_TARGETS, Compiled, _inspect_amdgcn, amd_access_widths, mma_family,
                                  occupancy)
from kernels.tuning import ARCH_LIMITS, B200, HOPPER, MI300X, MI355X, RTX_PRO_6000, Vendor

ROOT = Path(__file__).resolve().parent.parent


def test_every_target_has_limits_and_a_compiler_target():
    assert tuple(ARCH_LIMITS) == ARCHS == tuple(ARCH_TARGETS)
    assert ARCH_TARGETS["sm_100a"] == ("cuda", 100) and ARCH_TARGETS["gfx942"] == ("hip", "gfx942")
    assert B200.sm_count == 148 and B200.smem_per_block == HOPPER.smem_per_block and B200.tensor_memory
    assert not HOPPER.tensor_memory and not RTX_PRO_6000.tensor_memory and RTX_PRO_6000.smem_per_block == 101_376
    assert MI300X.warp_size == 64 and MI300X.vendor is Vendor.AMD and MI300X.smem_per_block == 65_536
    assert MI355X.sm_count == 256 and MI355X.smem_per_block == 163_840 and MI355X.arch == "gfx950"
    for arch, limits in ARCH_LIMITS.items():
        assert limits.arch == arch and limits.warp_size == (64 if limits.amd else 32)
        assert limits.smem_per_block <= limits.smem_per_sm and not limits.interpret


PTX = {
    "tcgen05.mma.cta_group::1.kind::f16 [%r1], %rd2, %rd3, %r4, p;": ("tcgen05", False),
    "tcgen05.mma.cta_group::1.kind::mxf4.block_scale.scale_vec::2X [%r1], %rd2;": ("tcgen05", True),
    "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%f1}, %rd1, %rd2;": ("wgmma", False),
    "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%f1}, {%r1}, {%r2}, {%f2};": ("mma.sync", False),
    "fma.rn.f32 %f1, %f2, %f3, %f4;\nld.global.v4.b32 {%r1, %r2, %r3, %r4}, [%rd1];": ("", False),
}
AMDGCN = {
    "v_mfma_f32_32x32x8_bf16 a[0:15], v[2:3], v[4:5], a[0:15]": ("mfma", False),
    "v_mfma_scale_f32_16x16x128_f8f6f4 v[0:3], v[4:11], v[12:19], v[0:3], v20, v21": ("mfma", True),
    "v_wmma_f32_16x16x16_bf16 v[0:7], v[8:15], v[16:23], v[0:7]": ("wmma", False),
    "v_fma_f32 v1, v2, v3, v1\nbuffer_load_dwordx4 v[0:3], v4, s[0:3], 0 offen": ("", False),
}


@pytest.mark.parametrize("text, expected", list(PTX.items()))
def test_the_ptx_tells_the_tensor_core_family(text, expected):
    assert mma_family(text, "ptx") == expected


@pytest.mark.parametrize("text, expected", list(AMDGCN.items()))
def test_the_amdgcn_tells_the_matrix_core_family(text, expected):
    assert mma_family(text, "amdgcn") == expected


def test_amdgcn_access_widths_and_metadata_fill_the_same_columns():
    asm = """
        global_load_dwordx4 v[0:3], v[4:5], off
        buffer_load_dwordx2 v[6:7], v8, s[0:3], 0 offen
        buffer_load_ushort v9, v8, s[0:3], 0 offen
        global_load_lds_dwordx4 v[4:5], off
        global_store_short v[4:5], v10, off
        buffer_store_dwordx4 v[0:3], v8, s[4:7], 0 offen
        v_mfma_f32_16x16x16_bf16 a[0:3], v[0:1], v[2:3], a[0:3]
    amdhsa.kernels:
      - .agpr_count:     4
        .private_segment_fixed_size: 48
        .sgpr_count:     22
        .sgpr_spill_count: 0
        .vgpr_count:     96
        .vgpr_spill_count: 3
    """
    assert amd_access_widths(asm, "ld") == {16: 2, 8: 1, 2: 1}
    assert amd_access_widths(asm, "st") == {16: 1, 2: 1}
    row = Compiled(0, "gemm", "tiled", "M=1", "bf16", "", 4, 2)
    _inspect_amdgcn(asm, row)
    assert (row.registers, row.sgprs, row.agprs) == (96, 22, 4)
    assert row.spill_stores == 48 and row.spill_loads is None  # scratch bytes per lane: AMD's spill column
    assert row.mma == "mfma" and not row.scaled_mma and row.ld_global_v4 and row.st_global_v4
    assert row.ld_global_bytes == "16x2 8x1 2x1"


@pytest.mark.parametrize("limits, warps, registers, smem, agprs, expected", [
    (HOPPER, 8, 255, 0, 0, 8),  # 255 regs × 256 threads: one block of 8 warps in 64 Ki registers
    (HOPPER, 4, 32, 0, 0, 64),  # register-light: the 64-warp limit
    (HOPPER, 4, 64, 100_000, 0, 8),  # two 100 KB blocks in 228 KB
    (RTX_PRO_6000, 4, 32, 0, 0, 48),  # sm_120: 48 warps per SM
    (MI300X, 4, 128, 0, 0, 16),  # 512 / 128 = 4 waves per SIMD × 4 SIMDs
    (MI300X, 4, 96, 0, 32, 16),  # AGPRs share the 512-register file
    (MI300X, 8, 64, 40_960, 0, 8),  # LDS: one 40 KiB workgroup of 64 KiB
    (MI300X, 4, 300, 70_000, 0, 0),  # over the LDS: nothing resident
])
def test_occupancy_counts_registers_shared_memory_and_the_warp_limit(limits, warps, registers, smem, agprs, expected):
    assert occupancy(limits, warps, registers, smem, agprs) == expected
    assert occupancy(limits, warps, None, smem) is None  # no register count: not guessed


# ---------------------------------------------------------------------------------------------
# The gate's failure classes, on synthetic rows of the new targets
# ---------------------------------------------------------------------------------------------


def _row(**changes) -> dict:
    base = {c: "" for c in COLUMNS}
    base.update({"arch": "gfx942", "triton": "3.6.0", "kernel": "copy", "variant": "copy", "shape": "N=268435456",
                 "dtype": "fp32", "config": "BLOCK=4096 warps=4 stages=3", "num_warps": "4", "num_stages": "3",
                 "registers": "24", "spill_stores": "0", "spill_loads": "", "smem_bytes": "0", "smem_limit": "65536",
                 "wgmma": "False", "tma": "False", "ld_global_v4": "True", "st_global_v4": "True",
                 "ld_global_bytes": "16x4", "st_global_bytes": "16x4", "status": "ok", "mma": "",
                 "scaled_mma": "False", "occupancy": "32"})
    return {**base, **changes}


GEMM = dict(kernel="gemm", variant="tiled", shape="M=4096 N=4096 K=4096 w_layout=nk", dtype="bf16",
            config="BLOCK_K=64 BLOCK_M=128 BLOCK_N=128 GROUP_M=8 warps=8 stages=2", mma="mfma", ld_global_v4="False",
            st_global_v4="False")


@pytest.mark.parametrize("change, finding", [
    ({"status": "compile-error", "note": "PassManager::run failed"}, "compile error: copy copy fp32"),
    ({**GEMM, "smem_bytes": "73728", "status": "over-smem"}, "shared memory 73728 B over the 65536 B limit: gemm"),
    ({"spill_stores": "372"}, "spill (372 B stored, 0 B loaded) in a memory-bound family"),
    ({**GEMM, "spill_stores": "44"}, "unexplained spill (44 B stored): gemm"),
    ({"ld_global_v4": "False", "st_global_v4": "False", "ld_global_bytes": "4x16", "st_global_bytes": "4x16"},
     "a streaming kernel without 16-byte accesses in any config: copy copy fp32"),
    ({**GEMM, "mma": ""}, "a tensor-core kernel compiled to scalar FMA (no mma/wgmma/tcgen05/mfma in the AMDGCN)"),
    ({**GEMM, "arch": "sm_100a", "mma": ""}, "scalar FMA (no mma/wgmma/tcgen05/mfma in the PTX)"),
    ({"kernel": "qgemv", "variant": "qgemv", "shape": "format=int4 group_size=128 M=2 N=8192 K=8192", "mma": "",
      "ld_global_v4": "True"}, "scalar FMA"),
    ({"kernel": "gemv", "variant": "gemv", "shape": "M=16 N=8192 K=8192 w_layout=nk", "mma": "",
      "config": "BLOCK_K=128 BLOCK_M=16 BLOCK_N=64 SPLIT_K=1 USE_DOT=True warps=4 stages=3"}, "scalar FMA"),
    ({"kernel": "attn_mla", "variant": "mla", "shape": "batch=1", "mma": ""}, "scalar FMA"),
])
def test_each_failure_class_is_caught_on_a_new_target(change, finding):
    found = violations([_row(**change)], [])
    assert len(found) == 1 and finding in found[0], found


@pytest.mark.parametrize("change", [
    {},  # a streaming row with 16-byte accesses
    {**GEMM},  # a tensor-core row that reached MFMA, no 16-byte loads needed
    {"kernel": "qgemv", "variant": "qgemv", "shape": "format=int4 group_size=128 M=1 N=8192 K=8192", "mma": ""},
    {"kernel": "gemv", "variant": "gemv", "shape": "M=3 N=8192 K=8192 w_layout=nk", "mma": "",
     "config": "BLOCK_K=512 BLOCK_M=4 BLOCK_N=16 SPLIT_K=1 USE_DOT=False warps=4 stages=1"},  # the FMA path by design
    {"kernel": "attn_decode", "variant": "merge", "shape": "batch=1", "mma": ""},  # the merge has no dot
    {"spill_stores": "", "spill_loads": ""},  # AMD reports no spill loads: not a spill
])
def test_rows_that_are_fine_pass(change):
    assert violations([_row(**change)], []) == []


def test_a_streaming_point_needs_only_one_config_with_16_byte_accesses():
    narrow = _row(config="BLOCK=1024 warps=4 stages=3", ld_global_v4="False", st_global_v4="False")
    assert violations([narrow, _row()], []) == []
    assert len(violations([narrow], [])) == 1


def test_an_older_table_without_the_mma_column_is_not_judged_for_fma():
    old = {k: v for k, v in _row(**{**GEMM, "arch": "sm_90a", "mma": ""}).items() if k not in ("mma", "scaled_mma")}
    assert violations([old], []) == []


# ---------------------------------------------------------------------------------------------
# Points, one real compile per vendor, the command
# ---------------------------------------------------------------------------------------------


def test_the_gate_subset_keeps_every_family_dtype_and_format():
    every = compile_jobs("all", "gfx942")
    subset = gate_subset(every)
    assert compile_jobs("gate", "gfx942") == subset and len(subset) < len(every)
    assert {(j.kernel, j.dtype, j.axes.get("format")) for j in subset} == \
        {(j.kernel, j.dtype, j.axes.get("format")) for j in every}
    assert subset[0] == every[0] and all(job in every for job in subset)


@pytest.mark.parametrize("arch, load", [("gfx942", "16x"), ("sm_100a", "16x")])
def test_a_compile_for_each_vendor_reports_the_same_columns(arch, load):
    rows = compile_rows(arch, (Job("copy", "fp16", {"N": 1000}),), workers=1)
    assert len(rows) == 1
    row = rows[0]
    assert row["status"] == "ok", row["note"]
    assert row["arch"] == arch and row["smem_limit"] == ARCH_LIMITS[arch].smem_per_block
    assert 4 <= row["registers"] <= 512 and row["spill_stores"] == 0
    assert row["ld_global_v4"] and row["st_global_v4"] and row["ld_global_bytes"].startswith(load)
    assert row["mma"] == "" and not row["tma"] and row["occupancy"] > 0
    assert (row["sgprs"] is not None) == arch.startswith("gfx")


def test_compile_all_checks_every_targets_file_before_compiling(capsys, tmp_path, monkeypatch):
    import bench.static

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(bench.static, "compile_rows", lambda *a, **k: pytest.fail("compiled"))
    assert cli.main(["compile", "--arch", "all", "--check"]) == 2
    err = capsys.readouterr().err.strip()
    assert "results/static/sm_90a.csv, which does not exist" in err and len(err.splitlines()) == 1


def test_compile_all_writes_one_file_per_target(tmp_path, monkeypatch, capsys):
    import bench.static

    monkeypatch.chdir(tmp_path)
    compiled = []

    def fake_rows(arch, jobs, workers, progress=None):
        compiled.append(arch)
        return [_row(arch=arch, triton="3.6.0")]

    monkeypatch.setattr(bench.static, "compile_rows", fake_rows)
    assert cli.main(["compile", "--arch", "all", "--jobs", "1"]) == 0
    assert compiled == list(ARCHS)
    for arch in ARCHS:
        with (tmp_path / "results" / "static" / f"{arch}.csv").open() as f:
            rows = list(csv.DictReader(f))
        assert [r["arch"] for r in rows] == [arch] and rows[0]["triton"] == "3.6.0"


# ---------------------------------------------------------------------------------------------
# The committed tables
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_each_target_has_a_committed_table_with_its_triton_version(arch):
    path = ROOT / "results" / "static" / f"{arch}.csv"
    with path.open() as f:
        assert tuple(next(csv.reader(f))) == COLUMNS
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert rows and {r["arch"] for r in rows} == {arch} and all(r["triton"] for r in rows)
    families = {r["kernel"] for r in rows}
    assert {"copy", "gemv", "gemm", "attn_prefill", "qgemv", "qgemm"} <= families
    expected = {"sm_90a": "wgmma", "sm_100a": "tcgen05", "sm_103a": "tcgen05", "sm_120a": "mma.sync",
                "gfx942": "mfma", "gfx950": "mfma"}[arch]
    big_gemm = [r for r in rows if r["kernel"] == "gemm" and "BLOCK_M=128" in r["config"] and r["status"] == "ok"]
    assert big_gemm and all(r["mma"] == expected for r in big_gemm), {r["mma"] for r in big_gemm}


# ---------------------------------------------------------------------------------------------
# Pricing a plan for the new devices
# ---------------------------------------------------------------------------------------------


def test_the_time_model_plans_with_each_targets_limits():
    from bench.estimate import machine

    mi300x, b200, rtx = machine("mi300x"), machine("b200"), machine("rtx-pro-6000")
    assert mi300x.limits.warp_size == 64 and mi300x.limits.smem_per_block == 65_536 and mi300x.limits.sm_count == 304
    assert mi300x.l2_bytes == 256e6  # the flush it prices exceeds the Infinity Cache
    assert b200.limits.arch == "sm_100a" and b200.limits.sm_count == 148 and b200.l2_bytes == 126e6
    assert rtx.limits.smem_per_block == 101_376 and rtx.capability == (12, 0)
    assert machine("mi325x").limits.arch == "gfx942" and machine("mi355x").limits.arch == "gfx950"


def _first_kernel_us(out: str) -> float:
    import re

    return float(re.search(r"\(kernel ([0-9.]+) µs", out).group(1))


def test_a_dry_run_prices_the_plan_on_the_new_devices(capsys):
    """The same plan on each device's datasheet roofs and limits: a 268 MB read takes longer at MI300X's 5.3 TB/s
    than at B200's 7.7 TB/s, and both price the whole plan."""
    kernel_us = {}
    for device in ("mi300x", "b200", "mi355x"):
        assert cli.main(["run", "--dry-run", "--device", device]) == 0
        out = capsys.readouterr().out
        assert "min of GPU-machine time" in out and "== headline:" in out
        kernel_us[device] = _first_kernel_us(out)
    assert kernel_us["mi300x"] > kernel_us["mi355x"] > kernel_us["b200"] * 0.9
    assert kernel_us["mi300x"] / kernel_us["b200"] == pytest.approx(7.7 / 5.3, rel=0.15)


# ---------------------------------------------------------------------------------------------
# Pruners that read the target's limits (what the compiled tables showed)
# ---------------------------------------------------------------------------------------------


def _tiles(configs, *keys):
    return [tuple(c.kwargs[k] for k in keys) + (c.num_warps, c.num_stages) for c in configs]


@pytest.mark.parametrize("itemsize", [2, 4])
def test_stream_tiles_keep_16_bytes_per_lane_on_64_wide_wavefronts(itemsize):
    from kernels.stream import stream_candidates

    for n in (1000, 4097, 1 << 26):
        for warp_size in (32, 64):
            for c in stream_candidates(n, itemsize, 1, warp_size):
                assert c.kwargs["BLOCK"] * itemsize // (warp_size * c.num_warps) >= 16, (n, warp_size, c)
    assert stream_candidates(1 << 26, itemsize, 1) == stream_candidates(1 << 26, itemsize, 1, 32)  # NVIDIA unchanged


def test_prefill_tiles_fit_each_targets_registers_and_lds():
    from kernels.attn_prefill import prefill_candidates

    b200 = _tiles(prefill_candidates(4096, 4096, 128, 2, B200), "BLOCK_M", "BLOCK_N")
    assert b200 and all((m, n) != (128, 128) for m, n, *_ in b200)  # 128 × 128 spilled 72–300 B under tcgen05
    assert (128, 128, 8, 2) in _tiles(prefill_candidates(4096, 4096, 128, 2, HOPPER), "BLOCK_M", "BLOCK_N")
    mi300x = prefill_candidates(4096, 4096, 256, 2, MI300X)
    assert _tiles(mi300x, "BLOCK_M", "BLOCK_N") == [(64, 32, 4, 2)]  # the only tile within 64 KiB of LDS
    assert all(c.kwargs["BLOCK_N"] >= 64 for c in prefill_candidates(4096, 4096, 128, 2, MI300X))
    assert all(c.kwargs["BLOCK_N"] >= 64 for limits in (HOPPER, MI355X)
               for c in prefill_candidates(4096, 4096, 256, 2, limits))  # 32-wide only when nothing wider fits


def test_a_ragged_row_length_is_not_held_to_16_byte_accesses():
    """K = 4104 is not a multiple of 16 elements: Triton cannot prove any W row 16-byte aligned, on any target."""
    ragged = _row(kernel="gemv", variant="gemv", shape="M=1 N=14335 K=4104 w_layout=nk", dtype="fp16",
                  ld_global_v4="False", st_global_v4="False")
    assert violations([ragged], []) == []
    assert len(violations([dict(ragged, shape="M=1 N=14336 K=4096 w_layout=nk")], [])) == 1
