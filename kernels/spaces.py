"""Tune spaces from launches: the Triton kernels a case launches and the configs each would try.

A family's ``Impl.candidates`` hook builds the case's inputs as ``meta`` tensors (shapes, strides
and dtypes, no memory) and hands :func:`launch_spaces` a call of its own launcher. The launcher
runs with the device limits pinned (:func:`kernels.tuning.pinned_limits`), and each launch of a
listed kernel is recorded instead of run: an autotuned kernel yields the configs its pruner keeps
(the pruner reads the pinned limits), a plain one its fixed launch options. The answer is what
the launcher would launch on that device, argument for argument, without a GPU, and stays right
when a launcher or a kernel signature changes.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
import triton
from triton.runtime.autotuner import Autotuner

from kernels.spec import TuneSpace
from kernels.tuning import Limits, pinned_limits

LAUNCH_OPTIONS = ("num_warps", "num_stages", "num_ctas", "maxnreg")  # launch keywords that are not constexprs


def launch_spaces(launch: Callable[[], object], kernels: Mapping[str, Any], limits: Limits) -> tuple[TuneSpace, ...]:
    """The TuneSpaces of the kernels ``launch`` launches on ``limits``, in launch order.

    ``kernels`` names the module-level kernel objects the launcher may launch (an autotuned
    kernel or a @triton.jit function) by the variant name their TuneSpace takes; a kernel
    launched twice gives one TuneSpace (its first launch's arguments).
    """
    calls: list[tuple[str, Any, tuple, dict]] = []

    def recorder(name: str, kernel):
        def run(*args, grid=None, warmup=False, **kwargs):
            calls.append((name, kernel, args, kwargs))

        return run

    with pinned_limits(limits):
        for name, kernel in kernels.items():
            kernel.run = recorder(name, kernel)  # an instance attribute: kernel[grid](…) calls it
        try:
            launch()
        finally:
            for kernel in kernels.values():
                kernel.__dict__.pop("run", None)
        spaces, seen = [], set()
        for name, kernel, args, kwargs in calls:
            if name not in seen:
                seen.add(name)
                spaces.append(_space(name, kernel, args, kwargs))
    return tuple(spaces)


def _space(name: str, kernel, args: tuple, kwargs: dict) -> TuneSpace:
    if isinstance(kernel, Autotuner):  # the configs its pruner keeps, as Triton's autotuner asks for them
        named = dict(zip(kernel.arg_names, args))
        prune = kernel.early_config_prune
        configs = prune(kernel.configs, named, **kwargs) if prune else kernel.configs
        return TuneSpace(name, kernel.fn, tuple(configs), lambda: (args, dict(kwargs)))
    options = {key: kwargs[key] for key in LAUNCH_OPTIONS if key in kwargs}
    constexprs = {key: value for key, value in kwargs.items() if key not in LAUNCH_OPTIONS}
    return TuneSpace(name, kernel, (triton.Config({}, **options),), lambda: (args, dict(constexprs)))


def meta(shape, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A tensor with a shape, strides and dtype but no memory (compiling, never running)."""
    return torch.empty(shape, dtype=dtype, device="meta")
