"""Kernel specs: what a benchmarked operation declares so a sweep can build, check and count it.

A family (``copy``, ``gemm``, ``attn_decode`` …) is one :class:`KernelSpec`: its axes, the
implementations it offers, an input factory, one reference, and ``flops``/``bytes`` computed from
the shape alone. Nothing here touches a GPU or imports Triton.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

import torch

from kernels.errors import UsageError

if TYPE_CHECKING:  # kernels.tuning imports Triton; specs must not
    from kernels.tuning import Limits


class DType(str, Enum):
    """Element type of a point. ``fp8`` is OCP e4m3 (``torch.float8_e4m3fn``)."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    FP8 = "fp8"

    @property
    def torch(self) -> torch.dtype:
        return _TORCH_DTYPES[self]

    @property
    def itemsize(self) -> int:
        return _TORCH_DTYPES[self].itemsize

    @classmethod
    def parse(cls, text: str) -> "DType":
        try:
            return cls(text)
        except ValueError:
            raise UsageError(f"unknown dtype {text!r}; valid: {', '.join(d.value for d in cls)}") from None


_TORCH_DTYPES = {
    DType.FP32: torch.float32,
    DType.FP16: torch.float16,
    DType.BF16: torch.bfloat16,
    DType.FP8: torch.float8_e4m3fn,
}


@dataclass(frozen=True)
class Axis:
    """One named dimension of a family's sweep space (``M``, ``seq_kv``, ``causal``, ``format`` …)."""

    name: str
    type: type  # int, bool or str
    default: Any
    help: str = ""
    choices: tuple = ()
    minimum: int | None = None
    maximum: int | None = None  # with minimum: any integer in [minimum, maximum], named as a range when refused

    def parse(self, text: str) -> Any:
        """One value from command-line text, or a UsageError naming what is valid."""
        text = text.strip()
        if self.type is bool:
            lowered = text.lower()
            if lowered in ("1", "true", "yes"):
                return True
            if lowered in ("0", "false", "no"):
                return False
            raise UsageError(f"axis {self.name}: {text!r} is not a boolean; valid: 0, 1, true, false")
        if self.type is int:
            try:
                value = int(text)
            except ValueError:
                raise UsageError(f"axis {self.name}: {text!r} is not an integer") from None
            return self.check(value)
        return self.check(text)

    def check(self, value: Any) -> Any:
        if self.choices and value not in self.choices:
            valid = ", ".join(str(c) for c in self.choices)
            raise UsageError(f"axis {self.name}: {value!r} is not valid; valid: {valid}")
        low_ok = self.minimum is None or value >= self.minimum
        high_ok = self.maximum is None or value <= self.maximum
        if not (low_ok and high_ok):
            if self.maximum is None:
                raise UsageError(f"axis {self.name}: {value} is below the minimum {self.minimum}")
            low = "" if self.minimum is None else f"{self.minimum} "
            raise UsageError(f"axis {self.name}: {value} is out of range; valid: {low}… {self.maximum}")
        return value


@dataclass(frozen=True)
class Case:
    """One point of a family's space: a dtype and a value for every axis (hashable, ordered)."""

    kernel: str
    dtype: DType
    values: tuple[tuple[str, Any], ...]

    def __getitem__(self, name: str) -> Any:
        for key, value in self.values:
            if key == name:
                return value
        raise KeyError(f"{self.kernel} has no axis {name!r}")

    def as_dict(self) -> dict[str, Any]:
        return dict(self.values)

    def label(self) -> str:
        axes = " ".join(f"{k}={v}" for k, v in self.values)
        return f"{self.kernel} {self.dtype.value} {axes}"


@dataclass(frozen=True)
class DeviceCaps:
    """What a skip rule may ask of the device a point would run on."""

    name: str
    capability: tuple[int, int] | None  # CUDA compute capability; None under the interpreter
    interpret: bool
    l2_bytes: int
    sm_count: int
    memory_bytes: int

    @property
    def is_hopper_or_newer(self) -> bool:
        return self.capability is not None and self.capability >= (9, 0)


@dataclass(frozen=True)
class Launch:
    """A prepared point: ``run`` holds only the timed work and returns the output tensor.

    ``scratch`` lists buffers the kernel writes before its output (split-K partials): the gate
    poisons them with the output, so a partial a run forgets to write cannot pass as a stale one.
    """

    run: Callable[[], torch.Tensor]
    config: Callable[[], str] = lambda: ""  # the variant/config that ran, known after the first run
    scratch: tuple[torch.Tensor, ...] = ()


Inputs = dict[str, Any]
BuildFn = Callable[[Inputs, Case], Launch]
SkipFn = Callable[[Case, DeviceCaps], "str | None"]


@dataclass(frozen=True)
class TuneSpace:
    """One Triton kernel a case launches and the configs its autotuner would try, on given limits.

    ``configs`` are the ``triton.Config`` objects the family's pruner keeps for the case (the
    pruner is a thin adapter over the same candidate function): the autotuner benchmarks each one
    when there are two or more, a lone config runs untimed; every one is compiled once per key.
    ``arguments()`` gives what a launch passes besides the config: positional arguments of the
    case's real shapes (``meta`` tensors: nothing is allocated) and the launcher's constexprs, so
    a compile specialises exactly as the launch would.
    """

    name: str  # variant: "tiled", "tma", "split", "merge" … (the family's own vocabulary)
    kernel: Any  # the @triton.jit function (or its triton.heuristics wrapper) under the autotuner
    configs: tuple[Any, ...]  # triton.Config, in the order the autotuner would try them
    arguments: Callable[[], tuple[tuple, dict[str, Any]]]


CandidatesFn = Callable[[Case, "Limits"], "tuple[TuneSpace, ...]"]


@dataclass(frozen=True)
class Impl:
    """One way to compute a family: ``triton`` (ours) or a baseline a user would call otherwise."""

    name: str
    build: BuildFn
    summary: str = ""
    skip: SkipFn | None = None  # reason this impl cannot run a case on a device, or None
    bytes: Callable[[Case], int] | None = None  # its own traffic when it differs (fp16 baseline of a quantized op)
    footprint: Callable[[Case], int] | None = None  # its own resident bytes when it differs (a gathered copy)
    # Triton impls: the kernels a case launches and the configs each would tune, on a device's
    # Limits, without a GPU (static compiler, time model); None for baselines (no Triton)
    candidates: CandidatesFn | None = None


@dataclass(frozen=True)
class KernelSpec:
    """A benchmarked operation: axes, impls, inputs, reference and its cost model."""

    name: str
    summary: str
    axes: tuple[Axis, ...]
    dtypes: tuple[DType, ...]
    impls: tuple[Impl, ...]
    make_inputs: Callable[[Case, torch.device, torch.Generator], Inputs]  # includes a NaN-poisoned "out"
    reference: Callable[[Inputs, Case], torch.Tensor]  # float64/float32 result of the same maths
    flops: Callable[[Case], int]
    bytes: Callable[[Case], int]  # minimal compulsory DRAM traffic: inputs read once, output written once
    tolerance: Mapping[DType, float]  # bound on the relative Frobenius error against the reference
    footprint: Callable[[Case], int] | None = None  # bytes resident on the device; defaults to bytes
    skip: SkipFn | None = None  # family-wide skip rule (e.g. fp8 needs sm_89+)
    tags: tuple[str, ...] = field(default=())

    def axis(self, name: str) -> Axis:
        for axis in self.axes:
            if axis.name == name:
                return axis
        valid = ", ".join(a.name for a in self.axes)
        raise UsageError(f"{self.name} has no axis {name!r}; valid: {valid}")

    def impl(self, name: str) -> Impl:
        for impl in self.impls:
            if impl.name == name:
                return impl
        valid = ", ".join(i.name for i in self.impls)
        raise UsageError(f"{self.name} has no impl {name!r}; valid: {valid}")

    def check_dtype(self, dtype: DType) -> DType:
        if dtype not in self.dtypes:
            valid = ", ".join(d.value for d in self.dtypes)
            raise UsageError(f"{self.name} does not take dtype {dtype.value}; valid: {valid}")
        return dtype

    def case(self, dtype: DType | str, **values: Any) -> Case:
        """A validated case; axes not given take their defaults."""
        dtype = self.check_dtype(DType.parse(dtype) if isinstance(dtype, str) else dtype)
        unknown = set(values) - {a.name for a in self.axes}
        if unknown:
            self.axis(sorted(unknown)[0])  # raises with the list of valid axes
        ordered = tuple((a.name, a.check(values.get(a.name, a.default))) for a in self.axes)
        return Case(self.name, dtype, ordered)

    def bytes_for(self, case: Case, impl: Impl) -> int:
        return (impl.bytes or self.bytes)(case)

    def footprint_bytes(self, case: Case, impl: Impl | None = None) -> int:
        own = impl.footprint if impl is not None else None
        return (own or self.footprint or self.bytes)(case)

    def skip_reason(self, case: Case, impl: Impl, caps: DeviceCaps) -> str | None:
        for rule in (self.skip, impl.skip):
            if rule is not None:
                reason = rule(case, caps)
                if reason:
                    return reason
        return None


# ---------------------------------------------------------------------------------------------
# Shared input and error helpers (one copy, used by every family, its tests and the sweep)
# ---------------------------------------------------------------------------------------------


def scaled_randn(
    shape: Iterable[int],
    *,
    dtype: torch.dtype,
    device: torch.device | str,
    generator: torch.Generator,
    fan_in: int = 1,
) -> torch.Tensor:
    """Normal(0, 1/fan_in) values, so a K-long dot product stays O(1) and its error does not grow with K."""
    values = torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=torch.float32)
    values = values.to(device)
    if fan_in > 1:
        values.mul_(1.0 / math.sqrt(fan_in))
    if dtype == torch.float8_e4m3fn:
        values = values.clamp(-448.0, 448.0)
    return values.to(dtype)


def poisoned(shape: Iterable[int], *, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """An output buffer full of NaN, so an element a kernel forgets to write fails the check."""
    return torch.full(tuple(shape), float("nan"), dtype=dtype, device=device)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual − expected||₂ / ||expected||₂ in float64; NaN anywhere in ``actual`` gives NaN."""
    if actual.shape != expected.shape:
        raise ValueError(f"output shape {tuple(actual.shape)} != reference shape {tuple(expected.shape)}")
    a = actual.detach().to(torch.float64)
    e = expected.detach().to(device=a.device, dtype=torch.float64)
    if not torch.isfinite(a).all():
        return float("nan")
    denominator = torch.linalg.vector_norm(e).item()
    numerator = torch.linalg.vector_norm(a - e).item()
    if denominator == 0.0:
        return numerator
    return numerator / denominator


def within_tolerance(error: float, tolerance: float) -> bool:
    return error <= tolerance  # False for NaN


def map_tensors(value: Any, fn: Callable[[str, torch.Tensor], Any], path: str = "") -> Any:
    """``value`` rebuilt with every tensor inside it (dicts, lists, tuples, dataclasses) replaced by
    ``fn(path, tensor)``; the one walk over a point's nested inputs (cloning copies, fingerprinting them)."""
    if isinstance(value, torch.Tensor):
        return fn(path, value)
    if isinstance(value, dict):
        return {k: map_tensors(v, fn, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(map_tensors(v, fn, f"{path}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        mapped = {f.name: map_tensors(getattr(value, f.name), fn, f"{path}.{f.name}")
                  for f in dataclasses.fields(value)}
        return dataclasses.replace(value, **{f.name: mapped[f.name] for f in dataclasses.fields(value) if f.init})
    return value


def named_tensors(value: Any) -> list[tuple[str, torch.Tensor]]:
    """Every tensor inside ``value`` with its path (``w.scales``, ``pages[3]``), in walk order."""
    found: list[tuple[str, torch.Tensor]] = []
    map_tensors(value, lambda path, tensor: found.append((path, tensor)) or tensor)
    return found


def generator_for(device: torch.device | str, seed: int) -> torch.Generator:
    """A generator on ``device`` (CUDA generators keep input creation on the GPU)."""
    device = torch.device(device)
    gen = torch.Generator(device=device if device.type == "cuda" else "cpu")
    gen.manual_seed(seed)
    return gen
