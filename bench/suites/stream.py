"""Suites for the STREAM-style memory kernels."""

from bench.suites import Suite, Sweep

# 1 MiB … 4 GiB per array in fp32 (2^18 … 2^30 elements); odd sizes show the masked tail's cost
STREAM_SIZES = tuple(2**i for i in range(18, 31)) + (2**24 + 1, 3 * 2**26 + 7)

STREAM = Suite(
    "stream",
    "copy and triad from 1 MiB to 4 GiB per array, Triton beside torch",
    (
        Sweep.make("copy", ("triton", "torch"), ("fp32", "fp16"), N=STREAM_SIZES),
        Sweep.make("triad", ("triton", "torch"), ("fp32", "fp16"), N=STREAM_SIZES),
    ),
)

SMOKE = Suite(
    "smoke",
    "a handful of tiny points for checking an install (runs under --interpret)",
    (
        Sweep.make("copy", ("triton", "torch"), ("fp32", "fp16"), N=(1, 4097)),
        Sweep.make("triad", ("triton", "torch"), ("fp32",), N=(1000,)),
    ),
)
