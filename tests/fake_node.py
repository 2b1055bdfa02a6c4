"""`python -m tests.fake_node <rooflab arguments>`: the rooflab CLI on a simulated H200 node.

For testing what runs around the harness on a GPU machine (``.ci/gpu-contact``, the plan, the
report) on a CPU: CUDA reports present; the target is an H200-like device whose kernels run on
Triton's interpreter (so the correctness gate is real); each point's timing is the real sampling
loop on :class:`tests.fake_gpu.FakeGpu` (a stub clock), after ``FAKE_NODE_POINT_S`` seconds of wall
time, so a plan takes long enough to be killed in the middle. The plan's stages are cut to the
smoke suite's first ``FAKE_NODE_POINTS`` points. ``FAKE_NODE_HANG_AT=N``: the N-th timed point
hangs and ignores SIGINT, as a kernel stuck on a GPU does.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time

os.environ["TRITON_INTERPRET"] = "1"  # before any kernel module is imported

import torch  # noqa: E402

from bench import cli, device, plan, sweep  # noqa: E402
from bench.suites import expand, get_suite  # noqa: E402
from bench.timing import Copies, measure  # noqa: E402
from kernels.spec import DeviceCaps  # noqa: E402
from tests.fake_gpu import FakeGpu  # noqa: E402

CAPS = DeviceCaps(name="NVIDIA H200", capability=(9, 0), interpret=False, l2_bytes=60 << 20, sm_count=132,
                  memory_bytes=143_771 << 20)
_timed = 0


def _target(interpret: bool = False, index: int = 0) -> device.Target:
    meta = {"name": CAPS.name, "slug": "fake-h200", "index": index, "sm_count": CAPS.sm_count,
            "l2_bytes": CAPS.l2_bytes, "memory_bytes": CAPS.memory_bytes, "capability": list(CAPS.capability),
            "uuid": "GPU-fake", "nvml": "unavailable (fake node)"}
    return device.Target(torch.device("cpu"), CAPS, "fake-h200", meta)


class _Monitor:
    def __init__(self, *args, **kwargs):
        self.reading = device.ClockReading(min_sm_mhz=1980.0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def _measure(run, backend, policy, copies=None, figure=None, after=None):
    """The real sampling loop, on a fake device with Hopper-like overheads, after some wall time."""
    global _timed
    _timed += 1
    if str(_timed) == os.environ.get("FAKE_NODE_HANG_AT"):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        time.sleep(3600)
    time.sleep(float(os.environ.get("FAKE_NODE_POINT_S", "0.5")))
    gpu = FakeGpu(cold_s=8e-6, warm_s=8e-6, noise=0.01, node_gap_s=0.8e-6, graph_startup_s=2e-6,
                  event_resolution_s=0.5e-6, seed=_timed)
    measured = measure(gpu.kernel, gpu, policy, Copies(gpu.copies, least=1, most=1000), *([figure] if figure else []))
    # the check after timing runs on the real closure (the fake device only times)
    return dataclasses.replace(measured, after_check=after(run) if after else "")


def _stages() -> list[plan.Stage]:
    count = int(os.environ.get("FAKE_NODE_POINTS", "8"))
    points = tuple(p for p in expand(get_suite("smoke").sweeps) if p.kernel != "launch")[:count]
    half = max(1, len(points) // 2)
    return [plan.Stage("headline", points[:half], tuple(1 for _ in points[:half])),
            plan.Stage("headline-repeat", points[:2]), plan.Stage("smoke", points[half:])]


def install() -> None:
    device.cuda_available = lambda: True
    device.detect = _target
    device.preflight = lambda target: {"line": "NVIDIA H200 (fake node), nothing else running", "warnings": []}
    device.ClockMonitor = _Monitor
    device.nvml_snapshot = lambda index=0: {"nvml": "unavailable (fake node)"}
    sweep.CudaBackend = lambda l2_bytes, flush=None: FakeGpu(seed=0)
    sweep.measure = _measure
    plan.stages = _stages


if __name__ == "__main__":
    install()
    sys.exit(cli.main(sys.argv[1:]))
