"""Roofline maths on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.roofline import Roof, affine_in_batch, attainable, efficiency, knee_batch, predicted_time, ridge

BW, PEAK = 3.35e12, 989e12


def test_attainable_is_the_lower_of_the_two_roofs():
    intensity = np.array([1.0, 100.0, 295.2, 1000.0])
    expected = [3.35e12, 3.35e14, min(PEAK, 295.2 * BW), PEAK]
    assert attainable(intensity, PEAK, BW) == pytest.approx(expected)


def test_ridge_of_h100_bf16_is_about_295_flop_per_byte():
    assert ridge(PEAK, BW) == pytest.approx(295.2, abs=0.1)
    assert Roof("x", BW, PEAK).ridge == ridge(PEAK, BW)


def test_predicted_time_takes_the_slower_branch_plus_t0():
    # gemv 8192x8192 fp16 at batch 1: 2·8192² FLOPs, 2·(8192² + 2·8192) bytes
    flops, nbytes = 2 * 8192**2, 2 * (8192**2 + 2 * 8192)
    assert predicted_time(flops, nbytes, PEAK, BW) == pytest.approx(nbytes / BW)
    assert predicted_time(flops, nbytes, PEAK, BW, t0=5e-6) == pytest.approx(nbytes / BW + 5e-6)
    big = 2 * 8192**3
    assert predicted_time(big, 3 * 2 * 8192**2, PEAK, BW) == pytest.approx(big / PEAK)
    assert predicted_time(big, 1.0, float("nan"), BW) == pytest.approx(1.0 / BW)  # unknown peak: no compute limit


def test_efficiency_is_roofline_time_over_measured_time():
    nbytes = 8 * 2**28
    assert efficiency(0, nbytes, 2 * nbytes / BW, PEAK, BW) == pytest.approx(0.5)  # copy: bandwidth efficiency
    flops = 2 * 8192**3
    assert efficiency(flops, 1e6, flops / 800e12, PEAK, BW) == pytest.approx(800 / 989)


def test_affine_in_batch_recovers_a_linear_layers_cost():
    n, k = 1024, 4096
    batch = np.array([1, 2, 4, 8])
    fixed, per_batch = affine_in_batch(batch, 2 * (batch * k + n * k + batch * n))
    assert fixed == pytest.approx(2 * n * k)
    assert per_batch == pytest.approx(2 * (n + k))
    assert all(math.isnan(v) for v in affine_in_batch([4, 4], [1.0, 2.0]))


def test_knee_batch_of_a_square_gemm_matches_the_closed_form():
    n = k = 8192
    batch = np.array([1, 64, 4096])
    flops, nbytes = 2 * batch * n * k, 2 * (batch * k + n * k + batch * n)
    expected = (2 * n * k / BW) / (2 * n * k / PEAK - 2 * (n + k) / BW)
    assert knee_batch(batch, flops, nbytes, PEAK, BW) == pytest.approx(expected)
    assert 300 < expected < 320


def test_knee_batch_edge_cases():
    batch = np.array([1, 2, 4])
    assert knee_batch(batch, 0 * batch, 8 * batch, PEAK, BW) == math.inf  # copy: never compute-bound
    # decode attention: flops and bytes both ∝ batch, intensity ≈ 1 stays below the ridge
    assert knee_batch(batch, 1.0 * batch, 1.0 * batch, PEAK, BW) == math.inf
    assert knee_batch(batch, 1000.0 * batch, 1.0 * batch, PEAK, BW) == 0.0  # above the ridge from the start
    assert math.isnan(knee_batch(batch, 1.0 * batch, 1.0 * batch, float("nan"), BW))


def test_knee_batch_exact_zero_despite_lstsq_rounding(monkeypatch):
    """numpy 2.5's lstsq leaves ≈5e-16 where the intercept is 0: the knee must still read exactly 0."""
    real = np.linalg.lstsq

    def residue(a, b, rcond=None):
        solution, *rest = real(a, b, rcond=rcond)
        fixed, per_batch = solution
        return (np.array([fixed - 5e-16 * abs(per_batch), per_batch]), *rest)

    monkeypatch.setattr(np.linalg, "lstsq", residue)
    batch = np.array([1, 2, 4])
    assert knee_batch(batch, 1000.0 * batch, 1.0 * batch, PEAK, BW) == 0.0
    assert knee_batch(batch, 0 * batch, 8 * batch, PEAK, BW) == math.inf
