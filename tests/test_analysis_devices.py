"""Datasheet table and runtime-name matching."""

from __future__ import annotations

import pytest

from analysis.devices import DEVICES, get, match_device


@pytest.mark.parametrize("name, key", [
    ("NVIDIA H100 80GB HBM3", "h100-sxm"),
    ("NVIDIA H100 PCIe", "h100-pcie"),
    ("NVIDIA H200", "h200-sxm"),
    ("NVIDIA A100-SXM4-80GB", "a100-80gb-sxm"),
    ("NVIDIA B200", "b200"),
    ("NVIDIA GB200", "gb200"),
    ("NVIDIA GB300", "gb300"),
    ("NVIDIA B300 SXM6 AC", "b300"),
    ("NVIDIA L4", "l4"),
    ("NVIDIA L40S", "l40s"),
    ("AMD Instinct MI300X", "mi300x"),
    ("AMD Instinct MI325X", "mi325x"),
    ("AMD Instinct MI355X", "mi355x"),
    ("NVIDIA RTX PRO 6000 Blackwell Server Edition", "rtx-pro-6000"),
    ("NVIDIA RTX PRO 6000 Blackwell Workstation Edition", "rtx-pro-6000"),
])
def test_runtime_names_match_their_datasheet(name, key):
    assert match_device(name).key == key


@pytest.mark.parametrize("name", [
    "NVIDIA GeForce RTX 4090", "NVIDIA A100-SXM4-40GB", "NVIDIA H100 NVL", "NVIDIA L40", "cpu", "",
    "NVIDIA H100 80GB HBM3 MIG 1g.10gb",
])
def test_unknown_or_other_variants_do_not_match(name):
    assert match_device(name) is None


def test_sm_count_settles_a_plain_name_and_rejects_a_mismatch():
    assert match_device("NVIDIA H100") is None
    assert match_device("NVIDIA H100", sm_count=114).key == "h100-pcie"
    assert match_device("NVIDIA H100", sm_count=132).key == "h100-sxm"
    assert match_device("NVIDIA H100 80GB HBM3", sm_count=66) is None  # a partition does not reach the peaks
    assert match_device("NVIDIA H200", memory_bytes=143_771_000_000, sm_count=132).key == "h200-sxm"


def test_every_figure_names_its_source_and_the_table_matches_the_context_notes():
    for device in DEVICES:
        for figure in ("memory_bytes", "bandwidth", "tensor_flops", "fp32_flops", "l2_bytes", "sm_count"):
            assert device.source(figure), (device.key, figure)
    h100 = get("h100-sxm")
    assert h100.bandwidth == 3.35e12 and h100.tensor("bf16") == 989e12 and h100.tensor("fp8") == 1979e12
    assert h100.tensor("fp32") == h100.tensor("tf32")  # fp32 GEMMs run on tf32 tensor cores
    assert h100.ridge == pytest.approx(295, abs=1)
    assert get("h200-sxm").ridge == pytest.approx(206, abs=1)
    assert get("a100-80gb-sxm").ridge == pytest.approx(153, abs=1)
    assert get("a100-80gb-sxm").tensor("fp8") is None  # no fp8 on Ampere: never guessed


def test_nvlink_figures_are_sourced_and_halved_per_direction():
    assert get("h100-sxm").nvlink == 900e9 and get("h200-sxm").nvlink == 900e9
    assert get("h100-sxm").nvlink_one_way == 450e9
    assert get("b200").nvlink == 1.8e12 and get("a100-80gb-sxm").nvlink == 600e9
    assert get("l4").nvlink is None and get("mi300x").nvlink is None  # not NVLink parts / not given: no guess
    for device in DEVICES:
        if device.nvlink is not None:
            assert device.source("nvlink"), device.key


def test_memory_is_the_bytes_the_gpu_holds():
    """NVIDIA's "80 GB" / "141 GB" are what nvidia-smi shows as 81,559 / 143,771 MiB; B300's "270 GB usable" is its
    288 GB in GiB, not a usable fraction."""
    assert get("h100-sxm").capacity_bytes == 81_559 * 2**20
    assert get("h200-sxm").capacity_bytes == 143_771 * 2**20
    assert get("b300").memory_bytes == 288e9 and get("b300").capacity_bytes == 288e9
    for device in DEVICES:
        assert device.capacity_bytes >= 0.95 * device.memory_bytes, device.key
        assert device.source("capacity_bytes"), device.key


def test_fp4_peaks_only_where_a_datasheet_gives_them():
    assert get("b200").tensor("fp4") == 9e15 and get("gb200").tensor("fp4") == 10e15
    assert get("b300").tensor("fp4") == 13.5e15 and get("gb300").tensor("fp4") == 15e15
    for key in ("h100-sxm", "h200-sxm", "a100-80gb-sxm", "mi300x"):
        assert get(key).tensor("fp4") is None


def test_the_blackwell_and_instinct_additions_carry_every_figure_with_its_source():
    """Issue 24 §4: B300, RTX PRO 6000 Blackwell, MI300X, MI325X, MI355X — bandwidth, bytes, dense bf16/fp8/fp6/fp4,
    the last-level cache, the GPU-to-GPU fabric; a figure no sheet gives stays None."""
    mi300x, mi325x, mi355x, rtx, b300 = (get(k) for k in ("mi300x", "mi325x", "mi355x", "rtx-pro-6000", "b300"))
    assert mi300x.memory_bytes == 192e9 and mi325x.memory_bytes == 256e9 and mi355x.memory_bytes == 288e9
    assert mi300x.bandwidth == 5.3e12 and mi325x.bandwidth == 6.0e12 and mi355x.bandwidth == 8.0e12
    assert mi300x.tensor("bf16") == pytest.approx(1307.4e12) and mi300x.tensor("fp8") == pytest.approx(2614.9e12)
    assert mi300x.tensor("fp6") is None and mi300x.tensor("fp4") is None  # CDNA 3 has no FP6/FP4 matrix rate
    assert mi355x.tensor("fp4") == mi355x.tensor("fp6") == pytest.approx(10066.3e12)
    assert mi300x.l2_bytes == 256e6 == mi355x.l2_bytes and mi300x.sm_count == 304 and mi355x.sm_count == 256
    assert mi300x.infinity_fabric == 896e9 and mi355x.infinity_fabric == pytest.approx(1075.2e9)
    assert mi300x.nvlink is None and mi300x.vendor == "amd" and b300.vendor == "nvidia"
    assert b300.tensor("fp6") == b300.tensor("fp8") == 4.5e15 and get("b200").tensor("fp6") == 4.5e15
    assert rtx.bandwidth == 1.792e12 and rtx.tensor("fp4") == 2e15 and rtx.l2_bytes == 128e6 and rtx.sm_count == 188
    assert rtx.nvlink is None and "derived" in rtx.source("tensor_flops")  # labelled, not passed off as datasheet
    for device in (mi300x, mi325x, mi355x, rtx, b300):
        for figure in ("memory_bytes", "bandwidth", "tensor_flops", "l2_bytes", "sm_count", "capacity_bytes"):
            assert device.source(figure), (device.key, figure)
        if device.tensor("fp6") is not None:
            assert device.source("fp6"), device.key
        if device.infinity_fabric is not None:
            assert "Infinity Fabric" in device.source("infinity_fabric"), device.key
