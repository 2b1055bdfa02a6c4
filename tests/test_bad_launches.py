"""Every timed launch is a checked launch: deliberately bad launches, each rejected with a reason.

Each launch below passes a gate that checks one run of one copy and compares what ``run()``
returns against a reference taken after the run. They run through the real sweep (gate, timing on
a simulated device whose replays run the real closures, the check after timing) on CPU tensors.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bench.device import Target
from bench.suites import Point
from bench.sweep import Runner, base_row
from bench.timing import GraphMode, SamplingPolicy
from kernels import registry
from kernels.check import compare
from kernels.spec import Axis, DeviceCaps, DType, Impl, KernelSpec, Launch, poisoned, scaled_randn
from tests.fake_gpu import FakeGpu

CAPS = DeviceCaps(name="Simulated GPU", capability=(9, 0), interpret=False, l2_bytes=50 << 20, sm_count=132,
                  memory_bytes=80 << 30)
TARGET = Target(torch.device("cpu"), CAPS, "simulated-gpu", {"name": "Simulated GPU"})
POLICY = SamplingPolicy(warmup_runs=2, warmup_s=0.0, min_samples=10, min_time_s=0.0, timeout_s=0.01,
                        graph=GraphMode.ALWAYS)


GPU: list[FakeGpu] = []  # the simulated device of the running test


def tick() -> None:
    """What a launch costs on the simulated device (10 µs: short, so R rotating copies are timed); the
    real closure computes the answer on the CPU, at every replay too."""
    GPU[-1].kernel()


def _double_spec(build, rows: int = 1, width: int = 4096) -> KernelSpec:
    shape = (rows, width) if rows > 1 else (width,)
    return KernelSpec(
        name="double", summary="y = 2x (test family)", axes=(Axis("N", int, width),), dtypes=(DType.FP32,),
        impls=(Impl("bad", build),),
        make_inputs=lambda case, device, gen: {"x": scaled_randn(shape, dtype=torch.float32, device=device,
                                                                 generator=gen),
                                               "out": poisoned(shape, dtype=torch.float32, device=device)},
        reference=lambda inputs, case: 2.0 * inputs["x"].double(), flops=lambda case: 0,
        bytes=lambda case: 8 * rows * width, tolerance={DType.FP32: 1e-6})


def _row(spec: KernelSpec, monkeypatch) -> dict:
    monkeypatch.setattr(registry, "get", lambda name: spec)
    GPU.append(FakeGpu(cold_s=10e-6, warm_s=10e-6))
    runner = Runner(TARGET, POLICY, run_seed=11, backend=GPU[-1])
    return runner.row(Point(spec.case("fp32"), "bad"), base_row("bad-launches", "", TARGET))


def test_a_correct_launch_passes_and_is_timed(monkeypatch):
    def build(inputs, case):
        x, out = inputs["x"], inputs["out"]
        return Launch(lambda: (tick(), torch.mul(x, 2.0, out=out))[1])

    row = _row(_double_spec(build), monkeypatch)
    assert row["status"] == "ok", row["error"]
    assert row["launches_per_sample"] > 1  # rotating copies were timed, and every one was checked


def test_a_baseline_that_returns_its_own_tensor_passes(monkeypatch):
    def build(inputs, case):
        x = inputs["x"]
        return Launch(lambda: (tick(), x * 2.0)[1])  # allocates its output, as SDPA does

    row = _row(_double_spec(build), monkeypatch)
    assert row["status"] == "ok", row["error"]


def test_a_launch_that_stops_working_after_its_first_calls_fails_after_timing(monkeypatch):
    def build(inputs, case):
        x, out, calls = inputs["x"], inputs["out"], []

        def run():
            tick()
            calls.append(1)
            if len(calls) <= 3:  # the gate's two runs see a working kernel
                torch.mul(x, 2.0, out=out)
            return out

        return Launch(run)

    row = _row(_double_spec(build), monkeypatch)
    assert row["status"] == "failed"
    assert row["error"].startswith("after timing, copy 1 of ")


def test_a_launch_right_only_for_the_first_rotating_copy_fails_naming_a_copy(monkeypatch):
    seen: list[float] = []

    def build(inputs, case):
        x, out = inputs["x"], inputs["out"]
        key = float(x.sum())
        first = key not in seen  # a clone of inputs already seen: skip the work (its out holds a clone
        seen.append(key)         # of the right answer, so only a re-poisoned check can tell)

        def run():
            tick()
            if first:
                torch.mul(x, 2.0, out=out)
            return out

        return Launch(run)

    row = _row(_double_spec(build), monkeypatch)
    assert row["status"] == "failed"
    assert "after timing, copy 2 of" in row["error"]


def test_a_launch_that_returns_a_cached_answer_without_writing_out_fails_the_gate(monkeypatch):
    def build(inputs, case):
        answer = 2.0 * inputs["x"]  # computed once, at build time
        return Launch(lambda: (tick(), answer)[1])

    row = _row(_double_spec(build), monkeypatch)
    assert row["status"] == "failed" and "worst at" in row["error"]


def test_a_launch_that_overwrites_its_inputs_fails_though_its_output_matches(monkeypatch):
    def build(inputs, case):
        x, out = inputs["x"], inputs["out"]
        saved = x.clone()

        def run():
            tick()
            torch.mul(saved, 2.0, out=out)
            x.zero_()  # scribbles on its input: a reference taken after the run would describe zeros
            return out

        return Launch(run)

    row = _row(_double_spec(build), monkeypatch)
    assert row["status"] == "failed" and "changed its input 'x'" in row["error"]


def test_a_launch_that_zeroes_its_weights_and_writes_zeros_fails(monkeypatch):
    def build(inputs, case):
        x, out = inputs["x"], inputs["out"]
        return Launch(lambda: (tick(), x.zero_(), torch.mul(x, 2.0, out=out))[2])

    row = _row(_double_spec(build), monkeypatch)
    assert row["status"] == "failed" and "rel_err" in row["error"]


def test_a_stale_undeclared_split_k_partial_fails_on_the_fresh_draw(monkeypatch):
    """Two halves summed through a workspace shared by every build of the shape and not declared as
    scratch; only the very first (tuning) run writes the second half's partial."""
    workspace: dict[tuple, torch.Tensor] = {}
    runs = []

    def build(inputs, case):
        x, out = inputs["x"], inputs["out"]
        half = x.numel() // 2
        partial = workspace.setdefault(tuple(x.shape), torch.zeros(2, half))

        def run():
            tick()
            runs.append(1)
            partial[0] = 2.0 * x[:half]
            if len(runs) == 1:
                partial[1] = 2.0 * x[half:]
            out[:half], out[half:] = partial[0], partial[1]
            return out

        return Launch(run)

    row = _row(_double_spec(build), monkeypatch)
    assert row["status"] == "failed" and row["error"].startswith("on a fresh draw of inputs")


def test_a_whole_row_slightly_off_fails_at_any_size(monkeypatch):
    def build(inputs, case):
        x, out = inputs["x"], inputs["out"]

        def run():
            tick()
            torch.mul(x, 2.0, out=out)
            out[777] *= 1.015  # one output vector 1.5 % off among 1024
            return out

        return Launch(run)

    row = _row(dataclasses.replace(_double_spec(build, rows=1024, width=256),
                                   tolerance={DType.FP32: 2e-3}), monkeypatch)  # tf32-like tolerance
    assert row["status"] == "failed" and "[777" in row["error"]


@pytest.mark.parametrize("dtype, tolerance, off", [(torch.float32, 2e-3, 0.015), (torch.bfloat16, 8e-3, 0.06)])
def test_the_row_bound_catches_a_row_the_global_and_element_bounds_miss(dtype, tolerance, off):
    """A whole output vector a little off (a wrong scale for one row, a lost split-K partial) among many."""
    gen = torch.Generator().manual_seed(5)
    expected = torch.randn(8192, 128, generator=gen, dtype=torch.float64)
    expected[4321] = torch.rand(128, generator=gen, dtype=torch.float64) * 2 - 1  # values of typical size
    actual = expected.to(dtype).double()
    actual[4321] *= 1 + off
    result = compare(actual, expected, tolerance)
    assert result.rel_err <= tolerance and result.element.ratio <= 1.0  # what the old gate checked: passes
    assert not result.ok and result.row.index == (4321,)
    assert result.message().startswith("row [4321] off by")
    clean = compare(expected.to(dtype).double(), expected, tolerance)
    assert clean.ok and clean.row.ratio < 0.5  # rounding alone stays far inside the row bound
