"""pytest-benchmark set-up for the GPU benchmarks: the GPU goes into the saved machine_info."""

from __future__ import annotations

STABLE_KEYS = ("name", "slug", "sm_count", "memory_bytes", "l2_bytes", "capability", "cuda", "driver")


def pytest_benchmark_update_machine_info(config, machine_info):
    """Describe the GPU beside pytest-benchmark's host description; it warns when a comparison crosses
    machines. Only fields that identify the device and its software: clocks and temperatures change
    from run to run and would make every comparison warn."""
    import torch

    if not torch.cuda.is_available():
        return
    from bench import device

    meta = device.detect(interpret=False).metadata
    software = device.software()
    machine_info["gpu"] = {key: meta.get(key) for key in STABLE_KEYS}
    machine_info["gpu"].update(torch=software["torch"], triton=software["triton"])
