"""The correctness gate: fresh random inputs, a NaN-poisoned output, the reference — and no way around it.

Shared by the sweep (before a point is timed, and again after) and by the tests, so both judge a
kernel the same way:

1. draw the inputs, fingerprint them and compute the float64/fp32 reference from them *before* the
   kernel runs (a kernel that overwrites its inputs cannot move the reference with it);
2. build the point and run it once: this compiles and autotunes, and Triton's autotuner runs
   every config into the same output buffer, so whatever this run leaves behind proves nothing;
3. poison the output (and any split-K workspace the launch declares, and a tensor the run returned
   instead of ``out``) again with NaN, run the chosen config once more — that run is the one compared;
4. compare three ways: the relative Frobenius error over the whole output against the dtype's
   tolerance; element by element, |out − ref| ≤ F·tol·(rms(ref) + |ref|), so one bad tile in a large
   output cannot hide in the global average; and row by row (the last dimension's vectors),
   ‖out − ref‖ ≤ R·tol·max(‖ref‖, floor), so a whole output vector slightly off cannot either. A NaN
   anywhere fails all three. The inputs' fingerprint must be unchanged;
5. a fresh draw of inputs (same shapes, new values) into a new build, poisoned and run once: state
   carried between calls — a stale undeclared workspace, a cached answer — cannot pass.

After timing, the sweep poisons every rotating copy's output and replays the timed closure once
(:func:`after_timing`), so the launches that were timed are launches that were checked.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from kernels.spec import Case, Impl, Inputs, KernelSpec, Launch, generator_for, named_tensors, relative_error

ELEMENT_FACTOR = 4.0  # element bound = F·tol·(rms(ref) + |ref|): far above rounding noise, far below a lost tile
ROW_FACTOR = 3.0  # row bound = R·tol·max(‖ref row‖, floor): a row 1.5 % off fails fp32 (tf32), 6 % off fails bf16
ROW_FLOOR = 1.0  # a row whose reference norm is below the typical row norm √n·rms(ref) is judged against that
CHUNK = 1 << 24  # elements compared at a time (bounds the float64 temporaries)
FRESH_SEED = 0x5EED5  # the fresh draw's seed is the point's seed xor this


@dataclass(frozen=True)
class ElementCheck:
    """The worst element: its error over its bound (≤ 1 passes), where, and the two values."""

    ratio: float
    index: tuple[int, ...]
    actual: float
    expected: float


@dataclass(frozen=True)
class RowCheck:
    """The worst output row (vector along the last dimension): its error over its bound (≤ 1 passes)."""

    ratio: float
    index: tuple[int, ...]
    rel: float  # that row's ‖out − ref‖ / ‖ref‖


@dataclass(frozen=True)
class Comparison:
    """An output against its reference: global, element-wise and row-wise."""

    rel_err: float
    tolerance: float
    element: ElementCheck
    row: RowCheck

    @property
    def ok(self) -> bool:  # False for NaN
        return self.rel_err <= self.tolerance and self.element.ratio <= 1.0 and self.row.ratio <= 1.0

    def message(self) -> str:
        if not self.rel_err <= self.tolerance:
            return f"rel_err {self.rel_err:.3g} > tolerance {self.tolerance:.3g}" + self._where()
        if not self.element.ratio <= 1.0:
            return f"element error {self.element.ratio:.3g}× its bound" + self._where()
        return (f"row {list(self.row.index)} off by {self.row.rel:.3g} relative, {self.row.ratio:.3g}× the row bound "
                f"{ROW_FACTOR:g}·tol")

    def _where(self) -> str:
        e = self.element
        if not e.index:
            return ""
        return f" (worst at {list(e.index)}: got {e.actual:.4g}, expected {e.expected:.4g})"


@dataclass(frozen=True)
class Checked:
    """The outcome of the gate for one point; ``inputs``/``launch`` are reused for timing."""

    comparison: Comparison
    inputs: Inputs
    launch: Launch
    first_call_s: float = 0.0  # host seconds of the first run: compile + autotune + one run
    problem: str = ""  # a failure beyond the comparison: inputs overwritten, a fresh draw that fails
    fingerprint: tuple = ()  # of the inputs before any run

    rel_err = property(lambda self: self.comparison.rel_err)
    tolerance = property(lambda self: self.comparison.tolerance)
    element = property(lambda self: self.comparison.element)
    row = property(lambda self: self.comparison.row)

    @property
    def ok(self) -> bool:
        return self.comparison.ok and not self.problem

    def message(self) -> str:
        return self.comparison.message() if not self.comparison.ok else self.problem


def element_check(actual: torch.Tensor, expected: torch.Tensor, tolerance: float) -> ElementCheck:
    """max over elements of |a − e| / (F·tol·(scale + |e|)); 0 tolerance demands exact equality.

    ``scale`` is the larger of rms(e) over the whole output and over the element's row (the vector
    along the last dimension): rounding error follows the magnitude of the row it is in, and rows can
    differ by 10× (the first rows of a long causal attention average a few keys, the last thousands).
    """
    if actual.shape != expected.shape:
        raise ValueError(f"output shape {tuple(actual.shape)} != reference shape {tuple(expected.shape)}")
    width = actual.shape[-1] if actual.dim() else 1
    rows_a = actual.detach().reshape(-1, width)
    rows_e = expected.detach().to(actual.device).reshape(-1, width)
    if rows_a.numel() == 0:
        return ElementCheck(0.0, (), 0.0, 0.0)
    step = max(1, CHUNK // width)
    squares = sum(float(torch.sum(rows_e[i:i + step].double() ** 2)) for i in range(0, rows_e.shape[0], step))
    rms = math.sqrt(squares / rows_e.numel())
    worst, where = -1.0, 0
    for start in range(0, rows_a.shape[0], step):
        a = rows_a[start:start + step].double()
        e = rows_e[start:start + step].double()
        error = (a - e).abs()
        row_rms = torch.sqrt(torch.mean(e * e, dim=1, keepdim=True))
        bound = ELEMENT_FACTOR * tolerance * (torch.clamp(row_rms, min=rms) + e.abs())
        ratio = torch.where(error == 0, torch.zeros_like(error), error / bound)  # 0/0 (exact) passes
        ratio = torch.nan_to_num(ratio, nan=math.inf, posinf=math.inf)  # NaN output (or the poison) fails
        top = int(torch.argmax(ratio))
        if float(ratio.reshape(-1)[top]) > worst:
            worst, where = float(ratio.reshape(-1)[top]), start * width + top
    flat_a, flat_e = rows_a.reshape(-1), rows_e.reshape(-1)
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(where), tuple(actual.shape) or (1,)))
    return ElementCheck(worst, index, float(flat_a[where]), float(flat_e[where]))


def row_check(actual: torch.Tensor, expected: torch.Tensor, tolerance: float) -> RowCheck:
    """max over rows (vectors along the last dimension) of ‖a − e‖ / (R·tol·max(‖e‖, floor))."""
    if actual.shape != expected.shape:
        raise ValueError(f"output shape {tuple(actual.shape)} != reference shape {tuple(expected.shape)}")
    width = actual.shape[-1] if actual.dim() else 1
    rows_a = actual.detach().reshape(-1, width)
    rows_e = expected.detach().to(actual.device).reshape(-1, width)
    if rows_a.numel() == 0:
        return RowCheck(0.0, (), 0.0)
    step = max(1, CHUNK // width)
    squares = sum(float(torch.sum(rows_e[i:i + step].double() ** 2)) for i in range(0, rows_e.shape[0], step))
    floor = ROW_FLOOR * math.sqrt(squares / rows_e.shape[0])  # √n·rms(ref) = the root mean square row norm
    worst, where, rel = -1.0, 0, 0.0
    for start in range(0, rows_a.shape[0], step):
        a, e = rows_a[start:start + step].double(), rows_e[start:start + step].double()
        error = torch.linalg.vector_norm(a - e, dim=1)
        norm = torch.linalg.vector_norm(e, dim=1)
        ratio = torch.where(error == 0, torch.zeros_like(error),
                            error / (ROW_FACTOR * tolerance * torch.clamp(norm, min=floor)))
        ratio = torch.nan_to_num(ratio, nan=math.inf, posinf=math.inf)
        top = int(torch.argmax(ratio))
        if float(ratio[top]) > worst:
            worst, where = float(ratio[top]), start + top
            rel = float(error[top] / norm[top]) if float(norm[top]) > 0 else math.inf
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(where), tuple(actual.shape[:-1]) or (1,)))
    return RowCheck(worst, index, rel)


def compare(actual: torch.Tensor, expected: torch.Tensor, tolerance: float) -> Comparison:
    return Comparison(relative_error(actual, expected), tolerance, element_check(actual, expected, tolerance),
                      row_check(actual, expected, tolerance))


def output_buffer(inputs: Inputs, returned: object) -> torch.Tensor:
    """What a run wrote: the ``out`` it was handed when it returns that (or nothing), else the tensor it
    returned (a baseline such as SDPA allocates its own output)."""
    out = inputs.get("out")
    if isinstance(returned, torch.Tensor) and not (isinstance(out, torch.Tensor) and _same(returned, out)):
        return returned
    if not isinstance(out, torch.Tensor):
        raise ValueError("the launch neither wrote an 'out' input nor returned a tensor")
    return out


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()


def fingerprint(inputs: Inputs) -> tuple[tuple[str, float, float], ...]:
    """(name, Σx, Σ|x|) in float64 per input tensor but ``out``: what a run must leave as it found it."""
    prints = []
    for name, tensor in named_tensors({k: v for k, v in inputs.items() if k != "out"}):
        flat = tensor.detach()
        flat = flat.reshape(-1) if flat.is_contiguous() else flat.contiguous().reshape(-1)
        total = absolute = 0.0
        for start in range(0, flat.numel(), CHUNK):
            chunk = flat[start:start + CHUNK].to(torch.float64)
            total += float(chunk.sum())
            absolute += float(chunk.abs().sum())
        prints.append((name, total, absolute))
    return tuple(prints)


def changed_inputs(inputs: Inputs, before: tuple) -> str:
    """The first input whose fingerprint moved since ``before`` ("" when none did)."""
    for (name, *old), (_, *new) in zip(before, fingerprint(inputs)):
        if any(o != n and not (math.isnan(o) and math.isnan(n)) for o, n in zip(old, new)):
            return name
    return ""


def poison(launch: Launch, inputs: Inputs, also: tuple[torch.Tensor, ...] = ()) -> None:
    """NaN into the output, every scratch buffer the launch declares (split-K partials) and ``also``."""
    for tensor in (inputs.get("out"), *launch.scratch, *also):
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            tensor.fill_(float("nan"))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _fresh_draw(spec: KernelSpec, impl: Impl, case: Case, device: torch.device, seed: int) -> str:
    """A new build on new values, poisoned and run once (its config comes from the tuning cache): what a
    launch carries between calls — an undeclared workspace, a cached answer — shows here."""
    fresh = (seed ^ FRESH_SEED) & 0x7FFFFFFF
    inputs = spec.make_inputs(case, device, generator_for(device, fresh))
    expected = spec.reference(inputs, case)
    launch = impl.build(inputs, case)
    poison(launch, inputs)
    comparison = compare(output_buffer(inputs, launch.run()), expected, spec.tolerance[case.dtype])
    return "" if comparison.ok else f"on a fresh draw of inputs (seed {fresh}): {comparison.message()}"


def check_point(spec: KernelSpec, impl: Impl | str, case: Case, device: torch.device | str, seed: int,
                fresh: bool = True) -> Checked:
    """Reference first, then build, tune, re-poison, run again and compare; then a fresh draw (``fresh``)."""
    impl = spec.impl(impl) if isinstance(impl, str) else impl
    device = torch.device(device)
    inputs = spec.make_inputs(case, device, generator_for(device, seed))
    before = fingerprint(inputs)
    expected = spec.reference(inputs, case)
    launch = impl.build(inputs, case)
    began = time.perf_counter()
    first = launch.run()  # compiles and autotunes: the configs tried may each have written the output
    _synchronize(device)
    first_call_s = time.perf_counter() - began
    poison(launch, inputs, also=(output_buffer(inputs, first),))
    comparison = compare(output_buffer(inputs, launch.run()), expected, spec.tolerance[case.dtype])
    del expected
    problem = ""
    if comparison.ok and (name := changed_inputs(inputs, before)):
        problem = f"the run changed its input {name!r}: the reference describes inputs it no longer has"
    if comparison.ok and not problem and fresh:
        problem = _fresh_draw(spec, impl, case, device, seed)
    return Checked(comparison, inputs, launch, first_call_s, problem, before)


class Recorded:
    """A launch of a timed copy that remembers what its last run returned (to find what it wrote)."""

    def __init__(self, inputs: Inputs, launch: Launch):
        self.inputs, self.launch, self.last = inputs, launch, None

    def run(self) -> object:
        self.last = self.launch.run()
        return self.last

    def written(self) -> torch.Tensor:
        return output_buffer(self.inputs, self.last)


def after_timing(copies: list[Recorded], replay, expected: torch.Tensor, tolerance: float,
                 device: torch.device) -> str:
    """Poison every timed copy's output and scratch, replay the timed closure once as timed, check every
    copy; "" when all pass, else which copy failed and how."""
    for copy in copies:
        poison(copy.launch, copy.inputs, also=(copy.written(),))
    replay()
    _synchronize(device)
    for number, copy in enumerate(copies, 1):
        comparison = compare(copy.written(), expected, tolerance)
        if not comparison.ok:
            return f"after timing, copy {number} of {len(copies)}: {comparison.message()}"
    return ""
