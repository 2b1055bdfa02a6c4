"""Test set-up: kernels run on the GPU when there is one, else on Triton's CPU interpreter."""

from __future__ import annotations

import os
import random

import pytest


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU; runs automatically when one is present")
    # Triton decides at @triton.jit time whether to interpret a kernel: settle it before any
    # test module imports a kernel module.
    if not _cuda_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
    # tuned configs go to a per-session folder, never the user's cache
    os.environ.setdefault("ROOFLAB_CACHE_DIR", str(config.rootpath / ".pytest_cache" / "rooflab"))
    from kernels.tuning import interpreting, patch_interpreter

    if interpreting():
        patch_interpreter()


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def device() -> str:
    return "cuda" if _cuda_available() else "cpu"


@pytest.fixture
def seed(request) -> int:
    """A fresh seed per test, printed on failure so the inputs can be reproduced."""
    value = random.SystemRandom().randrange(2**31)
    request.node.user_properties.append(("seed", value))
    print(f"seed={value}")
    return value


@pytest.fixture(autouse=True, scope="session")
def _short_tuning_on_a_gpu():
    """On a GPU the autotuner benchmarks each config as a sweep does (a few cold-L2 runs), not for
    Triton's ≈ 100 ms: the gpu-marked tests then fit the first GPU call's window."""
    if not _cuda_available():
        yield
        return
    import torch

    from bench.cuda_backend import CudaBackend
    from bench.sweep import short_tuning

    with short_tuning(CudaBackend(int(torch.cuda.get_device_properties(0).L2_cache_size))):
        yield
