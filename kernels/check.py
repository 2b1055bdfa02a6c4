"""The correctness gate: one point on fresh random inputs into a NaN-poisoned output, against the reference.

Shared by the sweep (before a point is timed) and by the tests, so both judge a kernel the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kernels.spec import Case, Impl, Inputs, KernelSpec, Launch, generator_for, relative_error


@dataclass(frozen=True)
class Checked:
    """The outcome of the gate for one point; ``inputs``/``launch`` are reused for timing."""

    rel_err: float
    tolerance: float
    inputs: Inputs
    launch: Launch

    @property
    def ok(self) -> bool:
        return self.rel_err <= self.tolerance  # False for NaN

    def message(self) -> str:
        return f"rel_err {self.rel_err:.3g} > tolerance {self.tolerance:.3g}"


def check_point(spec: KernelSpec, impl: Impl | str, case: Case, device: torch.device | str, seed: int) -> Checked:
    """Build the point on fresh inputs, run it once and compare with the spec's reference."""
    impl = spec.impl(impl) if isinstance(impl, str) else impl
    device = torch.device(device)
    inputs = spec.make_inputs(case, device, generator_for(device, seed))
    launch = impl.build(inputs, case)
    output = launch.run()
    expected = spec.reference(inputs, case)
    return Checked(relative_error(output, expected), spec.tolerance[case.dtype], inputs, launch)
