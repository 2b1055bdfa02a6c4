"""The time model: how long points, suites and plans take on a device, before renting it.

Per point, in GPU-machine seconds (the machine is held while the host works too):

* compile — every Triton config the point's autotuner would try (``Impl.candidates`` on the
  device's limits), once per (kernel, config, dtype) in a whole plan: Triton caches the rest;
* tune — for a kernel with two or more surviving configs, each config's short cold-L2 benchmark
  (``bench.timing.tuning_benchmark``: one run and about 3 ms of samples, each behind an L2 flush);
* gate — inputs, the two checked runs, the float64/fp32 reference and the element-wise check;
* sample — warm-up and sampling under the :class:`SamplingPolicy`: R launches per sample for short
  kernels, the flush per sample, until the stopping rule is met or the timeout. How many samples the
  rule takes is learnt from the rule itself: :func:`samples_to_converge` runs ``bench.timing``'s
  judge and batch growth on simulated samples of the family's spread (``FAMILY_SPREAD``, or spreads
  learnt from a run's rows by :func:`spreads_from_rows`), since the closed form (2.46·σ/target)² misses
  the batches' doubling and priced a long noisy point 2–5× too low;
* overhead — synchronisation, the allocator, NVML, the row.

Kernel times come from the device's datasheet roofline at an assumed efficiency. The figures are
estimates, printed as such; a run records what each point really cost (``tune_s``, sample counts),
which is what to refine the constants against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np

from bench.suites import Point
from bench.timing import FlushMode, L2Mode, SamplingPolicy
from kernels import registry
from kernels.errors import UsageError
from kernels.spec import DeviceCaps

# One Triton config compiled for sm_90a, host seconds (serial: the autotuner compiles one at a time).
# Measured here: `rooflab compile --check --jobs 2` compiled the headline plan's 834 configs in 159 s on
# 2 cores under Triton 3.6, 0.38 s per config per core; 1.5× that for slower hosts and bigger kernels.
COMPILE_S = 0.6
CACHED_LOAD_S = 0.05  # one kernel loaded from Triton's on-disk cache
EFFICIENCY = 0.7  # fraction of the roofline a kernel reaches, for its predicted time
LAUNCH_S = 4e-6  # per-launch floor (launch latency, tail)
SAMPLE_SPREAD = 0.015  # assumed relative spread of single samples, for a family without its own
# Assumed per-family spread of single samples (cv), until a run's rows say otherwise (spreads_from_rows): ragged
# decode attention and the launch ceiling move most, streaming kernels least.
FAMILY_SPREAD = {"copy": 0.01, "read": 0.01, "write": 0.01, "triad": 0.01, "fma": 0.01, "gemv": 0.015,
                 "qgemv": 0.015, "dequant": 0.015, "gemm": 0.02, "qgemm": 0.02, "attn_prefill": 0.02,
                 "attn_decode": 0.03, "launch": 0.05}
SIMULATED_SEEDS = 16  # simulated samplings averaged per spread
HOST_SHARE = 1.05  # sampling wall time over device time: batch syncs, event reads (the doubling is simulated)
ENQUEUE_S = 15e-6  # host time to enqueue one sample (flush, events, launch)
TUNE_BUDGET_S = 3e-3  # tuning_benchmark's kernel-time budget per config
TUNE_HOST_S = 0.004  # host work per config benchmarked (closures, events, sync)
GATE_FIXED_S = 0.03  # inputs, allocation, the reference call, the element check: fixed part
REFERENCE_FLOPS = 20e12  # float64/fp32 reference FLOP/s on the GPU
POINT_FIXED_S = 0.04  # synchronize, empty_cache, NVML monitor, row


@dataclass(frozen=True)
class Machine:
    """A device as the time model sees it: datasheet roofs, memory, L2, limits for tuning and skips."""

    key: str
    name: str
    bandwidth: float  # bytes/s
    tensor: dict = field(hash=False)  # dtype -> FLOP/s
    fp32: float
    l2_bytes: int
    memory_bytes: int
    sm_count: int
    smem_per_block: int
    capability: tuple[int, int]
    arch: str = ""  # the compiler target (kernels.tuning.ARCH_LIMITS) whose limits tuning plans with; "" none listed

    @property
    def caps(self) -> DeviceCaps:
        return DeviceCaps(name=self.name, capability=self.capability, interpret=False, l2_bytes=self.l2_bytes,
                          sm_count=self.sm_count, memory_bytes=self.memory_bytes)

    @property
    def limits(self):
        import dataclasses

        from kernels.tuning import ARCH_LIMITS, Limits

        if self.arch in ARCH_LIMITS:  # warp size, MMA tile, LDS … of the target, this part's SM/CU count
            return dataclasses.replace(ARCH_LIMITS[self.arch], sm_count=self.sm_count)
        return Limits(sm_count=self.sm_count, smem_per_block=self.smem_per_block, registers_per_sm=65_536,
                      capability=self.capability)

    def peak(self, dtype: str, tensor_cores: bool) -> float:
        if not tensor_cores:
            return self.fp32
        return self.tensor.get("tf32" if dtype == "fp32" else dtype) or self.tensor.get("bf16") or self.fp32


# What a datasheet does not give but tuning needs: compute capability and opt-in shared memory per block
# (kernels.tuning's figures, with their sources, for the targets the static compiler knows)
_ARCH = {
    "a100-80gb-sxm": ((8, 0), 166_912), "l4": ((8, 9), 101_376), "l40s": ((8, 9), 101_376),
}
_TARGETS = {"h100-sxm": "sm_90a", "h100-pcie": "sm_90a", "h200-sxm": "sm_90a", "b200": "sm_100a", "gb200": "sm_100a",
            "b300": "sm_103a", "gb300": "sm_103a", "rtx-pro-6000": "sm_120a", "mi300x": "gfx942", "mi325x": "gfx942",
            "mi355x": "gfx950"}
_ALIASES = {"h100": "h100-sxm", "h200": "h200-sxm", "a100": "a100-80gb-sxm", "rtx-pro": "rtx-pro-6000"}


def _arch(key: str) -> tuple[tuple[int, int], int, str]:
    from kernels.tuning import ARCH_LIMITS

    if key in _TARGETS:
        limits = ARCH_LIMITS[_TARGETS[key]]
        return limits.capability, limits.smem_per_block, limits.arch
    return (*_ARCH[key], "")


def machine(text: str) -> Machine:
    """A device of the datasheet table by key or alias (h100, h200, b200 …), for planning without it."""
    from analysis import devices

    key = _ALIASES.get(text.lower(), text.lower())
    known = [d.key for d in devices.DEVICES if d.key in _ARCH or d.key in _TARGETS]
    if key not in known:
        raise UsageError(f"--device {text!r}: unknown; valid: {', '.join(sorted(set(known) | set(_ALIASES)))}")
    sheet = devices.get(key)
    capability, smem, arch = _arch(key)
    # l2_bytes is the last-level cache the flush must exceed: MI300X's 256 MB Infinity Cache, B200's 126 MB L2
    return Machine(key, sheet.name, sheet.bandwidth, dict(sheet.tensor_flops), sheet.fp32_flops,
                   int(sheet.l2_bytes or 50e6), int(sheet.memory_bytes), int(sheet.sm_count or 132), smem, capability,
                   arch)


def machine_of(caps: DeviceCaps) -> Machine:
    """The machine a sweep is running on: its own caps, with the datasheet's roofs where it matches one."""
    from analysis import devices

    sheet = devices.match_device(caps.name, caps.memory_bytes, caps.sm_count)
    base = machine(sheet.key) if sheet is not None and (sheet.key in _ARCH or sheet.key in _TARGETS) else machine("h100")
    return Machine(base.key, caps.name, base.bandwidth, base.tensor, base.fp32, caps.l2_bytes or base.l2_bytes,
                   caps.memory_bytes or base.memory_bytes, caps.sm_count or base.sm_count, base.smem_per_block,
                   caps.capability or base.capability, base.arch)


def roof_seconds(machine: Machine, kernel: str, dtype: str, flops: float, nbytes: float) -> float | None:
    """max(flops/peak, bytes/BW) on ``machine``'s datasheet roofs; None for the launch ceiling (no roof)."""
    if kernel == "launch":
        return None
    tags = registry.get(kernel).tags
    tensor = "compute" in tags or "linear" in tags or "attention" in tags
    peak = machine.peak(dtype, tensor and kernel != "fma")
    return max(flops / peak, nbytes / machine.bandwidth)


@lru_cache(maxsize=512)
def samples_to_converge(spread: float, min_samples: int, max_noise: float, max_samples: int,
                        least: int = 1) -> float:
    """Samples the stopping rule takes at a sample spread of ``spread`` (cv): bench.timing's own judge and batch
    growth (min_samples, then doubling) on lognormal samples, averaged over SIMULATED_SEEDS seeds; ``least``:
    the samples the minimum measured time asks for. Capped at ``max_samples`` (the timeout is the caller's)."""
    from bench.timing import SamplingPolicy, _judge

    policy = SamplingPolicy(min_samples=min_samples, max_noise=max_noise, max_samples=max_samples, warmup_s=0.0,
                            min_time_s=0.0)
    counts = []
    for seed in range(SIMULATED_SEEDS):
        rng = np.random.default_rng(seed)
        samples: list[float] = []
        batch = min_samples
        while True:
            samples += list(np.exp(rng.normal(0.0, spread, batch)))
            if len(samples) >= max(min_samples, least) and _judge(samples, policy)[0]:
                break
            if len(samples) >= max_samples:
                break
            batch = max(1, min(len(samples), max_samples - len(samples)))
        counts.append(len(samples))
    return float(np.mean(counts))


def spreads_from_rows(rows) -> dict[str, float]:
    """Each family's median sample spread (cv) over a run's timed rows: the noise to price the next run with."""
    timed = rows[(rows["status"] == "ok") & (rows["cv"] > 0)] if "cv" in rows else rows.iloc[:0]
    return {str(k): float(v) for k, v in timed.groupby("kernel")["cv"].median().items()}


@dataclass(frozen=True)
class Cost:
    """Estimated seconds one point holds the machine, by phase; ``skip`` says why it would not run."""

    kernel_s: float = 0.0  # predicted time of one launch
    compile: float = 0.0
    tune: float = 0.0
    gate: float = 0.0
    sample: float = 0.0
    overhead: float = 0.0
    configs: int = 0  # configs its autotuner(s) would try
    skip: str = ""

    @property
    def total(self) -> float:
        return self.compile + self.tune + self.gate + self.sample + self.overhead


class TimeModel:
    """Estimates for points on one machine under one sampling policy (compiles shared across a plan)."""

    def __init__(self, machine: Machine, policy: SamplingPolicy = SamplingPolicy(), warm_cache: bool = False,
                 spreads: dict[str, float] | None = None):
        self.machine = machine
        self.policy = policy
        self.spreads = {**FAMILY_SPREAD, **(spreads or {})}  # family -> cv of single samples
        self.warm_cache = warm_cache  # Triton's compile cache and rooflab's tune cache hold every config (reruns)
        self._compiled: set[tuple] = set()

    @cached_property
    def flush_s(self) -> float:
        size = max(2 * self.machine.l2_bytes, 64 << 20)
        passes = 2 if self.policy.flush is FlushMode.CLEAN else 1
        return passes * size / self.machine.bandwidth + 2 * LAUNCH_S

    def roof_time(self, point: Point) -> float | None:
        """The datasheet roofline bound of one launch, max(flops/peak, bytes/BW); None for the launch ceiling."""
        spec = registry.get(point.kernel)
        impl = spec.impl(point.impl)
        return roof_seconds(self.machine, point.kernel, point.case.dtype.value, spec.flops(point.case),
                            spec.bytes_for(point.case, impl))

    def kernel_time(self, point: Point) -> float:
        """Roofline time of one launch at EFFICIENCY, plus the launch floor."""
        roof = self.roof_time(point)
        if roof is None:
            return point.case["count"] * LAUNCH_S
        return roof / EFFICIENCY + LAUNCH_S

    def configs(self, point: Point) -> list[tuple[str, int, tuple]]:
        """(space name, config count, compile keys) per Triton kernel the point would tune."""
        spec = registry.get(point.kernel)
        impl = spec.impl(point.impl)
        if impl.candidates is None:
            return []
        try:
            spaces = impl.candidates(point.case, self.machine.limits)
        except Exception:  # a launcher meta tensors cannot drive: count one config, still compiled
            return [(point.impl, 1, ((point.kernel, point.impl, point.case.dtype.value),))]
        dtype = point.case.dtype.value
        return [(s.name, len(s.configs), tuple((point.kernel, s.name, str(c), dtype) for c in s.configs))
                for s in spaces]

    def point(self, point: Point) -> Cost:
        from bench.sweep import skip_reason

        reason = skip_reason(point, self.machine.caps)
        if reason:
            return Cost(overhead=0.002, skip=reason)
        t = self.kernel_time(point)
        policy = self.policy.with_overrides(point.timing)
        cold = policy.l2 is L2Mode.COLD
        flush = self.flush_s if cold else 0.0
        compile_s = tune = 0.0
        configs = 0
        for _, count, keys in self.configs(point):
            configs += count
            if self.warm_cache:  # binaries load from Triton's cache, the chosen config from rooflab's
                compile_s += CACHED_LOAD_S
                continue
            fresh = [k for k in keys if k not in self._compiled]
            self._compiled.update(fresh)
            compile_s += COMPILE_S * len(fresh)
            if count > 1:
                reps = max(3, min(25, int(TUNE_BUDGET_S / t)))
                tune += count * ((reps + 1) * (t + flush) + TUNE_HOST_S)
        spec = registry.get(point.kernel)
        gate = GATE_FIXED_S + 2 * t + spec.flops(point.case) / REFERENCE_FLOPS + \
            3 * spec.footprint_bytes(point.case, spec.impl(point.impl)) / self.machine.bandwidth
        spread = self.spreads.get(point.kernel, SAMPLE_SPREAD)
        return Cost(t, compile_s, tune, gate, self._sampling(t, policy, flush, spread), POINT_FIXED_S, configs)

    def _sampling(self, t: float, policy: SamplingPolicy, flush: float, spread: float = SAMPLE_SPREAD) -> float:
        launches = 1
        if t < policy.short_below_s:
            launches = min(policy.max_launches, math.ceil(policy.sample_target_s / t))
        device = launches * t + flush
        per_sample = max(device, ENQUEUE_S)
        least = math.ceil(policy.min_time_s / (launches * t))
        needed = samples_to_converge(round(spread, 4), policy.min_samples, policy.max_noise, policy.max_samples,
                                     min(least, policy.max_samples))
        warmup = max(policy.warmup_runs * (t + flush), policy.warmup_s)
        copies = 0.0 if launches == 1 else launches * 5e-3  # building the rotating copies' launches
        return warmup + copies + min(policy.timeout_s, needed * per_sample * HOST_SHARE)

    def plan(self, points: list[Point]) -> list[Cost]:
        return [self.point(p) for p in points]


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"
