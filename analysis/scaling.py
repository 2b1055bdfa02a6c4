"""``rooflab compare --normalize``: each run's times scaled by that run's own measured ceilings.

Two nodes of one SKU differ by a few percent in DRAM bandwidth or tensor peak; scaling each side by
its own ceiling keeps that difference from being blamed on the kernels. What a point is scaled by
follows what bounds it: DRAM bandwidth for bytes-bound points, the tensor peak for tensor-core FLOPs,
the CUDA-core peak for ``fma`` rows (never the tensor peak), and nothing for launch latency (never
DRAM bandwidth: a launch moves no meaningful bytes).
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Any

import pandas as pd

from analysis.ceilings import VECTOR_KERNELS, best, derive_ceilings
from analysis.frames import LATENCY_KERNELS
from kernels.errors import UsageError


class Normalize(str, Enum):
    NONE = "none"
    DRAM = "dram"
    TENSOR = "tensor"
    ROOFLINE = "roofline"


NEEDS = {
    "dram": "a DRAM ceiling (read/write/copy/triad rows, l2 cold, footprint ≥ 4× L2)",
    "tensor": "a tensor ceiling (gemm rows at M = N = K ≥ 2048)",
}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


class Scaler:
    """Each side's multiplier for a point under a --normalize mode, from each run's own ceilings."""

    def __init__(self, mode: Normalize, sides: dict[str, tuple[str, pd.DataFrame]]):
        """``sides``: {"base": (path, rows), "new": (path, rows)}."""
        self.mode = mode
        self.dram: dict[str, float] = {}
        self.vector: dict[str, float] = {}
        self.tensor: dict[str, dict[str, float]] = {}  # side -> dtype -> FLOP/s; "" = best of any dtype
        needed = {Normalize.NONE: (), Normalize.ROOFLINE: ("dram", "tensor")}.get(mode, (mode.value,))
        for side, (path, rows) in sides.items() if needed else ():
            table = derive_ceilings(rows)
            self.dram[side] = best(table, "dram_bw")
            self.vector[side] = best(table, "vector_flops")
            self.tensor[side] = {d: best(table, "tensor_flops", d) for d in set(table["dtype"])}
            self.tensor[side][""] = best(table, "tensor_flops")
            for kind in needed:
                if not _finite(self.dram[side] if kind == "dram" else self.tensor[side][""]):
                    raise UsageError(
                        f"{path}: --normalize {mode.value} needs {NEEDS[kind]} and the run has none (give a "
                        "directory holding the run and a `rooflab ceilings` run of the same node, or --normalize none)")

    def _tensor(self, dtype: str) -> tuple[float, float]:
        """The point's dtype where both runs measured it, else the best of any dtype."""
        base, new = self.tensor["base"].get(dtype), self.tensor["new"].get(dtype)
        if _finite(base) and _finite(new):
            return base, new
        return self.tensor["base"][""], self.tensor["new"][""]

    def kind(self, row: dict) -> str:
        """What scales this point: "dram", "tensor", "vector" or "" (raw times)."""
        flops = row["flops"] if _finite(row["flops"]) else 0
        nbytes = row["bytes"] if _finite(row["bytes"]) else 0
        if self.mode is Normalize.NONE or row["kernel"] in LATENCY_KERNELS or (flops <= 0 and nbytes <= 0):
            return ""
        if row["kernel"] in VECTOR_KERNELS:  # CUDA-core FLOPs: their own ceiling, or none
            both = all(_finite(self.vector.get(side)) for side in ("base", "new"))
            return "vector" if self.mode is not Normalize.DRAM and both else ""
        if self.mode is Normalize.DRAM:
            return "dram" if nbytes > 0 else ""
        if self.mode is Normalize.TENSOR:
            return "tensor" if flops > 0 else ""
        ridge = self._tensor(row["dtype"])[0] / self.dram["base"]
        return "dram" if nbytes > 0 and flops / nbytes < ridge else "tensor"

    def factors(self, kind: str, dtype: str) -> tuple[float, float]:
        if kind == "dram":
            return self.dram["base"], self.dram["new"]
        if kind == "vector":
            return self.vector["base"], self.vector["new"]
        return self._tensor(dtype) if kind == "tensor" else (1.0, 1.0)
