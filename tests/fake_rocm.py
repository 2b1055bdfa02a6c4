"""A simulated AMD Instinct GPU on a ROCm build of torch, for testing the harness on a CPU.

What would make rooflab's device code wrong on a ROCm node is modelled: ``torch.version.hip`` set and
``torch.version.cuda`` None; torch.cuda answering for the AMD GPU (``get_device_properties`` with a
``gcnArchName`` like ``gfx942:sramecc+:xnack-``, a 64-wide wavefront, 304 compute units and torch's
4 MB L2 — the 256 MB Infinity Cache behind it is not reported); no NVML (``import pynvml`` works but
every call fails, as on a node where nvidia-ml-py is installed without an NVIDIA driver); AMD SMI
present (:class:`FakeAmdSmi`: clocks that move, throttle bits, a power cap in microwatts, a BDF in its
own spelling) or absent, or failing to initialise.
"""

from __future__ import annotations

import itertools
import sys
import types
from enum import Enum

import torch

MI300X_PROPS = dict(name="AMD Instinct MI300X", gcnArchName="gfx942:sramecc+:xnack-", major=9, minor=4,
                    multi_processor_count=304, L2_cache_size=4 << 20, total_memory=205_822_885_888, warp_size=64,
                    uuid="", pci_bus_id=0x0C, pci_device_id=0, pci_domain_id=0, regs_per_multiprocessor=131_072)
MI355X_PROPS = dict(MI300X_PROPS, name="AMD Instinct MI355X", gcnArchName="gfx950:sramecc+:xnack-", minor=5,
                    multi_processor_count=256, total_memory=309_237_645_312)


class _ClkType(Enum):
    GFX = "gfx"
    MEM = "mem"


class _TempType(Enum):
    HOTSPOT = "hotspot"


class _TempMetric(Enum):
    CURRENT = "current"


class FakeAmdSmi(types.ModuleType):
    """The ``amdsmi`` calls rooflab makes, for one GPU at ``bdf``; the GFX clock and the throttle bits
    step through ``clocks`` and ``throttle`` on each read (the last value repeats)."""

    AmdSmiClkType = _ClkType
    AmdSmiTemperatureType = _TempType
    AmdSmiTemperatureMetric = _TempMetric

    def __init__(self, clocks=(2100, 2100), throttle=(0,), bdf="0000:0c:00.0", init_error: str | None = None):
        super().__init__("amdsmi")
        self._clocks = itertools.chain(clocks, itertools.repeat(clocks[-1]))
        self._throttle = itertools.chain(throttle, itertools.repeat(throttle[-1]))
        self.bdf, self.init_error, self.reads = bdf, init_error, 0

    def amdsmi_init(self):
        if self.init_error:
            raise RuntimeError(self.init_error)

    def amdsmi_get_processor_handles(self):
        return ["gpu0"]

    def amdsmi_get_gpu_device_bdf(self, handle):
        return self.bdf

    def amdsmi_get_gpu_device_uuid(self, handle):
        return "1fff74a1-0000-1000-80c2-2bd8a7b2a3c4"

    def amdsmi_get_gpu_driver_info(self, handle):
        return {"driver_name": "amdgpu", "driver_version": "6.8.5"}

    def amdsmi_get_clock_info(self, handle, kind):
        if kind is _ClkType.GFX:
            self.reads += 1
            return {"clk": next(self._clocks), "min_clk": 500, "max_clk": 2100, "clk_locked": False}
        return {"clk": 1300, "min_clk": 900, "max_clk": 1300}

    def amdsmi_get_gpu_metrics_info(self, handle):
        return {"indep_throttle_status": next(self._throttle), "throttle_status": "N/A"}

    def amdsmi_get_power_cap_info(self, handle):
        return {"power_cap": 750_000_000}  # microwatts: 750 W

    def amdsmi_get_temp_metric(self, handle, kind, metric):
        return 61

    def amdsmi_get_gpu_process_list(self, handle):
        return [{"pid": 4242, "memory_usage": {"vram_mem": 1 << 30}}]


def _no_nvml_module() -> types.ModuleType:
    module = types.ModuleType("pynvml")

    def init():
        raise RuntimeError("NVML Shared Library Not Found (no NVIDIA driver on a ROCm node)")

    module.nvmlInit = init
    return module


def install(monkeypatch, props: dict = MI300X_PROPS, amdsmi: FakeAmdSmi | None = None, free_bytes: int | None = None):
    """Make torch look like a ROCm build driving one AMD GPU with ``props``; ``amdsmi`` None: not installed."""
    monkeypatch.setattr(torch.version, "hip", "6.3.42131-fa1d09cbd", raising=False)
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index=0: types.SimpleNamespace(**props))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    total = props["total_memory"]
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index=0: (free_bytes or total, total))
    monkeypatch.setitem(sys.modules, "pynvml", _no_nvml_module())
    monkeypatch.setitem(sys.modules, "amdsmi", amdsmi)  # None in sys.modules: `import amdsmi` raises ImportError
