"""The budgeted headline plan and the time model, on a simulated clock (no GPU)."""

import pytest
import torch

from bench.cli import main
from bench.device import Target
from bench.estimate import TimeModel, machine
from bench.plan import run_plan, stages
from bench.results import load_csv, read_sidecar
from bench.shards import Shard
from bench.suites import expand, get_suite
from bench.suites.headline import TIERS
from bench.sweep import Runner
from bench.timing import SamplingPolicy
from kernels.spec import DeviceCaps
from tests.fake_gpu import HostClockBackend

H200 = machine("h200")


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fake_h200() -> Target:
    caps = DeviceCaps(name="NVIDIA H200", capability=(9, 0), interpret=False, l2_bytes=60 << 20, sm_count=132,
                      memory_bytes=140 << 30)
    return Target(torch.device("cpu"), caps, "h200", {"name": "NVIDIA H200", "slug": "h200"})


@pytest.fixture
def simulated(monkeypatch):
    """Points 'run' by advancing the clock by the time model's estimate; rows are real rows."""
    clock = Clock()
    model = TimeModel(H200)
    charge = TimeModel(H200)  # its own compile memory: the plan's model must not see charged compiles

    def row(self, point, base):
        cost = charge.point(point)
        clock.now += cost.total
        status = "skipped" if cost.skip else "ok"
        return {**base, "kernel": point.kernel, "impl": point.impl, "dtype": point.case.dtype.value,
                "label": point.label, **point.case.as_dict(), "l2": self.policy.with_overrides(point.timing).l2.value,
                "graph": self.policy.with_overrides(point.timing).graph.value, "status": status,
                "error": cost.skip, "median_s": None if cost.skip else cost.kernel_s,
                "flops": 0, "bytes": 1, "footprint_bytes": 1}

    monkeypatch.setattr(Runner, "row", row)
    return clock, model


def _plan(tmp_path, clock, model, budget, resume=False, stamp="20261130T000000Z"):
    return run_plan(fake_h200(), budget_s=budget, results=tmp_path, stamp=stamp, resume=resume, seed=5,
                    policy=SamplingPolicy(), progress=False, command="rooflab run",
                    continue_command=f"rooflab run --resume {stamp} --budget 480s", clock=clock, model=model,
                    backend=HostClockBackend())


def test_the_plan_runs_tiers_in_order_and_stops_at_the_budget(tmp_path, simulated):
    clock, model = simulated
    budget = 90.0
    summary = _plan(tmp_path, clock, model, budget)
    headline = load_csv(tmp_path / "h200" / "20261130T000000Z-headline.csv")
    stage = stages()[0]
    assert list(headline["kernel"]) == [p.kernel for p in stage.points[:len(headline)]]  # rows in plan order
    ran = list(stage.tiers[:len(headline)])
    assert ran == sorted(ran) and ran[0] == 1  # ceilings first, tiers never out of order
    assert clock.now <= budget  # no point was started that the model said would overrun
    assert summary.left_tiers  # something of the headline is left at 90 s …
    assert "continue with: rooflab run --resume 20261130T000000Z" in summary.line()
    assert "tiers" in summary.line() and "left:" in summary.line()
    meta = read_sidecar(tmp_path / "h200" / "20261130T000000Z-headline.csv")
    assert meta["plan"] == {"stage": "headline", "stamp": "20261130T000000Z"}


def test_resume_continues_where_the_budget_stopped_without_repeating(tmp_path, simulated):
    clock, model = simulated
    first = _plan(tmp_path, clock, model, 60.0)
    done_first = len(load_csv(tmp_path / "h200" / "20261130T000000Z-headline.csv"))
    clock.now = 0.0
    second = _plan(tmp_path, clock, TimeModel(H200), 1e9, resume=True)
    frame = load_csv(tmp_path / "h200" / "20261130T000000Z-headline.csv")
    keys = list(zip(frame["kernel"], frame["impl"], frame["dtype"], frame["label"], frame["l2"], frame["graph"],
                    *(frame[c] for c in ("M", "N", "K", "count") if c in frame)))
    assert len(frame) == len(stages()[0].points) > done_first
    assert len(keys) == len(set(keys))
    assert not any(second.left.values()) and first.left_tiers
    assert "plan complete" in second.line()
    files = sorted(p.name for p in (tmp_path / "h200").glob("*.csv"))
    assert files[0].endswith("-attention.csv") and any(f.endswith("-headline-repeat.csv") for f in files)


def test_the_headline_plan_fits_eight_minutes_on_an_h200_by_the_model():
    model = TimeModel(H200)
    plan = stages()
    headline = sum(model.point(p).total for p in plan[0].points)
    repeat = sum(model.point(p).total for p in plan[1].points)
    assert headline + repeat <= 8 * 60
    assert [t.number for t in TIERS] == list(range(1, 9))


def test_every_plan_point_is_a_suite_point_or_a_headline_point():
    headline = {p.key() for p in expand(get_suite("headline").sweeps)}
    assert {p.key() for p in stages()[0].points} == headline


def test_dry_run_without_a_gpu_prints_the_plan_and_its_estimate(capsys):
    code = main(["run", "--dry-run", "--device", "h200"])
    out = capsys.readouterr().out
    assert code == 0
    assert "== headline:" in out and "t1 read fp32" in out and "t6 qgemv" in out
    assert "by the time model" in out and "budget 8.0 min" in out


def test_sweep_dry_run_honours_shard_and_resume(tmp_path, capsys):
    code = main(["sweep", "--suite", "ci", "--dry-run", "--device", "h100", "--shard", "1/4"])
    out = capsys.readouterr().out
    points = expand(get_suite("ci").sweeps)
    assert code == 0 and f"{len(Shard(1, 4).select(points))} of {len(points)} points" in out


def test_unknown_device_is_one_line(capsys):
    code = main(["suites", "--device", "h900"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown; valid:" in err and "h200" in err


def test_time_model_counts_compile_once_per_config_and_tuning_per_point():
    model = TimeModel(H200)
    points = [p for p in expand(get_suite("headline").sweeps) if p.kernel == "gemm" and p.impl == "triton"]
    first, again = model.point(points[0]), model.point(points[0])
    assert first.configs >= 2 and first.compile > 0 and first.tune > 0
    assert again.compile == 0 and again.tune == first.tune  # binaries cached, tuning is per point
