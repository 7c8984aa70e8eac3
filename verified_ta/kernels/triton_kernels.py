"""Triton kernels for exact tensor attention: fused forward (SPEC §2) and deterministic L4 backward.

Forward program = a tile of BLOCK_M queries. For every k1 row a it forms q∘k1_a in float32 and rounds it
once to the operand dtype, runs FlashAttention over (K2, V2) tiles of BLOCK_N rows (tensor-core dots,
online softmax with a running max and sum, masked tails), and folds the row's Σ_b p·v2_b into
the output as (Σ_b p·V2[b]) ∘ v1_a (T14). Saved: O and a natural-log LSE in float32. Memory O(n·d).

Backward (L4), no atomics, deterministic:
- δ_i = ⟨dO_i, O_i⟩ (float32, minus d lse when the LSE is an output that receives a gradient);
- dQ kernel: program = a tile of queries; loops over a and K2 tiles; P recomputed from the LSE;
- K1-owner kernel: program = one k1 row a; loops over query tiles and K2 tiles; writes dK1_a and dV1_a;
- K2-owner kernel: program = a tile of k2 rows; loops over query tiles and a (FlashAttention's dK/dV
  kernel with fl(q∘k1_a) as queries); writes dK2, dV2.
  Not the K1-owner relaunched with (K1,V1) ↔ (K2,V2) swapped: that computes the scores as fl(q∘k2_b)·k1_a,
  a different rounding from the forward's fl(q∘k1_a)·k2_b, so P = exp(s − LSE) loses relative accuracy
  u·|S| (measured under the CPU interpreter: dV2 at 21× the FlashAttention tolerance in float32 at n = 1,
  1.25× in float16).

Scores, max and LSE are in natural units and differences s − m (or s − LSE) are formed before the
·log2(e) of exp2, so a score equal to the max gives exactly 1 (the base-2-folded form fl(s·c − m·c) does
not; it cost up to ~6 ulp of |LSE| in the interpreter tests). Scale, LSE, δ and every accumulator stay float32;
only dot operands are in the input dtype. float32 inputs use IEEE dots (``input_precision="ieee"``), never TF32.
Grid axis 1 is batch·heads (at most 65535 on CUDA: :func:`~verified_ta.kernels.check_batch_heads`).

Verified only under ``TRITON_INTERPRET=1`` on a CPU so far; compilation and accuracy on a GPU are untested
(docs/kernels.md).

``trap`` arguments plant the known bugs of earlier 2-simplicial kernels (see :data:`TRAPS`); they exist
so the tests can show their checks catch each one, and the public API never sets them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from . import check_batch_heads, check_head_dim, check_kernel_dtype, interpreter_enabled

__all__ = ["KernelConfig", "TRAPS", "default_config", "forward", "backward"]

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453

#: planted bugs, for tests only: LSE in log2 units read as natural log; LSE or δ rounded to bf16; scale cast
#: to bf16; causal mask a < i, b < i instead of <=; dQ grid computed from BLOCK_N instead of BLOCK_M
TRAPS = frozenset({"lse_log2", "lse_bf16", "delta_bf16", "scale_bf16", "causal_strict", "grid_block"})


@dataclass(frozen=True)
class KernelConfig:
    """Tile shape and launch parameters of one kernel (BLOCK_M queries × BLOCK_N k2 rows; tl.dot needs both >= 16)."""

    block_m: int
    block_n: int
    num_warps: int = 4
    num_stages: int = 2

    def __post_init__(self) -> None:
        for name in ("block_m", "block_n"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 16 or v & (v - 1):
                raise ValueError(f"{name} must be a power of two >= 16 (a tl.dot tile); got {v!r}")


def default_config(d: int, backward: bool = False) -> KernelConfig:
    """Untuned defaults meant for Hopper (H100/H200), never run on a GPU yet; ``benchmarks/bench_exact.py --sweep``
    times alternatives. Under the interpreter: 16 × 16 tiles, 1 warp.

    Register budget per thread ≈ (accumulators + operand tiles)/threads: the forward keeps two float32
    BLOCK_M×d tiles (acc, inner), the backward two or three, so d = 128 halves BLOCK_M in the backward.
    """
    if interpreter_enabled():
        return KernelConfig(16, 16, 1, 1)
    if not backward:
        return KernelConfig(128, 64, 8, 3) if d >= 64 else KernelConfig(128, 64, 4, 3)
    return KernelConfig(64, 64, 8, 2) if d >= 128 else KernelConfig(64, 64, 4, 2)


@triton.jit
def _score_tile(qk1, k2, scale, offs_i, a, offs_b, N2,
                CAUSAL: tl.constexpr, STRICT_CAUSAL: tl.constexpr, PREC: tl.constexpr):
    """Scores s·⟨q_i∘k1_a, k2_b⟩ of a tile (T10, natural units) and the mask of visible pairs."""
    s = tl.dot(qk1, tl.trans(k2), input_precision=PREC) * scale
    valid = offs_b[None, :] < N2
    if CAUSAL:
        if STRICT_CAUSAL:
            valid = valid & (offs_b[None, :] < offs_i[:, None]) & (a < offs_i[:, None])
        else:
            valid = valid & (offs_b[None, :] <= offs_i[:, None]) & (a <= offs_i[:, None])
    return s, valid


@triton.jit
def _hadamard_row(x, row):
    """x ∘ row (row broadcast over the tile) in float32, rounded once to x's dtype."""
    return (x.to(tl.float32) * row.to(tl.float32)[None, :]).to(x.dtype)


@triton.jit
def _forward_kernel(Q, K1, K2, V1, V2, O, LSE, scale, N_Q, N1, N2,
                    D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
                    STRICT_CAUSAL: tl.constexpr, LSE_LOG2: tl.constexpr, PREC: tl.constexpr):
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1).to(tl.int64)
    offs_i = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    row_ok = offs_i < N_Q
    q_ptrs = Q + bh * N_Q * D + offs_i[:, None] * D + offs_d[None, :]
    k1_row = K1 + bh * N1 * D + offs_d
    v1_row = V1 + bh * N1 * D + offs_d
    k2_ptrs = K2 + bh * N2 * D + offs_n[:, None] * D + offs_d[None, :]
    v2_ptrs = V2 + bh * N2 * D + offs_n[:, None] * D + offs_d[None, :]
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)  # running max of the scores
    l_i = tl.zeros([BLOCK_M], tl.float32)  # running sum of e^(s − m)
    acc = tl.zeros([BLOCK_M, D], tl.float32)  # Σ_a v1_a ∘ Σ_b e^(s − m) v2_b
    a_end = N1
    b_end = N2
    if CAUSAL:  # pairs need a <= i and b <= i: skip rows and tiles beyond the tile's last query
        a_end = tl.minimum(N1, start_m + BLOCK_M)
        b_end = tl.minimum(N2, start_m + BLOCK_M)
    q = tl.load(q_ptrs, mask=row_ok[:, None], other=0.0)
    for a in range(0, a_end):
        qk1 = _hadamard_row(q, tl.load(k1_row + a * D))
        m_row = m_i
        inner = tl.zeros([BLOCK_M, D], tl.float32)  # Σ_b e^(s − m_i) v2_b for this a
        for b0 in range(0, b_end, BLOCK_N):
            col_ok = (b0 + offs_n) < N2
            k2 = tl.load(k2_ptrs + b0 * D, mask=col_ok[:, None], other=0.0)
            s, valid = _score_tile(qk1, k2, scale, offs_i, a, b0 + offs_n, N2, CAUSAL, STRICT_CAUSAL, PREC)
            s = tl.where(valid, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            alpha = tl.exp2((m_i - m_new) * LOG2E)
            p = tl.exp2((s - m_new[:, None]) * LOG2E)  # subtract first: exact near the max (Sterbenz)
            l_i = l_i * alpha + tl.sum(p, 1)
            v2 = tl.load(v2_ptrs + b0 * D, mask=col_ok[:, None], other=0.0)
            inner = tl.dot(p.to(v2.dtype), v2, acc=inner * alpha[:, None], input_precision=PREC)
            m_i = m_new
        v1 = tl.load(v1_row + a * D).to(tl.float32)
        acc = acc * tl.exp2((m_row - m_i) * LOG2E)[:, None] + inner * v1[None, :]
    out = acc / l_i[:, None]
    tl.store(O + bh * N_Q * D + offs_i[:, None] * D + offs_d[None, :], out.to(O.dtype.element_ty),
             mask=row_ok[:, None])
    lse = m_i + tl.log2(l_i) * LN2
    if LSE_LOG2:
        lse = lse * LOG2E
    tl.store(LSE + bh * N_Q + offs_i, lse, mask=row_ok)


@triton.jit
def _delta_kernel(O, DO, DELTA, N_Q, D: tl.constexpr, BLOCK_M: tl.constexpr):
    """δ_i = ⟨dO_i, O_i⟩ in float32 (L4)."""
    bh = tl.program_id(1).to(tl.int64)
    offs_i = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    row_ok = offs_i < N_Q
    ptrs = bh * N_Q * D + offs_i[:, None] * D + offs_d[None, :]
    o = tl.load(O + ptrs, mask=row_ok[:, None], other=0.0).to(tl.float32)
    do = tl.load(DO + ptrs, mask=row_ok[:, None], other=0.0).to(tl.float32)
    tl.store(DELTA + bh * N_Q + offs_i, tl.sum(o * do, 1), mask=row_ok)


@triton.jit
def _k2_tile_loop(qk1, dov1, lse, delta, k2_ptrs, v2_ptrs, scale, offs_i, row_ok, a, b_end, N2,
                  D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
                  STRICT_CAUSAL: tl.constexpr, PREC: tl.constexpr, WITH_V: tl.constexpr):
    """For a query tile and one k1 row a: (Σ_b dS[i,a,b] k2_b, Σ_b P[i,a,b] v2_b), P from the LSE (L4)."""
    offs_n = tl.arange(0, BLOCK_N)
    sum_ds_k2 = tl.zeros([BLOCK_M, D], tl.float32)
    sum_p_v2 = tl.zeros([BLOCK_M, D], tl.float32)
    for b0 in range(0, b_end, BLOCK_N):
        col_ok = (b0 + offs_n) < N2
        k2 = tl.load(k2_ptrs + b0 * D, mask=col_ok[:, None], other=0.0)
        v2 = tl.load(v2_ptrs + b0 * D, mask=col_ok[:, None], other=0.0)
        s, valid = _score_tile(qk1, k2, scale, offs_i, a, b0 + offs_n, N2, CAUSAL, STRICT_CAUSAL, PREC)
        p = tl.where(valid & row_ok[:, None], tl.exp2((s - lse[:, None]) * LOG2E), 0.0)
        dp = tl.dot(dov1, tl.trans(v2), input_precision=PREC)  # ⟨dO_i ∘ v1_a, v2_b⟩ (T14)
        ds = p * (dp - delta[:, None])
        sum_ds_k2 = tl.dot(ds.to(k2.dtype), k2, acc=sum_ds_k2, input_precision=PREC)
        if WITH_V:
            sum_p_v2 = tl.dot(p.to(v2.dtype), v2, acc=sum_p_v2, input_precision=PREC)
    return sum_ds_k2, sum_p_v2


@triton.jit
def _query_tile(Q, DO, LSE, DELTA, bh, offs_i, offs_d, N_Q, D: tl.constexpr):
    """The rows ``offs_i`` of Q and dO with their LSE and δ (masked past N_Q), for the backward kernels."""
    row_ok = offs_i < N_Q
    tile = bh * N_Q * D + offs_i[:, None] * D + offs_d[None, :]
    q = tl.load(Q + tile, mask=row_ok[:, None], other=0.0)
    do = tl.load(DO + tile, mask=row_ok[:, None], other=0.0)
    lse = tl.load(LSE + bh * N_Q + offs_i, mask=row_ok, other=0.0)
    delta = tl.load(DELTA + bh * N_Q + offs_i, mask=row_ok, other=0.0)
    return row_ok, q, do, lse, delta


@triton.jit
def _dq_kernel(Q, K1, K2, V1, V2, DO, LSE, DELTA, DQ, scale, N_Q, N1, N2,
               D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
               STRICT_CAUSAL: tl.constexpr, PREC: tl.constexpr):
    """dQ_i = s Σ_a k1_a ∘ Σ_b dS[i,a,b] k2_b (L4)."""
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1).to(tl.int64)
    offs_i = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    k1_row = K1 + bh * N1 * D + offs_d
    v1_row = V1 + bh * N1 * D + offs_d
    k2_ptrs = K2 + bh * N2 * D + offs_n[:, None] * D + offs_d[None, :]
    v2_ptrs = V2 + bh * N2 * D + offs_n[:, None] * D + offs_d[None, :]
    row_ok, q, do, lse, delta = _query_tile(Q, DO, LSE, DELTA, bh, offs_i, offs_d, N_Q, D)
    a_end = N1
    b_end = N2
    if CAUSAL:
        a_end = tl.minimum(N1, start_m + BLOCK_M)
        b_end = tl.minimum(N2, start_m + BLOCK_M)
    dq = tl.zeros([BLOCK_M, D], tl.float32)
    for a in range(0, a_end):
        k1 = tl.load(k1_row + a * D)
        qk1 = _hadamard_row(q, k1)
        dov1 = _hadamard_row(do, tl.load(v1_row + a * D))
        sum_ds_k2, _ = _k2_tile_loop(qk1, dov1, lse, delta, k2_ptrs, v2_ptrs, scale, offs_i, row_ok, a, b_end,
                                     N2, D, BLOCK_M, BLOCK_N, CAUSAL, STRICT_CAUSAL, PREC, False)
        dq += sum_ds_k2 * k1.to(tl.float32)[None, :]
    tile = bh * N_Q * D + offs_i[:, None] * D + offs_d[None, :]
    tl.store(DQ + tile, (dq * scale).to(DQ.dtype.element_ty), mask=row_ok[:, None])


@triton.jit
def _k1_owner_kernel(Q, K1, K2, V1, V2, DO, LSE, DELTA, DK1, DV1, scale, N_Q, N1, N2,
                     D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
                     STRICT_CAUSAL: tl.constexpr, PREC: tl.constexpr):
    """dK1_a = s Σ_i q_i ∘ Σ_b dS[i,a,b] k2_b and dV1_a = Σ_i dO_i ∘ Σ_b P[i,a,b] v2_b (L4); one program per a."""
    a = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    k1 = tl.load(K1 + bh * N1 * D + a * D + offs_d)
    v1 = tl.load(V1 + bh * N1 * D + a * D + offs_d)
    k2_ptrs = K2 + bh * N2 * D + offs_n[:, None] * D + offs_d[None, :]
    v2_ptrs = V2 + bh * N2 * D + offs_n[:, None] * D + offs_d[None, :]
    dk1 = tl.zeros([D], tl.float32)
    dv1 = tl.zeros([D], tl.float32)
    i_start = 0
    if CAUSAL:  # queries i < a see nothing of row a: start at a's query tile
        i_start = (a // BLOCK_M) * BLOCK_M
    for i0 in range(i_start, N_Q, BLOCK_M):
        offs_i = i0 + offs_m
        row_ok, q, do, lse, delta = _query_tile(Q, DO, LSE, DELTA, bh, offs_i, offs_d, N_Q, D)
        b_end = N2
        if CAUSAL:
            b_end = tl.minimum(N2, i0 + BLOCK_M)
        sum_ds_k2, sum_p_v2 = _k2_tile_loop(_hadamard_row(q, k1), _hadamard_row(do, v1), lse, delta, k2_ptrs,
                                            v2_ptrs, scale, offs_i, row_ok, a, b_end, N2, D, BLOCK_M, BLOCK_N,
                                            CAUSAL, STRICT_CAUSAL, PREC, True)
        dk1 += tl.sum(sum_ds_k2 * q.to(tl.float32), 0)
        dv1 += tl.sum(sum_p_v2 * do.to(tl.float32), 0)
    tl.store(DK1 + bh * N1 * D + a * D + offs_d, (dk1 * scale).to(DK1.dtype.element_ty))
    tl.store(DV1 + bh * N1 * D + a * D + offs_d, dv1.to(DV1.dtype.element_ty))


@triton.jit
def _k2_owner_kernel(Q, K1, K2, V1, V2, DO, LSE, DELTA, DK2, DV2, scale, N_Q, N1, N2,
                     D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
                     STRICT_CAUSAL: tl.constexpr, PREC: tl.constexpr):
    """dK2_b = s Σ_{i,a} dS[i,a,b] fl(q_i∘k1_a) and dV2_b = Σ_{i,a} P[i,a,b] fl(dO_i∘v1_a) (L4); one program per k2 tile.

    FlashAttention's dK/dV kernel with fl(q∘k1_a) as the queries and fl(dO∘v1_a) as dO, looped over a: the
    scores are rounded exactly as in the forward, so P recomputed from the saved LSE is consistent.
    """
    b0 = tl.program_id(0) * BLOCK_N
    bh = tl.program_id(1).to(tl.int64)
    offs_m = tl.arange(0, BLOCK_M)
    offs_b = b0 + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    col_ok = offs_b < N2
    k2_tile = bh * N2 * D + offs_b[:, None] * D + offs_d[None, :]
    k2 = tl.load(K2 + k2_tile, mask=col_ok[:, None], other=0.0)
    v2 = tl.load(V2 + k2_tile, mask=col_ok[:, None], other=0.0)
    k1_row = K1 + bh * N1 * D + offs_d
    v1_row = V1 + bh * N1 * D + offs_d
    dk2 = tl.zeros([BLOCK_N, D], tl.float32)
    dv2 = tl.zeros([BLOCK_N, D], tl.float32)
    i_start = 0
    if CAUSAL:  # queries i < b0 see no column of this tile
        i_start = (b0 // BLOCK_M) * BLOCK_M
    for i0 in range(i_start, N_Q, BLOCK_M):
        offs_i = i0 + offs_m
        row_ok, q, do, lse, delta = _query_tile(Q, DO, LSE, DELTA, bh, offs_i, offs_d, N_Q, D)
        a_end = N1
        if CAUSAL:
            a_end = tl.minimum(N1, i0 + BLOCK_M)
        for a in range(0, a_end):
            qk1 = _hadamard_row(q, tl.load(k1_row + a * D))
            dov1 = _hadamard_row(do, tl.load(v1_row + a * D))
            s, valid = _score_tile(qk1, k2, scale, offs_i, a, offs_b, N2, CAUSAL, STRICT_CAUSAL, PREC)
            p = tl.where(valid & row_ok[:, None], tl.exp2((s - lse[:, None]) * LOG2E), 0.0)
            dp = tl.dot(dov1, tl.trans(v2), input_precision=PREC)
            ds = p * (dp - delta[:, None])
            dv2 = tl.dot(tl.trans(p.to(dov1.dtype)), dov1, acc=dv2, input_precision=PREC)
            dk2 = tl.dot(tl.trans(ds.to(qk1.dtype)), qk1, acc=dk2, input_precision=PREC)
    tl.store(DK2 + k2_tile, (dk2 * scale).to(DK2.dtype.element_ty), mask=col_ok[:, None])
    tl.store(DV2 + k2_tile, dv2.to(DV2.dtype.element_ty), mask=col_ok[:, None])


def _check_trap(trap: str | None) -> None:
    if trap is not None and trap not in TRAPS:
        raise ValueError(f"trap must be None or one of {sorted(TRAPS)}; got {trap!r}")


def _flat(x: torch.Tensor) -> torch.Tensor:
    """(..., n, d) → contiguous (batch·heads, n, d)."""
    return x.reshape(-1, x.shape[-2], x.shape[-1]).contiguous()


def _common(q: torch.Tensor, scale: float, trap: str | None) -> tuple[int, float, str]:
    """Validate trap, dtype, d and batch·heads; ``(d, scale as float, tl.dot input precision)``."""
    _check_trap(trap)
    check_kernel_dtype(q.dtype)
    d = check_head_dim(q.shape[-1])
    check_batch_heads(q.shape[:-2].numel())
    if trap == "scale_bf16":
        scale = float(torch.tensor(scale, dtype=torch.bfloat16))
    return d, float(scale), "ieee" if q.dtype == torch.float32 else "tf32"


def forward(
    q: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor, v1: torch.Tensor, v2: torch.Tensor,
    scale: float, causal: bool, *, config: KernelConfig | None = None, trap: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused forward: ``(out, lse)``, out like q, lse float32 natural log of shape ``q.shape[:-1]``.

    Inputs are validated by the caller (:func:`verified_ta.interface.tensor_attention`).
    """
    d, scale, prec = _common(q, scale, trap)
    cfg = config or default_config(d)
    qf, k1f, k2f, v1f, v2f = (_flat(t) for t in (q, k1, k2, v1, v2))
    bh, n_q, n1, n2 = qf.shape[0], qf.shape[1], k1f.shape[1], k2f.shape[1]
    out = torch.empty_like(qf)
    lse = torch.empty((bh, n_q), dtype=torch.float32, device=q.device)
    grid = (triton.cdiv(n_q, cfg.block_m), bh)
    _forward_kernel[grid](
        qf, k1f, k2f, v1f, v2f, out, lse, scale, n_q, n1, n2,
        D=d, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, CAUSAL=causal, STRICT_CAUSAL=trap == "causal_strict",
        LSE_LOG2=trap == "lse_log2", PREC=prec, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    if trap == "lse_bf16":
        lse = lse.to(torch.bfloat16).to(torch.float32)
    return out.reshape(q.shape), lse.reshape(q.shape[:-1])


def backward(
    grad_out: torch.Tensor, q: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor, v1: torch.Tensor,
    v2: torch.Tensor, out: torch.Tensor, lse: torch.Tensor, scale: float, causal: bool,
    grad_lse: torch.Tensor | None = None, *, config: KernelConfig | None = None, trap: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """L4 backward: ``(dQ, dK1, dK2, dV1, dV2)`` in the inputs' dtype; deterministic (no atomics)."""
    d, scale, prec = _common(q, scale, trap)
    cfg = config or default_config(d, backward=True)
    qf, k1f, k2f, v1f, v2f = (_flat(t) for t in (q, k1, k2, v1, v2))
    dof, of = _flat(grad_out.to(q.dtype)), _flat(out)
    lsef = lse.reshape(-1, qf.shape[1]).to(torch.float32).contiguous()
    bh, n_q, n1, n2 = qf.shape[0], qf.shape[1], k1f.shape[1], k2f.shape[1]
    delta = torch.empty((bh, n_q), dtype=torch.float32, device=q.device)
    _delta_kernel[(triton.cdiv(n_q, cfg.block_m), bh)](of, dof, delta, n_q, D=d, BLOCK_M=cfg.block_m)
    if grad_lse is not None:  # d lse_i / d s_iab = P_iab: adds dlse_i to dP − δ (L4 with an LSE output)
        delta = delta - grad_lse.reshape(bh, n_q).to(torch.float32)
    if trap == "delta_bf16":
        delta = delta.to(torch.bfloat16).to(torch.float32)
    meta = dict(D=d, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, CAUSAL=causal,
                STRICT_CAUSAL=trap == "causal_strict", PREC=prec, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    dq = torch.empty_like(qf)
    grid_block = cfg.block_n if trap == "grid_block" else cfg.block_m
    _dq_kernel[(triton.cdiv(n_q, grid_block), bh)](
        qf, k1f, k2f, v1f, v2f, dof, lsef, delta, dq, scale, n_q, n1, n2, **meta)
    dk1, dv1 = torch.empty_like(k1f), torch.empty_like(v1f)
    _k1_owner_kernel[(n1, bh)](qf, k1f, k2f, v1f, v2f, dof, lsef, delta, dk1, dv1, scale, n_q, n1, n2, **meta)
    dk2, dv2 = torch.empty_like(k2f), torch.empty_like(v2f)
    _k2_owner_kernel[(triton.cdiv(n2, cfg.block_n), bh)](
        qf, k1f, k2f, v1f, v2f, dof, lsef, delta, dk2, dv2, scale, n_q, n1, n2, **meta)
    return (dq.reshape(q.shape), dk1.reshape(k1.shape), dk2.reshape(k2.shape),
            dv1.reshape(v1.shape), dv2.reshape(v2.shape))
