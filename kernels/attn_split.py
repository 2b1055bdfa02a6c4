"""Split-KV (flash-decoding) for the decode kernels, GQA (:mod:`kernels.attn_decode`) and MLA
(:mod:`kernels.attn_mla`) alike: how many splits a sequence is cut into, the fp32 workspace of partial
(max, sum, acc) rows the split programs write, and the kernel that merges them into ``out``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kernels.attn_tiles import block_d

MAX_SPLITS = 64  # the merge kernel holds [splits, BLOCK_D] fp32 in registers
MIN_CHUNK = 256  # positions per split worth a workspace round trip
CHUNK_ALIGN = 128  # heuristic chunks are whole tiles for every BLOCK_N
MERGE_BLOCK_D = 128  # channels per merge program (MLA's 512 take four)


@triton.jit
def _decode_merge_kernel(
    part_m_ptr, part_l_ptr, part_acc_ptr, lens_ptr,  # in: partials [batch·heads·q_len, num_splits(, D)]
    o_ptr,  # out: [batch, heads, q_len, HEAD_DIM]
    chunk, num_splits, heads,
    stride_ob, stride_oh, stride_ot,
    Q_LEN: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,  # channels per program
    SPLITS: tl.constexpr,  # num_splits padded to a power of two
):
    """o = Σ_s 2^(m_s − M)·acc_s / Σ_s 2^(m_s − M)·l_s over the splits starting inside the sequence.

    Grid (batch·heads·q_len, ⌈HEAD_DIM / BLOCK_D⌉).
    """
    row = tl.program_id(0).to(tl.int64)  # (b, head, t) flattened
    b = row // (heads * Q_LEN)
    head = (row // Q_LEN) % heads
    t = row % Q_LEN
    seq_len = tl.load(lens_ptr + b)
    s = tl.arange(0, SPLITS)
    ok = (s < (seq_len + chunk - 1) // chunk) & (s < num_splits)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    part = row * num_splits + s
    m = tl.load(part_m_ptr + part, mask=ok, other=float("-inf"))
    l_s = tl.load(part_l_ptr + part, mask=ok, other=0.0)
    acc = tl.load(part_acc_ptr + part[:, None] * HEAD_DIM + offs_d[None, :], mask=ok[:, None] & d_ok[None, :],
                  other=0.0)
    weight = tl.exp2(m - tl.max(m, 0))
    out = tl.sum(acc * weight[:, None], 0) / tl.sum(l_s * weight, 0)
    tl.store(o_ptr + b * stride_ob + head * stride_oh + t * stride_ot + offs_d, out.to(o_ptr.dtype.element_ty),
             mask=d_ok)


@dataclass(frozen=True)
class SplitPlan:
    num_splits: int
    chunk: int  # positions per split


@dataclass(frozen=True)
class DecodeWorkspace:
    """fp32 partials of the split path: running max and sum [rows, splits], acc [rows, splits, head_dim]."""

    row_max: torch.Tensor
    row_sum: torch.Tensor
    acc: torch.Tensor

    @classmethod
    def allocate(cls, rows: int, num_splits: int, head_dim: int, device: torch.device) -> "DecodeWorkspace":
        row_max = torch.empty((rows, num_splits), dtype=torch.float32, device=device)
        acc = torch.empty((rows, num_splits, head_dim), dtype=torch.float32, device=device)
        return cls(row_max, torch.empty_like(row_max), acc)

    def check(self, rows: int, num_splits: int, head_dim: int) -> None:
        if self.row_max.shape != (rows, num_splits) or self.acc.shape != (rows, num_splits, head_dim):
            raise ValueError(f"workspace is {tuple(self.acc.shape)}, this call needs {(rows, num_splits, head_dim)}")

    @property
    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.row_max, self.row_sum, self.acc


def plan_splits(programs: int, capacity: int, sm_count: int, num_splits: int | None = None) -> SplitPlan:
    """Splits per sequence: forced, or enough for ~2 programs per SM with chunks of ≥ MIN_CHUNK positions."""
    if num_splits is not None:
        if not 1 <= num_splits <= min(MAX_SPLITS, capacity):
            raise ValueError(f"num_splits {num_splits} must be in [1, {min(MAX_SPLITS, capacity)}] "
                             f"(≤ {MAX_SPLITS} and ≤ the cache capacity {capacity})")
        return SplitPlan(num_splits, triton.cdiv(capacity, num_splits))
    splits = 1
    if programs < 2 * sm_count:
        splits = max(1, min(MAX_SPLITS, triton.cdiv(2 * sm_count, programs), capacity // MIN_CHUNK))
    if splits == 1:
        return SplitPlan(1, capacity)
    chunk = triton.cdiv(triton.cdiv(capacity, splits), CHUNK_ALIGN) * CHUNK_ALIGN
    return SplitPlan(triton.cdiv(capacity, chunk), chunk)


def merge_splits(workspace: DecodeWorkspace, kv_lens: torch.Tensor, out: torch.Tensor, plan: SplitPlan) -> None:
    """Combine the split partials of every (sequence, head, token) row into ``out`` [batch, heads, q_len, D]."""
    _, heads, q_len, head_dim = out.shape
    rows = workspace.row_max.shape[0]
    splits_p2 = triton.next_power_of_2(plan.num_splits)
    width = min(MERGE_BLOCK_D, block_d(head_dim))
    _decode_merge_kernel[(rows, triton.cdiv(head_dim, width))](
        *workspace.tensors, kv_lens, out, plan.chunk, plan.num_splits, heads, *out.stride()[:3],
        Q_LEN=q_len, HEAD_DIM=head_dim, BLOCK_D=width, SPLITS=splits_p2,
        num_warps=4 if splits_p2 * width <= 4096 else 8,
    )
