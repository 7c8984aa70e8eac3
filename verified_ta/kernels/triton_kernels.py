"""Triton kernels for exact tensor attention: fused forward (SPEC §2) and the L4 backward.

Layout contract: q, o, dO are ``(B, H, n_q, D)`` and k1, k2, v1, v2 are ``(B, H_kv, n, D)`` with H = g·H_kv
(grouped-query heads: query head h reads key head h // g) and a contiguous last dimension; every other stride is
passed (a ``transpose(1, 2)`` view needs no copy). LSE and δ are float32 ``(B·H, n_q)``. Runtime sizes are
lowercase, constexprs UPPER.

Visible pairs (verified_ta.masks): every (a, b); causal a ≤ i, b ≤ i; with a window also a > i − w1, b > i − w2
(an unbounded side is passed as :data:`NO_WINDOW`). Loop bounds visit only the visible k1 rows and k2 tiles of a
query tile; :func:`_k2_tiles` splits the k2 tiles into an interior that every query of the tile sees (no mask) and
edge tiles (window edge, diagonal, n2 tail) that take the mask.

Forward, program = (query tile, k1 split, batch·head); causal launches the heaviest query tiles first. For each
visible k1 row a of its split: fl(q∘k1_a) (float32 product rounded once to the operand dtype), then over k2 tiles
one online-softmax step with ONE accumulator: ``acc = acc·α + P·fl(V2∘v1_a)`` (T14: (P·V2)∘v1_a = P·(V2∘v1_a),
v1_a folded into the value tile, as the Kronecker-expanded values V1⊘V2 round it). 16-bit inputs fold the scale into
the exp2 argument (exp2(s·c − m), c = scale·log2 e: one FMA); float32 keeps natural units and subtracts first
(exp2((s − m)·log2 e)), so the largest score gives exactly 1. With k1 splits > 1 (small batch·heads at long n: the
grid must fill the GPU) each split writes a normalised float32 partial (O_s, LSE_s) and :func:`_combine_kernel`
merges them in split order: O = Σ_s e^{LSE_s − LSE} O_s, LSE = log Σ_s e^{LSE_s} (deterministic).

Backward (L4), δ_i = ⟨dO_i, O_i⟩ (minus d lse when the LSE output receives a gradient), P = exp(s − LSE):
- dQ kernel (deterministic mode), program = query tile: ``dQ += dS·fl(K2∘k1_a)`` over a and k2 tiles (3 products
  per tile: S, dP, dS·K2);
- K1-owner, program = one k1 row a of one key head (looping over the g query heads): dK1_a = s Σ_i q_i ∘ (dS·K2)_i,
  dV1_a = Σ_i dO_i ∘ (P·V2)_i (4 products); with ``deterministic=False`` it also adds s·(dS·K2)∘k1_a into a float32
  dQ with atomics, and the dQ kernel is skipped (8 instead of 11 n³d-sized products);
- K2-owner, program = a tile of k2 rows of one key head: FlashAttention's dK/dV kernel with fl(q∘k1_a) as queries
  and fl(dO∘v1_a) as dO, forming Sᵀ = K2·fl(q∘k1_a)ᵀ directly (no transposed tiles), 4 products.
  Not the K1-owner relaunched with (K1,V1) ↔ (K2,V2): that rounds fl(q∘k2_b)·k1_a, not the forward's
  fl(q∘k1_a)·k2_b, and P = exp(s − LSE) loses relative accuracy u·|S| (measured: dV2 at 21× the rule in float32).

Rows past n_q load LSE = +inf, so their P and dS are exactly 0 without a row mask. Scale, LSE, δ and every
accumulator stay float32; dot operands are in the input dtype; float32 inputs use IEEE dots (never TF32).

``trap`` arguments plant known bugs of 2-simplicial kernels (see :data:`TRAPS`) so the tests can show their checks
catch each one; the public API never sets them.
"""

from __future__ import annotations

from typing import Callable, Dict, Union

import torch
import triton
import triton.language as tl

from ..masks import Window
from . import check_batch_heads, check_head_dim, check_kernel_dtype
from .configs import KernelConfig, k1_owner_passes, pick_config, split_count

__all__ = ["NO_WINDOW", "TRAPS", "KERNELS", "forward", "backward"]

LOG2E: tl.constexpr = tl.constexpr(1.4426950408889634)
LN2: tl.constexpr = tl.constexpr(0.6931471805599453)
#: an unbounded window side, passed as a runtime int (i − NO_WINDOW < 0 for every i < 2³⁰)
NO_WINDOW = 1 << 30

#: planted bugs, for tests only: LSE in log2 units read as natural log; LSE or δ rounded to bf16; scale cast to bf16;
#: causal mask a < i, b < i instead of <=; dQ grid from BLOCK_N instead of BLOCK_M; window edge a >= i − w1 instead of
#: a > i − w1; grouped heads read key head h mod H_kv instead of h // g; split partials merged without their weights
TRAPS = frozenset({"lse_log2", "lse_bf16", "delta_bf16", "scale_bf16", "causal_strict", "grid_block",
                   "window_edge", "gqa_modulo", "combine_unweighted"})


# ------------------------------------------------------------------------------------------------ shared helpers


@triton.jit
def _visible(offs_i, a, offs_b, n2, w1, w2, CAUSAL: tl.constexpr, TRAP: tl.constexpr):
    """[rows, cols] mask of the visible pairs (i, a, b): b < n2; causal a ≤ i, b ≤ i, a > i − w1, b > i − w2."""
    ok = offs_b[None, :] < n2
    if CAUSAL:
        i = offs_i[:, None]
        if TRAP == "causal_strict":
            ok = ok & (offs_b[None, :] < i) & (a < i)
        else:
            ok = ok & (offs_b[None, :] <= i) & (a <= i)
        if TRAP == "window_edge":
            ok = ok & (a >= i - w1)
        else:
            ok = ok & (a > i - w1)
        ok = ok & (offs_b[None, :] > i - w2)
    return ok


@triton.jit
def _k1_rows(i0, i_last, n1, w1, CAUSAL: tl.constexpr):
    """k1 rows [lo, hi) that some query i0 … i_last sees."""
    if CAUSAL:
        return tl.maximum(i0 - w1 + 1, 0), tl.minimum(n1, i_last + 1)
    return i0 * 0, n1 + i0 * 0


@triton.jit
def _k2_tiles(i0, i_last, a, n2, w1, w2, CAUSAL: tl.constexpr, BLOCK_N: tl.constexpr):
    """k2 tile starts [start, end) visible to queries i0 … i_last with k1 row a, and [lo, hi): the tiles that every
    one of these queries sees whole (no mask). Edges [start, lo) and [hi, end) take the mask; lo = hi = end when
    row a itself is not visible to all of them."""
    if CAUSAL:
        start = (tl.maximum(i0 - w2 + 1, 0) // BLOCK_N) * BLOCK_N
        end = tl.minimum(n2, i_last + 1)
        lo = ((tl.maximum(i_last - w2 + 1, 0) + BLOCK_N - 1) // BLOCK_N) * BLOCK_N
        hi = (tl.minimum(n2, i0 + 1) // BLOCK_N) * BLOCK_N
        whole_a = (a <= i0) & (a > i_last - w1) & (lo < hi)
        lo = tl.where(whole_a, lo, end)
        hi = tl.where(whole_a, hi, end)
    else:
        start = i0 * 0
        end = n2 + i0 * 0
        lo = start
        hi = (n2 // BLOCK_N) * BLOCK_N + i0 * 0
    return start, lo, hi, end


@triton.jit
def _hadamard_row(x, row):
    """x ∘ row (row broadcast over the tile) in float32, rounded once to x's dtype."""
    return (x.to(tl.float32) * row.to(tl.float32)[None, :]).to(x.dtype)


@triton.jit
def _head_offsets(bh, n_heads, group, stride_qb, stride_qh, stride_1b, stride_1h, stride_2b, stride_2h,
                  TRAP: tl.constexpr):
    """Offsets of query head bh = b·H + h and of the key head it reads (h // g; the trap reads h mod H_kv) in the
    (K1, V1) and (K2, V2) layouts."""
    b = bh // n_heads
    h = bh % n_heads
    if TRAP == "gqa_modulo":
        hk = h % (n_heads // group)
    else:
        hk = h // group
    return b * stride_qb + h * stride_qh, b * stride_1b + hk * stride_1h, b * stride_2b + hk * stride_2h


# ------------------------------------------------------------------------------------------------------- forward


@triton.jit
def _kv_tile(K2, V2, off2, b0, n2, stride_2n, D: tl.constexpr, BLOCK_N: tl.constexpr):
    """Rows b0 … b0 + BLOCK_N of K2 and V2 (zero past n2); the offsets of those rows."""
    offs_b = b0 + tl.arange(0, BLOCK_N)
    tile = off2 + offs_b[:, None] * stride_2n + tl.arange(0, D)[None, :]
    k2 = tl.load(K2 + tile, mask=(offs_b < n2)[:, None], other=0.0)
    v2 = tl.load(V2 + tile, mask=(offs_b < n2)[:, None], other=0.0)
    return k2, v2, offs_b


@triton.jit
def _forward_step(acc, m_i, l_i, qk1, v1, K2, V2, off2, b0, edge, offs_i, a, n2, w1, w2, c, stride_2n,
                  D: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr, FOLD: tl.constexpr,
                  PREC: tl.constexpr, TRAP: tl.constexpr):
    """One online-softmax step over the k2 tile at b0 (one accumulator: acc = acc·α + P·fl(V2∘v1_a)); the mask
    is computed only on ``edge`` tiles (the loads stay outside the branch, so the loop still pipelines)."""
    k2, v2, offs_b = _kv_tile(K2, V2, off2, b0, n2, stride_2n, D, BLOCK_N)
    t = tl.dot(qk1, tl.trans(k2), input_precision=PREC) * c  # scores, ×log2 e when FOLD
    if edge:
        t = tl.where(_visible(offs_i, a, offs_b, n2, w1, w2, CAUSAL, TRAP), t, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(t, 1))
    m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # nothing visible yet: e^(−inf − 0) = 0, not NaN
    if FOLD:
        alpha = tl.exp2(m_i - m_ref)
        p = tl.exp2(t - m_ref[:, None])
    else:  # subtract first: exact near the max (Sterbenz)
        alpha = tl.exp2((m_i - m_ref) * LOG2E)
        p = tl.exp2((t - m_ref[:, None]) * LOG2E)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = tl.dot(p.to(v2.dtype), _hadamard_row(v2, v1), acc=acc * alpha[:, None], input_precision=PREC)
    return acc, m_new, l_i


@triton.jit
def _forward_kernel(
    Q, K1, K2, V1, V2,                    # (B, H, n_q, D) and (B, H_kv, n, D), last dim contiguous
    O, LSE,                               # (B, H, n_q, D) like q and (B·H, n_q) fp32; SPLIT: (S, B·H, n_q, D), (S, B·H, n_q) fp32
    stride_qb, stride_qh, stride_qn,      # q
    stride_1b, stride_1h, stride_1n,      # k1, v1 (one layout)
    stride_2b, stride_2h, stride_2n,      # k2, v2 (one layout)
    stride_ob, stride_oh, stride_on,      # o (unused with SPLIT)
    scale, n_heads, group, n_q, n1, n2, w1, w2, a_chunk,
    D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr, SPLIT: tl.constexpr,
    FOLD: tl.constexpr, PREC: tl.constexpr, TRAP: tl.constexpr,
):
    """One program = BLOCK_M queries × the visible k1 rows of split ``program_id(1)`` × their visible k2 tiles."""
    pid_m = tl.program_id(0)
    if CAUSAL:  # the last query tiles see the most pairs: launch them first
        pid_m = tl.cdiv(n_q, BLOCK_M) - 1 - pid_m
    split = tl.program_id(1)
    bh = tl.program_id(2).to(tl.int64)
    q_off, off1, off2 = _head_offsets(bh, n_heads, group, stride_qb, stride_qh, stride_1b, stride_1h, stride_2b,
                                      stride_2h, TRAP)
    i0 = pid_m * BLOCK_M
    i_last = tl.minimum(i0 + BLOCK_M, n_q) - 1
    offs_i = i0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    row_ok = offs_i < n_q
    q_ptrs = Q + q_off + offs_i[:, None] * stride_qn + offs_d[None, :]
    if FOLD:
        c = scale * LOG2E
    else:
        c = scale
    a_lo, a_hi = _k1_rows(i0, i_last, n1, w1, CAUSAL)
    a_lo = tl.maximum(a_lo, split * a_chunk)
    a_hi = tl.minimum(a_hi, split * a_chunk + a_chunk)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)  # running max of the scores (kernel units)
    l_i = tl.zeros([BLOCK_M], tl.float32)  # running Σ e^(s − m)
    acc = tl.zeros([BLOCK_M, D], tl.float32)  # running Σ e^(s − m) v1_a∘v2_b
    for a in range(a_lo, a_hi):  # q is re-read per row (an L2 hit) rather than held: registers go to acc and P
        q = tl.load(q_ptrs, mask=row_ok[:, None], other=0.0)
        qk1 = _hadamard_row(q, tl.load(K1 + off1 + a * stride_1n + offs_d))
        v1 = tl.load(V1 + off1 + a * stride_1n + offs_d)
        start, lo, hi, end = _k2_tiles(i0, i_last, a, n2, w1, w2, CAUSAL, BLOCK_N)
        for b0 in range(start, end, BLOCK_N):
            acc, m_i, l_i = _forward_step(acc, m_i, l_i, qk1, v1, K2, V2, off2, b0, (b0 < lo) | (b0 >= hi), offs_i,
                                          a, n2, w1, w2, c, stride_2n, D, BLOCK_N, CAUSAL, FOLD, PREC, TRAP)
    seen = l_i > 0  # false only for a split that holds none of the row's pairs
    out = acc / tl.where(seen, l_i, 1.0)[:, None]
    if FOLD:
        lse = (m_i + tl.log2(l_i)) * LN2
    else:
        lse = m_i + tl.log2(l_i) * LN2
    lse = tl.where(seen, lse, float("-inf"))
    if TRAP == "lse_log2":
        lse = lse * LOG2E
    if SPLIT:
        part = (split * tl.num_programs(2) + bh) * n_q + offs_i
        tl.store(O + part[:, None] * D + offs_d[None, :], out, mask=row_ok[:, None])
        tl.store(LSE + part, lse, mask=row_ok)
    else:
        b = bh // n_heads
        o_off = b * stride_ob + (bh % n_heads) * stride_oh
        tl.store(O + o_off + offs_i[:, None] * stride_on + offs_d[None, :], out.to(O.dtype.element_ty),
                 mask=row_ok[:, None])
        tl.store(LSE + bh * n_q + offs_i, lse, mask=row_ok)


@triton.jit
def _combine_kernel(
    O_PART, LSE_PART,                     # (S, B·H, n_q, D), (S, B·H, n_q) fp32: one normalised partial per split
    O, LSE,                               # (B, H, n_q, D) like q, (B·H, n_q) fp32
    stride_ob, stride_oh, stride_on,
    n_heads, n_q, n_splits,
    D: tl.constexpr, BLOCK_M: tl.constexpr, TRAP: tl.constexpr,
):
    """O = Σ_s e^{LSE_s − LSE} O_s and LSE = log Σ_s e^{LSE_s}, splits merged in a fixed order (deterministic)."""
    bh = tl.program_id(1).to(tl.int64)
    n_bh = tl.num_programs(1)
    offs_i = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    row_ok = offs_i < n_q
    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    for s in range(0, n_splits):
        m = tl.maximum(m, tl.load(LSE_PART + (s * n_bh + bh) * n_q + offs_i, mask=row_ok, other=0.0))
    total = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, D], tl.float32)
    for s in range(0, n_splits):
        part = (s * n_bh + bh) * n_q + offs_i
        if TRAP == "combine_unweighted":
            w = tl.where(tl.load(LSE_PART + part, mask=row_ok, other=0.0) > float("-inf"), 1.0, 0.0)
        else:
            w = tl.exp2((tl.load(LSE_PART + part, mask=row_ok, other=0.0) - m) * LOG2E)
        total += w
        acc += w[:, None] * tl.load(O_PART + part[:, None] * D + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    b = bh // n_heads
    o_off = b * stride_ob + (bh % n_heads) * stride_oh
    tl.store(O + o_off + offs_i[:, None] * stride_on + offs_d[None, :], (acc / total[:, None]).to(O.dtype.element_ty),
             mask=row_ok[:, None])
    tl.store(LSE + bh * n_q + offs_i, m + tl.log2(total) * LN2, mask=row_ok)


# ------------------------------------------------------------------------------------------------------ backward


@triton.jit
def _delta_kernel(O, DO, DELTA,           # (B, H, n_q, D) twice, (B·H, n_q) fp32
                  stride_ob, stride_oh, stride_on, stride_gb, stride_gh, stride_gn,
                  n_heads, n_q, D: tl.constexpr, BLOCK_M: tl.constexpr):
    """δ_i = ⟨dO_i, O_i⟩ in float32 (L4)."""
    bh = tl.program_id(1).to(tl.int64)
    b, h = bh // n_heads, bh % n_heads
    offs_i = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    row_ok = offs_i < n_q
    o = tl.load(O + b * stride_ob + h * stride_oh + offs_i[:, None] * stride_on + offs_d[None, :],
                mask=row_ok[:, None], other=0.0).to(tl.float32)
    do = tl.load(DO + b * stride_gb + h * stride_gh + offs_i[:, None] * stride_gn + offs_d[None, :],
                 mask=row_ok[:, None], other=0.0).to(tl.float32)
    tl.store(DELTA + bh * n_q + offs_i, tl.sum(o * do, 1), mask=row_ok)


@triton.jit
def _group_member(b, bhk, g, n_kv_heads, group, stride_qb, stride_qh, stride_gb, stride_gh):
    """Query head g of key head bhk's group in batch b: its flat batch·head index and its q and dO/LSE offsets."""
    h = (bhk % n_kv_heads) * group + g
    return b * n_kv_heads * group + h, b * stride_qb + h * stride_qh, b * stride_gb + h * stride_gh


@triton.jit
def _query_tile(Q, DO, LSE, DELTA, q_off, g_off, bh, offs_i, offs_d, n_q, stride_qn, stride_gn):
    """Rows ``offs_i`` of one head's Q and dO with LSE and δ; rows past n_q get LSE = +inf, so their P is 0."""
    row_ok = offs_i < n_q
    q = tl.load(Q + q_off + offs_i[:, None] * stride_qn + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    do = tl.load(DO + g_off + offs_i[:, None] * stride_gn + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    lse = tl.load(LSE + bh * n_q + offs_i, mask=row_ok, other=float("inf"))
    delta = tl.load(DELTA + bh * n_q + offs_i, mask=row_ok, other=0.0)
    return q, do, lse, delta


@triton.jit
def _row_step(qk1, dov1, lse, delta, K2, V2, off2, b0, edge, offs_i, a, n2, w1, w2, scale, stride_2n,
              D: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr, PREC: tl.constexpr, TRAP: tl.constexpr,
              WANT_DS: tl.constexpr = True):
    """For a query tile, k1 row a and the k2 tile at b0: (P, dS, K2, V2) with P from the LSE (L4); masked on edges.
    Without WANT_DS, dS is returned as P (dP is not computed)."""
    k2, v2, offs_b = _kv_tile(K2, V2, off2, b0, n2, stride_2n, D, BLOCK_N)
    s = tl.dot(qk1, tl.trans(k2), input_precision=PREC) * scale
    p = tl.exp2((s - lse[:, None]) * LOG2E)
    if edge:
        p = tl.where(_visible(offs_i, a, offs_b, n2, w1, w2, CAUSAL, TRAP), p, 0.0)
    if WANT_DS:
        dp = tl.dot(dov1, tl.trans(v2), input_precision=PREC)  # ⟨dO_i ∘ v1_a, v2_b⟩ (T14)
        return p, p * (dp - delta[:, None]), k2, v2
    return p, p, k2, v2


@triton.jit
def _dq_kernel(
    Q, K1, K2, V1, V2, DO, LSE, DELTA, DQ,  # DQ like Q
    stride_qb, stride_qh, stride_qn, stride_1b, stride_1h, stride_1n, stride_2b, stride_2h, stride_2n,
    stride_gb, stride_gh, stride_gn,
    scale, n_heads, group, n_q, n1, n2, w1, w2,
    D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr, PREC: tl.constexpr,
    TRAP: tl.constexpr,
):
    """dQ_i = s Σ_{a,b} dS[i,a,b]·fl(k2_b∘k1_a) (L4), one accumulator; program = a query tile."""
    pid_m = tl.program_id(0)
    if CAUSAL:
        pid_m = tl.cdiv(n_q, BLOCK_M) - 1 - pid_m
    bh = tl.program_id(1).to(tl.int64)
    q_off, off1, off2 = _head_offsets(bh, n_heads, group, stride_qb, stride_qh, stride_1b, stride_1h, stride_2b,
                                      stride_2h, TRAP)
    g_off = (bh // n_heads) * stride_gb + (bh % n_heads) * stride_gh
    i0 = pid_m * BLOCK_M
    i_last = tl.minimum(i0 + BLOCK_M, n_q) - 1
    offs_i = i0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    q, do, lse, delta = _query_tile(Q, DO, LSE, DELTA, q_off, g_off, bh, offs_i, offs_d, n_q, stride_qn, stride_gn)
    dq = tl.zeros([BLOCK_M, D], tl.float32)
    a_lo, a_hi = _k1_rows(i0, i_last, n1, w1, CAUSAL)
    for a in range(a_lo, a_hi):
        k1 = tl.load(K1 + off1 + a * stride_1n + offs_d)
        qk1 = _hadamard_row(q, k1)
        dov1 = _hadamard_row(do, tl.load(V1 + off1 + a * stride_1n + offs_d))
        start, lo, hi, end = _k2_tiles(i0, i_last, a, n2, w1, w2, CAUSAL, BLOCK_N)
        for b0 in range(start, end, BLOCK_N):
            _, ds, k2, _ = _row_step(qk1, dov1, lse, delta, K2, V2, off2, b0, (b0 < lo) | (b0 >= hi), offs_i, a, n2,
                                     w1, w2, scale, stride_2n, D, BLOCK_N, CAUSAL, PREC, TRAP)
            dq = tl.dot(ds.to(k2.dtype), _hadamard_row(k2, k1), acc=dq, input_precision=PREC)
    tl.store(DQ + q_off + offs_i[:, None] * stride_qn + offs_d[None, :], (dq * scale).to(DQ.dtype.element_ty),
             mask=(offs_i < n_q)[:, None])


@triton.jit
def _k1_owner_kernel(
    Q, K1, K2, V1, V2, DO, LSE, DELTA, DK1, DV1, DQ,  # DK1, DV1 like K1; DQ: fp32 (B, H, n_q, D) (ATOMIC_DQ only)
    stride_qb, stride_qh, stride_qn, stride_1b, stride_1h, stride_1n, stride_2b, stride_2h, stride_2n,
    stride_gb, stride_gh, stride_gn,
    scale, n_kv_heads, group, n_q, n1, n2, w1, w2,
    D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr, ATOMIC_DQ: tl.constexpr,
    WANT_DK: tl.constexpr, WANT_DV: tl.constexpr, PREC: tl.constexpr, TRAP: tl.constexpr,
):
    """dK1_a = s Σ_i q_i ∘ Σ_b dS k2_b (WANT_DK) and dV1_a = Σ_i dO_i ∘ Σ_b P v2_b (WANT_DV) over the g query heads
    of key head ``program_id(1)`` (L4); one program per k1 row a. ATOMIC_DQ (with WANT_DK) also adds
    s·(Σ_b dS k2_b)∘k1_a into DQ. Both at once hold two float32 BLOCK_M×d accumulators: at d = 128 that spills, so
    the launcher runs one pass per gradient there (5 products per tile instead of 4)."""
    a = tl.program_id(0)
    bhk = tl.program_id(1).to(tl.int64)
    b = bhk // n_kv_heads
    off1 = b * stride_1b + (bhk % n_kv_heads) * stride_1h
    off2 = b * stride_2b + (bhk % n_kv_heads) * stride_2h
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    k1 = tl.load(K1 + off1 + a * stride_1n + offs_d)
    v1 = tl.load(V1 + off1 + a * stride_1n + offs_d)
    dk1 = tl.zeros([D], tl.float32)
    dv1 = tl.zeros([D], tl.float32)
    i_lo = 0
    i_hi = n_q
    if CAUSAL:  # queries a ≤ i < a + w1 see row a
        i_lo = (a // BLOCK_M) * BLOCK_M
        i_hi = tl.minimum(n_q, a + w1)
    for g in range(0, group):
        bh, q_off, g_off = _group_member(b, bhk, g, n_kv_heads, group, stride_qb, stride_qh, stride_gb, stride_gh)
        for i0 in range(i_lo, i_hi, BLOCK_M):
            i_last = tl.minimum(i0 + BLOCK_M, n_q) - 1
            offs_i = i0 + offs_m
            q, do, lse, delta = _query_tile(Q, DO, LSE, DELTA, q_off, g_off, bh, offs_i, offs_d, n_q, stride_qn,
                                            stride_gn)
            qk1 = _hadamard_row(q, k1)
            dov1 = _hadamard_row(do, v1)
            sum_ds_k2 = tl.zeros([BLOCK_M, D], tl.float32)
            sum_p_v2 = tl.zeros([BLOCK_M, D], tl.float32)
            start, lo, hi, end = _k2_tiles(i0, i_last, a, n2, w1, w2, CAUSAL, BLOCK_N)
            for b0 in range(start, end, BLOCK_N):
                p, ds, k2, v2 = _row_step(qk1, dov1, lse, delta, K2, V2, off2, b0, (b0 < lo) | (b0 >= hi), offs_i,
                                          a, n2, w1, w2, scale, stride_2n, D, BLOCK_N, CAUSAL, PREC, TRAP, WANT_DK)
                if WANT_DK:
                    sum_ds_k2 = tl.dot(ds.to(k2.dtype), k2, acc=sum_ds_k2, input_precision=PREC)
                if WANT_DV:
                    sum_p_v2 = tl.dot(p.to(v2.dtype), v2, acc=sum_p_v2, input_precision=PREC)
            if WANT_DK:
                dk1 += tl.sum(sum_ds_k2 * q.to(tl.float32), 0)
            if WANT_DV:
                dv1 += tl.sum(sum_p_v2 * do.to(tl.float32), 0)
            if ATOMIC_DQ:
                tl.atomic_add(DQ + (bh * n_q + offs_i[:, None]) * D + offs_d[None, :],
                              sum_ds_k2 * (k1.to(tl.float32) * scale)[None, :], mask=(offs_i < n_q)[:, None])
    if WANT_DK:
        tl.store(DK1 + off1 + a * stride_1n + offs_d, (dk1 * scale).to(DK1.dtype.element_ty))
    if WANT_DV:
        tl.store(DV1 + off1 + a * stride_1n + offs_d, dv1.to(DV1.dtype.element_ty))


@triton.jit
def _k2_owner_step(dk2, dv2, k2, v2, qk1, dov1, lse, delta, edge, offs_i, a, offs_b, n2, w1, w2, scale,
                   CAUSAL: tl.constexpr, PREC: tl.constexpr, TRAP: tl.constexpr):
    """Sᵀ = K2·fl(q∘k1_a)ᵀ, Pᵀ, dSᵀ for a k2 tile, then dV2 += Pᵀ·fl(dO∘v1_a), dK2 += dSᵀ·fl(q∘k1_a) (L4)."""
    st = tl.dot(k2, tl.trans(qk1), input_precision=PREC) * scale
    pt = tl.exp2((st - lse[None, :]) * LOG2E)
    if edge:
        pt = tl.where(tl.trans(_visible(offs_i, a, offs_b, n2, w1, w2, CAUSAL, TRAP)), pt, 0.0)
    dpt = tl.dot(v2, tl.trans(dov1), input_precision=PREC)
    dst = pt * (dpt - delta[None, :])
    dv2 = tl.dot(pt.to(dov1.dtype), dov1, acc=dv2, input_precision=PREC)
    dk2 = tl.dot(dst.to(qk1.dtype), qk1, acc=dk2, input_precision=PREC)
    return dk2, dv2


@triton.jit
def _k2_owner_kernel(
    Q, K1, K2, V1, V2, DO, LSE, DELTA, DK2, DV2,  # DK2, DV2 like K2
    stride_qb, stride_qh, stride_qn, stride_1b, stride_1h, stride_1n, stride_2b, stride_2h, stride_2n,
    stride_gb, stride_gh, stride_gn,
    scale, n_kv_heads, group, n_q, n1, n2, w1, w2,
    D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr, PREC: tl.constexpr,
    TRAP: tl.constexpr,
):
    """dK2_b = s Σ_{i,a} dS fl(q_i∘k1_a), dV2_b = Σ_{i,a} P fl(dO_i∘v1_a) over the g query heads of key head
    ``program_id(1)`` (L4); one program per tile of BLOCK_N k2 rows; k1 rows that every query of a tile sees with
    the whole k2 tile skip the mask."""
    b0 = tl.program_id(0) * BLOCK_N
    bhk = tl.program_id(1).to(tl.int64)
    b = bhk // n_kv_heads
    off1 = b * stride_1b + (bhk % n_kv_heads) * stride_1h
    off2 = b * stride_2b + (bhk % n_kv_heads) * stride_2h
    offs_m = tl.arange(0, BLOCK_M)
    offs_b = b0 + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    col_ok = offs_b < n2
    tile = off2 + offs_b[:, None] * stride_2n + offs_d[None, :]
    k2 = tl.load(K2 + tile, mask=col_ok[:, None], other=0.0)
    v2 = tl.load(V2 + tile, mask=col_ok[:, None], other=0.0)
    dk2 = tl.zeros([BLOCK_N, D], tl.float32)
    dv2 = tl.zeros([BLOCK_N, D], tl.float32)
    b_last = tl.minimum(b0 + BLOCK_N, n2) - 1
    i_lo = 0
    i_hi = n_q
    if CAUSAL:  # queries b0 ≤ i < b_last + w2 see some row of the tile
        i_lo = (b0 // BLOCK_M) * BLOCK_M
        i_hi = tl.minimum(n_q, b_last + w2)
    for g in range(0, group):
        bh, q_off, g_off = _group_member(b, bhk, g, n_kv_heads, group, stride_qb, stride_qh, stride_gb, stride_gh)
        for i0 in range(i_lo, i_hi, BLOCK_M):
            i_last = tl.minimum(i0 + BLOCK_M, n_q) - 1
            offs_i = i0 + offs_m
            q, do, lse, delta = _query_tile(Q, DO, LSE, DELTA, q_off, g_off, bh, offs_i, offs_d, n_q, stride_qn,
                                            stride_gn)
            a_lo, a_hi = _k1_rows(i0, i_last, n1, w1, CAUSAL)
            # k1 rows seen by every query of the tile; the whole k2 tile must be seen by every query as well
            if CAUSAL:
                whole_b = (b0 + BLOCK_N <= n2) & (b_last <= i0) & (b0 > i_last - w2)
                int_lo = tl.where(whole_b, tl.maximum(a_lo, i_last - w1 + 1), a_hi)
                int_hi = tl.where(whole_b, tl.minimum(a_hi, i0 + 1), a_hi)
                int_hi = tl.maximum(int_lo, int_hi)
            else:
                int_lo = tl.where(b0 + BLOCK_N <= n2, a_lo, a_hi)
                int_hi = a_hi
            for a in range(a_lo, a_hi):
                qk1 = _hadamard_row(q, tl.load(K1 + off1 + a * stride_1n + offs_d))
                dov1 = _hadamard_row(do, tl.load(V1 + off1 + a * stride_1n + offs_d))
                dk2, dv2 = _k2_owner_step(dk2, dv2, k2, v2, qk1, dov1, lse, delta, (a < int_lo) | (a >= int_hi),
                                          offs_i, a, offs_b, n2, w1, w2, scale, CAUSAL, PREC, TRAP)
    tl.store(DK2 + tile, (dk2 * scale).to(DK2.dtype.element_ty), mask=col_ok[:, None])
    tl.store(DV2 + tile, dv2.to(DV2.dtype.element_ty), mask=col_ok[:, None])


#: every @triton.jit kernel the launchers below can run (the compile gate compiles each)
KERNELS = {"forward": _forward_kernel, "combine": _combine_kernel, "delta": _delta_kernel, "dq": _dq_kernel,
           "k1_owner": _k1_owner_kernel, "k2_owner": _k2_owner_kernel}


# ----------------------------------------------------------------------------------------------------- launchers


def _check_trap(trap: str | None) -> str:
    if trap is not None and trap not in TRAPS:
        raise ValueError(f"trap must be None or one of {sorted(TRAPS)}; got {trap!r}")
    return trap or "none"


def _heads(x: torch.Tensor) -> torch.Tensor:
    """(..., H, n, d) as (B, H, n, d) without a copy where possible; copied only if the last dim is strided."""
    x4 = x.reshape(-1, x.shape[-3] if x.dim() >= 3 else 1, x.shape[-2], x.shape[-1])
    return x4 if x4.stride(-1) == 1 else x4.contiguous()


def _pair(k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """k and v as (B, H_kv, n, d) sharing one layout (one stride triple in the kernels): copied only if they differ."""
    k4, v4 = _heads(k), _heads(v)
    return (k4, v4) if k4.stride() == v4.stride() else (k4.contiguous(), v4.contiguous())


def _strides(x: torch.Tensor) -> tuple[int, int, int]:
    return x.stride(0), x.stride(1), x.stride(2)


def _window_args(window: Window | None) -> tuple[int, int]:
    w1, w2 = window if window is not None else (None, None)
    return (NO_WINDOW if w1 is None else w1), (NO_WINDOW if w2 is None else w2)


def _setup(q: torch.Tensor, k1: torch.Tensor, scale: float, trap: str | None) -> tuple[int, int, float, str, str]:
    """Validate trap, dtype, d and batch·heads; ``(d, group, scale, tl.dot precision, trap name)``."""
    trap_name = _check_trap(trap)
    check_kernel_dtype(q.dtype)
    d = check_head_dim(q.shape[-1])
    check_batch_heads(q.shape[:-2].numel())
    heads, kv_heads = (q.shape[-3], k1.shape[-3]) if q.dim() >= 3 else (1, 1)
    if trap == "scale_bf16":
        scale = float(torch.tensor(scale, dtype=torch.bfloat16))
    return d, heads // kv_heads, float(scale), "ieee" if q.dtype == torch.float32 else "tf32", trap_name


#: a launcher's ``config``: None (tuned), one config for every kernel, or one per kernel name
Configs = Union[KernelConfig, Dict[str, KernelConfig], None]


def _given(config: Configs, kernel: str) -> KernelConfig | None:
    return config.get(kernel) if isinstance(config, dict) else config


def _timer(run: Callable[[KernelConfig], None], device: torch.device) -> Callable[[KernelConfig], float] | None:
    """On CUDA, the median time of ``run(config)`` (for :func:`~verified_ta.kernels.configs.pick_config`)."""
    if device.type != "cuda":
        return None
    from triton.testing import do_bench

    return lambda cfg: do_bench(lambda: run(cfg), warmup=5, rep=25, return_mode="median")


def forward(
    q: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor, v1: torch.Tensor, v2: torch.Tensor,
    scale: float, causal: bool, *, window: Window | None = None, config: Configs = None,
    splits: int | None = None, trap: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused forward: ``(out, lse)``, out like q, lse float32 natural log of shape ``q.shape[:-1]``.

    Inputs are validated by the caller (:func:`verified_ta.interface.tensor_attention`). ``splits`` overrides the
    number of k1 splits (default :func:`~verified_ta.kernels.configs.split_count`); ``config`` the tuned tile
    (one for every kernel, or ``{kernel name: config}``).
    """
    d, group, scale, prec, trap_name = _setup(q, k1, scale, trap)
    q4 = _heads(q)
    (k1f, v1f), (k2f, v2f) = _pair(k1, v1), _pair(k2, v2)
    n_b, n_heads, n_q, _ = q4.shape
    bh, n1, n2 = n_b * n_heads, k1f.shape[2], k2f.shape[2]
    w1, w2 = _window_args(window)
    out = torch.empty_like(q4)
    lse = torch.empty((bh, n_q), dtype=torch.float32, device=q.device)
    common = (*_strides(q4), *_strides(k1f), *_strides(k2f))

    def run(cfg: KernelConfig) -> None:
        n_m = triton.cdiv(n_q, cfg.block_m)
        n_split = splits if splits is not None else split_count(n_m * bh, n1, q.device)
        a_chunk = triton.cdiv(n1, n_split)
        meta = dict(D=d, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, CAUSAL=causal, FOLD=q.dtype != torch.float32,
                    PREC=prec, TRAP=trap_name, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
        if n_split == 1:
            _forward_kernel[(n_m, 1, bh)](q4, k1f, k2f, v1f, v2f, out, lse, *common, *_strides(out), scale, n_heads,
                                          group, n_q, n1, n2, w1, w2, a_chunk, SPLIT=False, **meta)
            return
        o_part = torch.empty((n_split, bh, n_q, d), dtype=torch.float32, device=q.device)
        lse_part = torch.empty((n_split, bh, n_q), dtype=torch.float32, device=q.device)
        _forward_kernel[(n_m, n_split, bh)](q4, k1f, k2f, v1f, v2f, o_part, lse_part, *common, 0, 0, 0, scale,
                                            n_heads, group, n_q, n1, n2, w1, w2, a_chunk, SPLIT=True, **meta)
        _combine_kernel[(n_m, bh)](o_part, lse_part, out, lse, *_strides(out), n_heads, n_q, n_split, D=d,
                                   BLOCK_M=cfg.block_m, TRAP=trap_name, num_warps=4)

    run(_given(config, "forward") or pick_config("forward", q.dtype, d, n_q, causal, window is not None,
                                                 _timer(run, q.device)))
    if trap == "lse_bf16":
        lse = lse.to(torch.bfloat16).to(torch.float32)
    return out.reshape(q.shape), lse.reshape(q.shape[:-1])


def backward(
    grad_out: torch.Tensor, q: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor, v1: torch.Tensor,
    v2: torch.Tensor, out: torch.Tensor, lse: torch.Tensor, scale: float, causal: bool,
    grad_lse: torch.Tensor | None = None, *, window: Window | None = None, deterministic: bool = True,
    config: Configs = None, trap: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """L4 backward: ``(dQ, dK1, dK2, dV1, dV2)`` in the inputs' dtype.

    ``deterministic=True`` (default): no atomics, bitwise reproducible, 11 n³d-sized products per tile (dQ kernel 3,
    K1-owner 4, K2-owner 4; 12 at d = 128, where the K1-owner runs one pass per gradient).
    ``deterministic=False``: dQ accumulated atomically in float32 inside the K1-owner, 8 products (9 at d = 128).
    """
    d, group, scale, prec, trap_name = _setup(q, k1, scale, trap)
    q4, o4 = _heads(q), _heads(out)
    do4 = _heads(grad_out.to(q.dtype))
    (k1f, v1f), (k2f, v2f) = _pair(k1, v1), _pair(k2, v2)
    n_b, n_heads, n_q, _ = q4.shape
    bh, n1, n2 = n_b * n_heads, k1f.shape[2], k2f.shape[2]
    n_kv = n_heads // group
    w1, w2 = _window_args(window)
    lsef = lse.reshape(bh, n_q).to(torch.float32).contiguous()
    delta = torch.empty((bh, n_q), dtype=torch.float32, device=q.device)
    _delta_kernel[(triton.cdiv(n_q, 64), bh)](o4, do4, delta, *_strides(o4), *_strides(do4), n_heads, n_q, D=d,
                                              BLOCK_M=64)
    if grad_lse is not None:  # d lse_i / d s_iab = P_iab: adds dlse_i to dP − δ (L4 with an LSE output)
        delta = delta - grad_lse.reshape(bh, n_q).to(torch.float32)
    if trap == "delta_bf16":
        delta = delta.to(torch.bfloat16).to(torch.float32)
    strides = (*_strides(q4), *_strides(k1f), *_strides(k2f), *_strides(do4))
    kv_sizes = (scale, n_kv, group, n_q, n1, n2, w1, w2)
    dq, dk1, dv1, dk2, dv2 = (torch.empty_like(t) for t in (q4, k1f, v1f, k2f, v2f))  # layouts of their inputs
    dq_acc = dq if deterministic else torch.zeros((n_b, n_heads, n_q, d), dtype=torch.float32, device=q.device)

    def meta(cfg: KernelConfig) -> dict:
        return dict(D=d, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, CAUSAL=causal, PREC=prec, TRAP=trap_name,
                    num_warps=cfg.num_warps, num_stages=cfg.num_stages)

    def run_dq(cfg: KernelConfig) -> None:
        grid_block = cfg.block_n if trap == "grid_block" else cfg.block_m
        _dq_kernel[(triton.cdiv(n_q, grid_block), bh)](q4, k1f, k2f, v1f, v2f, do4, lsef, delta, dq, *strides, scale,
                                                       n_heads, group, n_q, n1, n2, w1, w2, **meta(cfg))

    def run_k1(cfg: KernelConfig) -> None:
        if not deterministic:
            dq_acc.zero_()
        for want_dk, want_dv in k1_owner_passes(d):
            _k1_owner_kernel[(n1, n_b * n_kv)](q4, k1f, k2f, v1f, v2f, do4, lsef, delta, dk1, dv1, dq_acc, *strides,
                                               *kv_sizes, ATOMIC_DQ=want_dk and not deterministic, WANT_DK=want_dk,
                                               WANT_DV=want_dv, **meta(cfg))

    def run_k2(cfg: KernelConfig) -> None:
        _k2_owner_kernel[(triton.cdiv(n2, cfg.block_n), n_b * n_kv)](q4, k1f, k2f, v1f, v2f, do4, lsef, delta, dk2,
                                                                      dv2, *strides, *kv_sizes, **meta(cfg))

    for name, run in (("dq", run_dq), ("k1_owner", run_k1), ("k2_owner", run_k2)):
        if name == "dq" and not deterministic:
            continue
        run(_given(config, name) or pick_config(name, q.dtype, d, n_q, causal, window is not None,
                                                _timer(run, q.device)))
    if not deterministic:
        dq = dq_acc.to(q.dtype)
    return (dq.reshape(q.shape), dk1.reshape(k1.shape), dk2.reshape(k2.shape),
            dv1.reshape(v1.shape), dv2.reshape(v2.shape))
