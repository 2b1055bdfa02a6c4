"""Kernel time from the GPU's own timestamps: which kernels of a traced stretch belong to the timed closure.

A kernel pass enqueues, per sample: [L2 flush] → mark → the closure (R launches, stream or graph) →
mark. The device records each kernel's start and end (CUPTI activity records on a GPU, the simulated
clock in the tests). Every kernel strictly between a pair of marks is the closure's, whatever its
name — a baseline that launches three kernels is charged all three — and nothing outside (the
flush, the hold, the marks) is. What a sample then costs is the sum of those kernels' durations:
no node gaps, no graph start-up, no event latency or resolution.

Anything that does not parse cleanly (marks missing or unpaired, an empty pair) gives ``None``: the
caller falls back to the event timer and says so in the row (``timer``), never a guess.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Iterable

import numpy as np

MARK_NAME = "_rooflab_timeline_mark_kernel"  # the Triton kernel that brackets each sample (bench/cuda_backend.py)


class Timer(str, Enum):
    KERNEL = "kernel"  # sum of the closure's kernel durations from device timestamps (CUPTI)
    EVENT = "event"  # CUDA events around the sample ÷ R: includes node gaps, graph start-up, event latency


class TimeFigure(str, Enum):
    """Which time a family's rows report as median_s."""

    KERNEL = "kernel"  # the work itself: every bandwidth and FLOP/s family
    EVENT = "event"  # the launch ceiling: the cost of launching is the figure, gaps included


@dataclass(frozen=True)
class KernelRecord:
    name: str
    start_s: float  # device timestamps
    end_s: float


@dataclass(frozen=True)
class KernelPass:
    """Per sample, the summed duration of the closure's kernels, and what lay between them."""

    per_sample_s: tuple[float, ...]
    kernels_per_sample: int  # the most seen in one sample
    gap_s: float  # median idle time between consecutive closure kernels of one sample (nan: one kernel)
    lead_s: float  # median time from the opening mark's end to the first closure kernel's start


def closure_pass(records: Iterable[KernelRecord], samples: int, mark: str = MARK_NAME) -> KernelPass | None:
    """The closure's kernels per sample, or None when the trace does not hold exactly ``samples`` bracketed samples."""
    ordered = sorted(records, key=lambda r: (r.start_s, r.end_s))
    marks = [i for i, r in enumerate(ordered) if r.name == mark or mark in r.name]
    if samples < 1 or len(marks) != 2 * samples:
        return None
    per_sample, gaps, leads, most = [], [], [], 0
    for opening, closing in zip(marks[0::2], marks[1::2]):
        inside = ordered[opening + 1:closing]
        if not inside or any(r.end_s < r.start_s for r in inside):
            return None
        per_sample.append(sum(r.end_s - r.start_s for r in inside))
        gaps += [max(0.0, b.start_s - a.end_s) for a, b in zip(inside, inside[1:])]
        leads.append(max(0.0, inside[0].start_s - ordered[opening].end_s))
        most = max(most, len(inside))
    return KernelPass(tuple(per_sample), most, float(np.median(gaps)) if gaps else math.nan,
                      float(np.median(leads)))
