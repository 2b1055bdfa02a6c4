"""The rooflab command, in-process: sweeps under the interpreter and clean one-line errors."""

import pytest

from bench.cli import main
from bench.results import load_csv, read_sidecar
from bench.suites import expand, get_suite
from kernels import registry


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_sweep_interpret_writes_a_valid_csv(tmp_path, capsys):
    out = tmp_path / "x.csv"
    code, stdout, _ = run(capsys, "sweep", "--kernel", "copy", "--impl", "triton", "--dtype", "fp16",
                          "--axis", "N=1,4097", "--out", str(out), "--interpret", "--no-progress")
    assert code == 0, stdout
    frame = load_csv(out)
    assert list(frame["N"]) == [1, 4097]
    assert set(frame["status"]) == {"ok"}
    assert set(frame["mode"]) == {"interpret"}
    assert frame["median_s"].isna().all()  # the interpreter's timings mean nothing: none recorded
    assert (frame["rel_err"] == 0).all()
    assert frame.loc[1, "bytes"] == 2 * 4097 * 2
    meta = read_sidecar(out)
    assert meta["run_id"] == "x" and meta["mode"] == "interpret" and "triton" in meta["software"]
    assert "interpreter" in stdout


def test_resume_skips_points_already_written(tmp_path, capsys):
    out = tmp_path / "r.csv"
    args = ["sweep", "--kernel", "triad", "--dtype", "fp32", "--out", str(out), "--interpret", "--no-progress"]
    assert run(capsys, *args, "--axis", "N=5,6")[0] == 0
    code, stdout, _ = run(capsys, *args, "--axis", "N=5,6,7", "--resume")
    assert code == 0 and "2 ok" in stdout  # only N=7, both impls
    assert sorted(load_csv(out)["N"]) == [5, 5, 6, 6, 7, 7]
    seed = read_sidecar(out)["seed"]
    assert read_sidecar(out)["resumed"] and isinstance(seed, int)
    code, _, err = run(capsys, *args, "--axis", "N=8")
    assert code == 2 and "--resume" in err


def test_shards_of_the_smoke_suite_are_disjoint_complete_and_correct(tmp_path, capsys):
    """Every family's tiny points pass the gate under the interpreter, split over three shards."""
    rows = []
    for i in (1, 2, 3):
        out = tmp_path / f"s{i}.csv"
        assert run(capsys, "sweep", "--suite", "smoke", "--shard", f"{i}/3", "--seed", "5", "--out", str(out),
                   "--interpret", "--no-progress")[0] == 0
        frame = load_csv(out)
        assert set(frame["status"]) <= {"ok", "skipped"}
        for _, r in frame.iterrows():
            axes = [str(r[a.name]) for a in registry.get(r["kernel"]).axes]
            rows.append((r["kernel"], r["impl"], r["dtype"], *axes))
    assert len(rows) == len(set(rows)) == len(expand(get_suite("smoke").sweeps))


def test_wrong_answer_is_recorded_as_failed_not_raised(tmp_path, capsys, monkeypatch):
    import kernels.stream as stream

    monkeypatch.setattr(stream, "triad_reference", lambda b, c, s: b.double() + 9.0 * c.double())
    out = tmp_path / "f.csv"
    code, stdout, _ = run(capsys, "sweep", "--kernel", "triad", "--impl", "triton", "--dtype", "fp32",
                          "--axis", "N=100", "--out", str(out), "--interpret", "--no-progress")
    frame = load_csv(out)
    assert code == 1 and "1 failed" in stdout
    assert frame.loc[0, "status"] == "failed" and "tolerance" in frame.loc[0, "error"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sweep", "--kernel", "nope", "--interpret"], "unknown kernel 'nope'; valid: copy"),
        (["sweep", "--suite", "nope", "--interpret"], "unknown suite 'nope'; valid:"),
        (["sweep", "--kernel", "copy", "--dtype", "fp9", "--interpret"], "unknown dtype 'fp9'; valid:"),
        (["sweep", "--kernel", "copy", "--axis", "M=3", "--interpret"], "no axis 'M'; valid: N"),
        (["sweep", "--kernel", "copy", "--axis", "N=x", "--interpret"], "'x' is not an integer"),
        (["sweep", "--kernel", "copy", "--axis", "N", "--interpret"], "expected NAME=v1,v2"),
        (["sweep", "--kernel", "copy", "--impl", "cublas", "--interpret"], "no impl 'cublas'; valid: triton, torch"),
        (["sweep", "--kernel", "copy", "--shard", "0/2", "--interpret"], "need 1 ≤ i ≤ n"),
        (["sweep", "--interpret"], "exactly one of --kernel"),
        (["compare", "a.csv", "b.csv"], "no results at a.csv"),
    ],
)
def test_bad_input_is_one_clear_line(argv, message, capsys):
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert message in err
    assert err.count("\n") == 1


def test_sweep_without_gpu_points_to_interpret_and_report(capsys, monkeypatch):
    import bench.device

    monkeypatch.setattr(bench.device, "cuda_available", lambda: False)
    code, _, err = run(capsys, "sweep", "--kernel", "copy")
    assert code == 2 and "--interpret" in err and "rooflab report" in err


def test_kernels_and_suites_listing(capsys):
    code, out, _ = run(capsys, "kernels")
    assert code == 0 and "copy:" in out and "axes:   N:int" in out and "impl torch" in out
    code, out, _ = run(capsys, "suites")
    assert code == 0 and "stream:" in out and "smoke:" in out


def test_a_dry_run_piped_into_head_ends_quietly(tmp_path):
    """`rooflab run --dry-run | head -2` printed `internal error: BrokenPipeError`."""
    import subprocess
    import sys

    shell = f"{sys.executable} -m bench run --dry-run --device h200 | head -2"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", shell], capture_output=True, text=True, timeout=120)
    assert len(done.stdout.splitlines()) == 2
    assert "error" not in done.stderr.lower() and "Traceback" not in done.stderr
    assert done.returncode == 0
