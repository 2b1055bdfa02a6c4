"""The ceilings suite: the device's best bandwidths, FLOP/s and launch latency, by the same harness.

DRAM sizes run far past 4× L2 (50-60 MB on Hopper) so the plateau is visible; L2 sizes stay well
under it and run with a warm L2. Tensor-core peaks come from large GEMMs (cuBLAS and ours).
"""

from bench.suites import Suite, Sweep
from bench.suites.presets import square_shapes

DRAM_SIZES = tuple(2**i for i in range(20, 31))  # fp32: 4 MiB … 4 GiB per array
L2_SIZES = tuple(2**i for i in range(14, 22))  # fp32: 64 KiB … 8 MiB per array
WARM = {"l2": "warm"}

CEILINGS = Suite(
    "ceilings",
    "DRAM read/write/copy/triad, L2 bandwidth, fp32 FMA peak, tensor-core peaks per dtype, "
    "launch latency (stream vs graph)",
    (
        Sweep.make("read", ("triton",), ("fp32",), N=DRAM_SIZES),
        Sweep.make("write", ("triton", "torch"), ("fp32",), N=DRAM_SIZES),
        Sweep.make("copy", ("triton", "torch"), ("fp32",), N=DRAM_SIZES),
        Sweep.make("triad", ("triton", "torch"), ("fp32",), N=DRAM_SIZES),
        Sweep.make("read", ("triton",), ("fp32",), N=L2_SIZES, timing=WARM),
        Sweep.make("copy", ("triton",), ("fp32",), N=L2_SIZES, timing=WARM),
        Sweep.make("fma", ("triton",), ("fp32",), N=(1 << 22, 1 << 24), iters=(256, 1024)),
        # tensor-core peaks: large squares through cuBLAS and our GEMM (fp32 runs as tf32)
        Sweep.make("gemm", ("torch", "triton"), ("bf16", "fp16", "fp32", "fp8"),
                   shapes=square_shapes((8192, 16384)), M=(8192,)),
        Sweep.make("launch", ("triton", "torch"), ("fp32",), count=(1, 100), timing={**WARM, "graph": "never"}),
        Sweep.make("launch", ("triton", "torch"), ("fp32",), count=(1, 100), timing={**WARM, "graph": "always"}),
    ),
)
