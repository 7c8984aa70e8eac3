"""Properties of the hardness machinery A3 (SPEC P38–P41; L12, L11).

F(λ) = ||softmax(λ·s·Q(K1⊘K2)^T)(V1⊘V2)||_F² is evaluated in 60-digit mpmath for the derivative checks
(F', F'' by ``mpmath.diff``), and by the closed-form gradient (L1) for the Riemann recovery.
L12 needs V1 ⊘ V2 ≥ 0: the values are drawn in [0, B]; :func:`test_L12_needs_nonnegative_values` shows why.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given, target
from hypothesis import strategies as st

from verified_ta.certificate import rank_exponent
from verified_ta.error_bounds import derivative_bounds
from verified_ta.fp_bounds import gamma, objective_gradient_rounding_bound, objective_rounding_bounds, rounding_bound
from verified_ta.gradient import closed_form_gradient
from verified_ta.hardness import (
    curvature_bound,
    identity_tensor,
    objective_at_zero,
    objective_derivative,
    objective_value,
    riemann_recovery,
    score_range,
)
from verified_ta.oracles import to_mp
from verified_ta.products import khatri_rao
from verified_ta.spec import spec
from verified_ta.testing.strategies import attention_inputs, dims

DPS = 60


def _riemann_rounding(x, m: int) -> float:
    """Float64 error of the recovery: F(0) closed form (γ_{2n+d+3}), each F'(i/m) = 2Σ(Ĝ∘X0) within the L1 bound
    plus γ_{d²} of its sum, the average (γ_{m+2}), and F(1) = 2·Loss within fp_bounds' loss bound."""
    n, d = x[0].shape
    X0 = identity_tensor(d, x[0])
    zero = torch.zeros_like(x[0])
    err = gamma(2 * n + d + 3, torch.float64) * objective_at_zero(x[3], x[4])
    terms = 0.0
    for i in range(m):
        lam = i / m
        g_err = objective_gradient_rounding_bound(*x, zero, lam * X0, X0.T)
        _, G = closed_form_gradient(*x, zero, lam * X0, X0.T)
        g_mag = float(((G.abs() + g_err) * X0).sum())
        err += (2 * float((g_err * X0).sum()) + 2 * gamma(d * d, torch.float64) * g_mag) / m
        terms += 2 * g_mag / m
    err += gamma(m + 2, torch.float64) * (objective_at_zero(x[3], x[4]) + terms)
    return err + 2 * float(objective_rounding_bounds(*x, zero, X0, X0.T)["loss"])


def _nonnegative_values(x):
    q, k1, k2, v1, v2 = x
    return q, k1, k2, v1.abs(), v2.abs()


def _mp_F(x, scale):
    """λ ↦ F(λ) in mpmath (the definition, not the code under test)."""
    q, k1, k2, v1, v2 = (to_mp(t) for t in x)
    S = (q @ khatri_rao(k1, k2).T) * scale
    h = khatri_rao(v1, v2)

    def F(lam):
        total = mpmath.mpf(0)
        for row in S:
            m = max(row)
            u = np.array([mpmath.exp(lam * (z - m)) for z in row], dtype=object)
            z = (u / mpmath.fsum(u)) @ h
            total += mpmath.fsum(z * z)
        return total

    return F


@spec("P38", "L12", "A3")
@given(x=attention_inputs(n=dims(1, 3), d=dims(1, 3), bound=st.sampled_from([0.5, 1.0, 1.5])), lam=st.floats(0, 1))
def test_derivative_bounds_L12(x, lam):
    """P38: |F'(λ)| ≤ 2B̂F(λ) and |F''(λ)| ≤ 24B̂²F(λ) (derivatives by mpmath.diff at 60 digits)."""
    x = _nonnegative_values(x)
    d = x[0].shape[-1]
    b_hat = score_range(*x[:3])
    with mpmath.workdps(DPS):
        F = _mp_F(x, mpmath.mpf(1) / d)
        f0, f1, f2 = F(lam), mpmath.diff(F, lam, 1), mpmath.diff(F, lam, 2)
    # B̂ is a float64 max/min of scores (sums of d products, scaled: γ_{d+2} relative, 2 for the range) and
    # F(λ) is rounded from 60 digits: take both upward so the bound is the true one or larger
    b_hat_up = b_hat * (1 + 2 * gamma(d + 2, torch.float64)) + 2 * gamma(d + 2, torch.float64) * float(
        (torch.einsum("il,al,bl->iab", x[0].abs(), x[1].abs(), x[2].abs()) / d).max())
    first, second = derivative_bounds(b_hat_up, math.nextafter(float(f0), math.inf))
    target(float(abs(f1)) / first if first > 0 else 0.0, label="|F'|/(2B̂F)")
    target(float(abs(f2)) / second if second > 0 else 0.0, label="|F''|/(24B̂²F)")
    assert abs(f1) <= first + 1e-40
    assert abs(f2) <= second + 1e-40


@spec("L12")
def test_L12_needs_nonnegative_values():
    """Finding: without V1⊘V2 ≥ 0, L12 fails: F(0) = 0 (the values average out) while F''(0) > 0."""
    q = torch.tensor([[1.0]], dtype=torch.float64)
    k1 = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    k2 = torch.tensor([[1.0], [1.0]], dtype=torch.float64)
    x = (q, k1, k2, torch.tensor([[1.0], [-1.0]], dtype=torch.float64), torch.ones(2, 1, dtype=torch.float64))
    # one query, n1 = n2 = 2: scores ±1, values ±1 → mean 0 at λ = 0
    with mpmath.workdps(DPS):
        F = _mp_F((q.expand(2, 1), k1, k2, x[3], x[4]), mpmath.mpf(1))
        f0, f2 = F(0), mpmath.diff(F, 0, 2)
    assert abs(f0) < mpmath.mpf(10) ** -50 and f2 > 0.1
    assert f2 > derivative_bounds(2.0, float(f0))[1]


@spec("P39", "A3", "L12", "P26")
@given(x=attention_inputs(n=dims(1, 4), d=dims(1, 3), bound=st.sampled_from([0.5, 1.0, 1.5])), m=st.integers(1, 8))
def test_riemann_recovery_within_b_over_m(x, m):
    """P39: F(0) + (1/m)Σ_{i<m} F'(i/m), with F' from the closed-form gradient, recovers F(1) within b/m."""
    x = _nonnegative_values(x)
    rec = riemann_recovery(*x, m)
    fp = _riemann_rounding(x, m)
    target(rec.error / (rec.bound + fp), label="Riemann error/(b/m + fp)")
    assert rec.error <= rec.bound + fp


@spec("P40", "A3")
@given(x=attention_inputs(n=dims(1, 4), d=dims(1, 3), bound=1.0))
def test_objective_at_zero_closed_form(x):
    """P40: F(0) from the objective code equals n·||mean(V1)∘mean(V2)||² and the 60-digit definition."""
    d = x[0].shape[-1]
    closed = objective_at_zero(x[3], x[4])
    with mpmath.workdps(DPS):
        oracle = float(_mp_F(x, mpmath.mpf(1) / d)(0))
    n = x[0].shape[-2]
    # closed form: two means (γ_n each), a product, n·||·||² over d terms: γ_{2n+d+3}·F(0); the objective code's
    # loss is within fp_bounds' loss bound (λ = 0, E = 0, Y = (I⊘I) exact); F = 2·Loss
    X0 = identity_tensor(d, x[0])
    loss_err = 2 * float(objective_rounding_bounds(*x, torch.zeros_like(x[0]), 0 * X0, X0.T)["loss"])
    # one more rounding for float() of the 60-digit oracle; rounding_bound's ops·tiny term covers underflow
    tol = rounding_bound(oracle, 2 * n + d + 4, torch.float64)
    assert abs(closed - oracle) <= tol
    assert abs(objective_value(0.0, *x) - oracle) <= loss_err + rounding_bound(oracle, 1, torch.float64)


@spec("P26", "A3")
def test_derivative_matches_mpmath():
    """F'(λ) by the closed-form gradient equals mpmath.diff of the definition (P26 inside the reduction)."""
    torch.manual_seed(1)
    x = _nonnegative_values([torch.rand(3, 2, dtype=torch.float64) * 2 - 1 for _ in range(5)])
    d = x[0].shape[-1]
    X0 = identity_tensor(d, x[0])
    with mpmath.workdps(DPS):
        F = _mp_F(x, mpmath.mpf(1) / 2)
        for lam in (0.0, 0.3, 1.0):
            # F' = 2·Σ(Ĝ∘X0): Ĝ within fp_bounds' L1 bound of G (λX0, Y = X0ᵀ exact), then a sum of d² terms (γ_{d²})
            # with Σ|Ĝ∘X0| ≤ Σ(|G'| + 2·err)∘X0 for any float64 evaluation G'; mpmath.diff at 60 digits: 1e-40 floor
            g_err = objective_gradient_rounding_bound(*x, torch.zeros_like(x[0]), lam * X0, X0.T)
            _, G_any = closed_form_gradient(*x, torch.zeros_like(x[0]), lam * X0, X0.T)
            g_d2 = gamma(d * d, torch.float64)
            tol = 2 * float((g_err * X0).sum()) + 2 * g_d2 * float(((G_any.abs() + 2 * g_err) * X0).sum())
            assert abs(mpmath.mpf(objective_derivative(lam, *x)) - mpmath.diff(F, lam)) <= tol + 1e-40


@spec("P41", "L11")
def test_rank_exponent_trend():
    """P41: log r / log n falls with n when B³ = o(log n) (B³ = √ln n) and does not when B³ = Θ(log n) (B³ = ln n/8).

    d = ⌈ln n⌉ (d = O(log n)), ε = 1/n, g the least Taylor degree reaching ε (``certificate.rank_exponent``).
    """
    ns = [2**k for k in (10, 20, 40, 80, 160)]
    sub = [rank_exponent(n, math.log(n) ** (1 / 6), math.ceil(math.log(n))) for n in ns]
    theta = [rank_exponent(n, (math.log(n) / 8) ** (1 / 3), math.ceil(math.log(n))) for n in ns]
    assert all(b < a for a, b in zip(sub, sub[1:]))
    assert sub[-1] < sub[0] - 0.2
    assert all(b >= a for a, b in zip(theta, theta[1:]))
    assert min(theta) > 1.0  # r = n^{Θ(1)}: never near-linear


@spec("P39")
def test_riemann_rejects_signed_values_and_bad_m():
    x = [torch.ones(2, 2, dtype=torch.float64) for _ in range(5)]
    with pytest.raises(ValueError, match="m must"):
        riemann_recovery(*x, 0)
    x[3] = -x[3]
    with pytest.raises(ValueError, match="V1 ⊘ V2 >= 0"):
        riemann_recovery(*x, 2)
    assert curvature_bound(*x) >= 0
