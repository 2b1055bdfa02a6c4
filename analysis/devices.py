"""Datasheet peaks of the GPUs the project may meet, and matching a runtime device name to one.

Figures are dense (NVIDIA's headline tensor figures are 2:4-sparse, i.e. twice these), per GPU, in
SI units (bytes/s, FLOP/s, bytes). Every figure names its source in ``sources``; the table was
collected in /work/shared/CONTEXT.md ("D" rows: vendor datasheets). A figure the datasheet does not
give is ``None``, never guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

TB = 1e12
TFLOP = 1e12
GB = 1e9
MB = 1e6

A100_DS = "NVIDIA A100 Tensor Core GPU datasheet (nvidia.com/en-us/data-center/a100)"
H100_DS = "NVIDIA H100 Tensor Core GPU datasheet (nvidia.com/en-us/data-center/h100)"
H200_DS = "NVIDIA H200 Tensor Core GPU datasheet (nvidia.com/en-us/data-center/h200)"
HOPPER_WP = "NVIDIA H100 Tensor Core GPU Architecture whitepaper (L2 size, SM counts)"
B200_DS = "NVIDIA HGX B200 datasheet, per GPU (nvidia.com/en-us/data-center/hgx)"
GB200_DS = "NVIDIA GB200 NVL72 datasheet, per GPU (nvidia.com/en-us/data-center/gb200-nvl72)"
B300_DS = "NVIDIA HGX B300 datasheet, per GPU (nvidia.com/en-us/data-center/hgx)"
L4_DS = "NVIDIA L4 Tensor Core GPU datasheet (nvidia.com/en-us/data-center/l4)"
L40S_DS = "NVIDIA L40S datasheet (nvidia.com/en-us/data-center/l40s)"
ADA_WP = "NVIDIA Ada GPU Architecture whitepaper (L2 size, SM counts)"
MI300X_DS = "AMD Instinct MI300X data sheet (amd.com/en/products/accelerators/instinct/mi300/mi300x.html)"
MI325X_DS = "AMD Instinct MI325X data sheet (amd.com/en/products/accelerators/instinct/mi300/mi325x.html)"
MI355X_DS = "AMD Instinct MI355X data sheet (amd.com/en/products/accelerators/instinct/mi350/mi355x.html)"
CDNA3_WP = "AMD CDNA 3 architecture whitepaper: 304 CUs, 256 MB AMD Infinity Cache (last level, in front of HBM)"
CDNA4_WP = "AMD CDNA 4 architecture whitepaper: 256 CUs, 256 MB AMD Infinity Cache (last level)"
MI300X_IF = "AMD Instinct MI300X data sheet: 7 Infinity Fabric links × 128 GB/s = 896 GB/s peak, both directions"
MI355X_IF = "AMD Instinct MI355X data sheet: 7 Infinity Fabric links × 153.6 GB/s = 1,075 GB/s peak, both directions"
AMD_FP6 = "AMD CDNA 4 whitepaper / MI355X data sheet: FP6 and FP4 matrix at the same rate, 10.1 PFLOPS dense"
RTX_PRO_DS = ("NVIDIA RTX PRO 6000 Blackwell Server/Workstation Edition datasheet (nvidia.com/en-us/data-center/"
              "rtx-pro-6000-blackwell-server-edition): 96 GB GDDR7, 1,792 GB/s, 24,064 CUDA cores = 188 SMs, "
              "125 TFLOPS FP32, 4,000 AI TOPS (FP4, sparse)")
RTX_PRO_L2 = "NVIDIA RTX Blackwell GPU architecture whitepaper: GB202 as in RTX PRO 6000, 128 MB L2"
RTX_PRO_TENSOR = ("derived, labelled: the datasheet gives FP4 only (4,000 sparse = 2,000 dense TFLOPS); Blackwell "
                  "tensor cores run FP8/FP6 at ½ and FP16/BF16 at ¼ the FP4 rate (RTX Blackwell whitepaper)")
BLACKWELL_FP6 = "NVIDIA HGX B200/B300 datasheets list 'FP8/FP6 Tensor Core' as one figure: FP6 at the FP8 rate"
B200_L2_MEASURED = "measured L2 (torch.cuda.get_device_properties), CONTEXT.md; NVIDIA publishes none"
# Bytes the GPU holds (nvidia-smi memory.total, MiB × 2**20): NVIDIA's HBM "GB" are close to GiB, so an "80 GB"
# H100 holds 85.5e9 bytes. The memory cap of the decode model uses these, never the marketed figure.
SMI_MODAL = "nvidia-smi memory.total, listed in github.com/modal-labs/modal-client/pull/2797"
SMI_H100 = SMI_MODAL + " and github.com/NVIDIA/nccl/issues/1264 (81,559 MiB)"
SMI_H200 = ("nvidia-smi memory.total 143,771 MiB (tests/fake_node.py); the project's own H200 reports "
            "torch total_memory 150,109,880,320 B (results/h200)")
SMI_B200 = "nvidia-smi memory.total 183,359 MiB (github.com/NVIDIA/TensorRT-LLM/issues/10278)"
B300_BYTES = "288 GB marketed = 288e9 B = 268 GiB: the '270 GB usable' some sheets print is the same memory in GiB"
AS_PRINTED = "datasheet figure in decimal GB; no reported total found, so none larger is assumed"
B200_FP4 = "NVIDIA HGX B200 datasheet: FP4 144 PFLOPS sparse per 8 GPUs -> 9 PFLOPS dense per GPU"
GB200_FP4 = "NVIDIA GB200 NVL72 datasheet: FP4 1,440 PFLOPS sparse per 72 GPUs -> 10 PFLOPS dense per GPU"
B300_FP4 = "NVIDIA HGX B300 datasheet: FP4 108 PFLOPS dense per 8 GPUs -> 13.5 PFLOPS per GPU"
GB300_FP4 = "NVIDIA GB300 NVL72 datasheet: FP4 1,080 PFLOPS dense per 72 GPUs -> 15 PFLOPS per GPU"
GB300_DS = ("NVIDIA GB300 NVL72 (nvidia.com/en-us/data-center/gb300-nvl72): rack figures ÷ 72 GPUs, dense = sparse ÷ 2; "
            "per-GPU table: verda.com/blog/gb300-nvl72-architecture")


@dataclass(frozen=True)
class Datasheet:
    """One GPU's datasheet peaks. ``tensor_flops`` maps a dtype name (fp16, bf16, fp8, tf32) to dense FLOP/s."""

    key: str
    name: str
    memory_bytes: float
    bandwidth: float  # bytes/s, DRAM (HBM/GDDR)
    tensor_flops: tuple[tuple[str, float], ...]
    fp32_flops: float  # non-tensor (CUDA-core / vector) fp32
    l2_bytes: float | None
    sm_count: int | None  # SMs (NVIDIA) or CUs (AMD)
    sources: tuple[tuple[str, str], ...] = field(default=(), compare=False)  # figure -> where it comes from
    note: str = ""
    nvlink: float | None = None  # NVLink bytes/s per GPU, both directions together (the datasheet's figure)
    nvlink_generation: int | None = None  # 3 (A100), 4 (Hopper), 5 (Blackwell): per-call latency is per generation
    reported_bytes: float | None = None  # bytes the driver reports (nvidia-smi memory.total); None: not known
    infinity_fabric: float | None = None  # AMD Infinity Fabric bytes/s per GPU to its peers, both directions (nvlink is None)
    vendor: str = "nvidia"  # nvidia or amd

    @property
    def capacity_bytes(self) -> float:
        """Bytes the GPU holds: the driver's total where known, else the datasheet figure in decimal bytes."""
        return self.reported_bytes if self.reported_bytes is not None else self.memory_bytes

    def tensor(self, dtype: str) -> float | None:
        """Dense tensor-core peak for a result-row dtype; fp32 GEMMs run on tf32 tensor cores."""
        wanted = "tf32" if dtype == "fp32" else dtype
        return dict(self.tensor_flops).get(wanted)

    def peak_for(self, dtype: str, tensor: bool = True) -> float | None:
        return self.tensor(dtype) if tensor else (self.fp32_flops if dtype == "fp32" else None)

    @property
    def nvlink_one_way(self) -> float | None:
        """NVLink bytes/s in one direction (what a ring all-reduce step moves): half the datasheet figure."""
        return None if self.nvlink is None else self.nvlink / 2

    def source(self, figure: str) -> str:
        return dict(self.sources).get(figure, "")

    @property
    def ridge(self) -> float | None:
        """Knee intensity (FLOP/byte) of the bf16 tensor roof: peak / bandwidth."""
        peak = self.tensor("bf16")
        return None if peak is None else peak / self.bandwidth


def _entry(key, name, memory_gb, bw_tbs, tensor_tf, fp32_tf, l2_mb, sms, sheet, l2_source=None, sms_source=None,
           note="", nvlink_gbs=None, nvlink_gen=None, reported=None, fp4_source=None, fp6_source=None,
           fabric=None, tensor_source=None) -> Datasheet:
    """``reported``: (bytes, source) the driver reports, or None (the datasheet figure stands, labelled);
    ``fabric``: (Infinity Fabric GB/s, source) of an AMD part."""
    tensor = tuple((dtype, value * TFLOP) for dtype, value in tensor_tf.items() if value is not None)
    sources = (("memory_bytes", sheet), ("bandwidth", sheet), ("tensor_flops", tensor_source or sheet),
               ("fp32_flops", sheet), ("l2_bytes", l2_source or sheet), ("sm_count", sms_source or sheet),
               ("nvlink", sheet), ("capacity_bytes", reported[1] if reported else AS_PRINTED)) \
        + ((("fp4", fp4_source),) if fp4_source else ()) + ((("fp6", fp6_source),) if fp6_source else ()) \
        + ((("infinity_fabric", fabric[1]),) if fabric else ())
    return Datasheet(key, name, memory_gb * GB, bw_tbs * TB, tensor, fp32_tf * TFLOP,
                     None if l2_mb is None else l2_mb * MB, sms, sources, note,
                     None if nvlink_gbs is None else nvlink_gbs * GB, nvlink_gen, reported[0] if reported else None,
                     fabric[0] * GB if fabric else None, "amd" if fabric or key.startswith("mi") else "nvidia")


def _mib(mib: int, source: str) -> tuple[float, str]:
    return float(mib * 2**20), source


DEVICES: tuple[Datasheet, ...] = (
    _entry("a100-80gb-sxm", "A100 80GB SXM", 80, 2.039,
           {"fp16": 312, "bf16": 312, "tf32": 156}, 19.5, 40, 108, A100_DS, nvlink_gbs=600, nvlink_gen=3,
           reported=_mib(81_920, SMI_MODAL)),
    _entry("h100-sxm", "H100 SXM", 80, 3.35,
           {"fp16": 989, "bf16": 989, "fp8": 1979, "tf32": 494.5}, 67, 50, 132, H100_DS, HOPPER_WP, HOPPER_WP,
           nvlink_gbs=900, nvlink_gen=4, reported=_mib(81_559, SMI_H100)),
    _entry("h100-pcie", "H100 PCIe", 80, 2.0,
           {"fp16": 756, "bf16": 756, "fp8": 1513, "tf32": 378}, 51, 50, 114, H100_DS, HOPPER_WP, HOPPER_WP,
           reported=_mib(81_559, SMI_MODAL + " (H100)")),
    _entry("h200-sxm", "H200 SXM", 141, 4.8,
           {"fp16": 989, "bf16": 989, "fp8": 1979, "tf32": 494.5}, 67, 50, 132, H200_DS, HOPPER_WP, HOPPER_WP,
           note="torch reports a 60 MB L2 on the project's H200; the whitepaper says 50 MB", nvlink_gbs=900,
           nvlink_gen=4, reported=_mib(143_771, SMI_H200)),
    _entry("b200", "B200 (HGX)", 180, 7.7,
           {"fp16": 2250, "bf16": 2250, "fp8": 4500, "fp6": 4500, "fp4": 9000, "tf32": 1100}, 75, 126, 148, B200_DS,
           B200_L2_MEASURED, note="8 TB/s marketed; 7.7 TB/s in the HGX datasheet", nvlink_gbs=1800, nvlink_gen=5,
           reported=_mib(183_359, SMI_B200), fp4_source=B200_FP4, fp6_source=BLACKWELL_FP6),
    _entry("gb200", "GB200 (per GPU)", 186, 8.0,
           {"fp16": 2500, "bf16": 2500, "fp8": 5000, "fp4": 10000, "tf32": 1250}, 80, None, None, GB200_DS, nvlink_gbs=1800,
           nvlink_gen=5, fp4_source=GB200_FP4),
    _entry("b300", "B300 (HGX)", 288, 7.7,
           {"fp16": 2250, "bf16": 2250, "fp8": 4500, "fp6": 4500, "fp4": 13500}, 75, None, 160, B300_DS,
           note="288 GB = 268 GiB (the '270 GB usable' of some sheets); 7.7–8 TB/s depending on the sheet",
           nvlink_gbs=1800, nvlink_gen=5, reported=(288e9, B300_BYTES), fp4_source=B300_FP4, fp6_source=BLACKWELL_FP6),
    _entry("gb300", "GB300 (per GPU)", 279, 8.0,
           {"fp16": 2500, "bf16": 2500, "fp8": 5000, "fp4": 15000, "tf32": 1250}, 80, None, None, GB300_DS,
           note="Blackwell Ultra in the GB300 NVL72 rack: 20 TB HBM3e and 576 TB/s over 72 GPUs", nvlink_gbs=1800,
           nvlink_gen=5, fp4_source=GB300_FP4),
    _entry("l4", "L4", 24, 0.30,
           {"fp16": 121, "bf16": 121, "fp8": 242, "tf32": 60}, 30.3, 48, 58, L4_DS, ADA_WP, ADA_WP,
           reported=_mib(23_034, SMI_MODAL)),
    _entry("l40s", "L40S", 48, 0.864,
           {"fp16": 362, "bf16": 362, "fp8": 733, "tf32": 183}, 91.6, 96, 142, L40S_DS, ADA_WP, ADA_WP,
           reported=_mib(46_068, SMI_MODAL)),
    _entry("rtx-pro-6000", "RTX PRO 6000 Blackwell", 96, 1.792,
           {"fp16": 500, "bf16": 500, "fp8": 1000, "fp6": 1000, "fp4": 2000}, 125, 128, 188, RTX_PRO_DS, RTX_PRO_L2,
           note="GDDR7, PCIe only (no NVLink); tensor peaks other than FP4 derived from the FP4 figure (see source)",
           tensor_source=RTX_PRO_TENSOR, fp4_source=RTX_PRO_DS, fp6_source=RTX_PRO_TENSOR),
    _entry("mi300x", "MI300X", 192, 5.3,
           {"fp16": 1307.4, "bf16": 1307.4, "fp8": 2614.9, "tf32": 653.7}, 163.4, 256, 304, MI300X_DS, CDNA3_WP, CDNA3_WP,
           note="L2 column is the 256 MB Infinity Cache (last-level; torch reports the 4 MB L2); SMs column counts "
                "CUs; fp8 is e4m3fnuz; no FP6/FP4 matrix support", fabric=(896, MI300X_IF)),
    _entry("mi325x", "MI325X", 256, 6.0,
           {"fp16": 1307.4, "bf16": 1307.4, "fp8": 2614.9, "tf32": 653.7}, 163.4, 256, 304, MI325X_DS, CDNA3_WP, CDNA3_WP,
           note="L2 column is the 256 MB Infinity Cache (last-level); SMs column counts CUs; fp8 is e4m3fnuz",
           fabric=(896, MI300X_IF.replace("MI300X", "MI325X"))),
    _entry("mi355x", "MI355X", 288, 8.0,
           {"fp16": 2516.6, "bf16": 2516.6, "fp8": 5033.2, "fp6": 10066.3, "fp4": 10066.3}, 157.3, 256, 256, MI355X_DS,
           CDNA4_WP, CDNA4_WP, note="L2 column is the 256 MB Infinity Cache (last-level); SMs column counts CUs; "
                                    "fp8 is e4m3fn (OCP) on CDNA 4", fabric=(1075.2, MI355X_IF), fp4_source=MI355X_DS,
           fp6_source=AMD_FP6),
)

_BY_KEY = {d.key: d for d in DEVICES}


def get(key: str) -> Datasheet:
    return _BY_KEY[key]


def _candidates(name: str) -> list[str]:
    """Datasheet keys a runtime name could be, most specific rules first."""
    n = name.lower()
    if re.search(r"\bmig\b", n):
        return []  # a MIG slice is not the datasheet device
    if re.search(r"\bmi355x\b", n):
        return ["mi355x"]
    if re.search(r"\brtx pro 6000\b", n) and "blackwell" in n:
        return ["rtx-pro-6000"]
    if re.search(r"\bmi325x\b", n):
        return ["mi325x"]
    if re.search(r"\bmi300x\b", n):
        return ["mi300x"]
    if re.search(r"\bgb200\b", n):
        return ["gb200"]
    if re.search(r"\bgb300\b", n):
        return ["gb300"]
    if re.search(r"\bb200\b", n):
        return ["b200"]
    if re.search(r"\bb300\b", n) and "gb300" not in n:
        return ["b300"]
    if re.search(r"\bl40s\b", n):
        return ["l40s"]
    if re.search(r"\bl4\b", n):
        return ["l4"]
    if re.search(r"\bh200\b", n):
        return [] if "nvl" in n else ["h200-sxm"]  # H200 NVL has lower clocks and power
    if re.search(r"\bh100\b", n):
        if "nvl" in n or "94gb" in n or "96gb" in n:
            return []  # H100 NVL / GH200 parts: other memory and peaks
        if "pcie" in n:
            return ["h100-pcie"]
        if "sxm" in n or "hbm3" in n:
            return ["h100-sxm"]
        return ["h100-sxm", "h100-pcie"]  # plain "H100": settled by SM count or memory
    if re.search(r"\ba100\b", n):
        if "40gb" in n or "pcie" in n:
            return []  # A100 40GB and A100 PCIe have other bandwidths
        return ["a100-80gb-sxm"]
    return []


def match_device(name: str, memory_bytes: float | None = None, sm_count: int | None = None) -> Datasheet | None:
    """The datasheet entry for a runtime device name (torch/NVML spelling), or None when unknown.

    ``sm_count`` settles ambiguous names and rejects a mismatch (a partitioned or cut-down part does
    not reach the datasheet peaks); ``memory_bytes`` settles ambiguous names only (drivers reserve
    some memory, so totals differ from the datasheet by a few percent).
    """
    entries = [_BY_KEY[k] for k in _candidates(name or "")]
    if sm_count:
        entries = [d for d in entries if d.sm_count is None or d.sm_count == int(sm_count)]
    if len(entries) > 1 and memory_bytes:
        closest = min(entries, key=lambda d: abs(d.memory_bytes - memory_bytes))
        entries = [closest] if abs(closest.memory_bytes - memory_bytes) < 0.15 * closest.memory_bytes else []
    return entries[0] if len(entries) == 1 else None
