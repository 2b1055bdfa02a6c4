"""Theory before measurement: what the datasheets alone predict for every LLM preset layer and attention shape.

Every number here is PREDICTED: time = max(FLOPs / peak, bytes / bandwidth) with the device table's
dense peaks and DRAM bandwidth (analysis/devices.py, each figure with its source), no launch cost,
no efficiency factor. A measured point can only be slower; the report overlays measured points on
these curves where runs exist.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.devices import Datasheet, get
from analysis.roofline import knee_batch, predicted_time
from analysis.workloads import decode_point_cost, linear_cost, prefill_cost
from kernels import models as model_table
from kernels.models import Model

PREDICTED_DEVICES = ("a100-80gb-sxm", "h100-sxm", "h200-sxm", "b200", "b300", "gb300", "rtx-pro-6000", "mi300x", "mi325x",
                     "mi355x")
BATCHES = tuple(2**i for i in range(13))  # 1 … 4096, the linear suite's batches
DECODE_BATCHES = tuple(2**i for i in range(9))  # 1 … 256, the attention suite's
DECODE_CONTEXTS = (4096, 32768)
PREFILL_TOKENS = 16384  # the attention suite: batch = 16384 // seq
PREFILL_SEQS = (512, 1024, 2048, 4096, 8192, 16384)
PRECISIONS = {"bf16": 2, "fp8": 1}  # weight and activation bytes per element; fp8 GEMMs write bf16


def preset_models() -> tuple[Model, ...]:
    """Every LLM preset in kernels/models.py, in the order they are defined there."""
    return tuple(dict.fromkeys(v for v in vars(model_table).values() if isinstance(v, Model)))


def devices(keys=PREDICTED_DEVICES) -> list[Datasheet]:
    return [get(k) for k in keys]


def roof(device: Datasheet, dtype: str) -> tuple[float, float]:
    """(DRAM bytes/s, tensor FLOP/s) from the datasheet; NaN peak where the device has no such tensor path."""
    peak = device.tensor(dtype)
    return device.bandwidth, float("nan") if peak is None else peak


@dataclass(frozen=True)
class LayerShape:
    """One distinct projection shape (N, K) and every preset layer that has it."""

    n: int
    k: int
    layers: tuple[str, ...]  # e.g. ("llama3-70b.q", "llama3-70b.o", "llama2-70b.q", …)

    @property
    def label(self) -> str:
        names = list(dict.fromkeys(self.layers))
        return " = ".join(names[:3]) + (f" (+{len(names) - 3})" if len(names) > 3 else "")


def layer_shapes(models: tuple[Model, ...] | None = None) -> list[LayerShape]:
    """The distinct (N, K) of every preset's projections (k and v share one; q and o often do)."""
    found: dict[tuple[int, int], list[str]] = {}
    for model in models or preset_models():
        for name, nk in model.projections().items():
            found.setdefault(nk, []).append(f"{model.name}.{name}")
    return [LayerShape(n, k, tuple(names)) for (n, k), names in found.items()]


def models_by_shapes(models: tuple[Model, ...] | None = None) -> list[tuple[Model, ...]]:
    """The presets grouped by their set of projection shapes (llama2-70b and llama3-70b have the same layers:
    one group, one figure), in the order the first of each group is defined."""
    groups: dict[frozenset, list[Model]] = {}
    for model in models or preset_models():
        groups.setdefault(frozenset(model.projections().values()), []).append(model)
    return [tuple(group) for group in groups.values()]


def linear_time(shape: LayerShape, device: Datasheet, dtype: str, batches) -> np.ndarray:
    itemsize = PRECISIONS[dtype]
    flops, nbytes = linear_cost(batches, shape.n, shape.k, itemsize, 2 if dtype == "fp8" else itemsize)
    bandwidth, peak = roof(device, dtype)
    if not np.isfinite(peak):
        return np.full(len(np.atleast_1d(batches)), np.nan)
    return predicted_time(flops, nbytes, peak, bandwidth)


def linear_knee(shape: LayerShape, device: Datasheet, dtype: str) -> float:
    """Batch M where the layer turns compute-bound on the datasheet roofline (NaN without the tensor path)."""
    itemsize = PRECISIONS[dtype]
    batches = np.array(BATCHES, dtype=float)
    flops, nbytes = linear_cost(batches, shape.n, shape.k, itemsize, 2 if dtype == "fp8" else itemsize)
    bandwidth, peak = roof(device, dtype)
    return knee_batch(batches, flops, nbytes, peak, bandwidth)


def linear_table(keys=PREDICTED_DEVICES, dtypes=("bf16", "fp8")) -> pd.DataFrame:
    """Per preset layer shape × dtype × device: the knee batch and the time at M = 1 and at the knee."""
    rows = []
    for shape in layer_shapes():
        for dtype in dtypes:
            for device in devices(keys):
                knee = linear_knee(shape, device, dtype)
                at_one = linear_time(shape, device, dtype, [1.0])[0]
                rows.append(dict(shape=shape.label, N=shape.n, K=shape.k, dtype=dtype, device=device.key,
                                 device_name=device.name, knee=knee, time_m1_s=at_one))
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class AttentionShape:
    """Query heads, kv heads and head_dim of an attention layer, with the presets that have it."""

    heads: int
    kv_heads: int
    head_dim: int
    users: tuple[str, ...]

    @property
    def label(self) -> str:
        who = ", ".join(self.users) if self.users else "attention suite"
        return f"{self.heads} q / {self.kv_heads} kv heads, d{self.head_dim} ({who})"


def attention_shapes(models: tuple[Model, ...] | None = None) -> list[AttentionShape]:
    """The presets' attention layers and the attention suite's decode GQA ratios (32 heads, 32/8/4 kv heads)."""
    found: dict[tuple[int, int, int], list[str]] = {(32, kv, 128): [] for kv in (32, 8, 4)}
    for model in models or preset_models():
        found.setdefault((model.heads, model.kv_heads, model.head_dim), []).append(model.name)
    return [AttentionShape(h, kv, d, tuple(users)) for (h, kv, d), users in sorted(found.items())]


def decode_time(shape: AttentionShape, device: Datasheet, context: int, batches, dtype: str = "bf16") -> np.ndarray:
    """Decode attention over a contiguous cache, lengths as the measured points (mean ≈ 0.75·C at batch ≥ 2)."""
    bandwidth, peak = roof(device, dtype)
    out = []
    for batch in batches:
        flops, nbytes = decode_point_cost(int(batch), context, shape.heads, shape.kv_heads, shape.head_dim)
        out.append(float(predicted_time(flops, nbytes, peak, bandwidth)))
    return np.array(out)


def prefill_time(shape: AttentionShape, device: Datasheet, seqs, causal: bool, dtype: str = "bf16") -> np.ndarray:
    bandwidth, peak = roof(device, dtype)
    out = []
    for seq in seqs:
        flops, nbytes = prefill_cost(max(1, PREFILL_TOKENS // int(seq)), shape.heads, shape.kv_heads, shape.head_dim,
                                     int(seq), causal=causal)
        out.append(float(predicted_time(flops, nbytes, peak, bandwidth)))
    return np.array(out)


def prefill_knee(shape: AttentionShape, device: Datasheet, causal: bool, dtype: str = "bf16") -> float:
    """Sequence length where a 16k-token prefill turns compute-bound (bytes stay fixed, FLOPs grow with seq)."""
    bandwidth, peak = roof(device, dtype)
    seqs = np.array(PREFILL_SEQS, dtype=float)
    costs = [prefill_cost(PREFILL_TOKENS // int(s), shape.heads, shape.kv_heads, shape.head_dim, int(s), causal=causal)
             for s in seqs]
    flops, nbytes = (np.array(column) for column in zip(*costs))
    return knee_batch(seqs, flops, nbytes, peak, bandwidth)


def attention_table(keys=PREDICTED_DEVICES) -> pd.DataFrame:
    """Per attention shape × device: decode time at batch 1 and 64 per context (no knee: KV bytes grow
    with the batch, so intensity saturates at the GQA group size), and the prefill knee in seq."""
    rows = []
    for shape in attention_shapes():
        for device in devices(keys):
            row = dict(shape=shape.label, heads=shape.heads, kv_heads=shape.kv_heads, head_dim=shape.head_dim,
                       device=device.key, device_name=device.name, decode_intensity=shape.heads / shape.kv_heads)
            for context in DECODE_CONTEXTS:
                b1, b64 = decode_time(shape, device, context, (1, 64))
                row[f"decode_c{context}_b1_s"], row[f"decode_c{context}_b64_s"] = b1, b64
            row["prefill_knee_causal"] = prefill_knee(shape, device, True)
            row["prefill_knee_full"] = prefill_knee(shape, device, False)
            rows.append(row)
    return pd.DataFrame(rows)


def roofline_table(keys=PREDICTED_DEVICES) -> pd.DataFrame:
    """The datasheet roofs: bandwidth, peaks, ridge points, memory, NVLink, with the source."""
    rows = []
    for device in devices(keys):
        bf16, fp8 = device.tensor("bf16"), device.tensor("fp8")
        rows.append(dict(device=device.key, name=device.name, memory_bytes=device.memory_bytes,
                         bandwidth=device.bandwidth, bf16=bf16, fp8=fp8, fp32=device.fp32_flops,
                         ridge_bf16=bf16 / device.bandwidth if bf16 else float("nan"),
                         ridge_fp8=fp8 / device.bandwidth if fp8 else float("nan"),
                         l2_bytes=device.l2_bytes, nvlink=device.nvlink, source=device.source("bandwidth")))
    return pd.DataFrame(rows)
