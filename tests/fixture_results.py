"""Synthetic result files for the analysis tests: rows drawn from a KNOWN roofline model with noise.

Nothing here was measured. Every run id starts with "synthetic-" and every device name says
"(synthetic)"; the names still contain a real GPU's runtime spelling so datasheet matching is
exercised. Rows go through bench.results.ResultWriter and write_sidecar like a real sweep's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from analysis.moe import MoeLayer, matrix_bytes
from analysis.workloads import decode_point_cost, prefill_cost
from bench.results import SCHEMA_VERSION, ResultWriter, columns_for, write_sidecar

LINEAR_SHAPES = {  # label -> (N, K); a subset of bench/suites/presets.py
    "llama3-8b.q": (4096, 4096), "llama3-8b.k": (1024, 4096), "llama3-8b.o": (4096, 4096),
    "llama3-8b.gate": (14336, 4096), "llama3-8b.up": (14336, 4096), "llama3-8b.down": (4096, 14336),
    "llama3-70b.q": (8192, 8192), "llama3-70b.k": (1024, 8192), "llama3-70b.o": (8192, 8192),
    "llama3-70b.gate": (28672, 8192), "llama3-70b.up": (28672, 8192), "llama3-70b.down": (8192, 28672),
}
AXES = ("N", "M", "K", "w_layout", "batch", "heads", "kv_heads", "q_len", "context", "head_dim", "cache",
        "page_size", "seq_q", "seq_kv", "causal", "format", "group_size", "iters", "count")
GRAPH_BELOW_S = 100e-6  # CUDA-graph replay below this, stream launches above (as the sampler decides)
GEMV_BATCHES = (1, 2, 4, 8, 16, 32, 64)
GEMM_BATCHES = tuple(2**i for i in range(13))
QUANT_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class SyntheticDevice:
    """The truth the analysis should recover."""

    name: str = "NVIDIA H100 80GB HBM3 (synthetic)"
    slug: str = "synthetic-h100"
    bandwidth: float = 3.0e12  # DRAM, bytes/s
    l2_bandwidth: float = 9.0e12
    peaks: dict = field(default_factory=lambda: {"fp16": 700e12, "bf16": 700e12, "fp32": 350e12})
    vector_flops: float = 50e12
    t0: float = 5e-6
    l2_bytes: int = 50 * 2**20
    sm_count: int = 132
    memory_bytes: int = 80 * 10**9
    launch_stream_s: float = 2.5e-6
    launch_graph_s: float = 1.3e-6


H100 = SyntheticDevice()
H200 = SyntheticDevice(name="NVIDIA H200 (synthetic)", slug="synthetic-h200", bandwidth=4.3e12,
                       memory_bytes=141 * 10**9, l2_bytes=60 * 2**20)


UNSTEADY_EVERY = 13  # with unsteady=True: every 13th timed row not converged, the next one thermally throttled


class _Run:
    def __init__(self, root: Path, device: SyntheticDevice, run_id: str, suite: str, mode: str, rng,
                 unsteady: bool = False, axes=AXES):
        self.device, self.run_id, self.suite, self.mode, self.rng = device, run_id, suite, mode, rng
        self.unsteady = unsteady
        self.csv = Path(root) / device.slug / f"{run_id}.csv"
        self.writer = ResultWriter(self.csv, columns_for(axes))
        self.clock = 0

    def row(self, kernel, impl, dtype, flops, nbytes, seconds, *, label="", footprint=None, l2="cold",
            status="ok", error="", launch=None, noise=0.02, throttle="", **axes):
        footprint = nbytes if footprint is None else footprint
        timed = self.mode == "cuda" and status == "ok"
        if timed:
            seconds = seconds * float(np.exp(self.rng.normal(0.0, noise)))
        if launch is None:
            launch = "graph" if timed and seconds < GRAPH_BELOW_S else "stream"
        self.clock += 1
        converged = True if timed else None
        if timed and self.unsteady and self.clock % UNSTEADY_EVERY == 0:
            converged = False
        if timed and self.unsteady and self.clock % UNSTEADY_EVERY == 1 and self.clock > 1:
            throttle = " ".join(filter(None, (throttle, "sw_thermal")))
        self.writer.write(dict(
            schema_version=SCHEMA_VERSION, run_id=self.run_id, suite=self.suite, device=self.device.name,
            mode=self.mode, kernel=kernel, impl=impl, dtype=dtype, label=label, **axes, flops=flops, bytes=nbytes,
            intensity=flops / nbytes if nbytes else 0.0, footprint_bytes=footprint,
            l2_resident=footprint < self.device.l2_bytes, l2=l2,
            median_s=seconds if timed else None, p20_s=seconds * 0.99 if timed else None,
            p80_s=seconds * 1.01 if timed else None, cv=0.01 if timed else None, samples=50 if timed else None,
            tflops=flops / seconds / 1e12 if timed else None, gbps=nbytes / seconds / 1e9 if timed else None,
            status=status, rel_err=1e-4 if status == "ok" else None, error=error, config="synthetic",
            launch=launch, sm_clock_mhz=1980 if timed else None, throttle=throttle,
            timestamp=f"2025-01-01T{self.clock // 3600:02d}:{self.clock // 60 % 60:02d}:{self.clock % 60:02d}",
            ci_rel=0.004 if timed else None, converged=converged,
            launches_per_sample=1 if timed else None, tune_s=0.5 if status == "ok" else None,
            max_elem_err=0.05 if status == "ok" else None))

    def close(self):
        self.writer.close()
        d = self.device
        write_sidecar(self.csv, {
            "run_id": self.run_id, "started": "2025-01-01T00:00:00", "mode": self.mode, "suite": self.suite,
            "seed": 0, "command": "synthetic fixture (tests/fixture_results.py)", "git_commit": "synthetic",
            "device": {"name": d.name, "slug": d.slug, "sm_count": d.sm_count, "l2_bytes": d.l2_bytes,
                       "memory_bytes": d.memory_bytes, "capability": [9, 0], "driver": "synthetic",
                       "cuda": "synthetic", "clocks": {"sm_max_mhz": 1980, "mem_max_mhz": 2619}},
            "software": {"python": "synthetic", "torch": "synthetic", "triton": "synthetic"}})
        return self.csv


def model_time(device: SyntheticDevice, flops, nbytes, dtype, bw_factor=1.0, peak_factor=1.0):
    """The truth: t0 + max(bytes/BW, flops/P)."""
    return device.t0 + max(nbytes / (device.bandwidth * bw_factor), flops / (device.peaks[dtype] * peak_factor))


def _linear(M, N, K, size=2):
    return 2 * M * N * K, size * (M * K + N * K + M * N)


def write_ceilings_run(root: Path, device: SyntheticDevice = H100, seed: int = 0, unsteady: bool = False) -> Path:
    run = _Run(root, device, f"synthetic-ceilings-{device.slug}", "ceilings", "cuda", np.random.default_rng(seed),
               unsteady)
    arrays = {"read": 1, "write": 1, "copy": 2, "triad": 3}
    for kernel, count in arrays.items():
        for exponent in range(18, 31):
            n = 2**exponent
            nbytes = 4 * n * count
            run.row(kernel, "triton", "fp32", 0, nbytes, device.t0 + nbytes / device.bandwidth, N=n, launch="graph")
            if nbytes < device.l2_bytes:  # graph-replayed microsecond kernels: quieter than the 2 % elsewhere
                run.row(kernel, "triton", "fp32", 0, nbytes, device.t0 + nbytes / device.l2_bandwidth, N=n,
                        l2="warm", noise=0.005, launch="graph")
    for n in (1 << 22, 1 << 24):
        for iters in (256, 1024):
            flops, nbytes = 2 * iters * n, 8 * n
            run.row("fma", "triton", "fp32", flops, nbytes, device.t0 + flops / device.vector_flops, N=n,
                    iters=iters)
    for size in (2048, 4096, 8192):
        for dtype in ("fp16", "bf16", "fp32"):
            flops, nbytes = _linear(size, size, size, 4 if dtype == "fp32" else 2)
            for impl, factor in (("torch", 1.0), ("triton", 0.9)):
                run.row("gemm", impl, dtype, flops, nbytes, model_time(device, flops, nbytes, dtype, 1.0, factor),
                        label=f"square.{size}", M=size, N=size, K=size, w_layout="nk",
                        throttle="sw_power_cap" if size == 8192 else "")
    for mode in ("stream", "graph"):
        for count in (1, 100):
            run.row("launch", "triton", "fp32", 0, 4, count * getattr(device, f"launch_{mode}_s"), count=count,
                    launch=mode, l2="warm")
    return run.close()


def write_llm_run(root: Path, device: SyntheticDevice = H100, seed: int = 1, unsteady: bool = False) -> Path:
    """gemv / gemm / attn_decode / qgemv rows on LLM shapes, plus failed and skipped points."""
    run = _Run(root, device, f"synthetic-llm-{device.slug}", "llm", "cuda", np.random.default_rng(seed), unsteady)
    for label, (n, k) in LINEAR_SHAPES.items():
        for m in GEMV_BATCHES:
            flops, nbytes = _linear(m, n, k)
            for impl, bw in (("triton", 0.9), ("torch", 0.7)):
                run.row("gemv", impl, "fp16", flops, nbytes, model_time(device, flops, nbytes, "fp16", bw),
                        label=label, M=m, N=n, K=k, w_layout="nk")
        for m in GEMM_BATCHES:
            flops, nbytes = _linear(m, n, k)
            for impl, bw, peak in (("triton", 0.85, 0.8), ("torch", 0.8, 0.95)):
                run.row("gemm", impl, "fp16", flops, nbytes, model_time(device, flops, nbytes, "fp16", bw, peak),
                        label=label, M=m, N=n, K=k, w_layout="nk")
    for m in (1, 2, 4, 8, 16, 32):  # a shape that fits in L2: read from DRAM when cold, from L2 when warm
        flops, nbytes = _linear(m, 1024, 1024)
        run.row("gemv", "triton", "fp16", flops, nbytes, model_time(device, flops, nbytes, "fp16", 0.9),
                label="square.1024", M=m, N=1024, K=1024, w_layout="nk")
        run.row("gemv", "triton", "fp16", flops, nbytes, device.t0 + nbytes / device.l2_bandwidth, l2="warm",
                label="square.1024", M=m, N=1024, K=1024, w_layout="nk")
    for heads, kv_heads in ((32, 8), (64, 8)):
        for context in (4096, 16384):
            for batch in (1, 2, 4, 8, 16, 32, 64):
                dim = 128
                # ragged lengths as the kernel's (mean 0.75 × context at batch ≥ 2): bytes and time follow them
                flops, nbytes = decode_point_cost(batch, context, heads, kv_heads, dim)
                for impl in ("triton", "torch"):
                    run.row("attn_decode", impl, "fp16", flops, nbytes,
                            model_time(device, flops, nbytes, "fp16", 0.93 if impl == "triton" else 0.6),
                            batch=batch, heads=heads, kv_heads=kv_heads, q_len=1, context=context, head_dim=dim,
                            cache="contiguous", page_size=16)
    for kv_heads in (32, 8):
        for seq in (1024, 2048, 4096, 8192, 16384):
            batch = 16384 // seq
            flops, nbytes = prefill_cost(batch, 32, kv_heads, 128, seq, causal=True)
            for impl, peak in (("triton", 0.55), ("torch", 0.6)):
                run.row("attn_prefill", impl, "fp16", flops, nbytes,
                        model_time(device, flops, nbytes, "fp16", 0.8, peak),
                        label=f"seq{seq}", batch=batch, heads=32, kv_heads=kv_heads, seq_q=seq, seq_kv=seq,
                        head_dim=128, causal=True)
    for label in ("llama3-70b.q", "llama3-8b.gate"):
        n, k = LINEAR_SHAPES[label]
        for m in QUANT_BATCHES:
            flops, fp16_bytes = _linear(m, n, k)
            int4_bytes = n * k // 2 + 2 * n * k // 128 + 2 * (m * k + m * n)
            quant = dict(label=label, format="int4", group_size=128, M=m, N=n, K=k)
            # the int4 kernel dequantises in its inner loop: a lower effective compute peak
            run.row("qgemv", "triton", "fp16", flops, int4_bytes,
                    model_time(device, flops, int4_bytes, "fp16", 0.85, 0.12), **quant)
            run.row("qgemv", "torch", "fp16", flops, fp16_bytes,
                    model_time(device, flops, fp16_bytes, "fp16", 0.8, 0.95), **quant)
    run.row("gemm", "triton", "fp8", 0, 0, None, status="skipped", error="fp8 needs capability >= (8, 9)",
            label="llama3-8b.q", M=1, N=4096, K=4096, w_layout="nk")
    run.row("gemm", "triton", "fp8", 0, 0, None, status="skipped", error="fp8 needs capability >= (8, 9)",
            label="llama3-8b.q", M=2, N=4096, K=4096, w_layout="nk")
    run.row("gemv", "triton", "bf16", 0, 0, None, status="failed", error="rel_err 0.5 > tolerance 0.01",
            label="llama3-8b.q", M=1, N=4096, K=4096, w_layout="nk")
    return run.close()


def write_interpret_run(root: Path) -> Path:
    run = _Run(root, SyntheticDevice(name="cpu (synthetic, Triton interpreter)", slug="synthetic-interpreter"),
               "synthetic-interpret", "smoke", "interpret", np.random.default_rng(2))
    for n in (1, 4097):
        run.row("copy", "triton", "fp32", 0, 8 * n, None, N=n)
    run.row("copy", "triton", "fp16", 0, 4 * 4097, None, N=4097, status="failed", error="rel_err nan")
    return run.close()


def write_results(root: Path, devices=(H100,), interpret: bool = False, unsteady: bool = False,
                  moe: bool = False) -> Path:
    """A results directory: a ceilings run and an LLM run per device (and an interpreter run, and an MoE run per
    device). ``unsteady``: a few timed rows not converged or thermally throttled (``UNSTEADY_EVERY``), as a real
    run has."""
    for index, device in enumerate(devices):
        write_ceilings_run(root, device, seed=10 * index, unsteady=unsteady)
        write_llm_run(root, device, seed=10 * index + 1, unsteady=unsteady)
        if moe:
            write_moe_run(root, device, seed=10 * index + 2)
    if interpret:
        write_interpret_run(root)
    return Path(root)


# ---------------------------------------------------------------------------------------------
# MoE rows (the moe family's axes, kernels/moe_spec.py): bytes and FLOPs of the routing actually drawn
# ---------------------------------------------------------------------------------------------

MOE_AXES = ("tokens", "experts", "top_k", "d_model", "d_ff", "ep", "routing", "zipf", "shared", "format", "stage")
MOE_TOKENS = (1, 4, 16, 64, 256, 1024, 4096, 16384)
MOE_BLOCK = 16  # the alignment's block: each touched expert's run of pairs padded to it (w1's slots)
# preset label -> (experts, top_k, d_model, d_ff, ep, shared, formats): kernels/models.py dimensions
MOE_CASES = {
    "mixtral-8x7b": (8, 2, 4096, 14336, 1, 0, ("bf16", "int4-g128")),
    "gpt-oss-120b": (128, 4, 2880, 2880, 1, 0, ("bf16", "mxfp4")),
    "deepseek-v3": (256, 8, 7168, 2048, 8, 1, ("bf16", "fp8-block")),
}
MOE_SKEW_PRESET = "gpt-oss-120b"
MOE_ROUTINGS = (("uniform", "0"), ("skewed", "1.2"), ("balanced", "0"))


@dataclass(frozen=True)
class DrawnRouting:
    """What the byte model needs of one drawn routing on the GPU holding experts [0, local)."""

    pairs: int  # (token, expert) pairs routed here
    touched: int  # local experts with ≥ 1 pair
    tokens_in: int  # tokens with ≥ 1 pair here
    slots: int  # pairs here with each touched expert's run padded to MOE_BLOCK


def draw_routing(tokens: int, experts: int, top_k: int, routing: str, zipf: str, local: int,
                 rng: np.random.Generator) -> DrawnRouting:
    """k distinct experts per token: uniform (Gumbel top-k on equal weights), skewed (P(rank r) ∝ r^−zipf, ranks
    dealt by a permutation), balanced (pair j → expert j mod E); counted on experts [0, local)."""
    if routing == "balanced":
        ids = (np.arange(tokens * top_k) % experts).reshape(tokens, top_k)
    else:
        log_p = np.zeros(experts)
        if routing == "skewed":
            log_p = -float(zipf) * np.log(rng.permutation(experts) + 1.0)
        keys = log_p - np.log(-np.log(rng.random((tokens, experts)).clip(1e-300)))
        ids = np.argpartition(-keys, top_k - 1, axis=1)[:, :top_k]
    here = ids < local
    per_expert = np.bincount(ids[here], minlength=local)
    slots = int((-(-per_expert // MOE_BLOCK) * MOE_BLOCK).sum())
    return DrawnRouting(int(here.sum()), int((per_expert > 0).sum()), int(here.any(axis=1).sum()), slots)


def _moe_stage_cost(layer: MoeLayer, stage: str, tokens: int, drawn: DrawnRouting) -> tuple[float, float]:
    """(flops, bytes) of a stage for the drawn routing (kernels/moe_spec.py's table)."""
    d, f, a, k = layer.d_model, layer.d_ff, layer.act_bytes, layer.top_k
    flops = float(layer.flops_for(tokens, drawn.pairs))
    if stage == "layer":
        return flops, float(layer.bytes_for(tokens, drawn.touched, drawn.tokens_in))
    rows_in = tokens if layer.shared else drawn.tokens_in
    experts = drawn.touched + layer.shared
    if stage == "w1":
        w1 = experts * matrix_bytes(layer.format, 2 * f, d, a)
        return 2 / 3 * flops, rows_in * d * a + w1 + drawn.slots * 4 + (drawn.slots + tokens * layer.shared) * f * a
    w2 = experts * matrix_bytes(layer.format, d, f, a)
    return flops / 3, (drawn.pairs + tokens * layer.shared) * f * a + w2 + tokens * k * 8 + tokens * d * a


def write_moe_run(root: Path, device: SyntheticDevice = H100, seed: int = 2) -> Path:
    """``moe`` rows: presets × formats × T (stage layer; w1 and w2 for one preset), three routings for one preset,
    impls triton, torch-loop (a launch per touched expert) and dense (every local expert's bf16 weights)."""
    rng = np.random.default_rng(seed)
    run = _Run(root, device, f"synthetic-moe-{device.slug}", "moe", "cuda", rng, axes=MOE_AXES)
    draws: dict[tuple, DrawnRouting] = {}
    for label, (experts, top_k, d_model, d_ff, ep, shared, formats) in MOE_CASES.items():
        routings = MOE_ROUTINGS if label == MOE_SKEW_PRESET else MOE_ROUTINGS[:1]
        for (routing, zipf), fmt, tokens in ((r, f, t) for r in routings for f in formats for t in MOE_TOKENS):
            if routing != "uniform" and fmt != "bf16":
                continue
            layer = MoeLayer(experts, top_k, d_model, d_ff, ep, shared, fmt)
            key = (tokens, experts, top_k, routing, zipf, ep)
            if key not in draws:
                draws[key] = draw_routing(tokens, experts, top_k, routing, zipf, layer.local_experts, rng)
            drawn = draws[key]
            axes = dict(label=label, tokens=tokens, experts=experts, top_k=top_k, d_model=d_model, d_ff=d_ff, ep=ep,
                        routing=routing, zipf=zipf, shared=shared, format=fmt)
            stages = ("layer", "w1", "w2") if label == MOE_SKEW_PRESET and routing == "uniform" else ("layer",)
            # skew piles pairs onto a few experts: fewer bytes, but the grouped GEMM runs on fewer, fuller tiles
            peak_factor = 0.45 if routing == "skewed" else 0.7
            for stage in stages:
                flops, nbytes = _moe_stage_cost(layer, stage, tokens, drawn)
                run.row("moe", "triton", "bf16", flops, nbytes,
                        model_time(device, flops, nbytes, "bf16", 0.85, peak_factor), stage=stage, **axes)
            if routing != "uniform" or fmt != formats[0]:
                continue
            flops = float(layer.flops_for(tokens, drawn.pairs))
            loop = layer.with_format("bf16")
            loop_bytes = float(loop.bytes_for(tokens, drawn.touched, drawn.tokens_in))
            loop_time = model_time(device, flops, loop_bytes, "bf16", 0.5, 0.5) + drawn.touched * 8e-6
            run.row("moe", "torch-loop", "bf16", flops, loop_bytes, loop_time, stage="layer", **axes)
            dense_bytes = float(loop.bytes_for(tokens, layer.local_experts, drawn.tokens_in))
            run.row("moe", "dense", "bf16", flops, dense_bytes,
                    model_time(device, flops, dense_bytes, "bf16", 0.9, 0.9), stage="layer", **axes)
    return run.close()
