"""AMD SMI behind NVML's calls: clocks, throttling, power and processes of an AMD GPU on a ROCm torch.

:mod:`bench.device` reads clocks and throttle reasons through the NVML calls it knows; on a ROCm build
of torch there is no NVML, so :func:`amd_smi` answers the same calls from AMD SMI (the ``amdsmi``
Python package shipped with ROCm 6), or None when it is absent or will not start — the sidecar then
says AMD SMI was not available and nothing fails. Only the calls ``bench.device`` makes are here.

Throttle reasons come from the GPU metrics' ``indep_throttle_status`` bits (Linux amdgpu
``SMU_THROTTLER_*``: bits 0–15 power limits, 16–31 current limits, 32–47 temperatures and VR hot,
56+ other), mapped onto NVML's bits so one list of reasons names both vendors' slowdowns.
"""

from __future__ import annotations

from typing import Any

# NVML throttle bits (nvml.h) the AMD reasons map onto
_SW_POWER_CAP, _HW_SLOWDOWN, _SW_THERMAL = 0x4, 0x8, 0x20
_AMD_GROUPS = ((0, 16, _SW_POWER_CAP), (16, 32, _HW_SLOWDOWN), (32, 48, _SW_THERMAL), (56, 64, _HW_SLOWDOWN))


def throttle_mask(indep: Any) -> int:
    """NVML-style throttle mask from AMD's independent throttle status bits (0: none or not reported)."""
    try:
        bits = int(indep)
    except (TypeError, ValueError):  # "N/A" on boards that do not report it
        return 0
    mask = 0
    for low, high, nvml_bit in _AMD_GROUPS:
        if bits & (((1 << (high - low)) - 1) << low):
            mask |= nvml_bit
    return mask


def _bdf(text: str) -> tuple[int, int, int, int]:
    """'0000:0c:00.0' or '00000000:0C:00.0' -> (domain, bus, device, function)."""
    domain, bus, rest = str(text).strip().split(":")
    device, function = rest.split(".")
    return int(domain, 16), int(bus, 16), int(device, 16), int(function, 16)


def _clock(info: dict, *names: str):
    for name in names:
        value = info.get(name)
        if isinstance(value, (int, float)):
            return value
    return None


class AmdSmi:
    """The NVML calls ``bench.device`` makes, answered by AMD SMI (``smi`` is the imported module)."""

    NVML_CLOCK_SM = "gfx"
    NVML_CLOCK_MEM = "mem"
    NVML_TEMPERATURE_GPU = "hotspot"
    name = "AMD SMI"

    def __init__(self, smi):
        self.smi = smi

    def _handles(self) -> list:
        return list(self.smi.amdsmi_get_processor_handles())

    def nvmlDeviceGetHandleByUUID(self, uuid: str):
        want = uuid.lower().removeprefix("gpu-")
        for handle in self._handles():
            if str(self.smi.amdsmi_get_gpu_device_uuid(handle)).lower().removeprefix("gpu-") == want:
                return handle
        raise LookupError(f"AMD SMI knows no GPU with UUID {uuid}")

    def nvmlDeviceGetHandleByPciBusId_v2(self, pci: str):
        want = _bdf(pci)
        for handle in self._handles():
            if _bdf(self.smi.amdsmi_get_gpu_device_bdf(handle)) == want:
                return handle
        raise LookupError(f"AMD SMI knows no GPU at PCI {pci}")

    def nvmlSystemGetDriverVersion(self) -> str:
        handles = self._handles()
        info = self.smi.amdsmi_get_gpu_driver_info(handles[0]) if handles else {}
        return str(info.get("driver_version", "")) or "unknown"

    def nvmlDeviceGetUUID(self, handle) -> str:
        return str(self.smi.amdsmi_get_gpu_device_uuid(handle))

    def _clock_info(self, handle, kind: str) -> dict:
        kinds = self.smi.AmdSmiClkType
        return self.smi.amdsmi_get_clock_info(handle, kinds.GFX if kind == "gfx" else kinds.MEM)

    def nvmlDeviceGetClockInfo(self, handle, kind: str):
        value = _clock(self._clock_info(handle, kind), "clk", "cur_clk", "current_clk")
        if value is None:
            raise LookupError(f"AMD SMI reports no current {kind} clock")
        return value

    def nvmlDeviceGetMaxClockInfo(self, handle, kind: str):
        value = _clock(self._clock_info(handle, kind), "max_clk")
        if value is None:
            raise LookupError(f"AMD SMI reports no maximum {kind} clock")
        return value

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle) -> int:
        metrics = self.smi.amdsmi_get_gpu_metrics_info(handle)
        return throttle_mask(metrics.get("indep_throttle_status"))

    def nvmlDeviceGetEnforcedPowerLimit(self, handle):
        """Milliwatts, as NVML gives it (AMD SMI's power cap is in microwatts)."""
        cap = self.smi.amdsmi_get_power_cap_info(handle).get("power_cap")
        return None if cap is None else cap / 1000

    def nvmlDeviceGetTemperature(self, handle, kind: str):
        smi = self.smi
        return smi.amdsmi_get_temp_metric(handle, smi.AmdSmiTemperatureType.HOTSPOT,
                                          smi.AmdSmiTemperatureMetric.CURRENT)

    def nvmlDeviceGetComputeRunningProcesses(self, handle) -> list:
        return [_Process(p) for p in self.smi.amdsmi_get_gpu_process_list(handle)]

    def nvmlDeviceGetViolationStatus(self, handle, policy):
        raise NotImplementedError("AMD SMI has no violation counters; throttle bits are polled instead")


class _Process:
    def __init__(self, info):
        info = info if isinstance(info, dict) else {}
        self.pid = info.get("pid")
        memory = info.get("memory_usage") or {}
        self.usedGpuMemory = memory.get("vram_mem") if isinstance(memory, dict) else None


def amd_smi():
    """An :class:`AmdSmi` over the ``amdsmi`` package, or None when it is absent or will not initialise."""
    try:
        import amdsmi
    except ImportError:
        return None
    try:
        amdsmi.amdsmi_init()
    except Exception:
        return None
    return AmdSmi(amdsmi)
