"""Device limits, candidate functions, the static compiler and its gate (issue 10 §3), CPU only."""

from __future__ import annotations

import csv

import pytest
import torch

from bench import cli
from bench.static import COLUMNS, Job, compile_rows, read_csv, violations, write_csv
from kernels import registry
from kernels.attn_decode import decode_candidates
from kernels.attn_prefill import prefill_candidates
from kernels.dequant import dequant_candidates
from kernels.gemm import GemmVariant, gemm_candidates, gemm_variant
from kernels.gemv import limited_candidates
from kernels.qgemm import qgemm_candidates
from kernels.qgemv import qgemv_candidates
from kernels.spaces import meta
from kernels.stream import stream_candidates
from kernels.tuning import HOPPER, INTERPRETER, device_limits, interpreting, pinned_limits

# ---------------------------------------------------------------------------------------------
# The refactor keeps the pruners' answers: what the pre-refactor pruners (commit 4acde42) kept on an
# H100 (132 SMs, 232,448 B of shared memory), captured by running them. Where a rule was added on
# purpose, the test names it and checks that only the configs it names went.
# ---------------------------------------------------------------------------------------------


def _gemv(configs):
    return [(c.kwargs["USE_DOT"], c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"], c.kwargs["SPLIT_K"],
             c.num_warps, c.num_stages) for c in configs]


def _tile(configs, *names, stages=True):
    return [(*(c.kwargs[n] for n in names), c.num_warps, *((c.num_stages,) if stages else ())) for c in configs]


OLD_GEMV = {
    (1, 8192, 8192, 2): [(False, 1, 16, 512, 1, 4, 1), (False, 1, 8, 512, 1, 4, 1), (False, 1, 16, 256, 1, 4, 3),
                         (False, 1, 32, 256, 2, 8, 1), (False, 1, 8, 1024, 1, 8, 1), (False, 1, 4, 512, 1, 4, 3),
                         (False, 1, 8, 256, 1, 4, 3), (False, 1, 4, 256, 1, 4, 3), (False, 1, 8, 128, 1, 4, 4)],
    (33, 4096, 4096, 4): [(True, 64, 32, 128, 3, 4, 3), (True, 64, 64, 64, 5, 4, 3)],
    (3, 77, 1031, 2): [(False, 4, 4, 512, 1, 4, 3), (False, 4, 8, 256, 2, 4, 3), (False, 4, 4, 256, 2, 4, 3),
                       (False, 4, 8, 128, 4, 4, 4), (True, 16, 64, 256, 2, 4, 3), (True, 16, 128, 128, 4, 4, 4),
                       (True, 16, 64, 128, 4, 4, 4), (True, 16, 32, 256, 2, 4, 4), (True, 16, 128, 256, 2, 8, 3),
                       (True, 16, 16, 512, 1, 4, 3), (True, 16, 32, 128, 4, 4, 3), (True, 16, 64, 64, 8, 4, 3)],
}
OLD_GEMM_BF16 = {
    False: [(128, 256, 64, 8, 3), (128, 256, 64, 8, 4), (256, 128, 64, 8, 3), (128, 128, 64, 4, 4),
            (128, 128, 64, 8, 3), (128, 128, 128, 8, 3), (64, 256, 64, 4, 4), (64, 128, 64, 4, 4),
            (64, 64, 128, 4, 4), (32, 64, 128, 4, 4), (16, 64, 128, 4, 4), (128, 256, 32, 8, 3),
            (128, 128, 32, 8, 4)],
    True: [(128, 256, 64, 8, 3), (128, 128, 64, 8, 4), (128, 128, 128, 8, 3), (64, 256, 64, 4, 4),
           (64, 128, 128, 4, 4), (128, 128, 32, 8, 4)],
}
OLD_GEMM_FP8_TMA = [(128, 256, 64, 8, 3), (128, 128, 64, 8, 4), (128, 256, 128, 8, 3), (128, 128, 128, 8, 3),
                    (64, 256, 64, 4, 4), (64, 128, 128, 4, 4), (128, 128, 32, 8, 4)]
OLD_PREFILL = {
    (4096, 128, 2): [(128, 64, 8, 2), (128, 64, 8, 3), (128, 64, 8, 4), (128, 128, 8, 2), (128, 128, 8, 3),
                     (64, 64, 4, 2), (64, 64, 4, 3), (64, 64, 4, 4), (64, 128, 4, 2), (64, 128, 4, 3)],
    (4096, 256, 2): [(128, 64, 8, 2), (64, 64, 4, 2), (64, 64, 4, 3)],
}
OLD_DECODE = {  # (chunk, head_dim) with a bf16 cache
    (8192, 256): [(64, 4, 2), (64, 4, 3), (64, 4, 4), (64, 8, 2), (64, 8, 3), (64, 8, 4), (128, 4, 2), (128, 8, 2),
                  (32, 4, 2), (32, 4, 3), (32, 4, 4)],
}
OLD_DEQUANT = {
    128: [(64, 128, 4), (64, 128, 8), (32, 128, 4), (32, 128, 8), (128, 128, 4), (128, 128, 8), (256, 128, 4),
          (256, 128, 8)],
    0: [(64, 128, 4), (64, 128, 8), (32, 256, 4), (32, 256, 8), (128, 128, 4), (128, 128, 8), (64, 256, 4),
        (64, 256, 8), (128, 64, 4), (128, 64, 8), (256, 32, 4), (256, 32, 8)],
}
OLD_QGEMM_M4096 = [(128, 128, 64, 8, 3), (64, 128, 64, 4, 4), (128, 256, 64, 8, 3), (64, 256, 64, 8, 3),
                   (128, 64, 64, 4, 4), (32, 128, 128, 4, 4), (16, 128, 128, 4, 4), (16, 64, 128, 4, 3),
                   (64, 64, 128, 4, 4), (128, 128, 128, 8, 3)]
OLD_QGEMV_INT4_M1 = [(16, 128, 1, 4), (16, 128, 1, 8), (32, 128, 2, 4), (32, 128, 2, 8), (64, 128, 4, 4),
                     (64, 128, 4, 8), (128, 128, 8, 8)]
OLD_STREAM_FP32 = [(4096, 4), (4096, 8), (4096, 16), (8192, 4), (8192, 8), (8192, 16), (16384, 4), (16384, 8),
                   (16384, 16), (2048, 4), (2048, 8), (2048, 16), (1024, 4), (1024, 8)]


@pytest.mark.parametrize("shape", list(OLD_GEMV))
def test_gemv_candidates_are_the_old_pruners_less_wide_dot_tiles_on_unaligned_rows(shape):
    M, N, K, size = shape
    unaligned_wide = lambda t: K % 16 and t[0] and t[2] * t[3] > 32 * 32 * t[5]  # noqa: E731
    assert _gemv(limited_candidates(M, N, K, size, HOPPER)) == [t for t in OLD_GEMV[shape] if not unaligned_wide(t)]


@pytest.mark.parametrize("tma", [False, True])
def test_gemm_candidates_are_the_old_pruners_and_fp8_drops_only_wide_accumulators(tma):
    assert _tile(gemm_candidates(8192, 8192, 8192, 2, 2, tma, HOPPER), "BLOCK_M", "BLOCK_N", "BLOCK_K") == \
        OLD_GEMM_BF16[tma]
    fp8 = _tile(gemm_candidates(8192, 8192, 8192, 1, 2, True, HOPPER), "BLOCK_M", "BLOCK_N", "BLOCK_K")
    assert fp8 == [t for t in OLD_GEMM_FP8_TMA if t[0] * t[1] <= 64 * 32 * t[3]]  # ≤ 64 accumulators per thread


def test_attention_and_dequant_candidates_are_the_old_pruners():
    for (seq, head_dim, size), old in OLD_PREFILL.items():  # less 4-warp tiles with ≥ 128 live values a thread
        kept = [t for t in old if t[2] == 8 or t[0] * (head_dim + t[1]) // (32 * t[2]) < 128]
        assert _tile(prefill_candidates(seq, seq, head_dim, size, HOPPER), "BLOCK_M", "BLOCK_N") == kept
    for (chunk, head_dim), old in OLD_DECODE.items():
        assert _tile(decode_candidates(chunk, head_dim, 2, HOPPER), "BLOCK_N") == old
    for group, old in OLD_DEQUANT.items():
        assert _tile(dequant_candidates(group), "BLOCK_N", "BLOCK_K", stages=False) == old


def test_qgemm_drops_only_the_tiles_with_more_than_64_accumulators_per_thread():
    new = _tile(qgemm_candidates(4096, 0), "BLOCK_M", "BLOCK_N", "BLOCK_K")
    assert new == [t for t in OLD_QGEMM_M4096 if t[0] * t[1] <= 64 * 32 * t[3]]
    assert (128, 256, 64, 8, 3) not in new


def test_stream_candidates_drop_only_the_spilling_and_narrow_blocks():
    assert _tile(stream_candidates(1 << 26, 4, arrays=1), "BLOCK", stages=False) == OLD_STREAM_FP32
    triad = _tile(stream_candidates(1 << 26, 4, arrays=2), "BLOCK", stages=False)
    assert triad == [t for t in OLD_STREAM_FP32 if t != (16384, 4)]  # 1 KiB per thread: spilled 228 B
    assert _tile(stream_candidates(1000, 2, arrays=1), "BLOCK", stages=False) == [(1024, 4)]  # not 8 B per thread


# ---------------------------------------------------------------------------------------------
# qgemv: every kept tile streams W in 16-byte loads (fails on the pre-fix pruner, which kept
# 16-row int4/mxfp4 tiles at 4–8 bytes per thread for M = 2 … 15)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt,group", [("int4", 128), ("int4", 32), ("mxfp4", 32), ("int8", 0), ("fp8", 0)])
@pytest.mark.parametrize("m", [1, 2, 3, 7, 8, 15, 16, 64])
def test_qgemv_tiles_stream_16_bytes_per_thread(fmt, group, m):
    block_m = 1 if m == 1 else max(16, 1 << (m - 1).bit_length())
    bits = 8 if fmt in ("int8", "fp8") else 4
    configs = qgemv_candidates(block_m, 8192, 8192, group, fmt, HOPPER)
    assert configs
    for c in configs:
        assert c.kwargs["BLOCK_N"] * c.kwargs["BLOCK_K"] * bits // 8 >= 16 * 32 * c.num_warps, c


def test_qgemv_m1_keeps_the_old_tiles_that_load_16_bytes():
    new = _tile(qgemv_candidates(1, 8192, 8192, 128, "int4", HOPPER), "BLOCK_N", "BLOCK_K", "SPLIT_K", stages=False)
    assert new == [t for t in OLD_QGEMV_INT4_M1 if t[0] * t[1] // 2 >= 16 * 32 * t[3]]


@pytest.mark.parametrize("m", [2, 5, 9, 15])
@pytest.mark.parametrize("fmt,group,k", [("int4", 32, 96), ("mxfp4", 32, 96), ("int8", 128, 200), ("fp8", 128, 136)])
def test_qgemv_small_batches_on_tl_dot_match_the_reference(m, fmt, group, k, device, seed):
    from kernels.check import check_point
    from kernels.qgemv import QGEMV

    case = QGEMV.case("fp16", M=m, format=fmt, group_size=group, N=67, K=k)
    checked = check_point(QGEMV, "triton", case, device, seed)
    assert checked.ok, f"{case.label()}: {checked.message()}"


@pytest.mark.parametrize("kernel", ["copy", "triad"])
def test_stream_ragged_tail_in_slices(kernel, device, seed):
    """A last block holding more than one TAIL slice, not a multiple of 16 elements."""
    from kernels.check import check_point

    spec = registry.get(kernel)
    case = spec.case("fp32", N=4096 + 2 * 1024 + 37)
    checked = check_point(spec, "triton", case, device, seed)
    assert checked.ok, f"{case.label()}: {checked.message()}"


# ---------------------------------------------------------------------------------------------
# Limits: one lookup, pinnable
# ---------------------------------------------------------------------------------------------


def test_limits_pin_to_hopper_for_cpu_and_meta_tensors():
    assert HOPPER.sm_count == 132 and HOPPER.smem_per_block == 232_448 and HOPPER.registers_per_sm == 65_536
    assert HOPPER.capability == (9, 0) and not HOPPER.interpret
    if interpreting():
        assert device_limits("cpu") == INTERPRETER and device_limits(None) == INTERPRETER
    assert device_limits("meta") == INTERPRETER
    x, w, y = meta((128, 256), torch.bfloat16), meta((512, 256), torch.bfloat16), meta((128, 512), torch.bfloat16)
    assert gemm_variant(x, w, y) is GemmVariant.TILED
    with pinned_limits(HOPPER):
        assert device_limits("cpu") == HOPPER and device_limits("meta") == HOPPER and device_limits(0) == HOPPER
        assert gemm_variant(x, w, y) is GemmVariant.TMA  # what an H100 launch would pick
        with pinned_limits(INTERPRETER):
            assert device_limits("meta") == INTERPRETER
        assert device_limits("meta") == HOPPER
    assert device_limits("meta") == INTERPRETER


@pytest.mark.parametrize("name", registry.names())
def test_every_triton_impl_lists_what_it_would_compile(name):
    """Each family's hook gives kernels and configs for its default case on an H100, and the
    arguments a compile would pass bind to the kernel's parameters (no compiler needed)."""
    spec = registry.get(name)
    triton_impl = spec.impl("triton")
    assert triton_impl.candidates is not None
    spaces = triton_impl.candidates(spec.case(spec.dtypes[0]), HOPPER)
    assert spaces and all(space.configs for space in spaces)
    for space in spaces:
        args, constexprs = space.arguments()
        names = list(space.kernel.arg_names)
        tuned = set().union(*(c.kwargs for c in space.configs))
        assert len(args) + len(constexprs) + len(tuned - set(constexprs)) >= len(names) - 1  # at most a heuristic
        assert set(constexprs) <= set(names) and set(names[:len(args)]).isdisjoint(constexprs)


def test_hooks_leave_no_meta_tensors_in_launcher_caches():
    """qgemv's launcher keeps its split-K scratch per device: a hook's meta scratch must not stay."""
    from kernels.qgemv import _SCRATCH

    spec = registry.get("qgemv")
    spec.impl("triton").candidates(spec.case("fp16", M=1, N=4096, K=4096), HOPPER)
    assert torch.device("meta") not in _SCRATCH


def test_the_hook_plans_for_the_limits_it_is_given():
    """Batch-1 decode splits the cache over 132 SMs (decode + merge kernels); on a 4-SM device its
    8 programs already fill the GPU, so one kernel runs, with a longer chunk in its tuning key."""
    from dataclasses import replace

    spec = registry.get("attn_decode")
    case = spec.case("bf16", batch=1, heads=64, kv_heads=8, context=8192)
    assert [s.name for s in spec.impl("triton").candidates(case, HOPPER)] == ["decode", "merge"]
    assert [s.name for s in spec.impl("triton").candidates(case, replace(HOPPER, sm_count=4))] == ["decode"]


# ---------------------------------------------------------------------------------------------
# The compiler (one small compile) and the gate
# ---------------------------------------------------------------------------------------------


def test_a_compile_reports_registers_shared_memory_and_16_byte_loads():
    calls = []
    rows = compile_rows("sm_90a", (Job("copy", "fp16", {"N": 1000}),), workers=1,
                        progress=lambda done, totals: calls.append((dict(done), totals)))
    assert calls[-1] == ({"copy": 1}, {"copy": 1})  # the last word: every config, of the worker's plan
    assert len(rows) == 1  # BLOCK=1024 with 4 warps: the one config that fits the array at 16 B per thread
    row = rows[0]
    assert row["status"] == "ok", row["note"]
    assert row["kernel"] == "copy" and row["config"] == "BLOCK=1024 warps=4 stages=3"
    assert 8 <= row["registers"] <= 255 and row["spill_stores"] == 0 and row["spill_loads"] == 0
    assert row["smem_bytes"] == 0 and row["smem_limit"] == HOPPER.smem_per_block
    assert row["ld_global_v4"] and row["st_global_v4"] and not row["wgmma"] and not row["tma"]
    assert row["ld_global_bytes"].startswith("16x")


def _row(**changes) -> dict:
    base = {"arch": "sm_90a", "triton": "3.6.0", "kernel": "copy", "variant": "copy", "shape": "N=268435456",
            "dtype": "fp32", "config": "BLOCK=4096 warps=4 stages=3", "num_warps": "4", "num_stages": "3",
            "registers": "48", "spill_stores": "0", "spill_loads": "0", "smem_bytes": "0", "smem_limit": "232448",
            "wgmma": "False", "tma": "False", "ld_global_v4": "True", "st_global_v4": "True",
            "ld_global_bytes": "16x16", "st_global_bytes": "16x16", "status": "ok", "note": ""}
    return {**base, **changes}


@pytest.fixture
def committed(tmp_path):
    """A committed file with one streaming row, one gemv M=1 row and one compute-bound row."""
    rows = [_row(), _row(kernel="gemv", variant="gemv", shape="M=1 N=8192 K=8192 w_layout=nk", dtype="bf16"),
            _row(kernel="gemm", variant="tma", shape="M=8192 N=8192 K=8192 w_layout=nk", dtype="bf16",
                 ld_global_v4="False", wgmma="True", tma="True")]
    path = tmp_path / "sm_90a.csv"
    write_csv(path, rows)
    return path


def test_the_gate_passes_the_committed_rows(committed):
    assert violations(read_csv(committed), read_csv(committed)) == []


@pytest.mark.parametrize("change, finding", [
    ({"spill_stores": "228", "spill_loads": "228"}, "spill (228 B stored, 228 B loaded) in a memory-bound family"),
    ({"smem_bytes": "240000", "status": "over-smem"}, "shared memory 240000 B over the 232448 B limit"),
    ({"ld_global_v4": "False", "ld_global_bytes": "8x32"}, "lost its 16-byte global loads (committed: 16x16; now: 8x32)"),
    ({"st_global_v4": "False", "st_global_bytes": ""}, "lost its 16-byte global stores (committed: 16x16; now: none)"),
    ({"status": "compile-error", "note": "CompilationError: at 3:4"}, "compile error: copy copy fp32"),
])
def test_the_gate_flags_a_synthetic_finding(committed, change, finding):
    baseline = read_csv(committed)
    found = violations([_row(**change)] + baseline[1:], baseline)
    assert len(found) == 1 and finding in found[0], found


def test_the_gate_judges_gemv_m1_as_streaming_and_gemm_spills_by_their_note(committed):
    baseline = read_csv(committed)
    gemv_lost = dict(baseline[1], ld_global_v4="False")
    assert "lost its 16-byte global loads" in violations([gemv_lost], baseline)[0]
    gemm_spill = dict(baseline[2], spill_stores="104", spill_loads="88")
    assert "unexplained spill" in violations([gemm_spill], baseline)[0]
    assert violations([dict(gemm_spill, note="accumulator pressure, explained")], baseline) == []


def test_the_csv_has_the_documented_columns(committed):
    with committed.open() as f:
        assert tuple(next(csv.reader(f))) == COLUMNS


@pytest.mark.parametrize("argv, message", [
    (["compile", "--arch", "sm_80"], "unknown arch 'sm_80'; valid: sm_90a, sm_100a, sm_103a, sm_120a, gfx942, gfx950, all"),
    (["compile", "--arch", "all", "--out", "x.csv"], "--arch all writes one file per target"),
    (["compile", "--out", "/proc/no/such.csv"], "cannot write there"),
    (["compile", "--check", "--out", "/nonexistent/sm_90a.csv"], "which does not exist"),
    (["compile", "--jobs", "0"], "--jobs must be ≥ 1"),
])
def test_compile_command_bad_input_is_one_line(argv, message, capsys, tmp_path):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_compile_refuses_a_directory_as_out(capsys, tmp_path):
    assert cli.main(["compile", "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Progress, a subset, where the CSV went (issue 21: `rooflab compile` printed nothing for 7 minutes)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["compile", "--kernel", "nope", "--out", "x.csv"], "--kernel nope: no such family to compile; valid: "),
    (["compile", "--kernel", ",", "--out", "x.csv"], "--kernel ',' names nothing"),
    (["compile", "--points", "some"], "invalid choice: 'some'"),
    (["compile", "--kernel", "copy"], "give --out FILE.csv"),
    (["compile", "--points", "headline"], "give --out FILE.csv"),
])
def test_compile_subset_bad_input_is_one_line(argv, message, capsys, tmp_path, monkeypatch):
    import bench.static

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(bench.static, "compile_rows", lambda *a, **k: pytest.fail("compiled"))
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_compile_a_subset_shows_progress_and_where_the_csv_went(capsys, tmp_path, monkeypatch):
    """compile_rows replaced by a fake that reports progress as the workers would: no compiler runs."""
    import bench.static

    seen = {}

    def fake(arch, jobs, workers, progress=None, **_):
        seen["kernels"] = {job.kernel for job in jobs}
        totals = {"copy": 2, "gemv": 3}
        progress({}, None)
        progress({"copy": 1}, totals)
        progress({"copy": 2, "gemv": 1}, totals)
        progress({"copy": 2, "gemv": 3}, totals)
        return [_row(kernel=k, config=f"c{i}") for k, n in totals.items() for i in range(n)]

    monkeypatch.setattr(bench.static, "compile_rows", fake)
    out = tmp_path / "sub.csv"
    assert cli.main(["compile", "--kernel", "copy,gemv", "--points", "headline", "--out", str(out), "--jobs", "1"]) == 0
    captured = capsys.readouterr()
    assert seen["kernels"] == {"copy", "gemv"}
    assert "compile: copy done (2 configs); 3/5 configs in all" in captured.err
    assert "compile: gemv done (3 configs); 5/5 configs in all" in captured.err
    assert len(captured.err.splitlines()) <= 4 and "Traceback" not in captured.err
    assert f"wrote 5 rows to {out}" in captured.out and len(read_csv(out)) == 5


def test_progress_lines_are_a_line_per_family_and_a_heartbeat():
    import io

    from bench.static import ProgressLines

    now = [0.0]
    stream = io.StringIO()
    lines = ProgressLines(stream, every_s=10, clock=lambda: now[0])
    for t in range(0, 30):  # polled twice a second for 15 s: one heartbeat, not thirty lines
        now[0] = t / 2
        lines({"gemm": t}, {"gemm": 100, "copy": 1} if t else None)
    text = stream.getvalue().splitlines()
    assert text == ["compile: 29/101 configs, 10 s (gemm 20/100)"] or \
        text == ["compile: 20/101 configs, 10 s (gemm 20/100)"], text
    now[0] = 16
    lines({"gemm": 30, "copy": 1}, {"gemm": 100, "copy": 1})
    assert stream.getvalue().splitlines()[-1] == "compile: copy done (1 configs); 31/101 configs in all, 16 s"


def test_the_compile_jobs_subsets():
    from bench.static import compile_jobs, select_jobs

    everything, headline = compile_jobs("all"), compile_jobs("headline")
    key = lambda job: repr(job.as_json())  # noqa: E731
    assert set(map(key, headline)) < set(map(key, everything))
    assert {job.kernel for job in select_jobs(headline, "copy,gemv")} == {"copy", "gemv"}
