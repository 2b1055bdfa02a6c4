"""The timing harness on a simulated device: warm-up, cold L2, stopping rule, statistics."""

import math

import numpy as np
import pytest

from bench.timing import GraphMode, L2Mode, SamplingPolicy, measure, robust_cv, summarize
from tests.fake_gpu import FakeGpu

QUICK = dict(warmup_runs=3, warmup_s=0.0, min_samples=10, min_time_s=0.0, timeout_s=1.0)


def test_cold_l2_times_the_flushed_kernel_without_the_flush():
    gpu = FakeGpu(cold_s=10e-6, warm_s=4e-6, flush_s=30e-6)
    m = measure(gpu.kernel, gpu, SamplingPolicy(**QUICK))
    # without the flush the kernel would find its data in L2 (4 µs); with the flush inside the
    # timed interval it would read 40 µs
    assert m.median_s == pytest.approx(10e-6)
    assert m.p20_s == pytest.approx(10e-6) and m.p80_s == pytest.approx(10e-6)
    assert gpu.flushes >= gpu.runs


def test_warm_l2_mode_does_not_flush():
    gpu = FakeGpu(cold_s=10e-6, warm_s=4e-6)
    m = measure(gpu.kernel, gpu, SamplingPolicy(**QUICK, l2=L2Mode.WARM))
    assert m.median_s == pytest.approx(4e-6)
    assert gpu.flushes == 0


def test_warm_up_runs_are_not_sampled():
    # the first 3 launches are 10× slower (compilation, clock ramp): 3 of 5 samples would be slow
    gpu = FakeGpu(slow_runs=3, slow_factor=10.0)
    policy = SamplingPolicy(**{**QUICK, "min_samples": 5})
    m = measure(gpu.kernel, gpu, policy)
    assert m.warmup_runs >= 3
    assert m.median_s == pytest.approx(10e-6)
    assert m.p80_s == pytest.approx(10e-6)


def test_warm_up_honours_its_minimum_time():
    gpu = FakeGpu(cold_s=1e-3, flush_s=0.0)
    m = measure(gpu.kernel, gpu, SamplingPolicy(**{**QUICK, "warmup_s": 0.02}))
    assert m.warmup_runs >= 20  # 20 ms of 1 ms runs


def test_noise_free_kernel_stops_at_the_minimum_samples():
    gpu = FakeGpu()
    m = measure(gpu.kernel, gpu, SamplingPolicy(**QUICK))
    assert m.converged
    assert m.samples == 10
    assert m.cv == 0.0


def test_noisy_kernel_samples_until_the_timeout_and_says_so():
    gpu = FakeGpu(noise=0.05)
    policy = SamplingPolicy(**{**QUICK, "timeout_s": 0.05})
    m = measure(gpu.kernel, gpu, policy)
    assert not m.converged
    assert m.samples > 100
    assert gpu.host >= 0.05
    assert m.cv == pytest.approx(0.05, rel=0.3)


def test_mildly_noisy_kernel_stops_once_noise_is_below_target():
    gpu = FakeGpu(noise=0.002)
    m = measure(gpu.kernel, gpu, SamplingPolicy(**{**QUICK, "timeout_s": 10.0}))
    assert m.converged
    assert m.cv <= 0.005
    assert 10 <= m.samples < 2_000


def test_minimum_measured_time_is_reached():
    gpu = FakeGpu(cold_s=1e-6, flush_s=0.0)
    m = measure(gpu.kernel, gpu, SamplingPolicy(**{**QUICK, "min_time_s": 1e-3, "timeout_s": 10.0}))
    assert m.samples * m.median_s >= 1e-3 * 0.99


def test_sample_cap_is_respected():
    gpu = FakeGpu(noise=0.05)
    m = measure(gpu.kernel, gpu, SamplingPolicy(**{**QUICK, "timeout_s": 100.0, "max_samples": 300}))
    assert m.samples <= 300 and not m.converged


@pytest.mark.parametrize(
    "mode, kernel_s, capturable, expected",
    [
        (GraphMode.AUTO, 10e-6, True, "graph"),
        (GraphMode.AUTO, 10e-3, True, "stream"),
        (GraphMode.AUTO, 10e-6, False, "stream"),
        (GraphMode.ALWAYS, 10e-3, True, "graph"),
        (GraphMode.NEVER, 10e-6, True, "stream"),
    ],
)
def test_graph_replay_for_short_kernels(mode, kernel_s, capturable, expected):
    gpu = FakeGpu(cold_s=kernel_s, capturable=capturable)
    m = measure(gpu.kernel, gpu, SamplingPolicy(**QUICK, graph=mode))
    assert m.launch == expected
    assert m.median_s == pytest.approx(kernel_s)


def test_robust_cv_matches_stdev_for_normal_noise_and_ignores_an_outlier():
    rng = np.random.default_rng(0)
    values = 1.0 + 0.01 * rng.standard_normal(20_000)
    assert robust_cv(values) == pytest.approx(0.01, rel=0.05)
    assert robust_cv([1.0] * 99 + [50.0]) == 0.0
    assert math.isinf(robust_cv([1.0]))


def test_summary_quantiles():
    m = summarize([float(i) for i in range(1, 11)], converged=True, launch="stream", warmup_runs=3)
    assert m.median_s == pytest.approx(5.5)
    assert m.p20_s == pytest.approx(2.8)
    assert m.p80_s == pytest.approx(8.2)
    assert m.samples == 10


def test_policy_rejects_nonsense():
    with pytest.raises(ValueError):
        SamplingPolicy(min_samples=0)
    with pytest.raises(ValueError):
        SamplingPolicy(max_noise=0)
