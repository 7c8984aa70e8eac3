"""Deterministic tests of the fast paths (SPEC A1, A2, L8, L9): bad input, shapes, batching, dtypes, gradients."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from verified_ta.error_bounds import (
    derivative_bounds,
    forward_error_bound,
    forward_rounding_term,
    gradient_error_bounds,
    row_l1_bound,
    score_bound,
    value_bound,
)
from verified_ta.fast import fast_objective_gradient, fast_tensor_attention
from verified_ta.features import feature_maps, feature_memory_bytes, feature_rank, multi_indices
from verified_ta.gradient import closed_form_gradient, compose_X, compose_Y
from verified_ta.polynomial import build_polynomial
from verified_ta.products import khatri_rao
from verified_ta.reference import tensor_attention_forward, tensor_attention_reference
from verified_ta.spec import spec

B = 1.0
M = Fraction(1)  # B³ at s = 1/d (L5)
DEGREE = 10
#: Taylor of degree g at 0 on [0, L] has relative error ≤ L^{g+1}/(g+1)! (L7, derived)
DELTA = float(Fraction(2) ** (DEGREE + 1) / math.factorial(DEGREE + 1))
COEFFS = build_polynomial("taylor", DEGREE, [0, 2 * M]).shifted(M)


def _inputs(*shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(*shape, generator=g, dtype=torch.float64) * 2 - 1).to(dtype) for _ in range(5)]


def _forward_bound(x, dtype) -> float:
    """L9 for the Taylor δ plus A1's floating-point term in ``dtype``."""
    vnorm = float(x[3].abs().max()) * float(x[4].abs().max())
    n1, n2, d = x[1].shape[-2], x[2].shape[-2], x[0].shape[-1]
    return forward_error_bound(DELTA, vnorm) + forward_rounding_term(COEFFS, M, d, n1, n2, dtype, DELTA, vnorm)


@spec("P31", "L8")
@pytest.mark.parametrize("g,d", [(0, 1), (1, 1), (3, 2), (5, 4), (8, 16)])
def test_rank_is_binomial_and_table_is_complete(g, d):
    assert feature_rank(g, d) == math.comb(g + d, d)
    if feature_rank(g, d) < 10_000:
        t = multi_indices(g, d)
        assert len(set(t.exponents)) == t.rank == feature_rank(g, d)
        assert all(sum(a) == k <= g for a, k in zip(t.exponents, t.degrees))
    assert feature_rank(8, 16) == 735_471  # SPEC L11's example


@spec("A1", "L9")
@pytest.mark.parametrize("n_q,n1,n2,d", [(1, 1, 1, 1), (5, 3, 4, 2), (7, 6, 2, 3)])
def test_forward_shapes_and_L9_against_reference(n_q, n1, n2, d):
    torch.manual_seed(n_q)
    q, k1, k2, v1, v2 = (torch.rand(n, d, dtype=torch.float64) * 2 - 1 for n in (n_q, n1, n2, n1, n2))
    out = fast_tensor_attention(q, k1, k2, v1, v2, COEFFS)
    ref, _ = tensor_attention_forward(q, k1, k2, v1, v2)
    assert out.shape == (n_q, d)
    # reference float64 rounding: softmax + n1·n2-term sums, γ_{n1 n2 + d + 8}·||V||
    ref_fp = 2 * (n1 * n2 + d + 8) * 2.0**-53 * float(v1.abs().max() * v2.abs().max())
    assert float((out - ref).abs().max()) <= _forward_bound((q, k1, k2, v1, v2), torch.float64) + ref_fp


@spec("A1")
def test_batching_matches_per_head():
    x = _inputs(2, 3, 5, 3)
    out = fast_tensor_attention(*x, COEFFS)
    assert out.shape == (2, 3, 5, 3)
    for i in range(2):
        for j in range(3):
            single = fast_tensor_attention(*(t[i, j] for t in x), COEFFS)
            # the same operations per head; batched matmul may reorder sums: γ-bound of A1 in float64
            assert float((single - out[i, j]).abs().max()) <= 2 * forward_rounding_term(
                COEFFS, M, 3, 5, 5, torch.float64, DELTA, 1.0
            )


@spec("A1", "L9")
def test_float32_agrees_with_float64():
    """float32 and float64 runs of A1 each lie within their γ-term of the exact-arithmetic Att̃."""
    x64 = _inputs(3, 16, 4, seed=3)
    x32 = [t.to(torch.float32) for t in x64]
    out32 = fast_tensor_attention(*x32, COEFFS)
    out64 = fast_tensor_attention(*[t.to(torch.float64) for t in x32], COEFFS)
    assert out32.dtype == torch.float32
    tol = forward_rounding_term(COEFFS, M, 4, 16, 16, torch.float32, DELTA, 1.0) + forward_rounding_term(
        COEFFS, M, 4, 16, 16, torch.float64, DELTA, 1.0
    )
    assert float((out32.double() - out64).abs().max()) <= tol


@spec("A1", "L4", "L8")
def test_gradients_through_features_match_materialised_polynomial_attention():
    """dQ, dK1, dK2, dV1, dV2 of A1 by autograd equal those of D̃⁻¹ÃV with Ã = U(V⊘W)^T materialised."""
    x = [t.requires_grad_() for t in _inputs(4, 3, seed=5)]
    grad_out = torch.rand(4, 3, dtype=torch.float64)
    fast = torch.autograd.grad((fast_tensor_attention(*x, COEFFS) * grad_out).sum(), x)
    U, V, W = feature_maps(x[0], x[1], x[2], COEFFS, 1.0 / 3)
    At = U @ khatri_rao(V, W).T
    slow_out = (At / At.sum(-1, keepdim=True)) @ khatri_rao(x[3], x[4])
    slow = torch.autograd.grad((slow_out * grad_out).sum(), x)
    for a, b in zip(fast, slow):
        mag = float(b.abs().max()) + 1.0
        assert float((a - b).abs().max()) <= 1e3 * 2.0**-53 * mag * feature_rank(DEGREE, 3)  # γ_k, k ≤ 10³·r ops


@spec("A1", "L4", "L9")
def test_value_gradients_within_row_l1_bound():
    """dV1, dV2 of A1 differ from the exact L4 gradient by at most n_q·η·||dO||∞||V||∞ (rows of P̃ − P, L9)."""
    x = [t.requires_grad_() for t in _inputs(5, 2, seed=7)]
    grad_out = torch.rand(5, 2, dtype=torch.float64)
    fast = torch.autograd.grad((fast_tensor_attention(*x, COEFFS) * grad_out).sum(), x[3:])
    exact = torch.autograd.grad((tensor_attention_reference(*x) * grad_out).sum(), x[3:])
    eta = row_l1_bound(DELTA)
    for a, b, other in zip(fast, exact, (x[4], x[3])):
        assert float((a - b).abs().max()) <= 5 * eta * float(grad_out.max()) * float(other.abs().max()) + 1e-13


@spec("A2", "L10", "L1")
def test_fast_gradient_against_closed_form():
    """A2 at n = 12 against L1 (chunked, float64) within L10 (||q̃||∞ ≤ (dH + ||E||₁)H) plus fp slack."""
    n, d = 12, 3
    g = torch.Generator().manual_seed(11)
    A = [torch.rand(n, d, generator=g, dtype=torch.float64) * 2 - 1 for _ in range(6)]
    X = [(torch.rand(d, d, generator=g, dtype=torch.float64) * 2 - 1) / d for _ in range(5)]
    fast = fast_objective_gradient(*A, *X, COEFFS)
    loss, G = closed_form_gradient(*A[:5], A[5], compose_X(*X[:3]), compose_Y(*X[3:]), chunk_size=4)
    Va, Vb = A[3] @ X[3], A[4] @ X[4]
    H = float(Va.abs().max() * Vb.abs().max())
    e1 = float(A[5].abs().sum(-1).max())
    norms = [float(A[i].abs().max()) for i in range(3)]
    b = gradient_error_bounds(DELTA, H, (d * H + e1) * H, n, d, norms)
    assert fast.G.shape == (d, d * d) and fast.dX1.shape == (d, d)
    assert float((fast.G - G).abs().max()) <= b.G + 1e-12
    assert abs(float(fast.loss - loss)) <= (d * H + e1) * b.c * n + 1e-12


@spec("A2")
def test_fast_gradient_batched():
    n, d = 4, 2
    A = [torch.rand(3, n, d, dtype=torch.float64) for _ in range(6)]
    X = [torch.eye(d, dtype=torch.float64).expand(3, d, d).clone() for _ in range(5)]
    batched = fast_objective_gradient(*A, *X, COEFFS)
    assert batched.G.shape == (3, d, d * d) and batched.dX2.shape == (3, d, d) and batched.loss.shape == (3,)
    single = fast_objective_gradient(*(t[1] for t in A), *(t[1] for t in X), COEFFS)
    assert float((single.G - batched.G[1]).abs().max()) <= 1e-14 * (1 + float(single.G.abs().max()))


# ------------------------------------------------------------------------------------------ bad input


@spec("A1")
@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda x: x.__setitem__(0, x[0].to(torch.float16)), "dtype"),
        (lambda x: x.__setitem__(0, x[0].to(torch.int64)), "dtype"),
        (lambda x: x.__setitem__(1, x[1][:, :2]), "head dimension"),
        (lambda x: x.__setitem__(3, x[3][:2]), "same length"),
        (lambda x: x.__setitem__(2, x[2].clone().fill_(math.nan)), "finite"),
        (lambda x: x.__setitem__(0, x[0][0]), "at least 2 dimensions"),
    ],
)
def test_forward_rejects_bad_tensors(mutate, match):
    x = _inputs(4, 3)
    mutate(x)
    with pytest.raises(ValueError, match=match):
        fast_tensor_attention(*x, COEFFS)


@spec("A1")
def test_forward_rejects_all_float16():
    with pytest.raises(ValueError, match="float32 and float64 only"):
        fast_tensor_attention(*_inputs(4, 3, dtype=torch.float16), COEFFS)


@spec("A1", "L8")
@pytest.mark.parametrize("coeffs,match", [([], "empty"), ([0, 0], "not all be zero"), ([1.0, math.inf], "finite"), (["1"], "rational")])
def test_forward_rejects_bad_coefficients(coeffs, match):
    with pytest.raises(ValueError, match=match):
        fast_tensor_attention(*_inputs(4, 3), coeffs)


@spec("A1", "L11")
def test_rank_over_memory_limit_names_the_limit():
    x = _inputs(64, 16)
    coeffs = build_polynomial("taylor", 8, [0, 2]).shifted(1)
    need = feature_memory_bytes(64, 64, 64, 8, 16, 8)
    with pytest.raises(ValueError, match=r"C\(8\+16, 16\) = 735471 .* memory_limit_bytes = 1000000"):
        fast_tensor_attention(*x, coeffs, memory_limit_bytes=1_000_000)
    assert need > 1_000_000


@spec("A2")
def test_gradient_rejects_bad_shapes():
    A = _inputs(4, 2) + [torch.zeros(4, 2, dtype=torch.float64)]
    X = [torch.eye(2, dtype=torch.float64) for _ in range(5)]
    with pytest.raises(ValueError, match="X2 must have shape"):
        fast_objective_gradient(*A, X[0], torch.eye(3, dtype=torch.float64), *X[2:], COEFFS)
    with pytest.raises(ValueError, match="E must have shape"):
        fast_objective_gradient(*A[:5], torch.zeros(3, 2, dtype=torch.float64), *X, COEFFS)


@spec("L5", "L9", "L10", "L12")
def test_bounds_reject_bad_arguments_and_match_formulas():
    assert score_bound(2.0, 4) == 8.0 and score_bound(1.0, 4, scale=0.5) == 2.0 and value_bound(3.0) == 9.0
    up = forward_error_bound(0.25, 2.0)  # 4/3 rounded upward, never below the exact bound
    assert Fraction(up) >= Fraction(4, 3) > Fraction(math.nextafter(up, 0))
    assert derivative_bounds(0.5, 2.0) == (2.0, 12.0)
    b = gradient_error_bounds(0.5, 1.0, 1.0, 2, 2, [1, 1, 1])
    assert (b.c, b.q, b.p_row_l1, b.G) == (2.0, 4.0, 14.0, 14.0)
    for bad in (-0.1, 1.0, math.nan):
        with pytest.raises(ValueError, match="delta"):
            forward_error_bound(bad, 1.0)
    with pytest.raises(ValueError, match="B must"):
        score_bound(-1.0, 2)
    with pytest.raises(ValueError, match="a_norms"):
        gradient_error_bounds(0.1, 1.0, 1.0, 2, 2, [1, 1])
    with pytest.raises(ValueError, match="cannot evaluate"):
        forward_rounding_term(build_polynomial("taylor", 40, [0, 40]).shifted(20), 20, 4, 8, 8, torch.float32, 1e-6, 1.0)
