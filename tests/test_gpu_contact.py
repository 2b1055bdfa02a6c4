""".ci/gpu-contact on a fake H200 node (tests/fake_node.py), killed at several moments: $OUT must hold
every row finished before the last snapshot, and a normal finish rows, sidecars, ceilings, report and log."""

from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT_EVERY = 1


def _tree(tmp_path: Path) -> Path:
    """A copy of the checkout without results/: the script writes there, and the report reads it."""
    tree = tmp_path / "repo"
    for name in ("kernels", "bench", "analysis", ".ci"):
        shutil.copytree(ROOT / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
    (tree / "tests").mkdir()
    for name in ("__init__.py", "fake_node.py", "fake_gpu.py"):
        shutil.copy(ROOT / "tests" / name, tree / "tests" / name)
    return tree


def _rows_on_disk(tree: Path) -> int:
    return sum(max(0, len(p.read_text().splitlines()) - 1) for p in (tree / "results").glob("fake-h200/*.csv")
               if not p.name.endswith(".ceilings.csv"))


def _rows_returned(out: Path) -> int:
    path = out / "results.tar.gz"
    if not path.exists():
        return 0
    rows = 0
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            if member.name.startswith("results/fake-h200/") and member.name.endswith(".csv") \
                    and not member.name.endswith(".ceilings.csv"):
                text = tar.extractfile(member).read().decode()
                rows += max(0, len(list(csv.reader(io.StringIO(text)))) - 1)
    return rows


def _names_returned(out: Path) -> list[str]:
    with tarfile.open(out / "results.tar.gz") as tar:
        return tar.getnames()


class Contact:
    """The script running in its own process group; the row counts seen on disk over time."""

    def __init__(self, tmp_path: Path, **env):
        self.tree, self.out = _tree(tmp_path), tmp_path / "out"
        environ = dict(os.environ, OUT=str(self.out), PYTHON=sys.executable,
                       ROOFLAB_CMD=f"{sys.executable} -m tests.fake_node", SNAPSHOT_EVERY=str(SNAPSHOT_EVERY),
                       CONTACT_TESTS="", FAKE_NODE_POINT_S="0.3", FAKE_NODE_POINTS="8", DEADLINE="120",
                       REPORT_RESERVE="30", PACK_RESERVE="5", GRACE="3", PYTHONPATH="")
        environ.pop("TRITON_INTERPRET", None)
        environ.update({k: str(v) for k, v in env.items()})
        self.began = time.monotonic()
        self.process = subprocess.Popen(["bash", str(self.tree / ".ci" / "gpu-contact")], cwd=self.tree, env=environ,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.seen: list[tuple[float, int]] = []

    def log(self) -> str:
        path = self.out / "contact.log"
        return path.read_text() if path.exists() else ""

    def poll_until(self, condition, limit_s: float) -> None:
        while time.monotonic() - self.began < limit_s and self.process.poll() is None:
            self.seen.append((time.monotonic(), _rows_on_disk(self.tree)))
            if condition(self):
                return
            time.sleep(0.05)

    def kill(self) -> float:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        return time.monotonic()

    def rows_finished_by(self, moment: float) -> int:
        return max([rows for t, rows in self.seen if t <= moment], default=0)


@pytest.mark.parametrize("moment", ["before the first row", "mid-plan", "during the report"])
def test_a_kill_at_any_moment_returns_every_row_finished_before_the_last_snapshot(tmp_path, moment):
    contact = Contact(tmp_path)
    condition = {
        "before the first row": lambda c: "rooflab run" in c.log(),
        "mid-plan": lambda c: _rows_on_disk(c.tree) >= 4,
        "during the report": lambda c: "plan complete" in c.log() or "budget" in c.log() and "reached" in c.log(),
    }[moment]
    contact.poll_until(condition, 90)
    assert contact.process.poll() is None, f"the script ended before {moment}:\n{contact.log()}"
    if moment != "before the first row":
        time.sleep(2 * SNAPSHOT_EVERY + 0.5)  # at least one whole snapshot after the moment
    killed = contact.kill()
    assert (contact.out / "contact.log").exists()
    expected = contact.rows_finished_by(killed - 2 * SNAPSHOT_EVERY - 0.5)
    assert _rows_returned(contact.out) >= expected
    if moment != "before the first row":
        assert expected >= 4 and any(n.endswith(".json") for n in _names_returned(contact.out))
    assert not list(contact.out.glob(".results.*.part")) or (contact.out / "results.tar.gz").exists()


def test_a_hung_kernel_is_killed_and_the_script_still_ends_inside_its_deadline(tmp_path):
    deadline = 45
    contact = Contact(tmp_path, FAKE_NODE_HANG_AT=4, DEADLINE=deadline, REPORT_RESERVE=10)
    contact.poll_until(lambda c: False, deadline + 30)
    ended = time.monotonic() - contact.began
    assert contact.process.poll() is not None, "the script outlived its deadline"
    assert ended <= deadline + 10
    log = contact.log()
    assert "run exit: 137" in log and "done:" in log
    assert _rows_returned(contact.out) == 3  # the three points before the hang, each with its row


def test_a_normal_finish_returns_rows_sidecars_ceilings_report_and_log(tmp_path):
    contact = Contact(tmp_path)
    contact.poll_until(lambda c: False, 110)
    assert contact.process.returncode == 0, contact.log()
    names = _names_returned(contact.out)
    assert _rows_returned(contact.out) == _rows_on_disk(contact.tree) >= 8
    assert any(n.endswith("-headline.json") for n in names)
    assert any(n.endswith(".ceilings.csv") for n in names)
    assert "results/report/index.md" in names
    log = contact.log()
    assert "run exit: 0" in log and "done:" in log
    assert "of roof" in log  # one line per finished point
    assert sorted(p.name for p in contact.out.iterdir()) == ["contact.log", "results.tar.gz"]


def test_tests_first_then_the_listed_steps_then_the_plan_with_its_extra_arguments(tmp_path):
    """A later call: the gpu-marked tests first (bounded), a re-check sweep a resume would skip, then the
    plan with RUN_ARGS; the sweep's rows come back beside the plan's."""
    steps = tmp_path / "steps.txt"
    steps.write_text("# a comment line is skipped\n\n"
                     "sweep --kernel copy --impl triton --dtype fp32 --axis N=1000,4097 --seed 5 --no-progress\n"
                     "sweep --kernel nosuch\n")
    contact = Contact(tmp_path, TESTS_FIRST=60, CONTACT_TESTS="tests/test_first.py", STEPS=steps,
                      RUN_ARGS="--seed 11", FAKE_NODE_POINTS=4)
    (contact.tree / "tests" / "test_first.py").write_text(
        "import pytest\n\n\n@pytest.mark.gpu\ndef test_marked():\n    pass\n")
    contact.poll_until(lambda c: False, 110)
    assert contact.process.returncode == 0, contact.log()
    log = contact.log()
    order = [log.index(s) for s in ("gpu-marked tests (up to 60 s)", "tests exit: 0", "rooflab sweep --kernel copy",
                                    "sweep exit: 0", "unknown kernel 'nosuch'", "sweep exit: 2",
                                    "rooflab run --budget", "run exit: 0")]
    assert order == sorted(order), log
    assert log.count("gpu-marked tests") == 1  # not again at the end
    names = _names_returned(contact.out)
    assert any(n.endswith("-copy.csv") for n in names) and any(n.endswith("-headline.csv") for n in names), names
    headline = next(contact.tree.glob("results/fake-h200/*-headline.json"))
    assert '"seed": 11' in headline.read_text()


def test_a_hung_step_is_cut_at_step_limit_and_the_plan_still_runs(tmp_path):
    steps = tmp_path / "steps.txt"
    steps.write_text("sweep --kernel copy --impl triton --dtype fp32 --axis N=1000 --no-progress\n")
    contact = Contact(tmp_path, STEPS=steps, STEP_LIMIT=6, FAKE_NODE_HANG_AT=1, FAKE_NODE_POINTS=2)
    contact.poll_until(lambda c: "rooflab run --budget" in c.log(), 60)  # (the plan's first point hangs too)
    contact.kill()
    log = contact.log()
    assert "sweep exit: 137" in log and log.index("sweep exit: 137") < log.index("rooflab run --budget"), log


@pytest.mark.parametrize("setting", ["DEADLINE=abc", "SNAPSHOT_EVERY=0", "PACK_RESERVE=-5", "GRACE=1.5",
                                     "TESTS_FIRST=x", "STEPS=/no/such/file", "STEP_LIMIT=0"])
def test_a_bad_setting_is_one_line_and_exit_2_before_anything_runs(tmp_path, setting):
    name, value = setting.split("=")
    out = tmp_path / "out"
    done = subprocess.run(["bash", str(ROOT / ".ci" / "gpu-contact")], env=dict(os.environ, OUT=str(out), **{name: value}),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and name in done.stderr
    assert not out.exists()
