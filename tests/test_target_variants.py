"""Variants chosen by target (kernels/targets.py): selection, pruners, fp8 flavours, the scaled qgemm
under the interpreter, and each target's variant compiled for it (no GPU: triton.compile with a target).

Markers the compiled code must carry (Triton 3.6 and 3.9; what the static table can look for):
sm_100 block-scaled MMA ``tcgen05.mma`` with ``block_scale`` (kind::mxf4 / mxf4nvf4 / mxf8f6f4),
plain tcgen05 ``tcgen05.mma``; sm_90 ``wgmma.mma_async``; gfx942/gfx950 ``v_mfma_*`` and gfx950's
scaled ``v_mfma_scale_*``.
"""

from __future__ import annotations

import re

import pytest
import torch
import triton
import triton.language as tl

from kernels.check import check_point
from kernels.dequant import DEQUANT, dequant, kernel_format
from kernels.gemm import GEMM, GemmVariant, gemm_candidates, gemm_variant, shared_memory_bytes, tma_eligible
from kernels.gemm_fp8 import quantize_rowwise
from kernels.qgemm import QGEMM, QGemmVariant, qgemm, qgemm_candidates, qgemm_variant
from kernels.qgemm_scaled import fp4_activation_tile, scaled_candidates
from kernels.qgemv import qgemv_candidates
from kernels.quant_formats import (
    activation_grid,
    dequantize,
    quantize,
    quantize_activations,
)
from kernels.spec import relative_error
from kernels.targets import cdna_arch, dot_precision, fp8_dtype, has_tma, is_blackwell
from kernels.tuning import HOPPER, INTERPRETER, Limits, Vendor, describe, pinned_limits

B200 = Limits(sm_count=148, smem_per_block=232_448, registers_per_sm=65_536, capability=(10, 0))
B300 = Limits(sm_count=148, smem_per_block=232_448, registers_per_sm=65_536, capability=(10, 3))
RTX_PRO = Limits(sm_count=188, smem_per_block=101_376, registers_per_sm=65_536, capability=(12, 0))
MI300X = Limits(sm_count=304, smem_per_block=65_536, registers_per_sm=131_072, capability=(9, 4), warp_size=64,
                vendor=Vendor.AMD)
MI355X = Limits(sm_count=256, smem_per_block=163_840, registers_per_sm=131_072, capability=(9, 5), warp_size=64,
                vendor=Vendor.AMD)


def _has_interpreter_dot_scaled() -> bool:
    from triton.runtime import interpreter

    return hasattr(interpreter.InterpreterBuilder, "create_dot_scaled")


def scaled_runs_here(fmt: str, device: str, monkeypatch) -> None:
    """Skip where the scaled variant cannot run: 3.6's interpreter has no tl.dot_scaled, and off
    Blackwell Triton emulates only mxfp4 (nvfp4's e4m3 scales fail to compile on sm_90 with 3.6)."""
    if device == "cpu":
        if not _has_interpreter_dot_scaled():
            pytest.skip(f"Triton {triton.__version__}'s interpreter cannot run tl.dot_scaled")
        _fake_e4m3_scales(monkeypatch)
    elif fmt == "nvfp4" and torch.cuda.get_device_capability() < (10, 0):
        pytest.skip("nvfp4 tl.dot_scaled is native on Blackwell only")


# ---------------------------------------------------------------------------------------------
# Selection by target
# ---------------------------------------------------------------------------------------------


def test_targets_are_told_apart_by_limits():
    assert [is_blackwell(t) for t in (B200, B300, RTX_PRO, HOPPER, MI300X, INTERPRETER)] == \
        [True, True, True, False, False, False]
    assert [cdna_arch(t) for t in (MI300X, MI355X, B200, INTERPRETER)] == ["gfx942", "gfx950", None, None]
    assert [fp8_dtype(t) for t in (MI300X, MI355X, B200, HOPPER)] == \
        [torch.float8_e4m3fnuz, torch.float8_e4m3fn, torch.float8_e4m3fn, torch.float8_e4m3fn]
    assert [has_tma(t) for t in (HOPPER, B200, MI300X, MI355X, INTERPRETER)] == [True, True, False, False, False]


@pytest.mark.parametrize("limits,scaled", [
    (B200, {"mxfp4", "nvfp4"}), (B300, {"mxfp4", "nvfp4"}), (RTX_PRO, {"mxfp4", "nvfp4"}),
    (MI355X, {"mxfp4"}), (MI300X, set()), (HOPPER, set()), (INTERPRETER, set())])
def test_qgemm_variant_by_target(limits, scaled):
    for fmt in ("int8", "int4", "fp8", "mxfp4", "nvfp4"):
        expected = QGemmVariant.SCALED if fmt in scaled else QGemmVariant.DEQUANT
        assert qgemm_variant(fmt, limits) is expected, fmt


def test_family_candidates_follow_the_target():
    """The launcher picks the variant from the pinned limits: what the static compiler would compile."""
    case = QGEMM.case("fp16", format="mxfp4", group_size=32, M=64, N=4096, K=4096)
    hook = QGEMM.impl("triton").candidates
    assert [s.name for s in hook(case, B200)] == ["scaled"]
    assert [s.name for s in hook(case, MI355X)] == ["scaled"]
    assert [s.name for s in hook(case, HOPPER)] == ["qgemm"]
    nvfp4 = QGEMM.case("fp16", format="nvfp4", group_size=16, M=64, N=4096, K=4096)
    assert [s.name for s in hook(nvfp4, MI355X)] == ["qgemm"]  # gfx950 has no e4m3-scaled MMA
    assert all(c.kwargs["BLOCK_M"] == 128 for c in hook(case, B200)[0].configs)


def test_scaled_variant_refuses_other_formats():
    qw = quantize(torch.randn(8, 64), "int4", 32)
    with pytest.raises(ValueError, match="scaled qgemm variant takes mxfp4 or nvfp4"):
        qgemm(torch.randn(2, 64).half(), qw, variant="scaled")


# ---------------------------------------------------------------------------------------------
# Pruners: Blackwell's MMA shapes, AMD's 64-wide wavefront
# ---------------------------------------------------------------------------------------------


def test_blackwell_pruners_keep_tcgen05_shapes():
    for m in (1, 16, 33):
        assert min(c.kwargs["BLOCK_M"] for c in gemm_candidates(m, 4096, 4096, 1, 2, False, B200)) >= 64
        assert min(c.kwargs["BLOCK_M"] for c in qgemm_candidates(m, 32, B200)) >= 64
        assert {c.kwargs["BLOCK_M"] for c in scaled_candidates(m, 32, 2, B200)} == {128}
        # Hopper keeps its skinny tiles, and gfx950's scaled MFMA takes 32 rows
        assert min(c.kwargs["BLOCK_M"] for c in gemm_candidates(m, 4096, 4096, 1, 2, False, HOPPER)) <= 32
        assert min(c.kwargs["BLOCK_M"] for c in scaled_candidates(m, 32, 2, MI355X)) <= 32
    # the persistent TMA kernel takes tcgen05's full 128 rows (64-row tiles spilled on sm_100a)
    assert min(c.kwargs["BLOCK_M"] for c in gemm_candidates(4096, 4096, 4096, 2, 2, True, B200)) == 128
    assert min(c.kwargs["BLOCK_M"] for c in gemm_candidates(4096, 4096, 4096, 2, 2, True, HOPPER)) == 64
    # qgemv's tcgen05 dot (BLOCK_M 64) keeps x's tile in tensor memory: K tiles of 1024 failed to compile
    assert max(c.kwargs["BLOCK_K"] for c in qgemv_candidates(64, 4096, 4096, 0, "int8", B200)) <= 512
    assert max(c.kwargs["BLOCK_K"] for c in qgemv_candidates(64, 4096, 4096, 0, "int8", HOPPER)) == 1024


def test_pruners_count_threads_by_the_warp_size():
    """A 64-wide wavefront holds twice the threads per warp: per-thread budgets admit bigger tiles."""
    wide = Limits(sm_count=132, smem_per_block=232_448, registers_per_sm=65_536, capability=(9, 0), warp_size=64)
    for narrow, wider in ((gemm_candidates(4096, 4096, 4096, 1, 2, False, HOPPER),
                           gemm_candidates(4096, 4096, 4096, 1, 2, False, wide)),
                          (qgemm_candidates(4096, 0, HOPPER), qgemm_candidates(4096, 0, wide))):
        assert set(map(describe, narrow)) < set(map(describe, wider))  # strictly more tiles fit the budget
    # qgemv keeps the tiles with the most weight bytes per thread: a wider warp changes which
    assert set(map(describe, qgemv_candidates(16, 4096, 4096, 0, "int8", HOPPER))) != \
        set(map(describe, qgemv_candidates(16, 4096, 4096, 0, "int8", wide)))


def test_qgemv_dot_tiles_fit_amd_lds():
    """MI300X has 64 KiB of LDS: an fp8 M=64 tile of 1024 K columns compiled to 128 KiB on gfx942."""
    for block_m in (16, 64):
        for limits in (MI300X, HOPPER):
            for c in qgemv_candidates(block_m, 4096, 4096, 0, "fp8", limits):
                assert 2 * (block_m + c.kwargs["BLOCK_N"]) * c.kwargs["BLOCK_K"] <= limits.smem_per_block
    assert max(c.kwargs["BLOCK_K"] for c in qgemv_candidates(64, 4096, 4096, 0, "fp8", HOPPER)) == 1024


def test_gemm_tiles_fit_amd_lds():
    """When no tile of the list fits (fp32 on MI300X's 64 KiB), the smallest loses pipeline stages until it does."""
    for M in (16, 4096):
        for in_size in (1, 2, 4):
            for limits in (MI300X, MI355X, HOPPER):
                for c in gemm_candidates(M, 4096, 4096, in_size, min(in_size * 2, 4), False, limits):
                    assert shared_memory_bytes(c, in_size, min(in_size * 2, 4), False) <= limits.smem_per_block
    assert min(c.num_stages for c in gemm_candidates(16, 4096, 4096, 4, 4, False, MI300X)) < 4


def test_fp32_dot_precision_by_target():
    assert [dot_precision(t) for t in (HOPPER, B200, MI300X, MI355X)] == ["tf32", "tf32", "tf32", "bf16x3"]


def test_no_tma_on_amd():
    x, w, out = torch.zeros(128, 64), torch.zeros(64, 64), torch.zeros(128, 64)
    with pinned_limits(MI300X):
        assert not tma_eligible(x, w, out) and gemm_variant(x, w, out) is GemmVariant.TILED
    with pinned_limits(B200):
        assert tma_eligible(x, w, out)


# ---------------------------------------------------------------------------------------------
# fp8 flavour by target
# ---------------------------------------------------------------------------------------------


def test_fp8_rowwise_and_weights_take_the_targets_flavour(seed):
    values = torch.randn((6, 64), generator=torch.Generator().manual_seed(seed)) * 3
    with pinned_limits(MI300X):
        q, scale = quantize_rowwise(values)
        inputs = GEMM.make_inputs(GEMM.case("fp8", M=4, N=6, K=32), torch.device("cpu"),
                                  torch.Generator().manual_seed(seed))
    assert q.dtype == torch.float8_e4m3fnuz and torch.allclose(q.float().abs().amax(dim=1), torch.full((6,), 240.0))
    assert relative_error(q.double() * scale.double()[:, None], values) < 0.05
    assert inputs["x"].dtype == inputs["w"].dtype == torch.float8_e4m3fnuz
    assert quantize_rowwise(values)[0].dtype == torch.float8_e4m3fn  # the interpreter's flavour


def test_fnuz_weights_dequantise_exactly(device, seed):
    if device != "cpu" and not torch.version.hip:
        pytest.skip("e4m3fnuz is AMD's fp8: NVIDIA GPUs have no conversion for it")
    weight = torch.randn((37, 200), generator=torch.Generator().manual_seed(seed)) / 10
    qw = quantize(weight.to(device), "fp8", fp8_dtype=torch.float8_e4m3fnuz)
    assert qw.qweight.dtype == torch.float8_e4m3fnuz and qw.qweight.float().abs().max() <= 240
    assert kernel_format(qw) == "fp8_fnuz"
    reference = dequantize(qw)
    assert relative_error(reference, weight.to(device)) < 0.05
    with pytest.raises(ValueError, match="fp8_dtype must be one of"):
        quantize(weight, "fp8", fp8_dtype=torch.float8_e5m2)
    if device == "cpu" and tuple(map(int, triton.__version__.split(".")[:2])) < (3, 7):
        pytest.skip(f"Triton {triton.__version__}'s interpreter has no e4m3fnuz (fp8e4b8) type")
    out = dequant(qw, torch.float16, torch.full((37, 200), float("nan"), dtype=torch.float16, device=device))
    assert relative_error(out, reference) <= DEQUANT.tolerance[DEQUANT.dtypes[0]]


# ---------------------------------------------------------------------------------------------
# The activation quantiser: in-kernel against the reference, and the scaled kernel under the interpreter
# ---------------------------------------------------------------------------------------------


@triton.jit
def _activation_probe(x_ptr, q_ptr, s_ptr, FMT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    G: tl.constexpr = 32 if FMT == "mxfp4" else 16
    m = tl.arange(0, BLOCK_M)
    x = tl.load(x_ptr + m[:, None] * BLOCK_K + tl.arange(0, BLOCK_K)[None, :])
    q, s = fp4_activation_tile(x, FMT, BLOCK_M, BLOCK_K)
    tl.store(q_ptr + m[:, None] * (BLOCK_K // 2) + tl.arange(0, BLOCK_K // 2)[None, :], q)
    tl.store(s_ptr + m[:, None] * (BLOCK_K // G) + tl.arange(0, BLOCK_K // G)[None, :], s)


def awkward_activations(seed: int) -> torch.Tensor:
    """Random rows at scales from 2^-140 to 2^20, plus every e2m1 tie, zeros, −0 and one-hot blocks."""
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randn((12, 64), generator=gen) * torch.exp2(torch.linspace(-140, 20, 12))[:, None]
    ties = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 7.0]).repeat(8) * torch.tensor([1.0, -1.0]).repeat(32)
    special = torch.zeros((3, 64))
    special[1, 5] = -0.0
    special[1] = -special[1]  # −0 everywhere
    special[2, ::17] = 1e-3
    return torch.cat([rows, ties[None, :] * 2.0 ** -3, special]).float()


@pytest.mark.parametrize("fmt", ["mxfp4", "nvfp4"])
def test_in_kernel_activation_quantiser_matches_the_reference(fmt, device, seed):
    x = awkward_activations(seed).to(device)
    group = 32 if fmt == "mxfp4" else 16
    q = torch.full((16, 32), 0xAB, dtype=torch.uint8, device=device)  # poisoned
    s = torch.full((16, 64 // group), 0xAB, dtype=torch.uint8, device=device)
    _activation_probe[(1,)](x, q, s, FMT=fmt, BLOCK_M=16, BLOCK_K=64)
    codes, scales = quantize_activations(x, fmt)
    assert torch.equal(q, codes) and torch.equal(s, scales)
    # and the reference stands for values on the grid: quantising them again changes nothing
    grid = activation_grid(x, fmt)
    assert torch.equal(activation_grid(grid, fmt), grid)


def _fake_e4m3_scales(monkeypatch):
    """Triton 3.9's interpreter decodes every dot_scaled scale as E8M0; the hardware reads an fp8
    scale as e4m3 (nvfp4). Model that, so the nvfp4 kernel's layout is checked, not the interpreter's gap."""
    from triton.runtime import interpreter

    original = interpreter._dot_scaled_scale_to_f32

    def decode(scale_handle, compute_type):
        if scale_handle.dtype == tl.float8e4nv:
            data = torch.from_numpy(scale_handle.data.view("uint8").copy())
            return data.view(torch.float8_e4m3fn).float().numpy()
        return original(scale_handle, compute_type)

    monkeypatch.setattr(interpreter, "_dot_scaled_scale_to_f32", decode)


@pytest.mark.parametrize("fmt", ["mxfp4", "nvfp4"])
@pytest.mark.parametrize("m", [1, 17])
def test_scaled_qgemm(fmt, m, device, seed, monkeypatch):
    """Off-grid x: the scaled variant computes x on the FP4 grid times W (W4A4), which differs from
    x·W by far more than the tolerance; on-grid x (the family's inputs) it is x·W."""
    scaled_runs_here(fmt, device, monkeypatch)
    group = 32 if fmt == "mxfp4" else 16
    k = 5 * group  # no multiple of the 128-wide K step: the tail is masked
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((m, k), generator=gen).half().to(device)
    qw = quantize((torch.randn((67, k), generator=gen) / k**0.5).to(device), fmt)
    out = torch.full((m, 67), float("nan"), dtype=torch.float16, device=device)
    with pinned_limits(B200):
        qgemm(x, qw, out)  # the target's variant: scaled
    w = dequantize(qw).double()
    on_grid = activation_grid(x.float(), fmt).double() @ w.t()
    assert relative_error(out, on_grid) <= 2e-3
    assert relative_error(out, x.double() @ w.t()) > 2e-2


def test_family_check_on_a_blackwell_target(device, seed, monkeypatch):
    """The family's own inputs, reference and tolerance pass with the Blackwell variant (as the GPU gate runs it)."""
    scaled_runs_here("mxfp4", device, monkeypatch)
    case = QGEMM.case("fp16", format="mxfp4", group_size=32, M=20, N=70, K=160)
    with pinned_limits(B200):
        checked = check_point(QGEMM, "triton", case, device, seed)
    assert checked.ok, checked.message()


# ---------------------------------------------------------------------------------------------
# Compiled for each target (no GPU): the variant carries the target's matrix instruction
# ---------------------------------------------------------------------------------------------

MMA = re.compile(r"tcgen05\.mma[\w.:]*|wgmma\.mma_async[\w.:]*|mma\.sync[\w.:]*|v_mfma\w*")
TARGETS = {"sm_100a": ("cuda", 100, 32, B200), "sm_90a": ("cuda", 90, 32, HOPPER),
           "gfx942": ("hip", "gfx942", 64, MI300X), "gfx950": ("hip", "gfx950", 64, MI355X)}
# job -> (family, dtype, axes, target): one small config each (the first the family's pruner keeps)
COMPILE_JOBS = {
    "mxfp4 sm_100a": ("qgemm", "fp16", dict(format="mxfp4", group_size=32, M=256, N=256, K=512), "sm_100a"),
    "nvfp4 sm_100a": ("qgemm", "fp16", dict(format="nvfp4", group_size=16, M=256, N=256, K=512), "sm_100a"),
    "mxfp4 sm_90a": ("qgemm", "fp16", dict(format="mxfp4", group_size=32, M=256, N=256, K=512), "sm_90a"),
    "nvfp4 sm_90a": ("qgemm", "fp16", dict(format="nvfp4", group_size=16, M=256, N=256, K=512), "sm_90a"),
    "mxfp4 gfx950": ("qgemm", "fp16", dict(format="mxfp4", group_size=32, M=64, N=256, K=512), "gfx950"),
    "fp8 gemm gfx942": ("gemm", "fp8", dict(M=64, N=256, K=512), "gfx942"),
    "fp8 gemm sm_100a": ("gemm", "fp8", dict(M=16, N=256, K=512), "sm_100a"),  # skinny: 64-row tiles kept
    "fp32 gemm gfx950": ("gemm", "fp32", dict(M=64, N=256, K=512), "gfx950"),  # no tf32 there: bf16x3
}


def compile_first(spec, case, limits, target) -> tuple[str, str]:
    """The first config the family's pruner keeps for ``case`` on ``limits``, compiled for ``target``
    with triton.compile (no driver, no GPU): (variant name, the MMA instructions in its PTX/AMDGCN)."""
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction, mangle_type

    with pinned_limits(limits):  # the operands' flavours (fp8) follow the target
        space = spec.impl("triton").candidates(case, limits)[0]
    config = space.configs[0]
    args, constexprs = space.arguments()
    fn, meta = space.kernel, {**constexprs, **config.kwargs}
    while not isinstance(fn, JITFunction):  # @triton.heuristics wrappers: evaluate their values
        named = {**dict(zip(fn.arg_names, args)), **meta}
        meta.update({name: rule(named) for name, rule in getattr(fn, "values", {}).items()})
        fn = fn.fn
    signature, constants = {}, {}
    for index, param in enumerate(fn.params):
        value = args[index] if index < len(args) else meta[param.name]
        if param.is_constexpr or value is None:
            signature[param.name], constants[param.name] = "constexpr", value
        else:
            signature[param.name] = mangle_type(value)
    compiled = triton.compile(ASTSource(fn, signature, constants), target=target,
                              options={"num_warps": config.num_warps, "num_stages": config.num_stages})
    code = compiled.asm.get("ptx") or compiled.asm.get("amdgcn")
    return space.name, " ".join(sorted(set(MMA.findall(code))))


def _compile_jobs() -> dict[str, list[str]]:
    """Every COMPILE_JOBS entry -> [variant, mma], ["skip", why] or ["error", what] (run without the interpreter)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import make_backend

    from kernels import registry

    results = {}
    for job, (family, dtype, axes, arch) in COMPILE_JOBS.items():
        backend, name, warp, limits = TARGETS[arch]
        target = GPUTarget(backend, name, warp)
        try:
            make_backend(target)
        except Exception as error:  # this Triton build has no such backend
            results[job] = ["skip", f"Triton {triton.__version__} cannot target {arch}: {error}"]
            continue
        spec = registry.get(family)
        try:
            results[job] = list(compile_first(spec, spec.case(dtype, **axes), limits, target))
        except Exception as error:
            results[job] = ["error", f"{type(error).__name__}: {str(error).strip().splitlines()[:1]}"]
    return results


@pytest.fixture(scope="module")
def compiled() -> dict[str, list[str]]:
    """All compile jobs in one child process: Triton's target comes from the driver unless given, and
    this process runs the interpreter, whose kernels cannot be compiled."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    code = "import json, tests.test_target_variants as t; print(json.dumps(t._compile_jobs()))"
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _result(compiled, job) -> tuple[str, str]:
    status, detail = compiled[job]
    if status == "skip":
        pytest.skip(detail)
    assert status != "error", detail
    return status, detail


@pytest.mark.parametrize("fmt", ["mxfp4", "nvfp4"])
def test_blackwell_fp4_compiles_to_block_scaled_tcgen05(compiled, fmt):
    name, mma = _result(compiled, f"{fmt} sm_100a")
    assert name == "scaled" and "tcgen05.mma" in mma and "block_scale" in mma, mma


@pytest.mark.parametrize("fmt", ["mxfp4", "nvfp4"])
def test_hopper_fp4_compiles_to_the_dequant_path(compiled, fmt):
    name, mma = _result(compiled, f"{fmt} sm_90a")
    assert name == "qgemm" and "wgmma" in mma and "block_scale" not in mma, mma


def test_gfx950_mxfp4_compiles_to_scaled_mfma(compiled):
    name, mma = _result(compiled, "mxfp4 gfx950")
    assert name == "scaled" and "v_mfma_scale" in mma, mma


def test_gfx942_fp8_gemm_compiles_to_fp8_mfma(compiled):
    name, mma = _result(compiled, "fp8 gemm gfx942")
    assert name == GemmVariant.TILED.value and re.search(r"v_mfma_f32_\w+_fp8_fp8", mma), mma


def test_blackwell_fp8_gemm_compiles_to_tcgen05_at_small_m(compiled):
    name, mma = _result(compiled, "fp8 gemm sm_100a")
    assert name == GemmVariant.TILED.value and "tcgen05.mma" in mma and "kind::f8f6f4" in mma, mma


def test_gfx950_fp32_gemm_compiles_without_tf32(compiled):
    name, mma = _result(compiled, "fp32 gemm gfx950")
    assert name == GemmVariant.TILED.value and "v_mfma_f32" in mma and "bf16" in mma, mma
