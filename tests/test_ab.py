"""`rooflab ab`: the paired statistics by simulation, then the real command end to end (two worktrees,
two worker processes) under the interpreter and on the fake GPU, and its refusals."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import ab as ab_module
from bench import ab_cli, device
from bench.ab import Outcome
from bench.ab_report import exit_code
from bench.ab_stats import AbRule, Repeat, Side, Verdict, estimate, t_quantile
from bench.cli import main
from bench.results import load_csv, read_sidecar
from tests.ab_sim import Model, simulate

ROOT = Path(__file__).resolve().parent.parent
TAIL = "tl.store(y_ptr + tail, tl.load(x_ptr + tail, mask=mask), mask=mask)"
COPY_POINT = ["--kernel", "copy", "--impl", "triton", "--dtype", "fp32", "--axis", "N=4097"]

# ---------------------------------------------------------------------------------------------
# The statistics, simulated on the fake timing model (tests/ab_sim.py) over a fixed seed set
# ---------------------------------------------------------------------------------------------


def test_a_three_percent_slowdown_is_found_with_95_percent_power_within_2_2_single_runs():
    figures = simulate(range(400), slowdown=0.03)
    assert figures.slower >= 0.95, figures
    assert figures.faster == 0
    assert figures.time_ratio <= 2.2, figures


def test_a_three_percent_speedup_is_found_as_faster():
    figures = simulate(range(1000, 1300), slowdown=1 / 1.03 - 1)
    assert figures.faster >= 0.95 and figures.slower == 0, figures


def test_a_a_false_alarms_stay_below_one_percent_of_points():
    figures = simulate(range(2000, 3000), slowdown=0.0)
    assert figures.slower + figures.faster <= 0.01, figures
    assert figures.inconclusive <= 0.02, figures
    assert figures.time_ratio <= 2.2, figures


def test_without_pairing_the_same_drift_would_cry_wolf():
    """The model's drift is real: a single run per side (no interleaving) sees it as changes."""
    from tests.ab_sim import Device, KERNEL_S

    alarms = 0
    for seed in range(200):
        base, head = Device(Model(), seed), Device(Model(), seed + 5000)  # two runs: own offset, own wander
        ratio = float(head.draw(160, 1.0).mean() / base.draw(160, 1.0).mean())
        alarms += abs(math.log(ratio)) > math.log(1.03)
    assert alarms > 20 and KERNEL_S > 0


def test_t_quantiles_match_the_tables():
    for df, expected in ((1, 31.821), (3, 4.541), (10, 2.764), (30, 2.457), (1000, 2.330)):
        assert t_quantile(0.99, df) == pytest.approx(expected, abs=2e-3)
    assert t_quantile(0.975, 5) == pytest.approx(2.571, abs=2e-3)


def _blocks(ratios, base=1e-3, ci=0.0):
    b, h = Side.BASE, Side.HEAD
    return [[(b, Repeat(base, 6, ci)), (h, Repeat(base * r, 6, ci)), (h, Repeat(base * r, 6, ci)),
             (b, Repeat(base, 6, ci))] for r in ratios]


@pytest.mark.parametrize("ratios, verdict", [
    ((1.05, 1.06, 1.04, 1.05), Verdict.SLOWER),
    ((1.01, 1.012, 1.008, 1.01), Verdict.NO_CHANGE),  # significant but below the threshold
    ((0.95, 0.94, 0.96, 0.95), Verdict.FASTER),
    ((1.0, 1.002, 0.998, 1.001), Verdict.NO_CHANGE),
    ((0.97, 1.08, 0.99, 1.06), Verdict.INCONCLUSIVE),
    ((1.031, 1.029, 1.030, 1.0305), Verdict.SLOWER),
])
def test_verdict_regions(ratios, verdict):
    result = estimate(_blocks(ratios), AbRule())
    assert result.verdict is verdict, result
    assert result.low <= result.ratio <= result.high
    assert result.ratio == pytest.approx(math.exp(sum(map(math.log, ratios)) / len(ratios)))


def test_blocks_that_agree_by_chance_cannot_beat_the_repeats_own_sampling_error():
    lucky = estimate(_blocks((1.02, 1.02, 1.02), ci=0.0), AbRule())
    assert lucky.verdict is Verdict.NO_CHANGE and lucky.high - lucky.low < 1e-9  # no sampling error said: exact
    honest = estimate(_blocks((1.02, 1.02, 1.02), ci=0.03), AbRule())
    assert honest.spread == pytest.approx(math.sqrt(4 * (0.03 / 1.96) ** 2) / 2)
    assert honest.verdict is Verdict.INCONCLUSIVE and "spans both" in honest.why


# ---------------------------------------------------------------------------------------------
# End to end: a throwaway git repository holding this checkout's kernels at two revisions
# ---------------------------------------------------------------------------------------------


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=repo, check=True,
                   capture_output=True)


@pytest.fixture
def repo(tmp_path, monkeypatch):
    if shutil.which("git") is None:
        pytest.skip("needs git")
    path = tmp_path / "repo"
    shutil.copytree(ROOT / "kernels", path / "kernels", ignore=shutil.ignore_patterns("__pycache__"))
    _git(path, "init", "-q")
    _git(path, "add", "-A")
    _git(path, "commit", "-q", "-m", "base")
    monkeypatch.chdir(path)
    return path


def _edit(repo: Path, path: str, old: str, new: str) -> None:
    file = repo / path
    text = file.read_text()
    assert old in text
    file.write_text(text.replace(old, new))


def _worktrees(repo: Path) -> int:
    return subprocess.run(["git", "worktree", "list"], cwd=repo, capture_output=True, text=True).stdout.count("\n")


def test_a_a_on_this_repository_under_the_interpreter_exits_0(tmp_path, capsys):
    if shutil.which("git") is None or subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT,
                                                     capture_output=True).returncode != 0:
        pytest.skip("needs this checkout's git history")
    before = _worktrees(ROOT)
    code = main(["ab", "HEAD", "HEAD", *COPY_POINT, "--interpret", "--seed", "5", "--out", str(tmp_path / "ab")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "no regression — exit 0" in out and "1 no change (1 point)" in out
    assert _worktrees(ROOT) == before  # both worktrees removed
    for side in ("base", "head"):
        rows = load_csv(tmp_path / "ab" / f"{side}.csv")
        assert list(rows["status"]) == ["ok"] and (rows["mode"] == "interpret").all()
        assert read_sidecar(tmp_path / "ab" / f"{side}.csv")["seed"] == 5


def test_a_correctness_bug_on_head_is_a_regression_and_each_side_runs_its_own_kernels(repo, tmp_path, capsys):
    _edit(repo, "kernels/stream.py", TAIL, TAIL.replace("mask=mask), mask", "mask=mask) * 2, mask"))
    out_dir = tmp_path / "ab"
    code = main(["ab", "HEAD", "--kernel", "copy", "--dtype", "fp32", "--axis", "N=4097", "--interpret",
                 "--out", str(out_dir)])
    out = capsys.readouterr().out
    assert code == 1, out
    table = out.split("|---|")[-1]
    # worst first: the bug in the masked tail fails HEAD's triton copy; torch is untouched
    lines = [line for line in table.splitlines() if line.startswith("| copy")]
    assert len(lines) == 2 and "triton" in lines[0] and "**failed**" in lines[0] and "HEAD fails the gate" in lines[0]
    assert "torch" in lines[1] and "**no change**" in lines[1]
    base, head = load_csv(out_dir / "base.csv"), load_csv(out_dir / "head.csv")
    assert (base["status"] == "ok").all()  # BASE is the commit: its kernels have no bug
    assert sorted(head["status"]) == ["failed", "ok"]
    head_meta, base_meta = read_sidecar(out_dir / "head.csv"), read_sidecar(out_dir / "base.csv")
    assert head_meta["ab_revision"] == "working tree" and head_meta["git_dirty"] is True
    assert head_meta["git_commit"] == base_meta["git_commit"] and len(base_meta["git_commit"]) == 40
    assert base_meta["git_dirty"] is False and base_meta["seed"] == head_meta["seed"]
    assert "## rooflab ab: 1 regression — exit 1" in (out_dir / "summary.md").read_text()
    assert _worktrees(repo) == 1


@pytest.mark.parametrize("base, head, verdict, why", [
    ("failed", "ok", Verdict.NOT_JUDGED, "BASE fails the gate: wrong"),
    ("failed", "failed", Verdict.NOT_JUDGED, "HEAD fails too"),
    ("ok", "failed", Verdict.FAILED, "HEAD fails the gate: wrong"),
    ("skipped", "ok", Verdict.NOT_JUDGED, "skipped on BASE only"),
    ("ok", "skipped", Verdict.NOT_JUDGED, "skipped on HEAD only"),
    ("skipped", "skipped", Verdict.SKIPPED, "skipped on both sides"),
    ("ok", "ok", None, ""),
])
def test_the_gate_settles_a_point_before_timing(base, head, verdict, why):
    status = {Side.BASE: {"status": base, "error": "wrong"}, Side.HEAD: {"status": head, "error": "wrong"}}
    got, reason = ab_module._gate_verdict(status, interpret=False)
    assert got is verdict and why in reason
    if verdict is not None:
        expected = 1 if verdict is Verdict.FAILED else 2 if verdict is Verdict.NOT_JUDGED else 0
        assert exit_code([Outcome((), "p", verdict)], 0.03) == expected


def test_exit_codes_follow_the_worst_point():
    slower = Outcome((), "a", Verdict.SLOWER)
    lost = Outcome((), "b", Verdict.NOT_JUDGED, "BASE fails")
    fine = Outcome((), "c", Verdict.NO_CHANGE)
    open_ended = estimate(_blocks((0.985, 1.03, 0.99, 1.025)), AbRule())
    maybe_slower = Outcome((), "d", Verdict.INCONCLUSIVE, estimate=open_ended)
    assert exit_code([fine, lost, slower], 0.03) == 1  # a regression found is reported as one
    assert exit_code([fine, lost], 0.03) == 2
    assert exit_code([fine, maybe_slower], 0.03) == 2  # cannot rule out a 3 % slowdown
    assert exit_code([fine, maybe_slower], 0.10) == 0  # can rule out a 10 % one
    assert exit_code([fine], 0.03) == 0


def test_a_side_whose_kernels_do_not_import_is_named_with_exit_2(repo, tmp_path, capsys):
    (repo / "kernels" / "__init__.py").write_text("raise ImportError('half-written refactor')\n")
    code = main(["ab", "HEAD", *COPY_POINT, "--interpret", "--out", str(tmp_path / "ab")])
    err = capsys.readouterr().err
    assert code == 2
    assert "HEAD side (working tree" in err and "half-written refactor" in err and len(err.strip().splitlines()) == 1
    assert _worktrees(repo) == 1


def test_the_fake_gpu_finds_a_slowdown_injected_in_head_and_survives_a_worker_death(repo, tmp_path, capsys,
                                                                                     monkeypatch):
    init = repo / "kernels" / "__init__.py"
    init.write_text(init.read_text() + "\nFAKE_GPU_SLOWDOWN = {\"copy/torch\": 1.10}\n"
                    "FAKE_GPU_CRASH = (\"copy/triton\",)\n")  # HEAD: torch copy slower, triton copy kills the worker
    _git(repo, "commit", "-q", "-am", "a slower copy")
    monkeypatch.setattr(ab_module, "WORKER_MODULE", "tests.fake_ab_worker")
    monkeypatch.setattr(device, "cuda_available", lambda: True)
    monkeypatch.setattr(ab_cli, "_gpu", lambda index: "0")
    out_dir = tmp_path / "ab"
    code = main(["ab", "HEAD~1", "HEAD", "--kernel", "copy", "--dtype", "fp32", "--axis", "N=4097", "--out",
                 str(out_dir), "--min-time", "0", "--seed", "3", "--max-blocks", "8"])
    out = capsys.readouterr().out
    assert code == 1, out
    lines = {impl: next(line for line in out.splitlines() if line.startswith(f"| copy fp32 N=4097 {impl}"))
             for impl in ("triton", "torch")}
    assert "**failed**" in lines["triton"] and "HEAD worker died (exit code 9" in lines["triton"]
    assert "**slower**" in lines["torch"]  # timed by the fresh worker that took the dead one's place
    ratio, interval = lines["torch"].split("|")[3:5]
    low, high = (float(v) for v in interval.split("…"))
    assert float(ratio) == pytest.approx(1.10, abs=0.04) and low <= 1.12 and high >= 1.08 and low > 1.0
    assert "Noise floor ±" in out and "built-in A/A" in out and "of the roof" in out
    base, head = load_csv(out_dir / "base.csv"), load_csv(out_dir / "head.csv")
    assert (base["mode"] == "cuda").all() and sorted(base["impl"]) == ["torch", "triton"]
    torch_base, torch_head = (side[side["impl"] == "torch"].iloc[0] for side in (base, head))
    assert torch_base["status"] == torch_head["status"] == "ok"
    assert torch_head["median_s"] / torch_base["median_s"] == pytest.approx(1.10, abs=0.05)
    assert torch_base["samples"] >= 3 * 2 * 6  # ≥ 3 blocks, 2 repeats per side each, ≥ 6 samples each
    abandoned = base[base["impl"] == "triton"].iloc[0]  # HEAD died in the first block: BASE timed once or not at all
    assert abandoned["status"] == "ok" if abandoned["samples"] > 0 else (
        abandoned["status"] == "skipped" and "not timed: HEAD fails" in abandoned["error"])


@pytest.mark.parametrize("args, message", [
    (["no-such-rev", "--interpret"], "is not a commit of"),
    (["HEAD", "--kernel", "copy", "--suite", "ci", "--interpret"], "not both"),
    (["HEAD", "--kernel", "copy", "--axis", "Q=1", "--interpret"], "Q"),
    (["HEAD", "--threshold", "150%", "--interpret"], "fraction"),
    (["HEAD", "--max-blocks", "2", "--interpret"], "at least 3"),
])
def test_bad_input_is_one_line_and_exit_2(repo, capsys, args, message):
    code = main(["ab", *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert _worktrees(repo) == 1


def test_outside_a_repository_and_over_an_earlier_result_are_refused(tmp_path, monkeypatch, capsys):
    outside = tmp_path / "plain"
    outside.mkdir()
    monkeypatch.chdir(outside)
    assert main(["ab", "HEAD", *COPY_POINT, "--interpret"]) == 2
    assert "not inside a git repository" in capsys.readouterr().err
    monkeypatch.chdir(ROOT)
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "summary.md").write_text("an earlier A/B\n")
    assert main(["ab", "HEAD", *COPY_POINT, "--interpret", "--out", str(earlier)]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert (earlier / "summary.md").read_text() == "an earlier A/B\n"


AB_VALUES = st.sampled_from(["0", "-1", "3", "1e309", "nan", "5%", "150%", "abc", "", ",", "fp16", "fp9", "copy",
                             "nope", "triton", "N=5", "N=1,4097", "M=x", "smoke", "ci", "HEAD", "HEAD~999",
                             "/nonexistent/dir/file.md", "x.md"])
AB_OPTIONS = {"--suite": 1, "--kernel": 1, "--impl": 1, "--dtype": 1, "--axis": 1, "--threshold": 1,
              "--max-blocks": 1, "--out": 1, "--summary": 1, "--gpu": 1, "--interpret": 0, "--seed": 1,
              "--min-samples": 1, "--max-noise": 1, "--bogus": 0}


@st.composite
def ab_lines(draw):
    argv = ["ab", *draw(st.lists(AB_VALUES, min_size=0, max_size=2))]
    for name in draw(st.lists(st.sampled_from(sorted(AB_OPTIONS)), max_size=4)):
        argv += [name] + ([draw(AB_VALUES)] if AB_OPTIONS[name] else [])
    return argv


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=ab_lines())
def test_random_ab_command_lines_outside_a_repository_are_one_line(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(device, "cuda_available", lambda: False)
    monkeypatch.chdir(tmp_path)  # no git repository here: nothing is ever checked out or run
    code = main(argv)
    out, err = capsys.readouterr()
    assert code in (0, 2), (argv, code, err)
    assert "Traceback" not in err
    if code == 2:
        assert len(err.strip().splitlines()) == 1, (argv, err)


def test_each_repeat_checks_the_copies_its_own_closure_ran(tmp_path, monkeypatch):
    """R (launches per sample over rotating copies) is chosen afresh each repeat; the check after timing
    must poison and check the copies that repeat ran, not every copy cloned so far."""
    import dataclasses

    from bench import ab_worker, sweep, timing
    from bench.sweep import timing_record
    from tests import fake_node
    from tests.fake_gpu import FakeGpu

    monkeypatch.setattr(device, "detect", fake_node._target)
    monkeypatch.setattr(device, "ClockMonitor", fake_node._Monitor)
    monkeypatch.setattr(sweep, "CudaBackend", lambda l2_bytes, flush=None: FakeGpu(seed=0))
    launches = iter((3, 2, 3))

    def scripted(run, backend, policy, copies=None, figure=None, after=None):
        count = next(launches)
        runs = copies.make(count)

        def replay():
            for each in runs:
                each()

        m = timing.summarize([1e-4 * (1 + 0.01 * i) for i in range(6)], converged=True, launch="graph",
                             warmup_runs=2, launches_per_sample=count)
        return dataclasses.replace(m, after_check=after(replay))

    monkeypatch.setattr(timing, "measure", scripted)
    config = {"interpret": False, "threshold": 0.03, "seed": 1, "out": str(tmp_path / "head.csv"), "command": "",
              "policy": timing_record(timing.SamplingPolicy(warmup_s=0.0)), "revision": {},
              "selection": {"suite": None, "kernel": "copy", "impl": "triton", "dtype": "fp32", "axis": ["N=4097"]}}
    worker = ab_worker.Worker(config, lambda message: None)
    assert worker.prepare(worker.keys[0])["status"] == "ok"
    answers = [worker.repeat() for _ in range(3)]
    assert all("error" not in a for a in answers), answers
    assert [a["samples"] for a in answers] == [18, 12, 18]  # samples × launches per sample
    assert worker.finish()["status"] == "ok"
    worker.stop()
    row = load_csv(tmp_path / "head.csv").iloc[0]
    assert row["status"] == "ok" and row["samples"] == 18 and row["median_s"] == pytest.approx(1.025e-4)


def test_a_repeat_is_a_short_share_of_a_single_runs_stopping_rule():
    from bench.ab_worker import repeat_policy
    from bench.timing import SamplingPolicy

    default = repeat_policy(SamplingPolicy(), 0.03)
    assert (default.min_samples, default.max_noise, default.warmup_runs, default.warmup_s) == (6, 0.03, 2, 0.0)
    assert default.min_time_s == pytest.approx(0.02 / 8) and default.timeout_s == pytest.approx(3.0 / 8)
    strict = repeat_policy(SamplingPolicy(min_samples=200, max_noise=0.05, timeout_s=0.1), 0.02)
    assert (strict.min_samples, strict.max_noise, strict.timeout_s) == (25, 0.05, 0.05)
