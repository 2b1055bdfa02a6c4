"""The fake timing model for ``rooflab ab``'s statistics, simulated directly (no harness, no processes).

One point on one simulated GPU: every sample is the kernel's time × (1 + slowdown on HEAD) × the
device's drift factor at that moment × (1 + gaussian sample noise). The drift factor is
1 + an offset drawn per run (±``drift``, "between runs") + a wander over device time (three sinusoids
with periods log-uniform from a few samples to thousands, amplitudes summing to ``drift``: fast ones
act as extra noise inside a repeat, slow ones move the level between repeats and blocks) + an
occasional step (a clock change: ±``drift``/2 at a random moment, about once per point). Both
sides share the device and its clock, as two processes on one GPU do.

A repeat is the real stopping rule's statistic (``bench.stats.median_ci_rel``) applied to samples
drawn in growing batches; one plain run of the point (the comparison for the time budget) is the
sweep's default rule (≥ 10 samples, median CI ≤ 0.5 %) on the same noise without drift — the
cheapest a single run can be, so the ratio is conservative. Costs count sampled and warm-up launches
(the time model's 1 ms kernel: a run's 20 ms warm-up is 20 launches); the correctness gate, run once
per side, is not counted.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

from bench.ab_stats import AbRule, Estimate, Repeat, Side, judge
from bench.stats import median_ci_rel

KERNEL_S = 1e-3
REPEAT_MIN_SAMPLES = 6
REPEAT_WARMUP = 2 + 1  # the repeat's warm-up runs, and the sampler's first (graph-upload) replay
RUN_WARMUP = 20 + 1  # a single run: 20 ms of warm-up (≥ 3 runs), and the first replay
POINT_WARMUP = 2 * 10  # the A/B's once-per-point warm-up: half a run's warm-up time per side
RUN_MIN_SAMPLES = 10
RUN_MAX_NOISE = 0.005
MAX_SAMPLES = 3000  # a single run's timeout (3 s of 1 ms samples)


@dataclass(frozen=True)
class Model:
    noise: float = 0.02
    drift: float = 0.04
    steps: float = 1.0  # expected clock steps per point


class Device:
    def __init__(self, model: Model, seed: int):
        self.model = model
        self.rng = np.random.default_rng(seed)
        self.clock = 0.0  # device seconds
        self.offset = self.rng.uniform(-model.drift, model.drift)
        weights = self.rng.dirichlet(np.ones(3))
        self.amplitudes = model.drift * weights
        self.periods = KERNEL_S * np.exp(self.rng.uniform(math.log(4), math.log(4000), 3))
        self.phases = self.rng.uniform(0, 2 * math.pi, 3)
        horizon = 800 * KERNEL_S  # about one point's A/B
        count = self.rng.poisson(model.steps)
        self.steps = sorted(zip(self.rng.uniform(0, horizon, count),
                                self.rng.choice([-1, 1], count) * model.drift / 2))

    def factor(self, t: np.ndarray) -> np.ndarray:
        wander = sum(a * np.sin(2 * math.pi * t / p + f) for a, p, f in zip(self.amplitudes, self.periods, self.phases))
        step = sum(np.where(t >= at, size, 0.0) for at, size in self.steps) if self.steps else 0.0
        return 1 + self.offset + wander + step

    def draw(self, count: int, scale: float, drift: bool = True) -> np.ndarray:
        t = self.clock + KERNEL_S * scale * np.arange(count)
        level = self.factor(t) if drift else 1.0
        times = KERNEL_S * scale * level * np.maximum(0.05, 1 + self.model.noise * self.rng.standard_normal(count))
        self.clock += float(times.sum())
        return times


@dataclass
class Cost:
    launches: int = 0


def repeat(device: Device, scale: float, max_noise: float, cost: Cost) -> Repeat:
    """One short sample set under the stopping rule: ≥ REPEAT_MIN_SAMPLES, growing until the median's CI
    is within ``max_noise``."""
    device.draw(REPEAT_WARMUP, scale)
    samples = device.draw(REPEAT_MIN_SAMPLES, scale)
    while median_ci_rel(samples) > max_noise and samples.size < 64:
        samples = np.concatenate([samples, device.draw(samples.size, scale)])
    cost.launches += REPEAT_WARMUP + samples.size
    return Repeat(float(np.median(samples)), int(samples.size), median_ci_rel(samples))


def one_run(model: Model, seed: int) -> int:
    """Launches one plain run of the point takes (warm-up + samples under the default rule, no drift)."""
    device = Device(model, seed)
    samples = device.draw(RUN_MIN_SAMPLES, 1.0, drift=False)
    while median_ci_rel(samples) > RUN_MAX_NOISE and samples.size < MAX_SAMPLES:
        samples = np.concatenate([samples, device.draw(samples.size, 1.0, drift=False)])
    return RUN_WARMUP + int(samples.size)


def ab_point(model: Model, seed: int, slowdown: float, rule: AbRule) -> tuple[Estimate, int]:
    """The A/B of one point (HEAD ``slowdown`` slower): its estimate and the launches both sides took."""
    device, cost = Device(model, seed), Cost()

    def measure(side: Side) -> Repeat:
        return repeat(device, 1 + slowdown if side is Side.HEAD else 1.0, rule.threshold, cost)

    return judge(measure, rule, random.Random(seed)), cost.launches + POINT_WARMUP


@dataclass(frozen=True)
class Figures:
    points: int
    slower: float  # share of points called slower
    faster: float
    inconclusive: float
    time_ratio: float  # mean launches of the A/B over mean launches of one plain run


def simulate(seeds: range, slowdown: float, model: Model = Model(), rule: AbRule = AbRule()) -> Figures:
    verdicts, ab_cost, run_cost = [], 0, 0
    for seed in seeds:
        estimate, launches = ab_point(model, seed, slowdown, rule)
        verdicts.append(estimate.verdict.value)
        ab_cost += launches
        run_cost += one_run(model, seed + 10**6)
    n = len(verdicts)
    return Figures(n, verdicts.count("slower") / n, verdicts.count("faster") / n,
                   verdicts.count("inconclusive") / n, ab_cost / run_cost)
