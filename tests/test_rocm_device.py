"""The harness on a ROCm build of torch, on a fake AMD Instinct GPU (tests/fake_rocm.py): detection and
naming, clocks and throttling through AMD SMI (or recorded as not available), the flush sized for the
Infinity Cache, the BLAS the baselines call, the tuning limits, and the smoke suite's harness path."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import triton

from bench import cli, device, rocm, sweep
from kernels import tuning
from tests import fake_node, fake_rocm
from tests.fake_gpu import FakeGpu
from tests.fake_rocm import MI300X_PROPS, MI355X_PROPS, FakeAmdSmi


@pytest.mark.parametrize("props, slug, llc", [(MI300X_PROPS, "mi300x", 256 << 20), (MI355X_PROPS, "mi355x", 256 << 20)])
def test_detect_names_the_amd_gpu_and_sizes_the_flush_for_the_infinity_cache(monkeypatch, props, slug, llc):
    fake_rocm.install(monkeypatch, props=props)
    target = device.detect(interpret=False)
    assert target.slug == slug and target.caps.name == props["name"]
    assert target.caps.l2_bytes == llc  # not torch's 4 MB L2: a flush of 2 × 4 MB would leave data in the cache
    assert target.caps.capability == (9, props["minor"]) and target.caps.sm_count == props["multi_processor_count"]
    meta = target.metadata
    assert meta["hip"].startswith("6.") and meta["cuda"] is None and meta["gfx_arch"] == props["gcnArchName"][:6]
    assert meta["torch_l2_bytes"] == 4 << 20 and "Infinity Cache" in meta["l2_source"] and meta["warp_size"] == 64
    assert meta["blas"] in ("hipBLASLt", "rocBLAS", "composable kernel")
    assert meta["amdsmi"] == "not available" and "clocks" not in meta  # recorded, not a failure
    json.dumps(meta)  # the sidecar can hold it


def test_an_nvidia_device_keeps_its_own_l2_and_names(monkeypatch):
    b200 = dict(name="NVIDIA B200", major=10, minor=0, multi_processor_count=148, L2_cache_size=126_877_696,
                total_memory=191_468_568_576, uuid="GPU-b2", pci_bus_id=1, pci_device_id=0, pci_domain_id=0)
    monkeypatch.setattr(torch.version, "hip", None, raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index=0: type("P", (), b200)())
    monkeypatch.setattr(device, "_nvml", lambda: None)
    target = device.detect(interpret=False)
    assert target.slug == "b200" and target.caps.l2_bytes == 126_877_696 and "hip" not in target.metadata
    assert target.metadata["blas"] in ("cuBLAS", "cuBLASLt")


def test_amd_smi_gives_clocks_power_temperature_and_the_process_list(monkeypatch):
    smi = FakeAmdSmi(clocks=(1900,), throttle=(0,))
    fake_rocm.install(monkeypatch, amdsmi=smi, free_bytes=100 << 30)
    snap = device.nvml_snapshot(0)
    assert snap["smi"] == "amdsmi" and snap["driver"] == "6.8.5"
    assert snap["clocks"] == {"sm_mhz": 1900, "sm_max_mhz": 2100, "mem_mhz": 1300, "mem_max_mhz": 1300}
    assert snap["power_limit_w"] == 750 and snap["temperature_c"] == 61 and snap["throttle"] == []
    line = device.preflight(device.detect(interpret=False))["line"]
    assert "AMD Instinct MI300X" in line and "1900/2100 MHz" in line and "1 other process" not in line
    assert "GiB free" in line and "WARNING" in line  # 100 of 192 GiB free: said


def test_the_gpu_is_found_by_its_pci_address_in_amd_smis_spelling(monkeypatch):
    fake_rocm.install(monkeypatch, amdsmi=FakeAmdSmi(bdf="0000:0d:00.0"))  # another card than torch's 0c
    snap = device.nvml_snapshot(0)
    assert snap["nvml"].startswith("error: LookupError") and "clocks" not in snap


@pytest.mark.parametrize("bits, reasons", [(0, []), (1 << 1, ["sw_power_cap"]), (1 << 17, ["hw_slowdown"]),
                                           (1 << 36, ["sw_thermal"]), ((1 << 3) | (1 << 40), ["sw_power_cap", "sw_thermal"]),
                                           ("N/A", [])])
def test_amd_throttle_bits_map_to_the_reasons_rooflab_names(bits, reasons):
    assert device.throttle_names(rocm.throttle_mask(bits)) == reasons


def test_the_clock_monitor_keeps_the_lowest_gfx_clock_and_every_throttle(monkeypatch):
    smi = FakeAmdSmi(clocks=(2100, 1650, 2100, 2100), throttle=(0, 1 << 33, 0, 0))
    fake_rocm.install(monkeypatch, amdsmi=smi)
    with device.ClockMonitor(0, interval_s=0.001) as monitor:
        while smi.reads < 4:
            pass
    assert monitor.reading.error == ""
    assert monitor.reading.min_sm_mhz == 1650 and monitor.reading.throttle == ["sw_thermal"]


@pytest.mark.parametrize("smi", [None, FakeAmdSmi(init_error="amdsmi_init: AMDSMI_STATUS_DRM_ERROR")])
def test_without_amd_smi_clocks_are_recorded_as_not_available(monkeypatch, smi):
    fake_rocm.install(monkeypatch, amdsmi=smi)
    with device.ClockMonitor(0) as monitor:
        pass
    assert monitor.reading.min_sm_mhz is None and "AMD SMI not available" in monitor.reading.error
    assert device.nvml_snapshot(0) == {"nvml": "not used (ROCm)", "amdsmi": "not available"}
    assert device.clock_and_throttle(0) == (None, "")
    assert "(AMD SMI: not available)" in device.preflight(device.detect(interpret=False))["line"]


class _Utils:
    @staticmethod
    def get_device_properties(index):
        return {"max_shared_mem": 65_536}


class _Driver:
    utils = _Utils()


def test_tuning_limits_on_rocm_have_a_64_wide_wavefront_and_the_cu_counts(monkeypatch):
    fake_rocm.install(monkeypatch)
    monkeypatch.setattr(triton.runtime.driver, "_active", _Driver(), raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    tuning._cuda_limits.cache_clear()
    try:
        limits = tuning.device_limits(0)
    finally:
        tuning._cuda_limits.cache_clear()
    assert limits.warp_size == 64 and limits.amd and limits.arch == "gfx942"
    assert limits.sm_count == 304 and limits.smem_per_block == 65_536 and limits.capability == (9, 4)
    assert limits.registers_per_sm == 131_072 and limits.warp_size == 64


def test_the_smoke_suites_harness_path_runs_on_a_fake_rocm_device(monkeypatch, tmp_path, capsys):
    """Detection, the clock monitor over AMD SMI, the flush size, the sampling loop and the sidecar, on the
    smoke suite's points (kernels on the interpreter, times from the fake device)."""
    smi = FakeAmdSmi(clocks=(2100, 2050), throttle=(0,))
    fake_rocm.install(monkeypatch, amdsmi=smi)
    real_detect = device.detect
    monkeypatch.setattr(device, "cuda_available", lambda: True)
    monkeypatch.setattr(device, "detect", lambda interpret=False, index=0: dataclasses.replace(
        real_detect(False, index), torch_device=torch.device("cpu")))
    flushes = []
    monkeypatch.setattr(sweep, "CudaBackend", lambda l2_bytes, flush=None: flushes.append(l2_bytes) or FakeGpu(seed=0))
    monkeypatch.setattr(sweep, "measure", fake_node._measure)
    monkeypatch.setenv("FAKE_NODE_POINT_S", "0")
    out = tmp_path / "mi300x" / "smoke.csv"
    code = cli.main(["sweep", "--suite", "smoke", "--dtype", "fp32", "--axis", "N=1000", "--out", str(out),
                     "--seed", "3"])
    assert code == 0, capsys.readouterr()
    assert flushes == [256 << 20]  # the backend was sized for the Infinity Cache
    import csv

    rows = list(csv.DictReader(out.open()))
    assert rows and all(row["status"] == "ok" for row in rows), [(r["kernel"], r["status"], r.get("error")) for r in rows]
    assert {row["kernel"] for row in rows} >= {"triad"}
    assert all(float(row["sm_clock_mhz"]) == 2050 for row in rows)  # the lowest clock AMD SMI reported
    sidecars = list(out.parent.glob("*.json"))
    meta = json.loads(sidecars[0].read_text())
    text = json.dumps(meta)
    assert "AMD Instinct MI300X" in text and "gfx942" in text and '"hip"' in text
