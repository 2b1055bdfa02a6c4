"""Clocks and throttling: read from the right GPU, over the sampling window, never failing a point."""

import types

import torch

from bench import device as devices
from bench.device import ClockMonitor, nvml_handle, nvml_snapshot
from bench.suites import Point
from bench.sweep import Runner
from bench.timing import SamplingPolicy
from kernels.spec import DeviceCaps
from kernels.stream import COPY
from tests.fake_gpu import HostClockBackend


class FakeNvml:
    """pynvml's surface as rooflab uses it; clocks and reasons follow a script, one entry per poll."""

    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, clocks=(1980,), reasons=(0,), violations=None, fail_after=None):
        self.clocks, self.reasons = list(clocks), list(reasons)
        self.violations = violations or {}
        self.polls = 0
        self.fail_after = fail_after
        self.by_uuid: list[str] = []
        self.by_pci: list[str] = []

    def nvmlDeviceGetClockInfo(self, handle, which):
        if self.fail_after is not None and self.polls >= self.fail_after:
            raise RuntimeError("NVML_ERROR_GPU_IS_LOST")
        value = self.clocks[min(self.polls, len(self.clocks) - 1)]
        return value

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle):
        value = self.reasons[min(self.polls, len(self.reasons) - 1)]
        self.polls += 1
        return value

    def nvmlDeviceGetViolationStatus(self, handle, policy):
        counts = self.violations.get(policy, [0])
        count = counts.pop(0) if len(counts) > 1 else counts[0]
        return types.SimpleNamespace(violationTime=count, referenceTime=0)

    def nvmlDeviceGetHandleByUUID(self, uuid):
        self.by_uuid.append(uuid)
        return ("uuid", uuid)

    def nvmlDeviceGetHandleByPciBusId_v2(self, pci):
        self.by_pci.append(pci)
        return ("pci", pci)


def test_the_lowest_clock_and_every_reason_over_the_window_are_kept():
    # the clock dips to 1500 MHz with a power cap (0x4) in mid-window, then recovers: a read after
    # the point (the old way) would have seen 1980 MHz and no throttling
    nvml = FakeNvml(clocks=(1980, 1500, 1980, 1980), reasons=(0, 0x4, 0, 0), violations={1: [100, 250]})
    with ClockMonitor(0, interval_s=0.001, nvml=nvml, handle="h") as monitor:
        while nvml.polls < 4:
            pass
    assert monitor.reading.min_sm_mhz == 1500
    assert monitor.reading.throttle == ["sw_power_cap", "thermal"]  # thermal from the violation counter
    assert monitor.reading.error == ""


def test_an_nvml_error_leaves_the_clock_empty_and_says_why():
    nvml = FakeNvml(clocks=(1980,), fail_after=1)
    with ClockMonitor(0, interval_s=0.001, nvml=nvml, handle="h") as monitor:
        while nvml.polls < 3 and not monitor.reading.error:
            pass
    assert monitor.reading.min_sm_mhz is None
    assert "GPU_IS_LOST" in monitor.reading.error


def test_without_nvml_the_monitor_is_a_no_op(monkeypatch):
    monkeypatch.setattr(devices, "_nvml", lambda: None)
    with ClockMonitor(0) as monitor:
        pass
    assert monitor.reading.min_sm_mhz is None and "unavailable" in monitor.reading.error


def _props(**fields):
    return types.SimpleNamespace(**fields)


def test_nvml_handle_is_found_by_uuid_not_by_cuda_index(monkeypatch):
    # under CUDA_VISIBLE_DEVICES=3, CUDA's device 0 is NVML's device 3: the index would name the wrong card
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: _props(uuid="1234-abcd"))
    nvml = FakeNvml()
    assert nvml_handle(nvml, 0) == ("uuid", "GPU-1234-abcd")
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda i: _props(uuid="", pci_bus_id=0x1b, pci_device_id=0, pci_domain_id=0))
    assert nvml_handle(nvml, 0) == ("pci", "00000000:1B:00.0")


def test_nvml_trouble_never_aborts_detect_or_a_snapshot(monkeypatch):
    class Broken(FakeNvml):
        def nvmlDeviceGetHandleByUUID(self, uuid):
            raise RuntimeError("NVML_ERROR_NOT_FOUND")

        def nvmlSystemGetDriverVersion(self):
            raise RuntimeError("NVML_ERROR_UNINITIALIZED")

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: _props(uuid="x"))
    monkeypatch.setattr(devices, "_nvml", lambda: Broken())
    snapshot = nvml_snapshot(0)
    assert snapshot["nvml"].startswith("error: RuntimeError")


def test_a_sweep_with_broken_nvml_still_measures_and_the_sidecar_says_why(tmp_path):
    caps = DeviceCaps(name="Fake GPU", capability=(9, 0), interpret=False, l2_bytes=1 << 20, sm_count=132,
                      memory_bytes=1 << 40)
    target = devices.Target(torch.device("cpu"), caps, "fake-gpu", {"name": "Fake GPU"})
    broken = FakeNvml(fail_after=0)
    policy = SamplingPolicy(warmup_runs=1, warmup_s=0.0, min_samples=3, min_time_s=0.0, timeout_s=0.05)
    runner = Runner(target, policy, 7, backend=HostClockBackend(),
                    monitor=lambda: ClockMonitor(0, interval_s=0.001, nvml=broken, handle="h"))
    row = runner.row(Point(COPY.case("fp32", N=1000), "torch"), {})
    assert row["status"] == "ok" and row["median_s"] > 0
    assert row["sm_clock_mhz"] is None
    assert runner.nvml_errors and "GPU_IS_LOST" in next(iter(runner.nvml_errors))


def test_the_commit_the_caller_names_wins_over_a_stale_git(tmp_path, monkeypatch):
    """A lent machine's copy carried a stale .git (HEAD = the session's first commit): the sidecar named it."""
    import subprocess

    from bench.device import git_commit

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q",
                    "--allow-empty", "-m", "stale"], check=True)
    monkeypatch.setenv("ROOFLAB_GIT_COMMIT", "6c6b10d7")
    meta = git_commit(tmp_path)
    assert meta["git_commit"] == "6c6b10d7" and meta["git_commit_source"] == "ROOFLAB_GIT_COMMIT"
    assert len(meta["git_commit_seen"]) == 40
    monkeypatch.delenv("ROOFLAB_GIT_COMMIT")
    assert git_commit(tmp_path)["git_commit"] == meta["git_commit_seen"]
