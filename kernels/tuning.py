"""Autotuning helpers shared by every family's config pruner."""

from __future__ import annotations

import functools
import os

import torch
import triton

HOPPER_SMEM_BYTES = 227 * 1024  # opt-in shared memory per block on sm_90


@functools.lru_cache(maxsize=None)
def sm_count(device_index: int | None) -> int:
    """Streaming multiprocessors of a CUDA device (None: the current one); cached, launchers ask per call."""
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def interpreting() -> bool:
    """True when Triton runs kernels on the CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def for_interpreter(configs: list[triton.Config]) -> list[triton.Config]:
    """The interpreter cannot time configs (no CUDA events): keep the first one only."""
    return configs[:1] if interpreting() else configs


def describe(config: triton.Config | None) -> str:
    """A compact, stable text for a result row's ``config`` column."""
    if config is None:
        return ""
    parts = [f"{k}={v}" for k, v in sorted(config.kwargs.items())]
    parts.append(f"warps={config.num_warps}")
    parts.append(f"stages={config.num_stages}")
    return " ".join(parts)
