"""The time model's sampling cost against the stopping rule itself, run on the fake GPU (issue 20 §3: a long noisy
point was priced 2–5× too low by a fixed 1.5 % spread and the closed form (2.46·σ/target)²)."""

import numpy as np
import pytest

from bench.estimate import FAMILY_SPREAD, SAMPLE_SPREAD, TimeModel, machine, samples_to_converge, spreads_from_rows
from bench.timing import SamplingPolicy, measure
from tests.fake_gpu import FakeGpu

FLUSH_S = 30e-6


def _measured_seconds(kernel_s: float, spread: float, policy: SamplingPolicy, seeds=range(1, 9)) -> float:
    """Host seconds measure() spends on the fake GPU, averaged over seeds (graph replay off: one launch a sample)."""
    spent = []
    for seed in seeds:
        gpu = FakeGpu(cold_s=kernel_s, flush_s=FLUSH_S, noise=spread, seed=seed, host_overhead_s=2e-6,
                      traceable=False)
        measure(gpu.kernel, gpu, policy)
        spent.append(gpu.host)
    return float(np.mean(spent))


@pytest.mark.parametrize("kernel_s, spread", [(10e-3, 0.05), (2e-3, 0.03), (300e-6, 0.01)])
def test_the_sampling_estimate_follows_the_stopping_rule_on_the_fake_gpu(kernel_s, spread):
    policy = SamplingPolicy(warmup_s=0.0)
    model = TimeModel(machine("h100"), policy)
    estimate = model._sampling(kernel_s, policy, FLUSH_S, spread)
    assert estimate == pytest.approx(_measured_seconds(kernel_s, spread, policy), rel=0.4)


def test_a_long_noisy_family_is_priced_by_its_own_spread():
    """A 10 ms kernel at 5 % spread runs to the 3 s timeout; a 1.5 % assumption priced it at 0.7 s."""
    policy = SamplingPolicy(warmup_s=0.0)
    model = TimeModel(machine("h100"), policy, spreads={"gemm": 0.05})
    assert model.spreads["gemm"] == 0.05 and model.spreads["copy"] == FAMILY_SPREAD["copy"]
    noisy = model._sampling(10e-3, policy, FLUSH_S, model.spreads["gemm"])
    assert noisy >= 0.9 * policy.timeout_s
    assert noisy > 3 * model._sampling(10e-3, policy, FLUSH_S, SAMPLE_SPREAD)


def test_the_simulated_count_grows_with_the_spread_and_honours_the_minimums():
    counts = [samples_to_converge(s, 10, 0.005, 20_000) for s in (0.001, 0.01, 0.03, 0.05)]
    assert counts == sorted(counts) and counts[0] == 10
    assert counts[-1] > (2.46 * 0.05 / 0.005) ** 2  # the batches' doubling overshoots the closed form
    assert samples_to_converge(0.001, 10, 0.005, 20_000, least=300) >= 300
    assert samples_to_converge(0.5, 10, 0.005, 500) == 500


def test_spreads_are_learnt_from_a_runs_rows():
    import pandas as pd

    rows = pd.DataFrame(dict(kernel=["gemm", "gemm", "gemm", "copy", "copy"], status=["ok", "ok", "failed", "ok", "ok"],
                             cv=[0.02, 0.04, 0.9, 0.01, np.nan]))
    assert spreads_from_rows(rows) == {"gemm": pytest.approx(0.03), "copy": pytest.approx(0.01)}
