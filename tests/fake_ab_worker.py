"""`python -m tests.fake_ab_worker CONFIG`: one side of ``rooflab ab`` on a simulated GPU.

The real worker (:mod:`bench.ab_worker`: this revision's kernels, the real gate under Triton's
interpreter, the real sampler) with :mod:`tests.fake_node`'s H200-like device, and every repeat timed
by the real sampling loop on a :class:`tests.fake_gpu.FakeGpu` whose kernel takes ``KERNEL_S`` ×
the revision's slowdown × a drift of ±4 % over wall time (shared by both sides' processes, as one
GPU's clocks are) × 2 % gaussian noise. ``FAKE_GPU_CRASH = ("copy/triton",)`` kills the worker when it
starts sampling that point. A revision injects a slowdown by defining, in its
``kernels/__init__.py``, ``FAKE_GPU_SLOWDOWN = {"copy": 1.1}`` (kernel family, or "family/impl", → factor).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import random
import sys
import time

KERNEL_S = 150e-6
NOISE = 0.02
DRIFT = 0.04
DRIFT_PERIOD_S = 0.7
_current = {"kernel": "", "impl": ""}
_calls = itertools.count(1)


def _slowdown() -> float:
    import kernels

    table = getattr(kernels, "FAKE_GPU_SLOWDOWN", {})
    return float(table.get(f"{_current['kernel']}/{_current['impl']}", table.get(_current["kernel"], 1.0)))


def _setup() -> None:
    from bench import ab_worker, timing
    from tests import fake_node
    from tests.fake_gpu import FakeGpu

    fake_node.install()
    real_measure = timing.measure
    rng = random.Random(time.time_ns())

    def duration(gpu) -> float:
        drift = 1 + DRIFT * math.sin(2 * math.pi * time.time() / DRIFT_PERIOD_S)
        return KERNEL_S * _slowdown() * drift * max(0.05, 1 + rng.gauss(0.0, NOISE))

    def measure(run, backend, policy, copies=None, figure=None, after=None):
        import kernels

        if f"{_current['kernel']}/{_current['impl']}" in getattr(kernels, "FAKE_GPU_CRASH", ()):
            os._exit(9)  # as a lost CUDA context takes a process down mid-sample
        gpu = FakeGpu(duration=duration, event_resolution_s=0.5e-6, seed=next(_calls))
        measured = real_measure(gpu.kernel, gpu, policy, None, *([figure] if figure else []))
        return dataclasses.replace(measured, after_check=after(run) if after else "")

    timing.measure = measure
    prepare = ab_worker.Worker.prepare

    def remember(self, key):
        _current["kernel"], _current["impl"] = key[0], key[1]
        return prepare(self, key)

    ab_worker.Worker.prepare = remember


if __name__ == "__main__":
    from bench.ab_worker import main

    main(sys.argv[1:], setup=_setup)
