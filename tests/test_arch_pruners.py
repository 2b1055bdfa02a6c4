"""The pruners read the target's limits: what the static gate found on sm_100a and gfx942 under Triton 3.6
(spills, tiles over MI300X's 64 KiB of LDS) is kept out of their candidates, and Hopper's are unchanged."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from kernels.attn_mla import block_h
from kernels.gemv import BLACKWELL_STAGED_K, limited_candidates
from kernels.moe import BLACKWELL_DECODED_PER_THREAD, MAX_ACC_PER_THREAD, moe_candidates
from kernels.qgemm import qgemm_candidates, qgemm_smem
from kernels.qgemv import BLACKWELL_LANES_PER_THREAD, qgemv_candidates
from kernels.tuning import B200, HOPPER, MI300X

ROOT = Path(__file__).resolve().parents[1]


def test_qgemm_smem_model_matches_every_8_bit_tile_compiled_for_gfx942_and_bounds_the_4_bit_ones():
    rows = [r for r in csv.DictReader((ROOT / "results/static/gfx942.csv").open()) if r["kernel"] == "qgemm"]
    assert rows
    for row in rows:
        tile = dict(part.split("=") for part in row["config"].split() if "=" in part and part[0] == "B")
        bits = 4 if "format=int4" in row["shape"] or "fp4" in row["shape"] else 8
        model = qgemm_smem(int(tile["BLOCK_M"]), int(tile["BLOCK_N"]), int(tile["BLOCK_K"]), int(row["num_stages"]),
                           bits)
        assert model == int(row["smem_bytes"]) if bits == 8 else model >= int(row["smem_bytes"]), row["config"]


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("M", [1, 16, 64, 256, 4096])
def test_qgemm_candidates_fit_the_targets_shared_memory(M, bits):
    for limits in (MI300X, HOPPER, B200):
        configs = qgemm_candidates(M, 128 if bits == 4 else 0, limits, bits)
        assert configs and all(qgemm_smem(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"], c.num_stages,
                                          bits) <= limits.smem_per_block for c in configs)


@pytest.mark.parametrize("heads, q_len", [(128, 1), (16, 1), (128, 2), (8, 1)])
def test_mla_row_blocks_per_target(heads, q_len):
    rows = heads * q_len
    assert block_h(heads, q_len, HOPPER) == block_h(heads, q_len) == min(64, max(16, rows))
    assert block_h(heads, q_len, B200) == min(32, max(16, rows))
    assert block_h(heads, q_len, MI300X) == 16


def test_gemv_dot_tiles_on_blackwell_stage_at_most_the_limit_of_k():
    for M in (16, 64):
        blackwell = limited_candidates(M, 8192, 8192, 2, B200)
        hopper = limited_candidates(M, 8192, 8192, 2, HOPPER)
        assert blackwell
        tall = [c for c in blackwell if c.kwargs["USE_DOT"] and c.kwargs["BLOCK_M"] >= 64]
        assert all(c.kwargs["BLOCK_K"] * c.num_stages <= BLACKWELL_STAGED_K for c in tall)
        if M == 64:
            assert any(c.kwargs["BLOCK_K"] * c.num_stages > BLACKWELL_STAGED_K for c in hopper)  # Hopper keeps them


def test_qgemv_lanes_and_moe_decoded_weights_on_blackwell():
    for fmt in ("int4", "int8", "nvfp4"):
        for c in qgemv_candidates(1, 8192, 8192, 128 if fmt == "int4" else 0, fmt, B200):
            assert 2 * c.kwargs["BLOCK_N"] * c.kwargs["BLOCK_K"] / (32 * c.num_warps) <= BLACKWELL_LANES_PER_THREAD
    decoded = lambda c, gates: gates * c.kwargs["BLOCK_N"] * c.kwargs["BLOCK_K"] // (32 * c.num_warps)  # noqa: E731
    for gates in (1, 2):
        kept = moe_candidates(16, gates, "fp8-block", B200)
        assert kept and all(decoded(c, gates) <= BLACKWELL_DECODED_PER_THREAD for c in kept)
    hopper = moe_candidates(16, 2, "fp8-block", HOPPER)
    assert max(decoded(c, 2) for c in hopper) == MAX_ACC_PER_THREAD > BLACKWELL_DECODED_PER_THREAD
