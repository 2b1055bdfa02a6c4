"""The correctness gate: fresh random inputs, a NaN-poisoned output, the reference — and no way around it.

Shared by the sweep (before a point is timed) and by the tests, so both judge a kernel the same way:

1. build the point and run it once: this compiles and autotunes, and Triton's autotuner runs
   every config into the same output buffer, so whatever this run leaves behind proves nothing;
2. poison the output (and any split-K workspace the launch declares) again with NaN, run the chosen
   config once more — that run is the one compared;
3. compare with the float64/fp32 reference twice: the relative Frobenius error over the whole
   output against the dtype's tolerance, and element by element,
   |out − ref| ≤ F·tol·(rms(ref) + |ref|), so one bad tile or row in a large output cannot hide
   in the global average. A NaN anywhere fails both.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from kernels.spec import Case, Impl, Inputs, KernelSpec, Launch, generator_for, relative_error

ELEMENT_FACTOR = 4.0  # element bound = F·tol·(rms(ref) + |ref|): far above rounding noise, far below a lost tile
CHUNK = 1 << 24  # elements compared at a time (bounds the float64 temporaries)


@dataclass(frozen=True)
class ElementCheck:
    """The worst element: its error over its bound (≤ 1 passes), where, and the two values."""

    ratio: float
    index: tuple[int, ...]
    actual: float
    expected: float


@dataclass(frozen=True)
class Checked:
    """The outcome of the gate for one point; ``inputs``/``launch`` are reused for timing."""

    rel_err: float
    tolerance: float
    element: ElementCheck
    inputs: Inputs
    launch: Launch
    first_call_s: float = 0.0  # host seconds of the first run: compile + autotune + one run

    @property
    def ok(self) -> bool:
        return self.rel_err <= self.tolerance and self.element.ratio <= 1.0  # False for NaN

    def message(self) -> str:
        if not self.rel_err <= self.tolerance:
            return f"rel_err {self.rel_err:.3g} > tolerance {self.tolerance:.3g}" + self._where()
        return f"element error {self.element.ratio:.3g}× its bound" + self._where()

    def _where(self) -> str:
        e = self.element
        if not e.index:
            return ""
        return f" (worst at {list(e.index)}: got {e.actual:.4g}, expected {e.expected:.4g})"


def element_check(actual: torch.Tensor, expected: torch.Tensor, tolerance: float) -> ElementCheck:
    """max over elements of |a − e| / (F·tol·(rms(e) + |e|)); 0 tolerance demands exact equality."""
    if actual.shape != expected.shape:
        raise ValueError(f"output shape {tuple(actual.shape)} != reference shape {tuple(expected.shape)}")
    flat_a = actual.detach().reshape(-1)
    flat_e = expected.detach().to(actual.device).reshape(-1)
    if flat_a.numel() == 0:
        return ElementCheck(0.0, (), 0.0, 0.0)
    rms = math.sqrt(sum(float(torch.sum(flat_e[i:i + CHUNK].double() ** 2))
                        for i in range(0, flat_e.numel(), CHUNK)) / flat_e.numel())
    worst, where = -1.0, 0
    for start in range(0, flat_a.numel(), CHUNK):
        a = flat_a[start:start + CHUNK].double()
        e = flat_e[start:start + CHUNK].double()
        error = (a - e).abs()
        bound = ELEMENT_FACTOR * tolerance * (rms + e.abs())
        ratio = torch.where(error == 0, torch.zeros_like(error), error / bound)  # 0/0 (exact) passes
        ratio = torch.nan_to_num(ratio, nan=math.inf, posinf=math.inf)  # NaN output (or the poison) fails
        top = int(torch.argmax(ratio))
        if float(ratio[top]) > worst:
            worst, where = float(ratio[top]), start + top
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(where), tuple(actual.shape)))
    return ElementCheck(worst, index, float(flat_a[where]), float(flat_e[where]))


def poison(launch: Launch, inputs: Inputs) -> None:
    """NaN into the output and every scratch buffer the launch declares (split-K partials)."""
    for tensor in (inputs.get("out"), *launch.scratch):
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            tensor.fill_(float("nan"))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_point(spec: KernelSpec, impl: Impl | str, case: Case, device: torch.device | str, seed: int) -> Checked:
    """Build the point on fresh inputs, tune it, re-poison, run it again and compare with the reference."""
    impl = spec.impl(impl) if isinstance(impl, str) else impl
    device = torch.device(device)
    inputs = spec.make_inputs(case, device, generator_for(device, seed))
    launch = impl.build(inputs, case)
    began = time.perf_counter()
    launch.run()  # compiles and autotunes: the configs tried may each have written the output
    _synchronize(device)
    first_call_s = time.perf_counter() - began
    poison(launch, inputs)
    output = launch.run()
    expected = spec.reference(inputs, case)
    tolerance = spec.tolerance[case.dtype]
    return Checked(relative_error(output, expected), tolerance, element_check(output, expected, tolerance),
                   inputs, launch, first_call_s)
