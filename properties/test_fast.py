"""Properties of the polynomial method's fast paths (SPEC P30, P33–P37; L8, L9, L10, A1, A2).

Errors are measured against the mpmath oracle (exact scores from the float inputs); δ is the instance's
relative error max |P(Ŝ+M)e^{−(S+M)} − 1| over its own scores at 60 digits, which is L9's hypothesis;
bounds are the computed ones of ``verified_ta.error_bounds`` plus their floating-point terms.
Hypothesis ``target`` pushes observed/bound up; ``--hypothesis-show-statistics`` prints the worst.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import assume, given, target
from hypothesis import strategies as st
from torch.profiler import ProfilerActivity, profile

from verified_ta import gradient as grad_mod
from verified_ta.error_bounds import (
    forward_error_bound,
    forward_rounding_term,
    gradient_error_bounds,
    gradient_rounding_term,
    score_bound,
)
from verified_ta.fast import fast_objective_gradient, fast_tensor_attention, normaliser
from verified_ta.features import feature_maps, feature_rank, monomials, query_features
from verified_ta.fp_bounds import gamma, rounding_bound
from verified_ta.oracles import mp_attention, to_mp
from verified_ta.polynomial import FAMILIES, build_polynomial
from verified_ta.products import khatri_rao
from verified_ta.reference import tensor_attention_forward
from verified_ta.spec import spec
from verified_ta.testing.strategies import attention_inputs, dims, matrices

DPS = 60  # products of three doubles summed over d <= 4 are exact at 60 digits
MP_FLOOR = 1e-50  # rounding floor of the 60-digit evaluations themselves
BOUNDS = (0.5, 0.75, 1.0, 1.25)  # dyadic, so entries <= B survive a cast to float32


@lru_cache(maxsize=None)
def shifted(family: str, degree: int, B: float) -> tuple[Fraction, ...]:
    """Shifted coefficients of a ``family`` polynomial for e^x on [0, 2M], M = B³ (L5, L6 at s = 1/d)."""
    M = Fraction(B) ** 3
    return build_polynomial(family, degree, [0, 2 * M]).shifted(M)


def _mp_poly(a, x):
    acc = mpmath.mpf(0)
    for c in reversed(a):
        acc = acc * x + mpmath.mpf(c.numerator) / c.denominator
    return acc


def _scores(q, k1, k2, s):
    """Exact s·⟨q_i, k1_a ∘ k2_b⟩ as an (n, n, n) object array of mpf (inputs: object arrays)."""
    n_q, n1, n2 = q.shape[0], k1.shape[0], k2.shape[0]
    out = np.empty((n_q, n1, n2), dtype=object)
    for i in range(n_q):
        for a in range(n1):
            for b in range(n2):
                out[i, a, b] = s * mpmath.fsum(q[i] * k1[a] * k2[b])
    return out


def approx_matrix(a, scores_hat, scores, M):
    """(Ã, A, δ): Ã = P(Ŝ + M) at the scores used, A = e^{S+M} at the exact ones, δ = max |Ã/A − 1| (L9 hypothesis)."""
    At = np.vectorize(lambda z: _mp_poly(a, z), otypes=[object])(scores_hat)
    A = np.vectorize(lambda z: mpmath.exp(z + M), otypes=[object])(scores)
    delta = max(abs(x / y - 1) for x, y in zip(At.ravel(), A.ravel()))
    return At, A, delta


def _float_above(x) -> float:
    """The smallest float >= x + MP_FLOOR: a rigorous upper bound on a 60-digit quantity (directed rounding, not a margin)."""
    with mpmath.workdps(DPS):
        y = x + MP_FLOOR
        v = float(y)
        return v if mpmath.mpf(v) >= y else math.nextafter(v, math.inf)


def _inf(x) -> float:
    return float(np.max(np.abs(np.asarray(x, dtype=np.float64))))


def _mpf_max_abs_diff(x, y_obj) -> float:
    diff = to_mp(x) - y_obj
    return float(max(abs(v) for v in diff.ravel()))


def _ratio(observed: float, bound: float) -> float:
    return observed / bound if bound > 0 else 0.0


def _corners(data, n, d, B):
    """Adversarial entries: ±B only (the largest score ranges L5 allows)."""
    sign = data.draw(st.lists(st.sampled_from([-1.0, 1.0]), min_size=5 * n * d, max_size=5 * n * d))
    arr = torch.tensor(sign, dtype=torch.float64).reshape(5, n, d) * B
    return tuple(arr)


@st.composite
def polynomial_choice(draw):
    family = draw(st.sampled_from(FAMILIES))
    degree = draw(st.integers(2, 7))
    B = draw(st.sampled_from(BOUNDS))
    return family, degree, B


# ---------------------------------------------------------------------------------------------- P30


@spec("P30", "L8", "P31")
@given(poly=polynomial_choice(), x=attention_inputs(n=dims(1, 4), d=dims(1, 3), bound=1.0))
def test_features_factorise_polynomial_exactly(poly, x):
    """P30: U (V ⊘ W)^T = P(S + M) to within the γ-bound of evaluating the features in float64; r = C(g+d, d)."""
    family, degree, B = poly
    a = shifted(family, degree, B)
    q, k1, k2 = x[0], x[1], x[2]
    d = q.shape[-1]
    U, V, W = feature_maps(q, k1, k2, a, 1.0 / d)
    assert U.shape[-1] == V.shape[-1] == W.shape[-1] == feature_rank(degree, d)
    approx = U @ khatri_rao(V, W).T
    with mpmath.workdps(DPS):
        mq, m1, m2 = (to_mp(t) for t in (q, k1, k2))
        exact = np.vectorize(lambda z: _mp_poly(a, z), otypes=[object])(_scores(mq, m1, m2, mpmath.mpf(1) / d))
        err = _mpf_max_abs_diff(approx, exact.reshape(approx.shape))
    Ua, Va, Wa = query_features(q.abs(), [abs(c) for c in a], 1.0 / d), monomials(k1.abs(), degree), monomials(k2.abs(), degree)
    ops = 3 * degree + feature_rank(degree, d) + 4
    magnitude = float((Ua @ khatri_rao(Va, Wa).T).max()) * (1 + gamma(ops, torch.float64))
    assert err <= rounding_bound(magnitude, ops, torch.float64)


# ---------------------------------------------------------------------------------------------- P33, P34


@spec("P33", "L9", "A1", "P34", "L5")
@given(data=st.data(), poly=polynomial_choice(), dtype=st.sampled_from([torch.float64, torch.float32]))
def test_fast_forward_within_L9(data, poly, dtype):
    """P33: the L9 lemma in 60-digit arithmetic (D̃⁻¹ÃV from T4/T3) and A1 in ``dtype``, both against the oracle."""
    family, degree, B = poly
    n, d = data.draw(dims(1, 4)), data.draw(dims(1, 3))
    if data.draw(st.booleans()):
        x = _corners(data, n, d, B)
    else:
        x = tuple(data.draw(attention_inputs(n=st.just(n), d=st.just(d), bound=B)))
    x = tuple(t.to(dtype) for t in x)
    a = shifted(family, degree, B)
    M = Fraction(B) ** 3
    assert float(M) <= score_bound(B, d)
    with mpmath.workdps(DPS):
        mq, m1, m2, mv1, mv2 = (to_mp(t) for t in x)
        scores = _scores(mq, m1, m2, mpmath.mpf(1) / d)
        At, _, delta = approx_matrix(a, scores, scores, mpmath.mpf(M.numerator) / M.denominator)
        assume(delta < 0.5)
        truth, _ = mp_attention(*x, dps=DPS)
        # P34 / T4 in exact arithmetic: the normaliser is the row sum of Ã; L9 for D̃⁻¹ÃV
        flat = At.reshape(n, n * n)
        lemma = (flat @ khatri_rao(mv1, mv2)) / flat.sum(axis=1)[:, None]
        lemma_err = float(max(abs(v) for v in (lemma - truth).ravel()))
        out = fast_tensor_attention(*x, a)
        observed = _mpf_max_abs_diff(out, truth)
    vnorm = _inf(x[3]) * _inf(x[4])
    delta_f = _float_above(delta)  # L9/L10 need an upper bound on δ: round the 60-digit value up
    approx_bound = forward_error_bound(delta_f, vnorm)
    bound = approx_bound + forward_rounding_term(a, M, d, n, n, dtype, delta_f, vnorm)
    target(_ratio(lemma_err, approx_bound), label="L9 lemma observed/bound")
    target(_ratio(observed, bound), label=f"A1 {dtype} observed/bound")
    assert lemma_err <= approx_bound + MP_FLOOR
    assert observed <= bound


@spec("P34", "T4", "A1")
@given(poly=polynomial_choice(), x=attention_inputs(n=dims(1, 4), d=dims(1, 3), bound=1.0))
def test_normaliser_is_row_sum(poly, x):
    """P34: the fast normaliser U((V^T 1)∘(W^T 1)) equals Σ_ab P(S_ab + M) (60 digits) within its float64 γ-bound."""
    family, degree, B = poly
    a = shifted(family, degree, B)
    q, k1, k2 = x[0], x[1], x[2]
    d, n = q.shape[-1], q.shape[-2]
    fast = normaliser(*feature_maps(q, k1, k2, a, 1.0 / d))
    with mpmath.workdps(DPS):
        S = _scores(*(to_mp(t) for t in (q, k1, k2)), mpmath.mpf(1) / d)
        exact = np.array([mpmath.fsum(_mp_poly(a, z) for z in row.ravel()) for row in S], dtype=object)
        err = _mpf_max_abs_diff(fast[:, 0], exact)
    Ua = query_features(q.abs(), [abs(c) for c in a], 1.0 / d)
    mag = float(normaliser(Ua, monomials(k1.abs(), degree), monomials(k2.abs(), degree)).max())
    ops = 3 * degree + feature_rank(degree, d) + 2 * n + 4
    assert err <= rounding_bound(mag * (1 + gamma(ops, torch.float64)), ops, torch.float64)


# ---------------------------------------------------------------------------------------------- P35, P36


def _objective_inputs(data, n, d, B):
    """A1..A5, E with entries in [−1, 1]; X factors in [−B/d, B/d] so ||A_i X_i||∞ ≤ B; Y1 = Y2 = I."""
    A = [torch.from_numpy(data.draw(matrices(n, d))) for _ in range(5)]
    E = torch.from_numpy(data.draw(matrices(n, d)))
    X = [torch.from_numpy(data.draw(matrices(d, d, B / d))) for _ in range(3)]
    eye = torch.eye(d, dtype=torch.float64)
    return A, E, X, (eye, eye)


def _fraction_array(x) -> np.ndarray:
    arr = np.asarray(x.detach().numpy(), dtype=np.float64)
    out = np.empty(arr.shape, dtype=object)
    for idx in np.ndindex(arr.shape):
        out[idx] = Fraction(float(arr[idx]))
    return out


@spec("P35", "A2", "L1", "T6", "T12", "T11")
@given(data=st.data(), poly=polynomial_choice())
def test_fast_gradient_equals_L1_on_f_tilde(data, poly):
    """P35: A2 equals L1 evaluated on f̃ = rows of P(Ŝ+M) normalised, computed in exact rationals (float64 γ-term)."""
    family, degree, B = poly
    n, d = data.draw(dims(1, 3)), data.draw(dims(1, 2))
    A, E, X, Y = _objective_inputs(data, n, d, B)
    a = shifted(family, degree, B)
    M = Fraction(B) ** 3
    fast = fast_objective_gradient(*A, E, *X, *Y, a)
    Qh, K1h, K2h = (A[i] @ X[i] for i in range(3))
    fq, f1, f2 = (_fraction_array(t) for t in (Qh, K1h, K2h))
    s = Fraction(1, d)
    scores = np.array(
        [[[s * sum(fq[i] * f1[j] * f2[k]) for k in range(n)] for j in range(n)] for i in range(n)], dtype=object
    )
    assume(max(abs(v) for v in scores.ravel()) <= M)
    At = np.vectorize(lambda z: sum(c * z**t for t, c in enumerate(a)), otypes=[object])(scores).reshape(n, n * n)
    assume(min(At.ravel()) > 0)
    f = At / At.sum(axis=1)[:, None]
    fa = [_fraction_array(t) for t in A]
    t = grad_mod.chain_terms(f, khatri_rao(fa[3], fa[4]), _fraction_array(E))
    G = grad_mod.gradient_from_p(fa[0], fa[1], fa[2], t.p, s)
    err = float(max(abs(Fraction(float(x)) - y) for x, y in zip(fast.G.reshape(-1).tolist(), G.ravel())))
    with mpmath.workdps(DPS):
        mp_scores = _scores(*(to_mp(t) for t in (Qh, K1h, K2h)), mpmath.mpf(1) / d)
        # L10's δ as an upper float bound: the 60-digit value rounded up
        delta = _float_above(approx_matrix(a, mp_scores, mp_scores, mpmath.mpf(M.numerator) / M.denominator)[2])
    assume(delta < 0.5)
    H = _inf(A[3]) * _inf(A[4])
    tol = gradient_rounding_term(
        a, M, n, d, torch.float64, delta, H, _inf(E), d * H + _inf(E) * d, [_inf(A[i]) for i in range(3)]
    )
    assert err <= tol


def _mp_objective(A, E, X, Y):
    """True f, c, q, p and G at X = X1(X2⊘X3)^T composed exactly in mpmath (SPEC §3)."""
    mA = [to_mp(t) for t in A]
    mX = [to_mp(t) for t in X]
    mY = [to_mp(t) for t in Y]
    Xc, Yc = grad_mod.compose_X(*mX), grad_mod.compose_Y(*mY)
    terms = grad_mod.objective_terms(*mA, to_mp(E), Xc, Yc)
    s = mpmath.mpf(1) / mA[0].shape[1]
    return terms, grad_mod.gradient_from_p(mA[0], mA[1], mA[2], terms.p, s), mA


@spec("P36", "L10", "A2", "L5")
@given(data=st.data(), poly=polynomial_choice())
def test_fast_gradient_within_L10(data, poly):
    """P36: all four L10 inequalities in 60-digit arithmetic on f̃, and A2's c̃, G̃ in float64 against the oracle."""
    family, degree, B = poly
    n, d = data.draw(dims(1, 3)), data.draw(dims(1, 2))
    A, E, X, Y = _objective_inputs(data, n, d, B)
    a = shifted(family, degree, B)
    M = Fraction(B) ** 3
    fast = fast_objective_gradient(*A, E, *X, *Y, a)
    with mpmath.workdps(DPS):
        true, G_true, mA = _mp_objective(A, E, X, Y)
        s = mpmath.mpf(1) / d
        hat = _scores(*(to_mp(A[i] @ X[i]) for i in range(3)), s)
        mx = [to_mp(t) for t in X]
        exact = _scores(mA[0] @ mx[0], mA[1] @ mx[1], mA[2] @ mx[2], s)
        mM = mpmath.mpf(M.numerator) / M.denominator
        assume(max(abs(v) for v in hat.ravel()) <= mM)
        At, _, delta = approx_matrix(a, hat, exact, mM)
        assume(delta < 0.5)
        At = At.reshape(n, n * n)
        approx = grad_mod.chain_terms(At / At.sum(axis=1)[:, None], true.h, to_mp(E))
        G_lemma = grad_mod.gradient_from_p(mA[0], mA[1], mA[2], approx.p, s)
        lemma = {
            "c": float(max(abs(v) for v in (approx.c - true.c).ravel())),
            "q": float(max(abs(v) for v in (approx.q - true.q).ravel())),
            "p_row_l1": float(max(sum(abs(v) for v in row) for row in (approx.p - true.p))),
            "G": float(max(abs(v) for v in (G_lemma - G_true).ravel())),
        }
        q_tilde = max(abs(v) for v in approx.q.ravel())
        obs_c = _mpf_max_abs_diff(fast.c, true.c)
        obs_G = _mpf_max_abs_diff(fast.G, G_true)
    delta_f = _float_above(delta)  # L10 needs upper bounds on δ and ||q̃||∞: round the 60-digit values up
    H = _inf(A[3]) * _inf(A[4])
    norms = [_inf(A[i]) for i in range(3)]
    bounds = gradient_error_bounds(delta_f, H, _float_above(q_tilde), n, d, norms)
    for name, err in lemma.items():
        b = getattr(bounds, name)
        target(_ratio(err, b), label=f"L10 lemma {name} observed/bound")
        assert err <= b + MP_FLOOR, name
    c_l1 = d * H + d * _inf(E)
    fp_G = gradient_rounding_term(a, M, n, d, torch.float64, delta_f, H, _inf(E), c_l1, norms)
    bounds_impl = gradient_error_bounds(delta_f, H, c_l1 * H, n, d, norms)
    fp_c = forward_rounding_term(a, M, d, n, n, torch.float64, delta_f, H) + gamma(2, torch.float64) * (H + _inf(E))  # c = f h − E: one subtraction, one rounding of f h
    target(_ratio(obs_G, bounds_impl.G + fp_G), label="A2 G observed/bound")
    assert obs_c <= bounds_impl.c + fp_c
    assert obs_G <= bounds_impl.G + fp_G


# ---------------------------------------------------------------------------------------------- P37


def largest_allocation(fn) -> int:
    """Largest single CPU allocation (bytes) while ``fn`` runs, from torch's memory profiler."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return max((e.cpu_memory_usage for e in prof.events()), default=0)


@spec("P37", "A1", "A2")
def test_fast_paths_never_allocate_n_cubed():
    """P37: forward, its autograd backward, and A2 allocate nothing near n·n² numbers; the exact path does (control)."""
    torch.manual_seed(0)
    n, d, degree = 192, 4, 6
    a = shifted("minimax", degree, 1.0)
    r = feature_rank(degree, d)
    x = [torch.rand(n, d, dtype=torch.float64, requires_grad=True) for _ in range(5)]
    cubic = n**3 * 8
    linear = 8 * (n * r * d + r * d * d)  # the largest object A1/A2 may hold: n × r (× d for grad temporaries)

    def forward_backward():
        fast_tensor_attention(*x, a).sum().backward()

    A = [torch.rand(n, d, dtype=torch.float64) for _ in range(6)]
    eye = torch.eye(d, dtype=torch.float64)
    sizes = {
        "A1+backward": largest_allocation(forward_backward),
        "A2": largest_allocation(lambda: fast_objective_gradient(*A, eye, eye, eye, eye, eye, a)),
    }
    for name, size in sizes.items():
        assert 0 < size <= linear < cubic, (name, size)
    exact = largest_allocation(lambda: tensor_attention_forward(*(t.detach() for t in x), chunk_size=n))
    assert exact >= cubic  # the instrument sees an n×n² tensor when one is formed


@spec("P37", "A1")
def test_causal_scan_memory_is_per_chunk():
    """P37, causal: forward and written backward at n = 1024 (chunk 64) hold nothing near n·r·d; autograd through the
    same prefix sums (the control) keeps every chunk's C × r × (d+1) sums, O(n·r·d) in all."""
    n, d, degree, chunk = 1024, 4, 4, 64
    a = shifted("minimax", degree, 1.0)
    r = feature_rank(degree, d)
    x = [torch.rand(n, d, dtype=torch.float64, requires_grad=True) for _ in range(5)]

    def forward_backward():
        fast_tensor_attention(*x, a, causal=True, chunk_size=chunk).sum().backward()

    def autograd_through_scan():
        P = torch.cumsum(monomials(x[1], degree).unsqueeze(-1) * x[3].unsqueeze(-2), dim=-3)  # n × r × d, kept
        (P * P).sum().backward()

    per_chunk = 8 * chunk * r * (d + 1)  # one step's prefix sums
    per_row = 8 * 4 * n * (d + 1)  # O(n·d): the scan's output, its gradient, concatenated input gradients
    assert largest_allocation(forward_backward) <= max(per_chunk, per_row) < 8 * n * r * d
    assert largest_allocation(autograd_through_scan) >= 8 * n * r * d  # the instrument sees O(n·r·d) when it exists


@pytest.mark.slow
@spec("P37", "A1")
def test_fast_forward_runs_where_n_cubed_cannot_fit():
    """P37: n = 4096 would need 512 GiB for one n×n² float64 tensor; the fast path finishes in O(n·r) memory."""
    n, d = 4096, 4
    a = shifted("minimax", 6, 1.0)
    x = [torch.rand(n, d, dtype=torch.float64) for _ in range(5)]
    out = fast_tensor_attention(*x, a)
    assert bool(torch.isfinite(out).all())
    assert largest_allocation(lambda: fast_tensor_attention(*x, a)) <= 8 * n * feature_rank(6, d) * d
