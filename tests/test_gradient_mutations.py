"""Mutation evidence for the gradient suite (issue #2): each planted bug makes a named property fail.

The property cores from properties/test_gradient.py run unchanged; the bug is planted by
monkeypatching one function of verified_ta.gradient, and the same input passes without it. The oracles they
compare with (verified_ta.oracles) share no code with verified_ta.gradient.
"""

from __future__ import annotations

import pytest
import torch

from properties import test_gradient as props
from tests.mutants import plant
from verified_ta import gradient as gr
from verified_ta.products import kron
from verified_ta.spec import spec


def _inputs(n=3, d=2, seed=7):
    g = torch.Generator().manual_seed(seed)
    shapes = [(n, d)] * 6 + [(d, d * d), (d * d, d)]
    return tuple(torch.rand(s, generator=g, dtype=torch.float64) * 2 - 1 for s in shapes)


def _factors(d=2, seed=11):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.rand(d, d, generator=g, dtype=torch.float64) * 2 - 1 for _ in range(5))


_genuine_chain = gr.chain_terms


def chain_with_column_scaling(f, h, E):
    """Planted bug: p2 = f · diag(column sums of p1) instead of diag(r) · f."""
    t = _genuine_chain(f, h, E)
    p2 = f * t.p1.sum(axis=0)[None, :]
    return gr.ChainTerms(f=t.f, h=t.h, c=t.c, q=t.q, p1=t.p1, r=t.r, p2=p2, p=t.p1 - p2)


def gradient_without_scale(A1, A2, A3, p, scale):
    """Planted bug: the 1/d of the softmax scaling dropped from L1."""
    return A1.T @ p @ kron(A2, A3)


def objective_with_swapped_values(A1, A2, A3, A4, A5, E, X, Y, scale=None):
    """Planted bug: h = (A5 ⊗ A4) Y, i.e. the ⊘ order of V swapped against that of K."""
    s = 1.0 / A1.shape[1] if scale is None else scale
    f = gr.softmax_rows((A1 @ X @ kron(A2, A3).T) * s)
    return gr.chain_terms(f, kron(A5, A4) @ Y, E)


@spec("P25", "T16")
def test_column_scaling_in_p2_is_caught_by_p25_and_p24(monkeypatch):
    x = _inputs()
    assert props.check_p_rows_and_p2(x)[0] <= 1
    gap, tol = props.check_closed_form_vs_finite_differences(x)
    assert gap <= tol
    assert props.check_p_rows_and_p2(x, chain=chain_with_column_scaling)[0] > 1
    monkeypatch.setattr(gr, "chain_terms", chain_with_column_scaling)
    gap, tol = props.check_closed_form_vs_finite_differences(x)
    assert gap > tol, "P24 (finite differences) must reject column scaling in p2"


@spec("P24", "P26", "L1")
def test_missing_scale_is_caught_by_p24_and_p26(monkeypatch):
    x = _inputs()
    assert props.check_closed_form_vs_autograd(x)[0] <= 1
    gap, tol = props.check_directional_derivative(x, x[6])
    assert gap <= tol
    monkeypatch.setattr(gr, "gradient_from_p", gradient_without_scale)
    ratio, tol = props.check_closed_form_vs_autograd(x)
    assert ratio > tol, "P24 (autograd) must reject a missing 1/d"
    gap, tol = props.check_closed_form_vs_finite_differences(x)
    assert gap > tol, "P24 (finite differences) must reject a missing 1/d"
    gap, tol = props.check_directional_derivative(x, x[6])
    assert gap > tol, "P26 (directional derivative) must reject a missing 1/d"


@spec("T8", "T1")
def test_swapped_value_order_is_caught_by_t8(monkeypatch):
    x, f = _inputs(), _factors()
    assert props.check_objective_is_tensor_attention(x, f)[0] <= 1
    monkeypatch.setattr(gr, "objective_terms", objective_with_swapped_values)
    ratio, tol = props.check_objective_is_tensor_attention(x, f)
    assert ratio > tol, "T8 (objective = tensor attention) must reject swapped ⊘ order of V"


def chain_with_absolute_r(f, h, E):
    """Planted bug: r = Σ|p1| (a magnitude) instead of Σ p1 — G stops being affine in E."""
    t = _genuine_chain(f, h, E)
    r = abs(t.p1).sum(axis=1)
    p2 = r[:, None] * f
    return gr.ChainTerms(f=t.f, h=t.h, c=t.c, q=t.q, p1=t.p1, r=r, p2=p2, p=t.p1 - p2)


def chain_ignoring_target(f, h, E):
    """Planted bug: c = f h (E never subtracted)."""
    return _genuine_chain(f, h, 0 * E)


_genuine_factor_gradients = gr.factor_gradients


def factor_gradients_with_swapped_factors(G, X1, X2, X3):
    """Planted bug: dX2 contracts 𝒢 with X3 and X1 in swapped roles (index order of L2)."""
    dx1, _, dx3 = _genuine_factor_gradients(G, X1, X2, X3)
    return dx1, _genuine_factor_gradients(G, X3, X2, X1)[1], dx3


@spec("P27")
def test_nonlinear_r_is_caught_by_p27(monkeypatch):
    from fractions import Fraction

    x = _inputs()
    E2 = -x[5].flip(0)
    assert props.check_affine_in_E(x, E2, Fraction(1, 3))[0] <= 1
    monkeypatch.setattr(gr, "chain_terms", chain_with_absolute_r)
    assert props.check_affine_in_E(x, E2, Fraction(1, 3))[0] > 1, "P27 must reject a gradient that is not affine in E"


@spec("P28")
def test_ignored_target_is_caught_by_p28(monkeypatch):
    x = _inputs()
    assert props.check_zero_at_target(x)[0] <= 1
    monkeypatch.setattr(gr, "chain_terms", chain_ignoring_target)
    assert props.check_zero_at_target(x)[0] > 1, "P28 must reject a residual that ignores E"


@spec("P29", "L2")
def test_swapped_factor_roles_are_caught_by_p29(monkeypatch):
    x, f = _inputs(n=2), _factors()
    gap, tol = props.check_factor_gradients(x, f)
    assert gap <= tol
    monkeypatch.setattr(gr, "factor_gradients", factor_gradients_with_swapped_factors)
    gap, tol = props.check_factor_gradients(x, f)
    assert gap > tol, "P29 must reject dX2 with the factor roles swapped"


# ---------------------------------------------------------------- issue #10: the independent oracles catch the
# planted bugs of tests/mutants.py (the same ones `verified-ta prove` must refute)

ORACLE_CHECKS = {
    # mutant: the oracle comparisons that must reject it (each passes on the clean code, asserted first)
    "chunked gradient, wrong sign in p": [
        ("mp_gradient oracle, chunk_size=1", lambda x: props.check_closed_form_vs_oracle(x, chunk_size=1)),
        ("autograd of einsum_loss, chunk_size=1", lambda x: props.check_closed_form_vs_autograd(x, chunk_size=1)),
    ],
    "c = f h + E": [
        ("mp_gradient oracle", props.check_closed_form_vs_oracle),
        ("autograd of einsum_loss", props.check_closed_form_vs_autograd),
        ("finite differences of mp_loss", props.check_closed_form_vs_finite_differences),
    ],
    # the torch path calls torch.softmax; the planted line sits in the numpy/mpmath path, run at 50 digits here
    "softmax_rows subtracts the column max": [
        ("finite differences of mp_loss", props.check_closed_form_vs_finite_differences),
    ],
    "objective scores with kron(A3, A2)": [
        ("mp_gradient oracle", props.check_closed_form_vs_oracle),
        ("autograd of einsum_loss", props.check_closed_form_vs_autograd),
        ("finite differences of mp_loss", props.check_closed_form_vs_finite_differences),
    ],
}


@spec("P24", "L1")
@pytest.mark.parametrize("mutant", list(ORACLE_CHECKS))
def test_independent_oracles_reject_each_planted_gradient_bug(monkeypatch, mutant):
    x = _inputs()
    for name, check in ORACLE_CHECKS[mutant]:
        gap, tol = check(x)
        assert gap <= tol, f"{name} fails on the clean code"
    plant(monkeypatch, mutant)
    for name, check in ORACLE_CHECKS[mutant]:
        gap, tol = check(x)
        assert gap > tol, f"{name} must reject {mutant!r} (gap {gap:.3g} <= {tol:.3g})"
