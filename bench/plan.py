"""``rooflab run`` on a GPU: the headline plan under a time budget, then the suites as time remains.

Stages, each its own results file ``results/<slug>/<stamp>-<stage>.csv`` (resumable):
``headline`` (tiers 1–8 of :mod:`bench.suites.headline`, in order), ``headline-repeat`` (ten
headline points again: run-to-run noise), then the suites in ``REST``. Before each point the plan
asks whether the elapsed time plus the time model's estimate of that point still fits the budget;
the first point that does not ends the run, with every finished row written. The caller then
builds the report and prints :meth:`PlanSummary.line` — what ran, what is left, and the command
that continues it.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from bench.estimate import Cost, Machine, TimeModel, machine_of, minutes, roof_seconds
from bench.suites import Point, expand, get_suite
from bench.suites.headline import REST, TIERS
from bench.sweep import SweepOptions, run_sweep
from kernels import registry


@dataclass(frozen=True)
class Stage:
    name: str  # file suffix and suite name
    points: tuple[Point, ...]
    tiers: tuple[int, ...] = ()  # per point: its headline tier (headline stage only)


def stages() -> list[Stage]:
    """The plan's stages in order: the headline tiers, their repeat, then every REST suite."""
    seen: dict[tuple, int] = {}
    for tier in TIERS:
        for point in expand(tier.sweeps):
            seen.setdefault(point.key(), tier.number)
    headline = expand(tuple(sweep for tier in TIERS for sweep in tier.sweeps))
    out = [Stage("headline", tuple(headline), tuple(seen[p.key()] for p in headline)),
           Stage("headline-repeat", tuple(expand(get_suite("headline-repeat").sweeps)))]
    out += [Stage(name, tuple(expand(get_suite(name).sweeps))) for name in REST]
    return out


@dataclass
class PlanSummary:
    budget_s: float | None
    stamp: str
    elapsed_s: float = 0.0
    files: list[Path] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    left: dict[str, tuple[Point, ...]] = field(default_factory=dict)  # stage -> points not run
    left_tiers: Counter = field(default_factory=Counter)  # headline tier -> points not run
    left_estimate_s: float = 0.0
    continue_command: str = ""

    def line(self) -> str:
        """One line: what ran, what is left, and how to continue."""
        ran = ", ".join(f"{n} {s}" for s, n in sorted(self.counts.items())) or "nothing new"
        if not any(self.left.values()):
            return f"plan complete in {minutes(self.elapsed_s)}: {ran}"
        parts = []
        if self.left_tiers:
            parts.append("tiers " + ", ".join(f"{t} ({n} points)" for t, n in sorted(self.left_tiers.items())))
        parts += [f"{stage} ({len(points)} points)" for stage, points in self.left.items()
                  if points and stage != "headline"]
        budget = f"budget {minutes(self.budget_s)} reached" if self.budget_s else "stopped"
        return (f"{budget} after {minutes(self.elapsed_s)} ({ran}); left: {'; '.join(parts)} — about "
                f"{minutes(self.left_estimate_s)} more by the time model; continue with: {self.continue_command}")


def run_plan(target, *, budget_s: float | None, results: Path, stamp: str, resume: bool, seed: int | None,
             policy, progress: bool, command: str, continue_command: str, extra: dict | None = None,
             clock: Callable[[], float] = time.monotonic, sweep=run_sweep, model: TimeModel | None = None,
             backend=None, on_row: Callable[[dict], None] | None = None) -> PlanSummary:
    """Run the plan's stages on ``target`` until ``budget_s`` (None: all of them); ``on_row`` sees each row."""
    model = model or TimeModel(machine_of(target.caps), policy)
    began = clock()
    summary = PlanSummary(budget_s, stamp, continue_command=continue_command)
    out_dir = Path(results) / target.slug

    def over_budget(point: Point) -> bool:
        if budget_s is None:
            return False
        return clock() - began + model.point(point).total > budget_s

    exhausted = False
    plan = stages()
    for stage in plan:
        out = out_dir / f"{stamp}-{stage.name}.csv"
        if exhausted:
            summary.left[stage.name] = stage.points
            continue
        options = SweepOptions(out=out, suite=stage.name, seed=seed, resume=resume or out.exists(), policy=policy,
                               progress=progress, command=command,
                               extra=dict(extra or {}, plan={"stage": stage.name, "stamp": stamp}))
        result = sweep(list(stage.points), options, target, backend=backend, stop=over_budget,
                       **({"on_row": on_row} if on_row else {}))
        summary.files.append(result.out)
        summary.counts.update(result.counts)
        summary.left[stage.name] = result.left
        if result.left:
            exhausted = True
    headline = plan[0]
    tier_of = dict(zip((p.key() for p in headline.points), headline.tiers))
    for point in summary.left.get("headline", ()):
        summary.left_tiers[tier_of[point.key()]] += 1
    rest_model = TimeModel(model.machine, model.policy)
    summary.left_estimate_s = sum(rest_model.point(p).total for points in summary.left.values() for p in points)
    summary.elapsed_s = clock() - began
    return summary


def new_stamp(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.timezone.utc)
    return now.strftime("%Y%m%dT%H%M%SZ")


def dry_run(model: TimeModel, budget_s: float | None, points_by_stage: list[Stage] | None = None) -> list[str]:
    """Lines of a dry run: every point of the budgeted part with its estimate, and per-stage totals."""
    lines = []
    elapsed = 0.0
    inside = True
    for stage in points_by_stage or stages():
        costs: list[tuple[Point, Cost]] = [(p, model.point(p)) for p in stage.points]
        total = sum(c.total for _, c in costs)
        tiers = dict(zip((p.key() for p in stage.points), stage.tiers))
        lines.append(f"== {stage.name}: {len(costs)} points, ≈ {minutes(total)}")
        for point, cost in costs:
            if inside and budget_s is not None and elapsed + cost.total > budget_s:
                inside = False
                lines.append(f"-- budget {minutes(budget_s)} ends here (≈ {minutes(elapsed)} planned)")
            elapsed += cost.total
            if inside or budget_s is None:
                tier = f"t{tiers[point.key()]} " if point.key() in tiers else ""
                what = f"skip: {cost.skip}" if cost.skip else (
                    f"{cost.total:6.2f} s  (kernel {cost.kernel_s * 1e6:.1f} µs, {cost.configs} configs)")
                lines.append(f"  {tier}{point.case.label()} {point.impl}{_timing(point)}  {what}")
    lines.append(f"total ≈ {minutes(elapsed)} of GPU-machine time by the time model"
                 + (f"; the {minutes(budget_s)} budget covers ≈ {minutes(min(elapsed, budget_s))}" if budget_s else ""))
    return lines


def _timing(point: Point) -> str:
    return "".join(f" {k}={v}" for k, v in point.timing)


def row_line(row: dict, machine: Machine) -> str:
    """One log line per finished point: what ran, its time, and its fraction of the datasheet roofline bound."""
    axes = " ".join(f"{a.name}={row[a.name]}" for a in registry.get(row["kernel"]).axes if a.name in row)
    what = f"{row['kernel']} {row['impl']} {row['dtype']} {axes}".strip()
    status = getattr(row["status"], "value", row["status"])
    if status != "ok" or not row.get("median_s"):
        reason = str(row.get("error") or "")[:120]
        return f"  {status:7s} {what}" + (f" ({reason})" if reason else "")
    median = float(row["median_s"])
    roof = roof_seconds(machine, row["kernel"], row["dtype"], float(row["flops"] or 0), float(row["bytes"] or 0))
    fraction = f"{roof / median:6.1%} of roof" if roof else "(no roof)"
    return f"  ok      {what}  {median * 1e6:.2f} µs  {fraction}  [{row.get('timer') or 'event'} timer]"
