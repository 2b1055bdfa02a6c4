"""Issue 21, silent acceptances: options the CLI took and ignored now filter, or are refused in one line (exit 2)."""

from __future__ import annotations

import errno

import pytest

from bench.cli import main
from bench.results import load_csv
from bench.suites import expand, get_suite


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line(code, err, *needles):
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


@pytest.fixture
def no_gpu(monkeypatch):
    import bench.device

    monkeypatch.setattr(bench.device, "cuda_available", lambda: False)


# ---------------------------------------------------------------------------------------------
# 1. --suite with --dtype/--impl/--axis: a filter on the suite's points
# ---------------------------------------------------------------------------------------------


def test_suite_selection_filters_the_points(capsys):
    smoke = expand(get_suite("smoke").sweeps)
    kept = [p for p in smoke if p.case.dtype.value == "fp16" and p.impl == "torch"]
    code, out, err = run(capsys, "sweep", "--suite", "smoke", "--dtype", "fp16", "--impl", "torch", "--dry-run")
    assert code == 0, err
    assert out.splitlines()[0] == f"selected {len(kept)} of the {len(smoke)} points of suite smoke " \
        "(--impl torch --dtype fp16)"
    assert out.splitlines()[1].startswith(f"{len(kept)} of {len(kept)} points") and not err


def test_suite_axis_filter_keeps_only_matching_values(capsys):
    code, out, err = run(capsys, "sweep", "--suite", "smoke", "--axis", "N=4097", "--impl", "torch", "--dry-run")
    smoke = expand(get_suite("smoke").sweeps)
    kept = [p for p in smoke if p.impl == "torch" and dict(p.case.values).get("N") == 4097]
    assert code == 0, err
    assert kept and out.splitlines()[1].startswith(f"{len(kept)} of {len(kept)} points")


@pytest.mark.parametrize("argv, needles", [
    (["--dtype", "bf16", "--impl", "torch", "--axis", "N=5"], ["smoke", "valid"]),
    (["--axis", "N=5"], ["--axis N=5", "4097"]),
    (["--dtype", "bf16"], ["--dtype bf16", "fp16"]),
    (["--impl", "cublas"], ["--impl cublas", "torch"]),
    (["--axis", "nope=3"], ["--axis nope", "N"]),
    (["--dtype", "fp32", "--impl", "torch", "--axis", "causal=true"], ["nothing", "smoke"]),
])
def test_suite_selection_that_matches_nothing_is_one_line(argv, needles, capsys):
    code, _, err = run(capsys, "sweep", "--suite", "smoke", *argv, "--dry-run")
    one_line(code, err, *needles)


def test_a_filtered_suite_runs_only_the_selection(tmp_path, capsys):
    out = tmp_path / "s.csv"
    code, stdout, err = run(capsys, "sweep", "--suite", "smoke", "--impl", "torch", "--axis", "N=1", "--interpret",
                            "--no-progress", "--out", str(out))
    assert code == 0, err
    frame = load_csv(out)
    assert set(frame["kernel"]) == {"copy"} and set(frame["impl"]) == {"torch"} and list(frame["N"]) == [1, 1]


# ---------------------------------------------------------------------------------------------
# 2. run on a CPU: --gpus, --resume and --full/--budget are checked before "no GPU: the report"
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, needles", [
    (["--gpus", "abc"], ["--gpus 'abc'", "all"]),
    (["--gpus", "0,0"], ["--gpus", "distinct"]),
    (["--resume", "nonsense"], ["--resume 'nonsense'", "YYYYMMDDTHHMMSSZ"]),
    (["--resume", "20261399T250000Z"], ["--resume", "YYYYMMDDTHHMMSSZ"]),
    (["--full", "--budget", "1m"], ["--full", "--budget"]),
])
def test_run_on_a_cpu_checks_its_options_first(argv, needles, capsys, no_gpu, tmp_path):
    code, out, err = run(capsys, "run", *argv, "--results", str(tmp_path), "--report", str(tmp_path / "r"))
    one_line(code, err, *needles)
    assert "report" not in out


def test_run_full_alone_and_budget_alone_are_fine(capsys, no_gpu):
    code, out, err = run(capsys, "run", "--full", "--dry-run", "--device", "h200")
    assert code == 0, err
    code, out, err = run(capsys, "run", "--budget", "2m", "--dry-run", "--device", "h200")
    assert code == 0 and "the 2.0 min budget" in out, err


# ---------------------------------------------------------------------------------------------
# 3. values out of any sensible range
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, needles", [
    (["run", "--budget", "1e9h", "--dry-run"], ["--budget", "7 days"]),
    (["run", "--budget", "0.001s", "--dry-run"], ["--budget", "1 s"]),
    (["run", "--budget", "nan", "--dry-run"], ["--budget"]),
    (["compare", "a.csv", "b.csv", "-k", "inf"], ["-k/--noise-k", "finite"]),
    (["compare", "a.csv", "b.csv", "-k", "0"], ["-k/--noise-k", "> 0"]),
    (["compare", "a.csv", "b.csv", "-k", "-2"], ["-k/--noise-k", "> 0"]),
    (["compile", "--jobs", "100000"], ["--jobs", "CPU"]),
])
def test_values_out_of_range_are_one_line(argv, needles, capsys):
    code, _, err = run(capsys, *argv)
    one_line(code, err, *needles)


def test_interpret_workers_are_bounded_by_the_cpus(tmp_path, capsys):
    code, _, err = run(capsys, "sweep", "--kernel", "copy", "--axis", "N=1", "--interpret", "--gpus", "99",
                       "--no-progress", "--out", str(tmp_path / "g.csv"))
    one_line(code, err, "--gpus", "CPU")
    assert not (tmp_path / "g.csv").exists()


# ---------------------------------------------------------------------------------------------
# 4. --device without --dry-run
# ---------------------------------------------------------------------------------------------


def test_sweep_device_without_dry_run_is_refused(tmp_path, capsys):
    code, _, err = run(capsys, "sweep", "--kernel", "copy", "--axis", "N=1", "--interpret", "--device", "h200",
                       "--out", str(tmp_path / "d.csv"))
    one_line(code, err, "--device only prices a --dry-run")
    assert not (tmp_path / "d.csv").exists()


# ---------------------------------------------------------------------------------------------
# 5. --resume of another kernel's run
# ---------------------------------------------------------------------------------------------


def test_resume_refuses_another_kernels_file(tmp_path, capsys):
    out = tmp_path / "c.csv"
    base = ["sweep", "--dtype", "fp32", "--impl", "triton", "--axis", "N=5", "--interpret", "--no-progress",
            "--out", str(out)]
    assert run(capsys, *base, "--kernel", "copy")[0] == 0
    before = out.read_bytes()
    code, _, err = run(capsys, *base, "--kernel", "triad", "--resume")
    one_line(code, err, "copy", "triad", "--resume")
    assert out.read_bytes() == before
    code, _, err = run(capsys, *base, "--kernel", "triad", "--resume", "--dry-run")
    one_line(code, err, "copy", "triad")
    assert run(capsys, *base, "--kernel", "copy", "--resume")[0] == 0  # the same kernel continues


# ---------------------------------------------------------------------------------------------
# 6. ROOFLAB_CACHE_DIR that is not a directory
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("below", ["", "sub"])
def test_a_cache_dir_that_is_a_file_is_one_line(below, tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "cachefile"
    blocker.write_text("x")
    monkeypatch.setenv("ROOFLAB_CACHE_DIR", str(blocker / below) if below else str(blocker))
    code, _, err = run(capsys, "sweep", "--kernel", "copy", "--axis", "N=1", "--interpret", "--no-progress",
                       "--out", str(tmp_path / "c.csv"))
    one_line(code, err, "ROOFLAB_CACHE_DIR", str(blocker), "not a directory")


# ---------------------------------------------------------------------------------------------
# 7. a full disk
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("number", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_names_the_file_and_the_free_space(number, tmp_path, capsys, monkeypatch):
    from bench.results import ResultWriter

    out = tmp_path / "full.csv"

    def full(self, row):
        raise OSError(number, "No space left on device", str(out))

    monkeypatch.setattr(ResultWriter, "write", full)
    code, _, err = run(capsys, "sweep", "--kernel", "copy", "--axis", "N=1", "--interpret", "--no-progress",
                       "--out", str(out))
    one_line(code, err, str(out), "free")
    assert "internal error" not in err
