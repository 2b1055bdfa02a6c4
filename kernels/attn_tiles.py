"""Triton pieces shared by the attention kernels (prefill, decode, MLA decode).

Head dims that are not powers of two (80, 96, 111 …) run in a tile of the next power of two ≥ 16
(``BLOCK_D``): the padded channels load as zeros, so they add nothing to q·kᵀ and produce zero
output columns that are never stored. The masks are compile-time: a power-of-two head_dim and an
unmasked key range load with no mask at all.
"""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E = 1.4426950408889634
MIN_BLOCK_D = 16  # tl.dot's smallest K
MAX_HEAD_DIM = 256
# the sweep's head_dim values: powers of two, the real models' 80/96/112/192 and FlashAttention's odd
# test sizes; the launchers take any head_dim 1 … 256
HEAD_DIMS = (16, 32, 40, 59, 64, 80, 96, 111, 112, 128, 160, 192, 224, 256)


def block_d(head_dim: int) -> int:
    """The tile width a head_dim runs in: the next power of two, at least 16."""
    return max(MIN_BLOCK_D, triton.next_power_of_2(head_dim))


@triton.jit
def load_rows(
    ptrs,  # [ROWS, BLOCK_D] addresses
    rows_ok,  # [ROWS] rows that exist (used when CHECK_ROWS)
    d_ok,  # [BLOCK_D] real channels (used when HEAD_DIM < BLOCK_D)
    CHECK_ROWS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """A [ROWS, BLOCK_D] tile; masked-off rows and padded channels read as 0."""
    if CHECK_ROWS:
        if HEAD_DIM < BLOCK_D:
            tile = tl.load(ptrs, mask=rows_ok[:, None] & d_ok[None, :], other=0.0)
        else:
            tile = tl.load(ptrs, mask=rows_ok[:, None], other=0.0)
    else:
        if HEAD_DIM < BLOCK_D:
            tile = tl.load(ptrs, mask=d_ok[None, :], other=0.0)
        else:
            tile = tl.load(ptrs)
    return tile
