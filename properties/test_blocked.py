"""Properties of the blocked CPU path ``verified_ta.blocked`` (SPEC §2 P15–P23, L4).

- The tile plan covers every visible (query, pair) exactly once, holds hidden pairs only under a mask, gives
  every tile row at least one visible pair, and visits only the window's blocks (work within a stated budget),
  also for queries at sorted sequence positions (``query_positions``: random subsets of the sequence and the
  shards of the context-parallel layouts).
- Values, LSE and the five L4 gradients, float64, lie within twice the rigorous running-error bound
  ``fp_bounds.attention_rounding_bounds`` (which holds for any summation order or blocking) of the chunked
  reference, and within one bound of the mpmath oracle: full, causal, windowed, uneven lengths, every block size
  (so tails not divisible by the block), batched, with and without a gradient of the LSE, and shards of queries.
  A shard is compared with the rows at its positions of the whole sequence's result, the upstream gradients zero
  at the other rows (:func:`full_sequence`): then the key gradients are the shard's partial sums exactly, and the
  whole sequence's bounds hold for the shard's evaluation, whose flat sums are sub-sums of the same terms.
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
from verified_ta.distributed import LAYOUTS, shard_positions
from verified_ta.fp_bounds import attention_rounding_bounds
from verified_ta.reference import tensor_attention_reference
from verified_ta.spec import spec
from verified_ta.testing.strategies import matrices

F64 = torch.float64
GRADS = ("dq", "dk1", "dk2", "dv1", "dv2")


# ---------------------------------------------------------------- the tile plan


def visible_pairs(n_q: int, n1: int, n2: int, causal: bool, window, positions=None) -> np.ndarray:
    """SPEC §2 written out: (n_q, n1, n2) booleans, a <= i and b <= i (causal), i − w1 < a, i − w2 < b (window),
    with row j the query at position i = ``positions[j]`` (default j)."""
    _, a, b = np.ogrid[:n_q, :n1, :n2]
    i = (np.arange(n_q) if positions is None else np.asarray(positions))[:, None, None]
    if not causal:
        return np.ones((n_q, n1, n2), dtype=bool)
    w1, w2 = window or (None, None)
    seen = (a <= i) & (b <= i)
    if w1 is not None:
        seen = seen & (a > i - w1)
    if w2 is not None:
        seen = seen & (b > i - w2)
    return seen


def check_plan(tiles, n_q: int, n1: int, n2: int, causal: bool, window, positions=None) -> str | None:
    """None iff the tiles cover each visible (query, pair) exactly once, an unmasked tile holds no hidden pair and
    every tile row sees a pair of its tile (rows at ``positions``); else the first violation."""
    seen = visible_pairs(n_q, n1, n2, causal, window, positions)
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


def work_budget(n: int, causal: bool, window, block: int, positions=None) -> int:
    """What a plan may cost for the queries at ``positions`` (default 0 … n − 1) of a sequence of length n, per
    query: n² (full); its (i + 1)² visible pairs plus one masked block of t, ≤ 2·block·n more (causal); at most
    (w1 + block) × (w2 + block) (window: a query block spans fewer than ``block`` positions)."""
    rows = range(n) if positions is None else [int(p) for p in positions]
    if not causal:
        return len(rows) * n * n
    if window is None:
        return sum((i + 1) ** 2 for i in rows) + 2 * block * n * len(rows)
    w1, w2 = (n if w is None else min(n, w + block) for w in window)
    return len(rows) * w1 * w2


@st.composite
def query_positions(draw, n: int):
    """None (queries 0 … n − 1; shrinks to it), a random nonempty subset of range(n), or a nonempty shard of a
    context-parallel layout (1–4 ranks): sorted positions as a 1-D int64 tensor."""
    kind = draw(st.sampled_from(["all", "subset", "shard"]))
    if kind == "all":
        return None
    if kind == "subset":
        return torch.tensor(sorted(draw(st.sets(st.integers(0, n - 1), min_size=1))), dtype=torch.int64)
    world_size = draw(st.integers(1, min(4, n)))
    return shard_positions(n, world_size, draw(st.integers(0, world_size - 1)), draw(st.sampled_from(LAYOUTS)))


@st.composite
def plans(draw, max_n: int = 12):
    """``(n_q, n1, n2, causal, window, block, positions)``: full with uneven lengths, causal, or windowed (w in
    1 … n + 1 or None per side), block 1 … max_n + 1; causal plans over a sequence of n keys take the queries at
    ``positions`` (:func:`query_positions`), n_q of them."""
    causal = draw(st.booleans())
    n = draw(st.integers(1, max_n))
    n1, n2 = (n, n) if causal else (draw(st.integers(1, max_n)), draw(st.integers(1, max_n)))
    window, positions = None, None
    if causal:
        positions = draw(query_positions(n))
        if draw(st.booleans()):
            side = st.none() | st.integers(1, n + 1)
            window = (draw(side), draw(side))
    n_q = n if positions is None else len(positions)
    return n_q, n1, n2, causal, window, draw(st.integers(1, max_n + 1)), positions


def _snake(n: int, world_size: int, rank: int) -> torch.Tensor:
    return shard_positions(n, world_size, rank, "snake")


@spec("P15")
@given(plans())
@example((7, 7, 7, True, None, 3, None))
@example((9, 9, 9, True, (2, 3), 4, None))
@example((9, 9, 9, True, (None, 1), 2, None))
@example((5, 3, 7, False, None, 2, None))
@example((4, 13, 13, True, None, 3, _snake(13, 3, 1)))
@example((5, 13, 13, True, (3, 2), 2, _snake(13, 3, 0)))
@example((3, 12, 12, True, (None, 4), 5, torch.tensor([2, 3, 11])))
def test_plan_covers_each_visible_pair_once(plan):
    n_q, n1, n2, causal, window, block, positions = plan
    window = blocked.check_window(window, causal)
    tiles = blocked.plan_tiles(n_q, n1, n2, causal=causal, window=window, block=block, query_positions=positions)
    assert check_plan(tiles, n_q, n1, n2, causal, window, positions) is None
    if n1 == n2 and (causal or n_q == n1):
        assert plan_work(tiles) <= work_budget(n1, causal, window, block, positions)


# ---------------------------------------------------------------- values and gradients within the rigorous bound


@dataclass(frozen=True)
class Config:
    """Inputs ``(q, k1, k2, v1, v2)`` ``(*batch, n, d)``, the upstream dO (and d lse, or None), the call's options;
    with ``positions`` q's rows are the queries at those positions of the keys' sequence (causal)."""

    inputs: tuple[torch.Tensor, ...]
    grad_out: torch.Tensor
    grad_lse: torch.Tensor | None = None
    scale: float | None = None
    causal: bool = False
    window: tuple | None = None
    block: int | None = None
    positions: torch.Tensor | None = None

    @property
    def s(self) -> float:
        return 1.0 / self.inputs[0].shape[-1] if self.scale is None else self.scale

    def __repr__(self) -> str:  # short, for Hypothesis failure reports
        shapes = [tuple(t.shape) for t in self.inputs]
        positions = None if self.positions is None else self.positions.tolist()
        return (f"Config(shapes={shapes}, causal={self.causal}, window={self.window}, block={self.block}, "
                f"scale={self.scale}, dlse={self.grad_lse is not None}, positions={positions}, "
                f"q={self.inputs[0].tolist()})")


def evaluate(fn: Callable, cfg: Config) -> tuple[torch.Tensor, ...]:
    """``(out, lse, dq, dk1, dk2, dv1, dv2)`` of ``fn(*inputs, return_lse=True, ...)`` for the loss
    ⟨dO, out⟩ + ⟨dlse, lse⟩."""
    xs = [x.detach().clone().requires_grad_(True) for x in cfg.inputs]
    positions = {} if cfg.positions is None else {"query_positions": cfg.positions}
    out, lse = fn(*xs, scale=cfg.scale, causal=cfg.causal, window=cfg.window, return_lse=True, **positions)
    loss = (out * cfg.grad_out).sum()
    if cfg.grad_lse is not None:
        loss = loss + (lse * cfg.grad_lse).sum()
    return (out.detach(), lse.detach(), *torch.autograd.grad(loss, xs))


def full_sequence(cfg: Config) -> Config:
    """A shard's config as the whole sequence: q's rows placed at their positions, zero queries elsewhere, and the
    upstream dO and d lse zero at the other rows (so the other rows add exactly zero to the key gradients)."""
    if cfg.positions is None:
        return cfg
    n = cfg.inputs[1].shape[-2]

    def spread(x: torch.Tensor, dim: int) -> torch.Tensor:  # x's rows (dimension dim) at the positions, else zeros
        full = torch.zeros(*x.shape[:dim], n, *x.shape[dim:][1:], dtype=x.dtype)
        return full.index_copy_(x.dim() + dim, cfg.positions, x)

    grad_lse = None if cfg.grad_lse is None else spread(cfg.grad_lse, -1)
    return Config((spread(cfg.inputs[0], -2), *cfg.inputs[1:]), spread(cfg.grad_out, -2), grad_lse, cfg.scale,
                  cfg.causal, cfg.window, cfg.block)


def shard_rows(results: list[torch.Tensor] | tuple[torch.Tensor, ...], positions: torch.Tensor | None) -> list:
    """``(out, lse, dq, dk1, dk2, dv1, dv2)`` (values or bounds, or a prefix) of the whole sequence → a shard's: the
    rows at ``positions`` of out, lse and dq; the key gradients as they are."""
    if positions is None:
        return list(results)
    rows = [x[..., positions] if i == 1 else x[..., positions, :] for i, x in enumerate(results[:3])]
    return rows + list(results[3:])


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
    full = full_sequence(cfg)
    want = shard_rows(evaluate(tensor_attention_reference, full), cfg.positions)
    bounds = shard_rows(error_bounds(full), cfg.positions)
    return max(ratio(a, b, 2 * bnd) for a, b, bnd in zip(got, want, bounds)), 1.0


@st.composite
def configs(draw, *, max_n: int = 7, max_d: int = 3, lse_gradient: bool = False) -> Config:
    """Full (uneven n_q, n1, n2), causal or windowed (w in 1 … n + 1 or None), shards of queries (:func:`plans`),
    batched or not, scale 1/d or 1/√d, entries in [-B, B] with B ∈ {1, 4}, block 1 … n + 1 (tails), dO in [-1, 1]
    (or dO = 0 and d lse in [-1, 1])."""
    n_q, n1, n2, causal, window, block, positions = draw(plans(max_n))
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
    return Config(inputs, grad_out, grad_lse, draw(st.sampled_from([None, d**-0.5])), causal, window, block,
                  positions)


def pinned_config(window=None, *, n: int = 7, d: int = 3, block: int = 3, seed: int = 0, lse_gradient=False,
                  positions: torch.Tensor | None = None) -> Config:
    """Random inputs in [-1, 1], causal when a window is given (the windows' tails: n = 7 with block 3); with
    ``positions`` (causal) the queries are those rows of the sequence."""
    g = torch.Generator().manual_seed(seed)
    q, *kv = (torch.rand(n, d, generator=g, dtype=F64) * 2 - 1 for _ in range(5))
    do = torch.rand(n, d, generator=g, dtype=F64) * 2 - 1
    dlse = torch.rand(n, generator=g, dtype=F64) * 2 - 1 if lse_gradient else None
    if positions is not None:
        q, do, dlse = q[positions], do[positions], None if dlse is None else dlse[positions]
    return Config((q, *kv), torch.zeros_like(do) if lse_gradient else do, dlse, None, window is not None,
                  None if window in (None, "causal") else window, block, positions)


@spec("P15", "L4")
@given(configs())
@example(pinned_config())
@example(pinned_config("causal"))
@example(pinned_config((2, 3)))
@example(pinned_config((None, 1), block=2))
@example(pinned_config("causal", n=13, block=2, positions=_snake(13, 3, 2)))
@example(pinned_config((3, 2), n=13, block=2, positions=_snake(13, 4, 0)))
def test_values_and_gradients_within_the_rigorous_bound_of_the_reference(cfg):
    r, tol = check_against_reference(cfg)
    assert r <= tol, r


@spec("L4")
@given(configs(max_n=6, lse_gradient=True))
@example(pinned_config("causal", lse_gradient=True))
@example(pinned_config((2, 1), lse_gradient=True))
@example(pinned_config((2, None), lse_gradient=True, positions=torch.tensor([1, 4, 5])))
def test_lse_gradient_within_the_rigorous_bound_of_the_reference(cfg):
    r, tol = check_against_reference(cfg)
    assert r <= tol, r


def check_against_oracle(cfg: Config) -> tuple[float, float]:
    """P15: out and lse within one rigorous bound of the mpmath oracle (30 digits), per batch entry."""
    from verified_ta.oracles import mp_attention

    out, lse, *_ = evaluate(blocked_attention(cfg), cfg)
    full = full_sequence(cfg)
    mo, ml = mp_attention(*full.inputs, scale=cfg.scale, causal=cfg.causal, window=cfg.window, dps=30)
    want = shard_rows([torch.tensor(mo.astype(float)), torch.tensor(ml.astype(float))], cfg.positions)
    b = shard_rows(error_bounds(full)[:2], cfg.positions)
    return max(ratio(out, want[0], b[0]), ratio(lse, want[1], b[1])), 1.0


@spec("P15")
@given(configs(max_n=4))
@example(pinned_config((2, 3), n=5, block=2))
@example(pinned_config("causal", n=6, block=2, positions=torch.tensor([0, 3, 4])))
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
