"""The roofline fit recovers a known model from noisy synthetic points, and says when it cannot."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.fit import POOLED, fit_roofline, fit_sweeps

BW, PEAK, T0 = 3.0e12, 700e12, 5e-6
SHAPES = ((4096, 4096), (1024, 4096), (14336, 4096), (4096, 14336), (8192, 8192))
BATCHES = 2.0 ** np.arange(13)


def linear_points(shapes=SHAPES, batches=BATCHES, itemsize=2):
    flops = np.concatenate([2 * batches * n * k for n, k in shapes])
    nbytes = np.concatenate([itemsize * (batches * k + n * k + batches * n) for n, k in shapes])
    return flops, nbytes


def truth(flops, nbytes, bw=BW, peak=PEAK, t0=T0):
    return t0 + np.maximum(nbytes / bw, flops / peak)


def noisy(seconds, rng, sigma=0.02):
    return seconds * rng.lognormal(0.0, sigma, len(seconds))


def test_recovers_bandwidth_peak_and_t0_from_noisy_points(seed):
    rng = np.random.default_rng(seed)
    flops, nbytes = linear_points()
    fit = fit_roofline(flops, nbytes, noisy(truth(flops, nbytes), rng))
    assert fit.bandwidth == pytest.approx(BW, rel=0.05)
    assert fit.peak == pytest.approx(PEAK, rel=0.05)
    assert fit.t0 == pytest.approx(T0, rel=0.08)
    assert fit.mape < 0.03
    assert fit.n_memory > 0 and fit.n_compute > 0
    assert len(fit.residuals) == len(flops)
    assert fit.ridge == pytest.approx(PEAK / BW, rel=0.08)


def test_exact_points_are_fitted_exactly():
    flops, nbytes = linear_points()
    fit = fit_roofline(flops, nbytes, truth(flops, nbytes))
    assert fit.bandwidth == pytest.approx(BW, rel=1e-6)
    assert fit.peak == pytest.approx(PEAK, rel=1e-6)
    assert fit.t0 == pytest.approx(T0, rel=1e-5)
    assert np.allclose(fit.predict(flops, nbytes), truth(flops, nbytes), rtol=1e-6)


def test_a_stray_sample_does_not_steer_the_fit(seed):
    rng = np.random.default_rng(seed)
    flops, nbytes = linear_points()
    seconds = noisy(truth(flops, nbytes), rng, 0.01)
    seconds[rng.integers(len(seconds))] *= 3.0  # one sample hit by a clock drop
    fit = fit_roofline(flops, nbytes, seconds)
    assert fit.bandwidth == pytest.approx(BW, rel=0.05)
    assert fit.peak == pytest.approx(PEAK, rel=0.05)


def test_zero_flop_kernel_fits_bandwidth_and_t0_only(seed):
    rng = np.random.default_rng(seed)
    nbytes = 8.0 * 2.0 ** np.arange(14, 31)
    flops = np.zeros_like(nbytes)
    fit = fit_roofline(flops, nbytes, noisy(truth(flops, nbytes), rng))
    assert fit.bandwidth == pytest.approx(BW, rel=0.05)
    assert fit.t0 == pytest.approx(T0, rel=0.08)
    assert np.isnan(fit.peak)
    assert any("no FLOPs" in note for note in fit.notes)


def test_all_memory_bound_sweep_leaves_peak_unidentified():
    flops, nbytes = linear_points(batches=2.0 ** np.arange(7))  # M ≤ 64: far below the ridge
    fit = fit_roofline(flops, nbytes, truth(flops, nbytes))
    assert np.isnan(fit.peak)
    assert fit.n_compute == 0
    assert fit.peak_lower_bound == pytest.approx(fit.bandwidth * np.max(flops / nbytes))
    assert any("P_eff unidentifiable" in note for note in fit.notes)
    assert fit.bandwidth == pytest.approx(BW, rel=1e-3)


def test_all_compute_bound_sweep_leaves_bandwidth_unidentified():
    flops, nbytes = linear_points(shapes=((8192, 8192), (4096, 4096)), batches=2.0 ** np.arange(11, 14))
    fit = fit_roofline(flops, nbytes, truth(flops, nbytes))
    assert np.isnan(fit.bandwidth)
    assert fit.peak == pytest.approx(PEAK, rel=1e-3)
    assert any("BW_eff unidentifiable" in note for note in fit.notes)


def test_caps_keep_a_single_shape_gemv_sweep_on_the_bandwidth_branch(seed):
    # bytes barely change with M: "compute-bound with a huge t0" fits as well without the caps
    rng = np.random.default_rng(seed)
    flops, nbytes = linear_points(shapes=((4096, 4096),), batches=2.0 ** np.arange(7))
    seconds = noisy(truth(flops, nbytes), rng)
    fit = fit_roofline(flops, nbytes, seconds, max_bandwidth=1.25 * 3.35e12, max_peak=1.25 * 989e12, t0=T0)
    assert fit.n_compute == 0
    assert fit.bandwidth == pytest.approx(BW, rel=0.05)
    assert fit.t0 == T0


def test_fixed_t0_is_held():
    flops, nbytes = linear_points()
    fit = fit_roofline(flops, nbytes, truth(flops, nbytes), t0=T0)
    assert fit.t0 == T0
    assert fit.bandwidth == pytest.approx(BW, rel=1e-6)
    assert np.isnan(fit.t0_se)


def test_too_few_points_say_so():
    fit = fit_roofline([1.0, 2.0], [1.0, 1.0], [1e-5, 2e-5])
    assert np.isnan(fit.bandwidth) and np.isnan(fit.peak) and np.isnan(fit.t0)
    assert "too few" in fit.notes[0]


def _frame(rows):
    columns = ["kernel", "impl", "dtype", "label", "l2", "launch", "M", "N", "K", "flops", "bytes", "median_s",
               "l2_resident"]
    return pd.DataFrame(rows, columns=columns)


def test_l2_resident_points_are_flagged_and_kept_out_of_the_dram_fit(seed):
    rng = np.random.default_rng(seed)
    rows = []
    for (n, k) in SHAPES:
        for m in BATCHES:
            f, b = 2 * m * n * k, 2 * (m * k + n * k + m * n)
            rows.append(["gemm", "triton", "fp16", f"shape{n}x{k}", "cold", "graph", m, n, k, f, b,
                         float(noisy(np.array([truth(f, b)]), rng)[0]), False])
    for m in (1, 2, 4, 8, 16):  # fits in L2: 3× faster than DRAM allows
        f, b = 2 * m * 512 * 512, 2 * (m * 512 + 512 * 512 + m * 512)
        rows.append(["gemm", "triton", "fp16", "small", "cold", "graph", m, 512, 512, f, b,
                     T0 + b / (3 * BW), True])
    pooled, per_shape = fit_sweeps(_frame(rows))
    assert len(pooled) == 1 and pooled[0].shape == POOLED
    whole = pooled[0]
    assert whole.n_l2_excluded == 5
    assert whole.fit.n_points == len(SHAPES) * len(BATCHES)
    assert len(whole.rows) == len(SHAPES) * len(BATCHES) + 5  # flagged points stay in the rows
    assert whole.fit.bandwidth == pytest.approx(BW, rel=0.05)
    small = next(s for s in per_shape if s.shape == "small")
    assert small.n_l2_excluded == 5 and small.fit.n_points == 0
    assert not small.rows["in_fit"].any()
    fitted = next(s for s in per_shape if s.shape == "shape8192x8192")
    assert fitted.batch == "M"
    assert list(fitted.rows["M"]) == sorted(fitted.rows["M"])
    # knee of the fitted branches vs the truth for this shape (M where 2MNK/P = 2(MK+NK+MN)/BW)
    n = k = 8192
    expected = (2 * n * k / BW) / (2 * n * k / PEAK - 2 * (n + k) / BW)
    assert fitted.knee == pytest.approx(expected, rel=0.15)


def test_per_shape_fit_borrows_the_pooled_t0_when_it_cannot_separate_it(seed):
    rng = np.random.default_rng(seed)
    rows = []
    for (n, k) in SHAPES:
        for m in 2.0 ** np.arange(7):
            f, b = 2 * m * n * k, 2 * (m * k + n * k + m * n)
            rows.append(["gemv", "triton", "fp16", f"s{n}x{k}", "cold", "graph", m, n, k, f, b,
                         float(noisy(np.array([truth(f, b)]), rng)[0]), False])
    pooled, per_shape = fit_sweeps(_frame(rows), caps=lambda kernel, dtype: (1.25 * 3.35e12, 1.25 * 989e12))
    assert pooled[0].fit.t0 == pytest.approx(T0, rel=0.15)
    for sweep in per_shape:
        assert sweep.fit.bandwidth == pytest.approx(BW, rel=0.1)
        borrowed = any("held at the pooled" in note for note in sweep.fit.notes)
        assert borrowed == (sweep.fit.t0 == pooled[0].fit.t0)
