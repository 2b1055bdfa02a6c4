"""The correctness gate cannot be fooled: autotuning leftovers, stale split-K partials, diluted damage.

Each broken kernel below would pass a gate that compares the first (tuning) run, or only the global
relative error; the gate re-poisons after tuning and checks every element.
"""

import dataclasses
import math

import pytest
import torch
import triton
import triton.language as tl

from bench.device import Target
from bench.results import load_csv
from bench.suites import Point
from bench.sweep import SweepOptions, run_sweep
from bench.timing import SamplingPolicy
from kernels import registry
from kernels.check import check_point, element_check
from kernels.spec import Axis, DeviceCaps, DType, Impl, KernelSpec, Launch, poisoned, relative_error, scaled_randn

TILE = 16


@triton.jit
def _scale_tiles_kernel(x_ptr, y_ptr, n, SKIP_TILE: tl.constexpr, BLOCK: tl.constexpr):
    """y = 2·x over 1-D tiles; tile SKIP_TILE (≥ 0) is never written — the bug under test."""
    tile = tl.program_id(0)
    if tile != SKIP_TILE:
        offs = tile * BLOCK + tl.arange(0, BLOCK)
        tl.store(y_ptr + offs, 2.0 * tl.load(x_ptr + offs, mask=offs < n), mask=offs < n)


@triton.jit
def _split_partials_kernel(w_ptr, x_ptr, part_ptr, N, K, DROP: tl.constexpr, SPLIT: tl.constexpr,
                           BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """part[s, n] = Σ_{k in split s} W[n, k]·x[k]; split DROP (≥ 0) forgets to store its partial."""
    pid_n, s = tl.program_id(0), tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = s * BLOCK_K + tl.arange(0, BLOCK_K)
    w = tl.load(w_ptr + offs_n[:, None] * K + offs_k[None, :], mask=(offs_n[:, None] < N) & (offs_k[None, :] < K),
                other=0.0)
    x = tl.load(x_ptr + offs_k, mask=offs_k < K, other=0.0)
    if s != DROP:
        tl.store(part_ptr + s * N + offs_n, tl.sum(w * x[None, :], axis=1), mask=offs_n < N)


@triton.jit
def _split_reduce_kernel(part_ptr, y_ptr, N, SPLIT: tl.constexpr, BLOCK_N: tl.constexpr):
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    total = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for s in tl.static_range(SPLIT):
        total += tl.load(part_ptr + s * N + offs_n, mask=offs_n < N, other=0.0)
    tl.store(y_ptr + offs_n, total, mask=offs_n < N)


def _scale_tiles(x, y, skip):
    _scale_tiles_kernel[(triton.cdiv(x.numel(), TILE),)](x, y, x.numel(), SKIP_TILE=skip, BLOCK=TILE)


def _tuning_then(correct, chosen):
    """What the autotuner does: the first call runs another config (here the correct one) into the
    same buffers, then the chosen one; later calls run only the chosen one."""
    calls = []

    def run():
        if not calls:
            correct()
        calls.append(1)
        return chosen()

    return run


SCALE = KernelSpec(
    name="scale", summary="y = 2x (test family)", axes=(Axis("N", int, 1000),), dtypes=(DType.FP32,), impls=(),
    make_inputs=lambda case, device, gen: {"x": scaled_randn((case["N"],), dtype=torch.float32, device=device,
                                                             generator=gen),
                                           "out": poisoned((case["N"],), dtype=torch.float32, device=device)},
    reference=lambda inputs, case: 2.0 * inputs["x"].double(), flops=lambda case: case["N"],
    bytes=lambda case: 8 * case["N"], tolerance={DType.FP32: 1e-6})


def _tile_skipper(inputs, case):
    x, y = inputs["x"], inputs["out"]
    run = _tuning_then(lambda: _scale_tiles(x, y, -1), lambda: (_scale_tiles(x, y, 3), y)[1])
    return Launch(run)


def _tuning_only_writer(inputs, case):
    x, y = inputs["x"], inputs["out"]
    return Launch(_tuning_then(lambda: _scale_tiles(x, y, -1), lambda: y))  # the chosen config writes nothing


SPLIT, BLOCK_N, BLOCK_K = 4, 16, 32
GEMV = KernelSpec(
    name="splitk", summary="y = W·x, split-K (test family)", axes=(Axis("N", int, 40), Axis("K", int, 128)),
    dtypes=(DType.FP32,), impls=(),
    make_inputs=lambda case, device, gen: {
        "w": scaled_randn((case["N"], case["K"]), dtype=torch.float32, device=device, generator=gen, fan_in=case["K"]),
        "x": scaled_randn((case["K"],), dtype=torch.float32, device=device, generator=gen),
        "out": poisoned((case["N"],), dtype=torch.float32, device=device)},
    reference=lambda inputs, case: inputs["w"].double() @ inputs["x"].double(), flops=lambda case: 0,
    bytes=lambda case: 4 * case["N"] * case["K"], tolerance={DType.FP32: 1e-5})


def _split_dropper(inputs, case):
    w, x, y = inputs["w"], inputs["x"], inputs["out"]
    n, k = w.shape
    partials = torch.empty((SPLIT, n), dtype=torch.float32, device=w.device)

    def gemv(drop):
        _split_partials_kernel[(triton.cdiv(n, BLOCK_N), SPLIT)](w, x, partials, n, k, DROP=drop, SPLIT=SPLIT,
                                                                  BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K)
        _split_reduce_kernel[(triton.cdiv(n, BLOCK_N),)](partials, y, n, SPLIT=SPLIT, BLOCK_N=BLOCK_N)
        return y

    return Launch(_tuning_then(lambda: gemv(-1), lambda: gemv(SPLIT - 1)), scratch=(partials,))


@pytest.mark.parametrize("spec, build, case", [
    (SCALE, _tile_skipper, {"N": 1000}),
    (SCALE, _tuning_only_writer, {"N": 1000}),
    (GEMV, _split_dropper, {"N": 40, "K": SPLIT * BLOCK_K}),
])
def test_leftovers_of_tuning_do_not_pass(spec, build, case, device, seed):
    checked = check_point(spec, Impl("broken", build), spec.case("fp32", **case), device, seed)
    assert not checked.ok, "a kernel that relies on what tuning left behind passed the gate"
    assert "worst at" in checked.message()


def test_a_correct_split_kernel_passes(device, seed):
    def build(inputs, case):
        launch = _split_dropper(inputs, case)
        w, x, y = inputs["w"], inputs["x"], inputs["out"]
        partials = launch.scratch[0]

        def run():
            _split_partials_kernel[(triton.cdiv(40, BLOCK_N), SPLIT)](w, x, partials, 40, SPLIT * BLOCK_K, DROP=-1,
                                                                       SPLIT=SPLIT, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K)
            _split_reduce_kernel[(triton.cdiv(40, BLOCK_N),)](partials, y, 40, SPLIT=SPLIT, BLOCK_N=BLOCK_N)
            return y

        return Launch(run, scratch=launch.scratch)

    checked = check_point(GEMV, Impl("good", build), GEMV.case("fp32", N=40, K=SPLIT * BLOCK_K), device, seed)
    assert checked.ok, checked.message()
    assert checked.element.ratio < 0.1


def test_a_zeroed_row_in_a_large_output_is_caught_though_the_global_error_passes():
    gen = torch.Generator().manual_seed(0)
    expected = torch.randn(4096, 512, generator=gen, dtype=torch.float64)
    actual = expected.to(torch.bfloat16).double()
    actual[1234] = 0.0
    bf16_tolerance = 1.6e-2
    assert relative_error(actual, expected) < bf16_tolerance  # ≈ 0.0156: the old gate's only check passes
    worst = element_check(actual, expected, bf16_tolerance)
    assert worst.ratio > 1.0 and worst.index[0] == 1234


def test_a_zeroed_tile_is_caught_and_named():
    gen = torch.Generator().manual_seed(1)
    expected = torch.randn(2048, 2048, generator=gen, dtype=torch.float64)
    actual = expected.clone()
    actual[256:288, 512:544] = 0.0  # one 32×32 tile: relative Frobenius error ≈ 0.0156
    assert relative_error(actual, expected) < 1.6e-2
    worst = element_check(actual, expected, 1.6e-2)
    assert worst.ratio > 1.0
    assert 256 <= worst.index[0] < 288 and 512 <= worst.index[1] < 544


def test_rounding_noise_passes_by_a_wide_margin():
    gen = torch.Generator().manual_seed(2)
    expected = torch.randn(1024, 1024, generator=gen, dtype=torch.float64)
    assert element_check(expected.to(torch.bfloat16), expected, 1.6e-2).ratio < 0.25
    assert element_check(expected.to(torch.float16), expected, 2e-3).ratio < 0.25


def test_exact_families_demand_equality_and_nan_fails():
    expected = torch.arange(10, dtype=torch.float64)
    assert element_check(expected.clone(), expected, 0.0).ratio == 0.0
    off = expected.clone()
    off[7] += 1e-9
    assert element_check(off, expected, 0.0).ratio == float("inf")
    nan = expected.clone()
    nan[3] = float("nan")
    check = element_check(nan, expected, 1e-3)
    assert check.ratio == float("inf") and check.index == (3,)


def _cpu_target() -> Target:
    caps = DeviceCaps(name="Triton interpreter (CPU)", capability=None, interpret=True, l2_bytes=0, sm_count=0,
                      memory_bytes=0)
    return Target(torch.device("cpu"), caps, "cpu-interpreter", {"name": caps.name})


def test_the_sweep_records_a_tuning_leftover_as_failed(tmp_path, monkeypatch):
    spec = dataclasses.replace(SCALE, impls=(Impl("broken", _tile_skipper),))
    monkeypatch.setattr(registry, "get", lambda name: spec)
    out = tmp_path / "gate.csv"
    summary = run_sweep([Point(spec.case("fp32", N=1000), "broken")],
                        SweepOptions(out=out, seed=3, progress=False, policy=SamplingPolicy()), _cpu_target())
    frame = load_csv(out)
    assert summary.counts == {"failed": 1}
    assert frame.loc[0, "status"] == "failed" and "worst at [" in frame.loc[0, "error"]
    assert frame.loc[0, "max_elem_err"] == float("inf")  # the skipped tile still holds the poison


def test_an_error_at_its_rows_rounding_scale_passes_where_the_row_is_larger_than_the_output_rms():
    """The first H200 call failed Triton and SDPA alike on bf16 causal prefill at seq 4096/16384 (element
    1.03–1.51× its bound, worst in query rows 1–5): the first query rows average a few keys, so their
    outputs are ~10× the output's rms, and their rounding error scales with their own row."""
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, (1,))))
    tol = 8e-3
    expected = torch.randn(4096, 128, generator=gen, dtype=torch.float64) * 0.02  # long rows: small outputs
    expected[:8] *= 30.0  # early rows: ~0.6
    noise = torch.randn(expected.shape, generator=gen, dtype=torch.float64).clamp(-3, 3) / 3  # |noise| ≤ 1
    row_scale = torch.sqrt(torch.mean(expected ** 2, dim=1, keepdim=True))
    actual = expected + 1.5 * tol * row_scale * noise  # ≤ 1.5·tol of each row's own magnitude
    assert element_check(actual, expected, tol).ratio < 1.0
    lost = expected.clone()
    lost[3] = 0.0  # an early row not written
    assert element_check(lost, expected, tol).ratio > 1.0
    tile = expected.clone()
    tile[2000:2032, 64:96] = 0.0  # a lost tile among the small rows
    assert element_check(tile, expected, tol).ratio > 1.0


def _flash_like_causal_bf16(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention rounded where FlashAttention kernels round in bf16: P before P·V, O on store."""
    scores = (q @ k.T) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(torch.ones_like(scores, dtype=torch.bool).triu(1), -math.inf)
    p = torch.exp(scores - scores.amax(dim=-1, keepdim=True))
    out = (p.to(torch.bfloat16).double() @ v) / p.sum(dim=-1, keepdim=True)
    return out.to(torch.bfloat16).double()


def test_a_causal_bf16_attention_rounded_as_flash_kernels_round_passes_with_margin():
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, (1,))))
    seq, d = 2048, 64
    q, k, v = (torch.randn(seq, d, generator=gen, dtype=torch.float64).to(torch.bfloat16).double() for _ in range(3))
    expected = torch.softmax(((q @ k.T) / math.sqrt(d)).masked_fill(torch.ones(seq, seq).triu(1).bool(), -math.inf),
                             dim=-1) @ v
    check = element_check(_flash_like_causal_bf16(q, k, v), expected, 8e-3)  # attn_prefill's bf16 tolerance
    assert check.ratio < 0.4, check  # 0.5–0.7 against the output's rms alone
    lost = _flash_like_causal_bf16(q, k, v)
    lost[3, :] = 0.0  # an early query row not written: still caught by the row-scaled bound
    assert element_check(lost, expected, 8e-3).ratio > 1.0
