"""The device a sweep runs on: capabilities for skip rules, and metadata for the run sidecar.

NVML (nvidia-ml-py) supplies clocks and throttle reasons where present; everything else comes from
torch. Clocks are read, never set.
"""

from __future__ import annotations

import platform
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import triton

from kernels.spec import DeviceCaps

INTERPRETER_SLUG = "cpu-interpreter"


def slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'h100-80gb-hbm3': the results directory of a device."""
    text = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return re.sub(r"^nvidia-", "", text) or "unknown-device"


@dataclass(frozen=True)
class Target:
    """Where points run: torch device, capabilities, and the sidecar's description of it."""

    torch_device: torch.device
    caps: DeviceCaps
    slug: str
    metadata: dict[str, Any]


def cuda_available() -> bool:
    return torch.cuda.is_available()


def detect(interpret: bool, index: int = 0) -> Target:
    if interpret:
        caps = DeviceCaps(name="Triton interpreter (CPU)", capability=None, interpret=True,
                          l2_bytes=0, sm_count=0, memory_bytes=0)
        meta = {"name": caps.name, "slug": INTERPRETER_SLUG, "cpu": platform.processor() or platform.machine()}
        return Target(torch.device("cpu"), caps, INTERPRETER_SLUG, meta)
    props = torch.cuda.get_device_properties(index)
    caps = DeviceCaps(name=props.name, capability=(props.major, props.minor), interpret=False,
                      l2_bytes=int(props.L2_cache_size), sm_count=int(props.multi_processor_count),
                      memory_bytes=int(props.total_memory))
    meta = {
        "name": props.name,
        "slug": slug(props.name),
        "index": index,
        "sm_count": caps.sm_count,
        "l2_bytes": caps.l2_bytes,
        "memory_bytes": caps.memory_bytes,
        "capability": list(caps.capability),
        "cuda": torch.version.cuda,
        **nvml_snapshot(index),
    }
    return Target(torch.device("cuda", index), caps, slug(props.name), meta)


def list_devices() -> list[dict[str, Any]]:
    rows = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        rows.append({"index": index, "name": props.name, "slug": slug(props.name),
                     "sm_count": props.multi_processor_count, "l2_mib": props.L2_cache_size / 2**20,
                     "memory_gib": props.total_memory / 2**30, "capability": f"{props.major}.{props.minor}"})
    return rows


def _nvml():
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:
        return None
    return pynvml


# NVML clock-event (throttle) reason bits, named as in nvml.h
_THROTTLE_BITS = {
    0x1: "gpu_idle", 0x2: "app_clocks", 0x4: "sw_power_cap", 0x8: "hw_slowdown", 0x10: "sync_boost",
    0x20: "sw_thermal", 0x40: "hw_thermal", 0x80: "hw_power_brake", 0x100: "display_clocks",
}
_BENIGN = {"gpu_idle", "app_clocks", "sync_boost", "display_clocks"}


def throttle_names(mask: int) -> list[str]:
    """Reasons that lower clocks under load (idle and application-clock bits are not throttling)."""
    return [name for bit, name in _THROTTLE_BITS.items() if mask & bit and name not in _BENIGN]


def nvml_snapshot(index: int = 0) -> dict[str, Any]:
    """Driver, clocks, power and throttle state now; {} without NVML."""
    nvml = _nvml()
    if nvml is None:
        return {"nvml": "unavailable"}
    handle = nvml.nvmlDeviceGetHandleByIndex(index)

    def read(fn, *args):
        try:
            return fn(handle, *args)
        except Exception:
            return None

    reasons = read(getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
                   or nvml.nvmlDeviceGetCurrentClocksThrottleReasons)
    power_limit = read(nvml.nvmlDeviceGetEnforcedPowerLimit)
    driver = nvml.nvmlSystemGetDriverVersion()
    return {
        "driver": driver.decode() if isinstance(driver, bytes) else driver,
        "clocks": {
            "sm_mhz": read(nvml.nvmlDeviceGetClockInfo, nvml.NVML_CLOCK_SM),
            "sm_max_mhz": read(nvml.nvmlDeviceGetMaxClockInfo, nvml.NVML_CLOCK_SM),
            "mem_mhz": read(nvml.nvmlDeviceGetClockInfo, nvml.NVML_CLOCK_MEM),
            "mem_max_mhz": read(nvml.nvmlDeviceGetMaxClockInfo, nvml.NVML_CLOCK_MEM),
        },
        "throttle": throttle_names(reasons or 0),
        "power_limit_w": power_limit / 1000 if power_limit else None,
        "temperature_c": read(nvml.nvmlDeviceGetTemperature, nvml.NVML_TEMPERATURE_GPU),
    }


def clock_and_throttle(index: int = 0) -> tuple[float | None, str]:
    """SM clock (MHz) and throttle reasons now, for a result row."""
    snap = nvml_snapshot(index)
    clocks = snap.get("clocks") or {}
    return clocks.get("sm_mhz"), " ".join(snap.get("throttle") or [])


def software() -> dict[str, str]:
    return {"python": platform.python_version(), "torch": torch.__version__, "triton": triton.__version__,
            "platform": platform.platform()}


def git_commit(root: Path | None = None) -> dict[str, Any]:
    root = root or Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": "", "git_dirty": None}
    return {"git_commit": commit, "git_dirty": bool(dirty)}
