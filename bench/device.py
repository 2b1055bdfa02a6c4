"""The device a sweep runs on: capabilities for skip rules, and metadata for the run sidecar.

NVML (nvidia-ml-py) supplies clocks and throttle reasons on NVIDIA GPUs where present; on a ROCm build
of torch (``torch.version.hip``) AMD SMI (the ``amdsmi`` package) does, where present, else the
sidecar says it was not available (never a failure). Everything else comes from torch. Clocks are
read, never set. The L2 flush is sized for the device's last-level cache: torch reports an MI300X's
4 MB L2, but 256 MB of Infinity Cache sits behind it (:func:`last_level_cache`).
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import triton

from kernels.spec import DeviceCaps

INTERPRETER_SLUG = "cpu-interpreter"


def slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'h100-80gb-hbm3', 'AMD Instinct MI300X' -> 'mi300x': a device's results directory."""
    text = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return re.sub(r"^(nvidia-|amd-instinct-|amd-)", "", text) or "unknown-device"


def rocm() -> bool:
    """True on a ROCm build of torch (torch.cuda drives an AMD GPU through HIP)."""
    return bool(getattr(torch.version, "hip", None))


# Last-level caches torch does not report (its L2_cache_size is the L2 in front of them), by gfx target.
# AMD Instinct MI300 CDNA3 whitepaper and the MI300X/MI325X data sheets: 256 MB AMD Infinity Cache; CDNA4
# whitepaper (MI350 series): 256 MB Infinity Cache.
INFINITY_CACHE = {"gfx942": (256 << 20, "AMD CDNA3 whitepaper: 256 MB Infinity Cache (MI300X/MI325X)"),
                  "gfx950": (256 << 20, "AMD CDNA4 whitepaper: 256 MB Infinity Cache (MI355X)")}


def gfx_arch(props) -> str:
    """'gfx942:sramecc+:xnack-' -> 'gfx942' ('' on NVIDIA)."""
    return str(getattr(props, "gcnArchName", "") or "").split(":")[0]


def last_level_cache(props) -> tuple[int, str]:
    """Bytes of the last cache before DRAM, and where the figure comes from: torch's L2, or the Infinity
    Cache behind it on AMD Instinct (B200's 126 MB L2 is its last level and torch reports it)."""
    l2 = int(props.L2_cache_size)
    extra = INFINITY_CACHE.get(gfx_arch(props)) if rocm() else None
    if extra and extra[0] > l2:
        return extra[0], extra[1]
    return l2, "torch L2_cache_size"


def blas_library() -> str:
    """Which vendor BLAS torch.matmul calls: the baselines' library (hipBLASLt/rocBLAS on ROCm)."""
    try:
        preferred = str(torch.backends.cuda.preferred_blas_library()).lower()
    except Exception:  # older torch or no BLAS choice exposed
        preferred = ""
    lt = "lt" in preferred
    if rocm():
        return "hipBLASLt" if lt else ("composable kernel" if "ck" in preferred else "rocBLAS")
    return "cuBLASLt" if lt else "cuBLAS"


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
    llc, llc_source = last_level_cache(props)
    caps = DeviceCaps(name=props.name, capability=(props.major, props.minor), interpret=False,
                      l2_bytes=llc, sm_count=int(props.multi_processor_count),
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
        "uuid": _torch_uuid(props),
        "visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        "blas": blas_library(),
        **({"hip": torch.version.hip, "gfx_arch": gfx_arch(props), "torch_l2_bytes": int(props.L2_cache_size),
            "l2_source": llc_source, "warp_size": int(getattr(props, "warp_size", 64) or 64),
            "visible_devices": os.environ.get("HIP_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES", ""))}
           if rocm() else {}),
        **nvml_snapshot(index),
    }
    return Target(torch.device("cuda", index), caps, slug(props.name), meta)


def _torch_uuid(props) -> str:
    uuid = str(getattr(props, "uuid", "") or "")
    return uuid if not uuid or uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"


def gpu_label(target: Target) -> str:
    """What a result row says measured it: the GPU's UUID, else cuda:<index>; "cpu" under the interpreter."""
    if target.caps.interpret:
        return "cpu"
    return target.metadata.get("uuid") or f"cuda:{target.torch_device.index or 0}"


def list_devices() -> list[dict[str, Any]]:
    rows = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        rows.append({"index": index, "name": props.name, "slug": slug(props.name), "uuid": _torch_uuid(props),
                     "sm_count": props.multi_processor_count, "l2_mib": props.L2_cache_size / 2**20,
                     "memory_gib": props.total_memory / 2**30, "capability": f"{props.major}.{props.minor}"})
    return rows


def _nvml():
    """NVML, or on a ROCm torch AMD SMI answering NVML's calls (:mod:`bench.rocm`); None: neither here."""
    if rocm():
        from bench.rocm import amd_smi

        return amd_smi()
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:
        return None
    return pynvml


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


def nvml_handle(nvml, index: int):
    """NVML's handle of CUDA device ``index``, found by UUID, else PCI bus id — never by NVML's own index,
    which names another card when CUDA_VISIBLE_DEVICES reorders or hides GPUs."""
    props = torch.cuda.get_device_properties(index)
    uuid = str(getattr(props, "uuid", "") or "")
    if uuid:
        try:
            return nvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}")
        except Exception:
            pass
    bus = getattr(props, "pci_bus_id", None)
    if bus is not None:
        pci = f"{getattr(props, 'pci_domain_id', 0):08X}:{bus:02X}:{getattr(props, 'pci_device_id', 0):02X}.0"
        return nvml.nvmlDeviceGetHandleByPciBusId_v2(pci)
    raise RuntimeError("torch reports neither a UUID nor a PCI bus id for this device")


# NVML clock-event (throttle) reason bits, named as in nvml.h
_THROTTLE_BITS = {
    0x1: "gpu_idle", 0x2: "app_clocks", 0x4: "sw_power_cap", 0x8: "hw_slowdown", 0x10: "sync_boost",
    0x20: "sw_thermal", 0x40: "hw_thermal", 0x80: "hw_power_brake", 0x100: "display_clocks",
}
_BENIGN = {"gpu_idle", "app_clocks", "sync_boost", "display_clocks"}
# NVML violation counters (nanoseconds spent held below the requested clock), by perf policy
_VIOLATIONS = {0: "power", 1: "thermal", 3: "board_limit", 5: "reliability"}


def throttle_names(mask: int) -> list[str]:
    """Reasons that lower clocks under load (idle and application-clock bits are not throttling)."""
    return [name for bit, name in _THROTTLE_BITS.items() if mask & bit and name not in _BENIGN]


def nvml_snapshot(index: int = 0) -> dict[str, Any]:
    """Driver, clocks, power and throttle state now; says why when NVML cannot tell."""
    nvml = _nvml()
    if nvml is None:
        return {"nvml": "unavailable"} if not rocm() else {"nvml": "not used (ROCm)", "amdsmi": "not available"}
    try:
        handle = nvml_handle(nvml, index)
        driver = nvml.nvmlSystemGetDriverVersion()
    except Exception as exc:
        return {"nvml": f"error: {_first_line(exc)}"}

    def read(fn, *args):
        try:
            return fn(handle, *args)
        except Exception:
            return None

    reasons = read(getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
                   or nvml.nvmlDeviceGetCurrentClocksThrottleReasons)
    power_limit = read(nvml.nvmlDeviceGetEnforcedPowerLimit)
    uuid = read(nvml.nvmlDeviceGetUUID)
    return {
        **({"smi": "amdsmi"} if rocm() else {}),
        "driver": driver.decode() if isinstance(driver, bytes) else driver,
        "uuid": uuid.decode() if isinstance(uuid, bytes) else uuid,
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


@dataclass
class ClockReading:
    """What a :class:`ClockMonitor` saw over one sampling window."""

    min_sm_mhz: float | None = None
    throttle: list[str] = field(default_factory=list)
    error: str = ""  # why NVML could not say; the clock columns stay empty


class ClockMonitor:
    """The lowest SM clock and every throttle reason over a window (a sampling of one point).

    A thread polls NVML's SM clock and clock-event reasons every ``interval_s``; NVML's violation
    counters, read at both ends, add any power/thermal slowdown shorter than a poll. NVML errors
    never fail a point: the reading says why and holds no clock.
    """

    def __init__(self, index: int, interval_s: float = 0.01, nvml=None, handle=None):
        self.interval_s = interval_s
        self.reading = ClockReading()
        self._nvml = nvml if nvml is not None else _nvml()
        self._handle = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mask = 0
        self._violations: dict[int, int] = {}
        if self._nvml is None:
            self.reading.error = ("AMD SMI not available (amdsmi not installed or no driver)" if rocm() else
                                  "NVML unavailable (nvidia-ml-py not installed or no driver)")
            return
        try:
            self._handle = handle if handle is not None else nvml_handle(self._nvml, index)
        except Exception as exc:
            self.reading.error = f"NVML: {_first_line(exc)}"

    def _violation_times(self) -> dict[int, int]:
        times = {}
        for policy in _VIOLATIONS:
            try:
                times[policy] = int(self._nvml.nvmlDeviceGetViolationStatus(self._handle, policy).violationTime)
            except Exception:
                pass  # not every board reports every counter
        return times

    def _poll(self) -> None:
        nvml, handle = self._nvml, self._handle
        reasons = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
            nvml.nvmlDeviceGetCurrentClocksThrottleReasons
        try:
            clock = nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)
            self._mask |= int(reasons(handle))
        except Exception as exc:
            self.reading.error = self.reading.error or f"NVML: {_first_line(exc)}"
            return
        low = self.reading.min_sm_mhz
        self.reading.min_sm_mhz = clock if low is None else min(low, clock)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._poll()

    def __enter__(self) -> "ClockMonitor":
        if self._handle is None:
            return self
        self._violations = self._violation_times()
        self._poll()
        self._thread = threading.Thread(target=self._run, name="rooflab-clocks", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is None:
            return
        self._stop.set()
        self._thread.join()
        self._poll()
        after = self._violation_times()
        names = throttle_names(self._mask)
        names += [_VIOLATIONS[p] for p, t in after.items() if t > self._violations.get(p, t)]
        self.reading.throttle = sorted(set(names))
        if self.reading.error:
            self.reading.min_sm_mhz = None  # a partial reading would claim more than NVML told


def preflight(target: Target) -> dict[str, Any]:
    """The card as found before a plan: clocks, throttling, temperature, free memory, other processes.

    Nothing is changed (clocks are never set); the line says what would skew the numbers.
    """
    index = target.torch_device.index or 0
    snap = nvml_snapshot(index)
    free, total = torch.cuda.mem_get_info(index)
    others: list[dict[str, Any]] | str = []
    nvml = _nvml()
    if nvml is not None:
        try:
            handle = nvml_handle(nvml, index)
            others = [{"pid": p.pid, "used_bytes": getattr(p, "usedGpuMemory", None)}
                      for p in nvml.nvmlDeviceGetComputeRunningProcesses(handle)]
        except Exception as exc:
            others = f"unknown ({_first_line(exc)})"
    clocks = snap.get("clocks") or {}
    warnings = []
    if snap.get("throttle"):
        warnings.append(f"throttled now: {', '.join(snap['throttle'])}")
    if isinstance(others, list) and len(others) > 1:  # this process is one of them
        warnings.append(f"{len(others) - 1} other process(es) on the GPU")
    if free < 0.9 * total:
        warnings.append(f"only {free / 2**30:.0f} of {total / 2**30:.0f} GiB free")
    line = (f"{target.metadata.get('name')} (cuda:{index}) SM {clocks.get('sm_mhz')}/{clocks.get('sm_max_mhz')} MHz, "
            f"memory {clocks.get('mem_mhz')}/{clocks.get('mem_max_mhz')} MHz, {snap.get('temperature_c')} °C, "
            f"power limit {snap.get('power_limit_w')} W, {free / 2**30:.0f} GiB free"
            + (f" — WARNING: {'; '.join(warnings)}" if warnings else ", nothing else running, no throttling")
            + (f" (AMD SMI: {snap['amdsmi']})" if "amdsmi" in snap else
               "" if "nvml" not in snap else f" (NVML: {snap['nvml']})"))
    return {"line": line, "nvml": snap, "free_bytes": free, "total_bytes": total, "processes": others,
            "warnings": warnings}


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
        commit, dirty = "", None
    told = os.environ.get("ROOFLAB_GIT_COMMIT", "").strip()
    if told:
        # a copy of the checkout (a lent machine) may carry no .git, or a stale one: the caller says which
        # commit the files are, and what git saw there is kept beside it
        return {"git_commit": told, "git_dirty": None, "git_commit_source": "ROOFLAB_GIT_COMMIT",
                "git_commit_seen": commit, "git_dirty_seen": bool(dirty) if dirty is not None else None}
    return {"git_commit": commit, "git_dirty": bool(dirty) if dirty is not None else None}
