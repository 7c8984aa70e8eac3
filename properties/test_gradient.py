"""Gradient properties P24–P29 (SPEC §3, §7): the closed form L1 and its chain rules L2, L3, L4.

Tolerances: float64 results are compared with the 50-digit mpmath oracle under the rigorous running-error
bounds of verified_ta.fp_bounds; exact-arithmetic identities evaluated in mpmath use the working precision
(γ_k with u = 10^-dps); finite differences (mpmath.diff) are required to agree to 30 digits (issue #2).
The oracles (verified_ta.oracles: mp_gradient, mp_loss, finite differences, einsum_loss for autograd) are written
from SPEC §3 and share no code with verified_ta.gradient; the shipped code also runs at 50 digits
(:func:`verified_ta.check.shipped_mp_gradient`) so a bug in its numpy/mpmath path is caught too (issue #10).
Each property's core is a plain function so tests/test_gradient_mutations.py can run it on planted bugs.
"""

from __future__ import annotations

import mpmath
import numpy as np
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from verified_ta import gradient as gr
from verified_ta.check import shipped_mp_gradient
from verified_ta.fp_bounds import objective_gradient_rounding_bound
from verified_ta.oracles import (
    einsum_loss,
    mp_attention,
    mp_finite_difference_gradient,
    mp_gradient,
    mp_loss,
    to_mp,
)
from verified_ta.spec import spec
from verified_ta.testing.strategies import dims, unit_entries

DPS = 50
FD_DIGITS = 30  # issue #2: closed form and mpmath finite differences agree to >= 30 digits at 50-digit precision


def mp_tol(magnitude, ops: int, dps: int = DPS):
    """γ_ops at unit roundoff 10^-dps (a safe over-estimate of mpmath's 2^-prec) times the magnitude."""
    u = mpmath.mpf(10) ** (-dps)
    return ops * u / (1 - ops * u) * magnitude + mpmath.mpf(10) ** (-2 * dps)


def _shapes(n, d):
    return [(n, d)] * 6 + [(d, d * d), (d * d, d)]


PATTERNS = ("all_plus", "alternating", "identical_rows", "dominant_pair")


def pattern_inputs(kind: str, n: int, d: int, bound: float) -> tuple[torch.Tensor, ...]:
    """Pinned adversarial objective inputs A1..A5, E, X, Y with entries in [-B, B]."""
    out = []
    for k, (r, c) in enumerate(_shapes(n, d)):
        if kind == "all_plus":
            m = np.full((r, c), bound)
        elif kind == "alternating":
            m = bound * (-1.0) ** np.add.outer(np.arange(r), np.arange(c) + k)
        elif kind == "identical_rows":
            m = np.tile(bound * np.linspace(-1, 1, c), (r, 1))
        else:  # one dominant pair: a single large entry per matrix, the rest small
            m = np.full((r, c), bound / 8)
            m[0, 0] = bound
        out.append(torch.tensor(m, dtype=torch.float64))
    return tuple(out)


@st.composite
def objective_inputs(draw, max_n: int = 3, max_d: int = 2, bound: float = 2.0):
    """A1..A5, E (n×d), X (d×d²), Y (d²×d) with entries in [-B, B]; B drawn from {1, 2} by default."""
    n, d = draw(dims(1, max_n)), draw(dims(1, max_d))
    b = draw(st.sampled_from([1.0, bound]))
    mats = []
    for r, c in _shapes(n, d):
        vals = draw(st.lists(unit_entries(), min_size=r * c, max_size=r * c))
        mats.append(torch.tensor(vals, dtype=torch.float64).reshape(r, c) * b)
    return tuple(mats)


@st.composite
def objective_with_factors(draw, max_n: int = 3, max_d: int = 2):
    """Objective inputs plus factors X1, X2, X3, Y1, Y2 (d×d, entries in [-1, 1]) for X = X1(X2⊘X3)^T, Y = Y1⊘Y2."""
    inputs = draw(objective_inputs(max_n=max_n, max_d=max_d))
    d = inputs[0].shape[1]
    factors = tuple(
        torch.tensor(draw(st.lists(unit_entries(), min_size=d * d, max_size=d * d)), dtype=torch.float64).reshape(d, d)
        for _ in range(5)
    )
    return inputs, factors


def pattern_with_factors(kind: str, n: int, d: int, bound: float):
    inputs = pattern_inputs(kind, n, d, bound)
    return inputs, tuple(inputs[0][:d, :d].clone() / bound for _ in range(5))


def _examples(fn):
    for kind in PATTERNS:
        fn = example(pattern_inputs(kind, 3, 2, 2.0))(fn)
    return fn


# ---------------------------------------------------------------- P24: L1 = autograd = FD = coordinate form


def check_closed_form_vs_oracle(inputs, gradient_fn=None, **kw) -> tuple[float, float]:
    """P24/L1 in float64: max over entries of |Ĝ − G_mp| / bound (must be <= 1); G_mp the independent oracle.

    ``gradient_fn`` defaults to ``gr.closed_form_gradient`` looked up at call time (so a planted bug is seen)."""
    G = (gradient_fn or gr.closed_form_gradient)(*inputs, **kw)[1].detach().numpy()
    exact = mp_gradient(*inputs, dps=DPS).astype(float)
    bound = objective_gradient_rounding_bound(*inputs).numpy()
    return float((np.abs(G - exact) / bound).max()), 1.0


def check_closed_form_vs_autograd(inputs, gradient_fn=None, **kw) -> tuple[float, float]:
    """P24: L1 closed form vs float64 autograd of the independent einsum loss (the same order-free γ bound)."""
    A1, A2, A3, A4, A5, E, X, Y = inputs
    Xg = X.clone().requires_grad_()
    (auto,) = torch.autograd.grad(einsum_loss(A1, A2, A3, A4, A5, E, Xg, Y), Xg)
    G = (gradient_fn or gr.closed_form_gradient)(*inputs, **kw)[1]
    bound = 2 * objective_gradient_rounding_bound(*inputs)
    return float(((G - auto).abs() / bound).max()), 1.0


def check_closed_form_vs_finite_differences(inputs) -> tuple[float, float]:
    """P24: the shipped closed form at 50 digits vs 50-digit mpmath.diff of the independent loss: gap <= 10^-30."""
    G = shipped_mp_gradient(inputs)
    fd = mp_finite_difference_gradient(*inputs, dps=DPS)
    with mpmath.workdps(DPS):
        scale = 1 + max(abs(g) for g in G.ravel())
        gap = max(abs(a - b) for a, b in zip(G.ravel(), fd.ravel())) / scale
    return float(gap), 10.0**-FD_DIGITS


def check_coordinate_form(inputs) -> tuple[float, float]:
    """P24: the coordinate form (explicit 𝔸 = A1⊗A2⊗A3 and softmax Jacobian) equals L1, both in mpmath."""
    mp = [to_mp(x) for x in inputs]
    with mpmath.workdps(DPS):
        s = mpmath.mpf(1) / mp[0].shape[1]
        G = gr.gradient_from_p(mp[0], mp[1], mp[2], gr.objective_terms(*mp, scale=s).p, s)
        C = gr.coordinate_gradient(*mp, scale=s)
        n = mp[0].shape[0]
        mag = 1 + max(abs(g) for g in G.ravel())
        gap = max(abs(a - b) for a, b in zip(G.ravel(), C.ravel()))
        return float(gap / mp_tol(mag, 4 * n**3 + 20)), 1.0


@spec("P24", "L1")
@given(objective_inputs())
@_examples
def test_p24_closed_form_matches_mpmath_oracle(inputs):
    for kw in ({}, {"chunk_size": 1}, {"chunk_size": 2}):
        ratio, tol = check_closed_form_vs_oracle(inputs, **kw)
        assert ratio <= tol, (kw, ratio)


@spec("P24", "L1")
@given(objective_inputs())
@_examples
def test_p24_closed_form_matches_autograd(inputs):
    ratio, tol = check_closed_form_vs_autograd(inputs)
    assert ratio <= tol


@spec("P24", "L1")
@given(objective_inputs(max_n=2, max_d=2))
def test_p24_closed_form_matches_finite_differences(inputs):
    gap, tol = check_closed_form_vs_finite_differences(inputs)
    assert gap <= tol


@spec("P24", "L1", "T7", "T15")
@given(objective_inputs(max_n=2, max_d=2))
def test_p24_coordinate_form(inputs):
    ratio, tol = check_coordinate_form(inputs)
    assert ratio <= tol


# ---------------------------------------------------------------- P25: p rows sum to 0, p2 = diag(r) f


def check_p_rows_and_p2(inputs, chain=gr.chain_terms) -> tuple[float, float]:
    """P25/T16 in mpmath: max |Σ_(a,b) p[j0]| and |p2 − diag(r)·f| (a genuine matrix product), over the tolerance."""
    mp = [to_mp(x) for x in inputs]
    with mpmath.workdps(DPS):
        s = mpmath.mpf(1) / mp[0].shape[1]
        f = gr.softmax_rows((mp[0] @ mp[6] @ gr.kron(mp[1], mp[2]).T) * s)
        t = chain(f, gr.kron(mp[3], mp[4]) @ mp[7], mp[5])
        n2 = t.p.shape[1]
        row_sum = max(abs(sum(row)) for row in t.p)
        mag = 1 + max(abs(x) for x in t.p1.ravel())
        diag_r = np.diag(t.r) if t.r.ndim == 1 else None
        p2_gap = max(abs(x) for x in (t.p2 - diag_r @ t.f).ravel()) if diag_r is not None else mpmath.inf
        return float(max(row_sum / mp_tol(mag, 2 * n2 + 4), p2_gap / mp_tol(mag, 4))), 1.0


@spec("P25", "T16")
@given(objective_inputs())
@_examples
def test_p25_rows_of_p_sum_to_zero_and_p2_is_row_scaling(inputs):
    ratio, tol = check_p_rows_and_p2(inputs)
    assert ratio <= tol


# ---------------------------------------------------------------- P26: directional derivative


def check_directional_derivative(inputs, X0) -> tuple[float, float]:
    """P26: d/dλ Loss(λ X0) at λ = 1/2 (mpmath.diff of the independent oracle loss) equals ⟨∇Loss(λ X0), X0⟩ with
    the shipped gradient, to 30 digits."""
    A1, A2, A3, A4, A5, E, _, Y = [to_mp(x) for x in inputs]
    X0m = to_mp(X0)
    with mpmath.workdps(DPS):
        s = mpmath.mpf(1) / A1.shape[1]
        lam = mpmath.mpf(1) / 2
        deriv = mpmath.diff(lambda t: mp_loss(A1, A2, A3, A4, A5, E, X0m * t, Y, scale=s, dps=None), lam)
        t = gr.objective_terms(A1, A2, A3, A4, A5, E, X0m * lam, Y, scale=s)
        inner = (gr.gradient_from_p(A1, A2, A3, t.p, s) * X0m).sum()
        return float(abs(deriv - inner) / (1 + abs(inner))), 10.0**-FD_DIGITS


@spec("P26")
@given(objective_inputs(max_n=3, max_d=2), st.data())
def test_p26_directional_derivative(inputs, data):
    d = inputs[0].shape[1]
    identity_tensor = gr.khatri_rao(torch.eye(d, dtype=torch.float64), torch.eye(d, dtype=torch.float64)).T
    X0 = data.draw(st.sampled_from([inputs[6], identity_tensor]))  # random X0, or (I⊘I)^T of A3
    gap, tol = check_directional_derivative(inputs, X0)
    assert gap <= tol


# ---------------------------------------------------------------- P27, P28: affine in E; zero at E = f h


def _mp_grad(mp_inputs, s):
    t = gr.objective_terms(*mp_inputs, scale=s)
    return gr.gradient_from_p(mp_inputs[0], mp_inputs[1], mp_inputs[2], t.p, s), t


def check_affine_in_E(inputs, E2, w) -> tuple[float, float]:
    """P27 in mpmath: G((1−w)E + wE2) = (1−w)G(E) + wG(E2), relative to the working precision."""
    mp = [to_mp(x) for x in inputs]
    E2 = to_mp(E2)
    with mpmath.workdps(DPS):
        s = mpmath.mpf(1) / mp[0].shape[1]
        w = mpmath.mpf(w.numerator) / w.denominator
        G1, _ = _mp_grad(mp, s)
        G2, _ = _mp_grad(mp[:5] + [E2] + mp[6:], s)
        Gw, _ = _mp_grad(mp[:5] + [(1 - w) * mp[5] + w * E2] + mp[6:], s)
        gap = max(abs(x) for x in (Gw - ((1 - w) * G1 + w * G2)).ravel())
        mag = 1 + max(abs(x) for x in np.concatenate([G1.ravel(), G2.ravel()]))
        n = mp[0].shape[0]
        return float(gap / mp_tol(mag, 8 * n**3 + 40)), 1.0


@spec("P27")
@given(objective_inputs(), objective_inputs(), st.fractions(0, 1, max_denominator=16))
def test_p27_gradient_is_affine_in_E(inputs, other, w):
    E2 = other[5] if other[5].shape == inputs[5].shape else inputs[5].flip(0)
    ratio, tol = check_affine_in_E(inputs, E2, w)
    assert ratio <= tol


def check_zero_at_target(inputs) -> tuple[float, float]:
    """P28 in mpmath: with E = f h the residual c and the gradient G vanish up to their propagated rounding."""
    mp = [to_mp(x) for x in inputs]
    with mpmath.workdps(DPS):
        n, d = mp[0].shape
        s = mpmath.mpf(1) / d
        _, t = _mp_grad(mp, s)
        G, t0 = _mp_grad(mp[:5] + [t.f @ t.h] + mp[6:], s)
        # c is pure rounding noise: |c| <= γ_{n²+2}·(|f||h| + |E|); it propagates to |p| <= 2 f·max_row|q|
        c_bound = mp_tol(2 * (np.abs(t0.f) @ np.abs(t0.h)), n * n + 2)
        q_bound = c_bound @ np.abs(t0.h).T
        p_bound = 2 * t0.f * np.array([max(row) for row in q_bound], dtype=object)[:, None] + mp_tol(np.abs(t0.p), 4)
        G_bound = mp_tol(1, 0) + (np.abs(mp[0]).T @ p_bound @ gr.kron(np.abs(mp[1]), np.abs(mp[2]))) * s * (1 + mp_tol(1, n**3 + 4))
        ratios = [abs(x) / b for x, b in zip(t0.c.ravel(), c_bound.ravel())]
        ratios += [abs(x) / b for x, b in zip(G.ravel(), G_bound.ravel())]
        return float(max(ratios)), 1.0


@spec("P28")
@given(objective_inputs())
@_examples
def test_p28_gradient_vanishes_when_target_is_attained(inputs):
    ratio, tol = check_zero_at_target(inputs)
    assert ratio <= tol


# ---------------------------------------------------------------- P29: L2, L3, L4


def _fd(fn, args, j, dps=DPS):
    """mpmath.diff of fn(*args) in every entry of args[j]."""
    x = args[j]
    out = np.empty(x.shape, dtype=object)
    for idx in np.ndindex(x.shape):

        def moved(t, idx=idx):
            a = [y.copy() for y in args]
            a[j][idx] = t
            return fn(*a)

        out[idx] = mpmath.diff(moved, x[idx])
    return out


def check_factor_gradients(inputs, factors) -> tuple[float, float]:
    """P29/L2/L3: X = X1(X2⊘X3)^T, Y = Y1⊘Y2; closed forms vs mpmath.diff in every factor entry (30 digits)."""
    A = [to_mp(x) for x in inputs[:6]]
    F = [to_mp(x) for x in factors]  # X1, X2, X3, Y1, Y2
    with mpmath.workdps(DPS):
        s = mpmath.mpf(1) / A[0].shape[1]

        def loss_of(X1, X2, X3, Y1, Y2):  # the independent oracle loss (SPEC §3 by index loops)
            return mp_loss(*A, gr.compose_X(X1, X2, X3), gr.compose_Y(Y1, Y2), scale=s, dps=None)

        X, Y = gr.compose_X(*F[:3]), gr.compose_Y(*F[3:])
        t = gr.objective_terms(*A, X, Y, scale=s)
        G = gr.gradient_from_p(A[0], A[1], A[2], t.p, s)
        dY = gr.value_gradient(*A, X, Y, scale=s)
        closed = list(gr.factor_gradients(G, *F[:3])) + list(gr.value_factor_gradients(dY, *F[3:]))
        worst = mpmath.mpf(0)
        for j in range(5):
            fd = _fd(loss_of, F, j)
            mag = 1 + max(abs(x) for x in closed[j].ravel())
            worst = max(worst, max(abs(a - b) for a, b in zip(closed[j].ravel(), fd.ravel())) / mag)
        # L3 itself: dLoss/dY against finite differences in Y
        fdY = _fd(lambda Yv: mp_loss(*A, X, Yv, scale=s, dps=None), [Y], 0)
        worst = max(worst, max(abs(a - b) for a, b in zip(dY.ravel(), fdY.ravel())) / (1 + max(abs(x) for x in dY.ravel())))
        return float(worst), 10.0**-FD_DIGITS


@spec("P29", "L2", "L3", "T8")
@given(objective_with_factors(max_n=2, max_d=2))
def test_p29_factor_and_value_gradients(case):
    inputs, factors = case
    gap, tol = check_factor_gradients(inputs, factors)
    assert gap <= tol


def check_objective_is_tensor_attention(inputs, factors) -> tuple[float, float]:
    """T1/T8: with X = X1(X2⊘X3)^T, Y = Y1⊘Y2 the objective's f h equals tensor attention of
    Q = A1X1, K1 = A2X2, K2 = A3X3, V1 = A4Y1, V2 = A5Y2 at scale 1/d; both in mpmath, the attention side
    by the independent per-query oracle (verified_ta.oracles.mp_attention)."""
    A1, A2, A3, A4, A5, E = [to_mp(x) for x in inputs[:6]]
    X1, X2, X3, Y1, Y2 = [to_mp(x) for x in factors]
    with mpmath.workdps(DPS):
        n, d = A1.shape
        t = gr.objective_terms(A1, A2, A3, A4, A5, E, gr.compose_X(X1, X2, X3), gr.compose_Y(Y1, Y2))
        att, _ = mp_attention(A1 @ X1, A2 @ X2, A3 @ X3, A4 @ Y1, A5 @ Y2, dps=DPS)
        mag = 1 + max(abs(x) for x in (np.abs(t.f) @ np.abs(t.h)).ravel())
        gap = max(abs(x) for x in (t.f @ t.h - att).ravel())
        return float(gap / mp_tol(mag, 4 * n * n + 4 * d**3 + 40)), 1.0


@spec("T8", "T1", "T9")
@given(objective_with_factors())
@example(pattern_with_factors("all_plus", 3, 2, 2.0))
@example(pattern_with_factors("alternating", 3, 2, 2.0))
@example(pattern_with_factors("dominant_pair", 3, 2, 2.0))
def test_objective_is_tensor_attention(case):
    inputs, factors = case
    ratio, tol = check_objective_is_tensor_attention(inputs, factors)
    assert ratio <= tol
