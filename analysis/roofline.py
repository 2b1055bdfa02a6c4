"""Roofline maths: attainable FLOP/s, predicted time, efficiency and the knee batch.

A roof is a bandwidth (bytes/s) and a compute peak (FLOP/s) for one memory level (DRAM or L2) and
one kind of arithmetic (a dtype's tensor cores, or fp32 CUDA cores). A point with ``flops`` and
``bytes`` cannot run faster than max(flops/peak, bytes/bandwidth); a measured fixed cost t0
(launch and tail) adds to that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Roof:
    """One roofline: ``bandwidth`` in bytes/s, ``peak`` in FLOP/s (NaN when unknown)."""

    label: str  # e.g. "DRAM · bf16 tensor (measured)"
    bandwidth: float
    peak: float
    measured: bool = True

    @property
    def ridge(self) -> float:
        return ridge(self.peak, self.bandwidth)

    def attainable(self, intensity):
        return attainable(intensity, self.peak, self.bandwidth)

    def time(self, flops, nbytes, t0: float = 0.0):
        return predicted_time(flops, nbytes, self.peak, self.bandwidth, t0)


def attainable(intensity, peak: float, bandwidth: float):
    """min(peak, I·BW): the FLOP/s a kernel of intensity I (FLOP/byte) can reach at most."""
    return np.minimum(peak, np.asarray(intensity, dtype=float) * bandwidth)


def ridge(peak: float, bandwidth: float) -> float:
    """Intensity (FLOP/byte) where the bandwidth roof meets the compute roof."""
    return peak / bandwidth


def predicted_time(flops, nbytes, peak: float, bandwidth: float, t0: float = 0.0):
    """max(flops/peak, bytes/BW) + t0, in seconds; a NaN peak counts as unlimited compute."""
    flops = np.asarray(flops, dtype=float)
    nbytes = np.asarray(nbytes, dtype=float)
    compute = flops / peak if np.isfinite(peak) and peak > 0 else np.zeros_like(flops)
    return np.maximum(compute, nbytes / bandwidth) + t0


def efficiency(flops, nbytes, seconds, peak: float, bandwidth: float):
    """Roofline time over measured time = achieved / attainable at the point's intensity (1.0 = on the roof).

    Written as a time ratio so zero-FLOP kernels (copy, fill) get their bandwidth efficiency.
    """
    return predicted_time(flops, nbytes, peak, bandwidth) / np.asarray(seconds, dtype=float)


ROUNDING = 1e-9  # relative size below which a fitted term is rounding residue


def affine_in_batch(batch, values) -> tuple[float, float]:
    """(fixed, per_batch) with values ≈ fixed + per_batch·batch (flops and bytes of a batch sweep are affine)."""
    batch = np.asarray(batch, dtype=float)
    values = np.asarray(values, dtype=float)
    if len(np.unique(batch)) < 2:
        return float("nan"), float("nan")
    design = np.column_stack([np.ones_like(batch), batch])
    (fixed, per_batch), *_ = np.linalg.lstsq(design, values, rcond=None)
    # least squares leaves rounding residue (≈1e-16 of the scale, different across numpy builds) where
    # the true term is zero: snap it, so "no fixed cost" reads exactly 0 everywhere
    scale = float(np.max(np.abs(values))) if values.size else 0.0
    if abs(fixed) <= ROUNDING * scale:
        fixed = 0.0
    if abs(per_batch) * float(np.max(np.abs(batch))) <= ROUNDING * scale:
        per_batch = 0.0
    return float(fixed), float(per_batch)


def knee_batch(batch, flops, nbytes, peak: float, bandwidth: float) -> float:
    """Batch where flops/peak = bytes/BW for a sweep whose flops and bytes are affine in the batch.

    inf when the sweep stays memory-bound at any batch (no FLOPs, or intensity that saturates
    below the ridge, e.g. decode attention whose KV bytes grow with the batch), 0 when it is
    compute-bound from batch 0, NaN when a roof is unknown or the sweep has a single batch.
    """
    if not (np.isfinite(peak) and np.isfinite(bandwidth) and peak > 0 and bandwidth > 0):
        return float("nan")
    f0, f1 = affine_in_batch(batch, flops)
    b0, b1 = affine_in_batch(batch, nbytes)
    if not np.isfinite(f1):
        return float("nan")
    # memory − compute time at batch M: offset − gain·M, with
    # offset = b0/BW − f0/P and gain = f1/P − b1/BW; the knee is where it changes sign
    gain = f1 / peak - b1 / bandwidth
    offset = b0 / bandwidth - f0 / peak
    if gain > 0:
        return max(offset / gain, 0.0)
    if offset > 0 or (offset == 0 and gain < 0):
        return float("inf")  # memory-bound and the gap never closes
    return offset / gain if gain < 0 else 0.0  # compute-bound at small batch (a rare reversed knee)
