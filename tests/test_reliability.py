"""Reliability of `rooflab sweep`: resume after a crash, one-line errors, no silent acceptance."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cli import main
from bench.results import load_csv, read_sidecar

ROOT = Path(__file__).resolve().parent.parent
COPY = ["sweep", "--kernel", "copy", "--dtype", "fp32", "--interpret", "--no-progress"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_resume_drops_a_cut_off_last_row_and_writes_a_valid_file(tmp_path, capsys):
    out = tmp_path / "x.csv"
    assert run(capsys, *COPY, "--axis", "N=5,6", "--out", str(out))[0] == 0
    size = out.stat().st_size
    os.truncate(out, size - 60)  # kill -9 / full disk in the middle of the last row
    code, stdout, err = run(capsys, *COPY, "--axis", "N=5,6,7", "--out", str(out), "--resume")
    assert code == 0
    assert "dropped a partial last row" in err and err.count("\n") == 1
    frame = load_csv(out)  # before the fix: "Expected 35 fields in line 4, saw 62"
    assert sorted(zip(frame["N"], frame["impl"])) == sorted((n, i) for n in (5, 6, 7) for i in ("torch", "triton"))


def test_resume_refuses_a_file_damaged_beyond_its_last_line(tmp_path, capsys):
    out = tmp_path / "x.csv"
    assert run(capsys, *COPY, "--axis", "N=5", "--out", str(out))[0] == 0
    lines = out.read_text().splitlines(keepends=True)
    out.write_text(lines[0] + lines[1].rstrip("\n") + lines[2])  # a row glued onto another
    code, _, err = run(capsys, *COPY, "--axis", "N=5,6", "--out", str(out), "--resume")
    assert code == 2 and "damaged" in err and err.count("\n") == 1


@pytest.mark.parametrize("content, message", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "binary"),
    (b"a,b,c\n1,2,3\n", "not a rooflab results file"),
])
def test_resume_refuses_files_that_are_not_results(tmp_path, capsys, content, message):
    out = tmp_path / "x.csv"
    out.write_bytes(content)
    out.with_suffix(".json").write_text('{"schema_version": 2, "seed": 1, "run_id": "x"}')
    code, _, err = run(capsys, *COPY, "--axis", "N=5", "--out", str(out), "--resume")
    assert code == 2 and message in err and err.count("\n") == 1
    assert out.read_bytes() == content  # untouched


def test_resume_into_a_directory_is_one_line(tmp_path, capsys):
    target = tmp_path / "d.csv"
    target.mkdir()
    code, _, err = run(capsys, *COPY, "--axis", "N=5", "--out", str(target), "--resume")
    assert code == 2 and "is a directory" in err and err.count("\n") == 1


def test_resume_refuses_options_that_contradict_the_run(tmp_path, capsys):
    out = tmp_path / "x.csv"
    assert run(capsys, *COPY, "--axis", "N=5", "--out", str(out), "--seed", "7")[0] == 0
    code, _, err = run(capsys, *COPY, "--axis", "N=5,6", "--out", str(out), "--resume", "--seed", "99", "--l2", "warm")
    assert code == 2 and err.count("\n") == 1
    assert "seed: was 7, now 99" in err and "l2: was cold, now warm" in err
    assert read_sidecar(out)["timing"]["l2"] == "cold" and len(load_csv(out)) == 2  # nothing appended
    code, stdout, _ = run(capsys, *COPY, "--axis", "N=5,6", "--out", str(out), "--resume", "--seed", "7")
    assert code == 0 and "2 ok" in stdout


def test_kill_9_mid_sweep_then_resume_gives_a_complete_valid_file(tmp_path):
    out = tmp_path / "k.csv"
    sizes = ",".join(str(n) for n in range(1, 41))
    command = [sys.executable, "-m", "bench", *COPY, "--axis", f"N={sizes}", "--out", str(out)]
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < 6):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert out.exists()
    resumed = subprocess.run(command + ["--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    frame = load_csv(out)
    keys = list(zip(frame["N"], frame["impl"]))
    assert len(keys) == len(set(keys)) == 80
    assert set(frame["status"]) == {"ok"}


@pytest.mark.parametrize("extra, message", [
    (["--min-samples", "0"], "--min-samples"),
    (["--max-noise", "-1"], "--max-noise"),
    (["--max-noise", "nan"], "--max-noise"),
    (["--timeout", "0"], "--timeout"),
    (["--min-time", "nan"], "not a finite number"),
    (["--min-time", "-1"], "must be a number ≥ 0"),
    (["--out", "results.txt"], "must end in .csv"),
    (["--axis", "N=,"], "names nothing"),
    (["--impl", ","], "--impl ',' names nothing"),
    (["--dtype", ","], "--dtype ',' names nothing"),
    (["--shard", "5/5", "--seed", "1"], "empty"),
    (["--shard", "1/2"], "needs --seed"),
])
def test_bad_options_are_one_line_and_write_nothing(tmp_path, capsys, extra, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [*COPY, "--axis", "N=5,6", *extra]
    if "--out" not in extra:
        argv += ["--out", str(tmp_path / "x.csv")]
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())  # no header-only CSV, no sidecar


@pytest.mark.parametrize("path", ["/sys/rooflab.csv", "/proc/rooflab.csv"])
def test_unwritable_out_is_one_line(capsys, path):
    code, _, err = run(capsys, *COPY, "--axis", "N=5", "--out", path)
    assert code == 2 and "cannot write there" in err and err.count("\n") == 1


def test_an_axis_given_twice_runs_both_values(tmp_path, capsys):
    out = tmp_path / "x.csv"
    code, stdout, _ = run(capsys, *COPY, "--impl", "torch", "--axis", "N=5", "--axis", "N=7", "--out", str(out))
    assert code == 0 and sorted(load_csv(out)["N"]) == [5, 7]


def test_an_internal_error_is_one_line_and_exit_2(capsys, monkeypatch):
    import bench.cli

    def boom(args):
        raise KeyError("a bug")

    monkeypatch.setattr(bench.cli, "cmd_kernels", boom)
    code, _, err = run(capsys, "kernels")
    assert code == 2 and "internal error: KeyError" in err and err.count("\n") == 1
