"""Properties of the blocked CPU path ``verified_ta.blocked`` (SPEC §2 P15–P23, L4).

- The tile plan covers every visible (query, pair) exactly once, holds hidden pairs only under a mask, gives
  every tile row at least one visible pair, and visits only the window's blocks (work within a stated budget).
- Values, LSE and the five L4 gradients, float64, lie within twice the rigorous running-error bound
  ``fp_bounds.attention_rounding_bounds`` (which holds for any summation order or blocking) of the chunked
  reference, and within one bound of the mpmath oracle: full, causal, windowed, uneven lengths, every block size
  (so tails not divisible by the block), batched, with and without a gradient of the LSE.
- P18 (exact zeros, rows sum to 1), P21 (row shifts past exp's overflow) and P22 (k1 ↔ k2 swap, which changes every
  tile) of properties/test_forward.py hold with the blocked forward as ``impl``.

The check functions return a message (``None`` when the property holds) or ``(ratio, 1.0)``, so
tests/test_blocked.py runs the very same code on planted bugs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from properties.test_forward import cases, check_p18, check_p21, check_p22, pinned_shifts, shifts, with_pinned
from verified_ta import blocked
from verified_ta.fp_bounds import attention_rounding_bounds
from verified_ta.reference import tensor_attention_reference
from verified_ta.spec import spec
from verified_ta.testing.strategies import matrices

F64 = torch.float64
GRADS = ("dq", "dk1", "dk2", "dv1", "dv2")


# ---------------------------------------------------------------- the tile plan


def visible_pairs(n_q: int, n1: int, n2: int, causal: bool, window) -> np.ndarray:
    """SPEC §2 written out: (n_q, n1, n2) booleans, a <= i and b <= i (causal), i − w1 < a, i − w2 < b (window)."""
    i, a, b = np.ogrid[:n_q, :n1, :n2]
    if not causal:
        return np.ones((n_q, n1, n2), dtype=bool)
    w1, w2 = window or (None, None)
    seen = (a <= i) & (b <= i)
    if w1 is not None:
        seen = seen & (a > i - w1)
    if w2 is not None:
        seen = seen & (b > i - w2)
    return seen


def check_plan(tiles, n_q: int, n1: int, n2: int, causal: bool, window) -> str | None:
    """None iff the tiles cover each visible (query, pair) exactly once, an unmasked tile holds no hidden pair and
    every tile row sees a pair of its tile; else the first violation."""
    seen = visible_pairs(n_q, n1, n2, causal, window)
    count = np.zeros(seen.shape, dtype=int)
    for tile in tiles:
        r0, r1 = tile.rows
        if not 0 <= r0 < r1 <= n_q:
            return f"{tile}: rows outside [0, {n_q})"
        row_sees = np.zeros(r1 - r0, dtype=bool)
        for a0, a1, b0, b1 in tile.rects:
            if not (0 <= a0 < a1 <= n1 and 0 <= b0 < b1 <= n2):
                return f"{tile}: rectangle outside the keys"
            part = seen[r0:r1, a0:a1, b0:b1]
            if not tile.masked and not part.all():
                return f"{tile}: unmasked but holds a hidden pair"
            count[r0:r1, a0:a1, b0:b1] += part
            row_sees |= part.any(axis=(1, 2))
        if not row_sees.all():
            return f"{tile}: row {r0 + int(np.argmin(row_sees))} sees none of its pairs"
    bad = np.argwhere(count != seen)
    if len(bad):
        i, a, b = bad[0]
        return f"query {i}, pair ({a}, {b}): covered {count[i, a, b]} times, visible={bool(seen[i, a, b])}"
    return None


def plan_work(tiles) -> int:
    """Pair scores the plan computes: Σ rows × pairs over the tiles."""
    return sum((t.rows[1] - t.rows[0]) * t.pairs for t in tiles)


def work_budget(n: int, causal: bool, window, block: int) -> int:
    """What a plan may cost: n³ (full); the visible pairs plus the masked diagonal band, ≤ 2·block·n² more
    (causal);
    per block of queries, block × (w1 + block) × (w2 + block) at most (window)."""
    if not causal:
        return n**3
    if window is None:
        return n * (n + 1) * (2 * n + 1) // 6 + 2 * block * n * n  # Σ_i (i + 1)² visible pairs
    w1, w2 = (n if w is None else min(n, w + block) for w in window)
    return -(-n // block) * block * w1 * w2


@st.composite
def plans(draw, max_n: int = 12):
    """``(n_q, n1, n2, causal, window, block)``: full with uneven lengths, causal, or windowed (w in 1 … n + 1 or
    None per side), block 1 … max_n + 1."""
    causal = draw(st.booleans())
    n_q = draw(st.integers(1, max_n))
    n1, n2 = (n_q, n_q) if causal else (draw(st.integers(1, max_n)), draw(st.integers(1, max_n)))
    window = None
    if causal and draw(st.booleans()):
        side = st.none() | st.integers(1, n_q + 1)
        window = (draw(side), draw(side))
    return n_q, n1, n2, causal, window, draw(st.integers(1, max_n + 1))


@spec("P15")
@given(plans())
@example((7, 7, 7, True, None, 3))
@example((9, 9, 9, True, (2, 3), 4))
@example((9, 9, 9, True, (None, 1), 2))
@example((5, 3, 7, False, None, 2))
def test_plan_covers_each_visible_pair_once(plan):
    n_q, n1, n2, causal, window, block = plan
    tiles = blocked.plan_tiles(n_q, n1, n2, causal=causal, window=window, block=block)
    assert check_plan(tiles, n_q, n1, n2, causal, blocked.check_window(window, causal)) is None
    if n_q == n1 == n2:
        assert plan_work(tiles) <= work_budget(n_q, causal, blocked.check_window(window, causal), block)


# ---------------------------------------------------------------- values and gradients within the rigorous bound


@dataclass(frozen=True)
class Config:
    """Inputs ``(q, k1, k2, v1, v2)`` ``(*batch, n, d)``, the upstream dO (and d lse, or None), the call's options."""

    inputs: tuple[torch.Tensor, ...]
    grad_out: torch.Tensor
    grad_lse: torch.Tensor | None = None
    scale: float | None = None
    causal: bool = False
    window: tuple | None = None
    block: int | None = None

    @property
    def s(self) -> float:
        return 1.0 / self.inputs[0].shape[-1] if self.scale is None else self.scale

    def __repr__(self) -> str:  # short, for Hypothesis failure reports
        shapes = [tuple(t.shape) for t in self.inputs]
        return (f"Config(shapes={shapes}, causal={self.causal}, window={self.window}, block={self.block}, "
                f"scale={self.scale}, dlse={self.grad_lse is not None}, q={self.inputs[0].tolist()})")


def evaluate(fn: Callable, cfg: Config) -> tuple[torch.Tensor, ...]:
    """``(out, lse, dq, dk1, dk2, dv1, dv2)`` of ``fn(*inputs, return_lse=True, ...)`` for the loss
    ⟨dO, out⟩ + ⟨dlse, lse⟩."""
    xs = [x.detach().clone().requires_grad_(True) for x in cfg.inputs]
    out, lse = fn(*xs, scale=cfg.scale, causal=cfg.causal, window=cfg.window, return_lse=True)
    loss = (out * cfg.grad_out).sum()
    if cfg.grad_lse is not None:
        loss = loss + (lse * cfg.grad_lse).sum()
    return (out.detach(), lse.detach(), *torch.autograd.grad(loss, xs))


def blocked_attention(cfg: Config) -> Callable:
    return lambda *x, **kw: blocked.blocked_tensor_attention(*x, block=cfg.block, **kw)


def error_bounds(cfg: Config) -> list[torch.Tensor]:
    """Entrywise rigorous bounds on one float64 evaluation's error in out, lse and the five gradients.

    For dO: ``attention_rounding_bounds``. For d lse (with dO = 0) the gradient is, by L4 with dS = P·dlse, the
    auxiliary attention with values (k1, k2) and upstream s·dlse·q: dQ = s·dlse·Att_aux, dK1 = dV1_aux,
    dK2 = dV2_aux, dV1 = dV2 = 0. Both evaluations form dS = fl(P·dlse) (dP = δ = 0 exactly) and scale it once
    more than the auxiliary problem; those two roundings are inside a second copy of its bound (which carries at
    least γ_3 × the magnitude), hence the factor 2, plus an absolute (n1·n2 + 4)·tiny for their gradual underflow.
    """
    q, k1, k2, v1, v2 = cfg.inputs
    batch = tuple(q.shape[:-2])
    shapes = [q.shape, q.shape[:-1], *(x.shape for x in cfg.inputs)]
    result = [torch.zeros(shape, dtype=F64) for shape in shapes]
    lse_only = cfg.grad_lse is not None
    if lse_only and bool(cfg.grad_out.any()):
        raise ValueError("error_bounds covers dO, or d lse with dO = 0, not both at once")
    for idx in np.ndindex(batch):
        kw = dict(scale=cfg.scale, causal=cfg.causal, window=cfg.window)
        b = attention_rounding_bounds(q[idx], k1[idx], k2[idx], v1[idx], v2[idx], cfg.grad_out[idx], **kw)
        result[0][idx], result[1][idx] = b["out"], b["lse"]
        if not lse_only:
            for r, name in zip(result[2:], GRADS):
                r[idx] = b[name]
            continue
        g = cfg.grad_lse[idx][:, None]
        aux = attention_rounding_bounds(q[idx], k1[idx], k2[idx], k1[idx], k2[idx], cfg.s * g * q[idx], **kw)
        under = (k1.shape[-2] * k2.shape[-2] + 4) * torch.finfo(F64).tiny  # gradual underflow of the extra products
        result[2][idx] = 2 * abs(cfg.s) * g.abs() * aux["out"] + under
        result[3][idx], result[4][idx] = 2 * aux["dv1"], 2 * aux["dv2"]
    return result


def ratio(got: torch.Tensor, want: torch.Tensor, bound: torch.Tensor) -> float:
    """max |got − want| / bound (inf on NaN or a shape mismatch); 0/0 counts as 0."""
    if got.shape != want.shape or not bool(torch.isfinite(got).all()):
        return math.inf
    diff = (got.to(F64) - want.to(F64)).abs()
    return float(torch.where(diff == 0, 0.0, diff / bound).max()) if diff.numel() else 0.0


def check_against_reference(cfg: Config, fn: Callable | None = None) -> tuple[float, float]:
    """P15, L4: out, lse and gradients of the blocked path and of the chunked reference, both float64, differ by at
    most the sum of their two rigorous error bounds."""
    got = evaluate(fn or blocked_attention(cfg), cfg)
    want = evaluate(tensor_attention_reference, cfg)
    return max(ratio(a, b, 2 * bnd) for a, b, bnd in zip(got, want, error_bounds(cfg))), 1.0


@st.composite
def configs(draw, *, max_n: int = 7, max_d: int = 3, lse_gradient: bool = False) -> Config:
    """Full (uneven n_q, n1, n2), causal or windowed (w in 1 … n + 1 or None), batched or not, scale 1/d or 1/√d,
    entries in [-B, B] with B ∈ {1, 4}, block 1 … n + 1 (tails), dO in [-1, 1] (or dO = 0 and d lse in [-1, 1])."""
    n_q, n1, n2, causal, window, block = draw(plans(max_n))
    batch = draw(st.sampled_from([(), (2,)]))
    d = draw(st.integers(1, max_d))
    bound = draw(st.sampled_from([1.0, 4.0]))

    def tensor(n: int, b: float) -> torch.Tensor:
        mats = [draw(matrices(n, d, b)) for _ in range(int(np.prod(batch, dtype=int)))]
        return torch.from_numpy(np.stack(mats).reshape(*batch, n, d))

    inputs = tuple(tensor(n, bound) for n in (n_q, n1, n2, n1, n2))
    grad_out = tensor(n_q, 1.0)
    grad_lse = None
    if lse_gradient:
        grad_out = torch.zeros_like(grad_out)
        grad_lse = grad_out[..., 0] + torch.from_numpy(np.stack(
            [draw(matrices(1, n_q, 1.0))[0] for _ in range(int(np.prod(batch, dtype=int)))]).reshape(*batch, n_q))
    return Config(inputs, grad_out, grad_lse, draw(st.sampled_from([None, d**-0.5])), causal, window, block)


def pinned_config(window=None, *, n: int = 7, d: int = 3, block: int = 3, seed: int = 0, lse_gradient=False) -> Config:
    """Random inputs in [-1, 1], causal when a window is given (the windows' tails: n = 7 with block 3)."""
    g = torch.Generator().manual_seed(seed)
    inputs = tuple(torch.rand(n, d, generator=g, dtype=F64) * 2 - 1 for _ in range(5))
    do = torch.rand(n, d, generator=g, dtype=F64) * 2 - 1
    dlse = torch.rand(n, generator=g, dtype=F64) * 2 - 1 if lse_gradient else None
    return Config(inputs, torch.zeros_like(do) if lse_gradient else do, dlse, None, window is not None,
                  None if window in (None, "causal") else window, block)


@spec("P15", "L4")
@given(configs())
@example(pinned_config())
@example(pinned_config("causal"))
@example(pinned_config((2, 3)))
@example(pinned_config((None, 1), block=2))
def test_values_and_gradients_within_the_rigorous_bound_of_the_reference(cfg):
    r, tol = check_against_reference(cfg)
    assert r <= tol, r


@spec("L4")
@given(configs(max_n=6, lse_gradient=True))
@example(pinned_config("causal", lse_gradient=True))
@example(pinned_config((2, 1), lse_gradient=True))
def test_lse_gradient_within_the_rigorous_bound_of_the_reference(cfg):
    r, tol = check_against_reference(cfg)
    assert r <= tol, r


def check_against_oracle(cfg: Config) -> tuple[float, float]:
    """P15: out and lse within one rigorous bound of the mpmath oracle (30 digits), per batch entry."""
    from verified_ta.oracles import mp_attention

    out, lse, *_ = evaluate(blocked_attention(cfg), cfg)
    mo, ml = mp_attention(*cfg.inputs, scale=cfg.scale, causal=cfg.causal, window=cfg.window, dps=30)
    b = error_bounds(cfg)
    return max(ratio(out, torch.tensor(mo.astype(float)), b[0]), ratio(lse, torch.tensor(ml.astype(float)), b[1])), 1.0


@spec("P15")
@given(configs(max_n=4))
@example(pinned_config((2, 3), n=5, block=2))
def test_values_within_the_rigorous_bound_of_the_mpmath_oracle(cfg):
    r, tol = check_against_oracle(cfg)
    assert r <= tol, r


# ---------------------------------------------------------------- P18, P21, P22 of properties/test_forward.py


def forward_with_block(block: int) -> Callable:
    """The ``impl(q, k1, k2, v1, v2, *, scale, causal) -> (out, lse)`` of properties/test_forward.py."""
    return lambda *x, scale, causal: blocked.blocked_forward(*x, scale=scale, causal=causal, block=block)


@spec("P18", "P21", "P22")
@given(cases().flatmap(lambda case: st.tuples(st.just(case), shifts(case))), st.integers(1, 5))
@with_pinned(lambda case: ((case, pinned_shifts(case)), 2))
def test_softmax_rows_shifts_and_swap_symmetry(case_shifts, block):
    """What the blocking could break beyond P15: masked pairs get exactly 0 and rows sum to 1 across tiles (P18),
    per-row shifts of ±800 (past exp's overflow) cancel in the merge of tile LSEs (P21), and swapping (k1, v1)
    with (k2, v2), which changes every tile (k1 rows are blocked, k2 rows are not), changes nothing (P22)."""
    case, c = case_shifts
    impl = forward_with_block(block)
    for check, args in ((check_p18, ()), (check_p21, (c,)), (check_p22, ())):
        r, tol = check(impl, case, *args)
        assert r <= tol, (check.__name__, r)
