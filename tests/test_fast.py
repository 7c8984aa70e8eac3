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
    gradient_rounding_term,
    row_l1_bound,
    score_bound,
    value_bound,
)
from verified_ta.fast import fast_objective_gradient, fast_tensor_attention, normaliser, scan_chunk_size, scan_row_bytes
from verified_ta.features import feature_maps, feature_rank, monomials, multi_indices, query_features, scan_memory_bytes
from verified_ta.fp_bounds import attention_rounding_bounds, gamma, objective_gradient_rounding_bound, unit_roundoff
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


def _autograd_rounding_bounds(x, grad_out) -> list[torch.Tensor]:
    """Entrywise bounds on |ĝ − g| for float64 autograd of ⟨dO, D̃⁻¹ÃV⟩ w.r.t. (q, k1, k2, v1, v2), A1 or materialised (derived).

    With L = Σ dO∘N/D (N = U((VᵀV1)∘(WᵀV2)), D = U((Vᵀ1)∘(Wᵀ1)), L8), each gradient entry expands into terms t/D
    and t'/D² with t, t' products of monomials. Evaluated in any order with at most k roundings per term, the
    computed value is Σ t(1+θ_t)·(D/D̂)^j, |θ_t| ≤ γ_k (Higham §3), j ≤ 2, |D̂/D − 1| ≤ ρ = γ_k·mD/D; so
    |ĝ − g| ≤ ((1+γ_k)(1+ρ/(1−ρ))² − 1)·Σ|terms| + k·tiny. Σ|terms| is the gradient w.r.t. |x| of
    Σ|dO|∘mN/D + (Σ|dO|∘mN)·mD/D² (mN, mD: N, D on |x| and |a_t|; D bounded below by D̂ − γ_k·mD).
    k counts the longest path of either evaluation: the forward (weights and monomials 3g + 2, the r features,
    the sums over n1, n2 (A1) or the n1·n2 pairs (materialised), the division) plus the backward through the same
    reductions, the sums over the n_q queries and d columns, and the monomial backward (g levels of ≤ d children).
    """
    n_q, d = x[0].shape
    n1, n2, g = x[1].shape[0], x[2].shape[0], DEGREE
    r = feature_rank(g, d)
    k = (3 * g + r + n1 * n2 + n1 + n2 + 4) + (n_q + n1 * n2 + n1 + n2 + d + r + g * (d + 2) + 4)
    gk = gamma(k, torch.float64)
    xd = [t.detach() for t in x]
    d_hat = normaliser(*feature_maps(*xd[:3], COEFFS, 1.0 / d))[..., 0]
    ax = [t.abs().requires_grad_() for t in xd]
    Ua = query_features(ax[0], [abs(c) for c in COEFFS], 1.0 / d)
    Va, Wa = monomials(ax[1], g), monomials(ax[2], g)
    mD = normaliser(Ua, Va, Wa)[..., 0]
    mN = Ua @ ((Va.T @ ax[3]) * (Wa.T @ ax[4]))
    d_lo = d_hat - gk * mD.detach()
    G = grad_out.abs()
    mL = (G * mN / d_lo[:, None]).sum() + ((G * mN.detach()).sum(-1) * mD / d_lo**2).sum()
    rho = gk * float((mD.detach() / d_lo).max())
    theta = (1 + gk) * (1 + rho / (1 - rho)) ** 2 - 1
    return [theta * m + k * torch.finfo(torch.float64).tiny for m in torch.autograd.grad(mL, ax)]


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
    ref_fp = attention_rounding_bounds(q, k1, k2, v1, v2)["out"]  # the float64 reference's own rounding (SPEC §2)
    assert bool(((out - ref).abs() <= _forward_bound((q, k1, k2, v1, v2), torch.float64) + ref_fp).all())


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
    for a, b, fp in zip(fast, slow, _autograd_rounding_bounds(x, grad_out)):
        assert bool(((a - b).abs() <= 2 * fp).all())  # both evaluations lie within fp of the exact gradient


@spec("A1", "L4", "L9")
def test_value_gradients_within_row_l1_bound():
    """dV1, dV2 of A1 differ from the exact L4 gradient by at most n_q·η·||dO||∞||V||∞ (rows of P̃ − P, L9)."""
    x = [t.requires_grad_() for t in _inputs(5, 2, seed=7)]
    grad_out = torch.rand(5, 2, dtype=torch.float64)
    fast = torch.autograd.grad((fast_tensor_attention(*x, COEFFS) * grad_out).sum(), x[3:])
    exact = torch.autograd.grad((tensor_attention_reference(*x) * grad_out).sum(), x[3:])
    eta = row_l1_bound(DELTA)
    n_q = x[0].shape[-2]
    fast_fp = _autograd_rounding_bounds(x, grad_out)[3:]
    ref_fp = attention_rounding_bounds(*x, grad_out)  # the float64 L4 backward of the reference
    for a, b, other, fp, name in zip(fast, exact, (x[4], x[3]), fast_fp, ("dv1", "dv2")):
        lemma = n_q * eta * float(grad_out.abs().max()) * float(other.detach().abs().max())
        assert bool(((a - b).abs() <= lemma + fp + ref_fp[name]).all())


def _loss_rounding(c_hat: torch.Tensor, c_err: torch.Tensor) -> float:
    """|fl(½Σĉ²) − ½Σc²| given |ĉ − c| ≤ c_err entrywise: ½|ĉ² − c²| ≤ c_err(|ĉ| + c_err/2), plus γ_m·½Σĉ² for the m-term sum."""
    return float((c_err * (c_hat.abs() + c_err / 2)).sum()) + gamma(c_hat.numel(), c_hat.dtype) * 0.5 * float((c_hat * c_hat).sum())


@spec("A2", "L10", "L1")
def test_fast_gradient_against_closed_form():
    """A2 at n = 12 against L1 (chunked, float64) within L10 (||q̃||∞ ≤ (dH + ||E||₁)H) plus both float64 γ-terms.

    Entries lie on the 2⁻¹⁰ grid, so Q = A1X1, …, Vb = A5Y2 and compose_X/compose_Y are exact in float64 (≤ 30-bit
    products, sums of d = 3): the fp terms of A2 (gradient_rounding_term) and L1 (objective_gradient_rounding_bound)
    then apply as stated, and δ = DELTA holds since ||A_i X_i||∞ ≤ 3·(341/1024) < 1 = B.
    """
    n, d = 12, 3
    g = torch.Generator().manual_seed(11)
    grid = lambda t: torch.round(t * 1024) / 1024  # noqa: E731 - local shorthand
    A = [grid(torch.rand(n, d, generator=g, dtype=torch.float64) * 2 - 1) for _ in range(6)]
    X = [grid((torch.rand(d, d, generator=g, dtype=torch.float64) * 2 - 1) / d) for _ in range(5)]
    fast = fast_objective_gradient(*A, *X, COEFFS)
    Xc, Yc = compose_X(*X[:3]), compose_Y(*X[3:])
    _, G = closed_form_gradient(*A[:5], A[5], Xc, Yc, chunk_size=4)
    Va, Vb = A[3] @ X[3], A[4] @ X[4]
    H = float(Va.abs().max() * Vb.abs().max())
    e1, e_inf = float(A[5].abs().sum(-1).max()), float(A[5].abs().max())
    norms = [float(A[i].abs().max()) for i in range(3)]
    b = gradient_error_bounds(DELTA, H, (d * H + e1) * H, n, d, norms)
    assert fast.G.shape == (d, d * d) and fast.dX1.shape == (d, d)
    fast_fp = gradient_rounding_term(COEFFS, M, n, d, torch.float64, DELTA, H, e_inf, float(fast.c.abs().sum(-1).max()), norms)
    l1_fp = objective_gradient_rounding_bound(*A[:5], A[5], Xc, Yc)
    assert bool(((fast.G - G).abs() <= b.G + fast_fp + l1_fp).all())
    # loss: ½|c̃² − c²| summed ≤ n·||c̃ − c||∞·(dH + ||E||₁) (L10 (i)); the reference is the exact forward at the
    # (exact) Q, K1, K2, Va, Vb with its fp_bounds term; ĉ = fl(f̃h − E) adds one rounding to A1's term (A2 step 3)
    u = unit_roundoff(torch.float64)
    QK = [A[i] @ X[i] for i in range(3)]
    out, _ = tensor_attention_forward(*QK, Va, Vb)
    ref_c = out - A[5]
    ref_err = attention_rounding_bounds(*QK, Va, Vb)["out"]
    ref_err = ref_err + u * (out.abs() + ref_err + A[5].abs())
    ref_loss = 0.5 * float((ref_c * ref_c).sum())
    fast_err = forward_rounding_term(COEFFS, M, d, n, n, torch.float64, DELTA, H)
    fast_err = fast_err + u * (H + fast_err + e_inf)
    fp = _loss_rounding(fast.c, torch.full_like(fast.c, fast_err)) + _loss_rounding(ref_c, ref_err)
    assert abs(float(fast.loss) - ref_loss) <= (d * H + e1) * b.c * n + fp


@spec("A2")
def test_fast_gradient_batched():
    n, d = 4, 2
    A = [torch.rand(3, n, d, dtype=torch.float64) for _ in range(6)]
    X = [torch.eye(d, dtype=torch.float64).expand(3, d, d).clone() for _ in range(5)]
    batched = fast_objective_gradient(*A, *X, COEFFS)
    assert batched.G.shape == (3, d, d * d) and batched.dX2.shape == (3, d, d) and batched.loss.shape == (3,)
    single = fast_objective_gradient(*(t[1] for t in A), *(t[1] for t in X), COEFFS)
    # batched matmuls may sum in another order: both runs lie within A2's float64 term of the exact-arithmetic G̃
    # (entries in [0, 1), X = Y = I: Q, …, Vb exact, scores in [−1, 1] = [−M, M], so δ = DELTA)
    H = float(A[3][1].abs().max() * A[4][1].abs().max())
    c_l1 = max(float(c.abs().sum(-1).max()) for c in (single.c, batched.c[1]))
    norms = [float(A[i][1].abs().max()) for i in range(3)]
    fp = gradient_rounding_term(COEFFS, M, n, d, torch.float64, DELTA, H, float(A[5][1].abs().max()), c_l1, norms)
    assert float((single.G - batched.G[1]).abs().max()) <= 2 * fp


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
    chunk = scan_chunk_size(64, scan_row_bytes(x[0], 8))
    assert chunk == 8  # no row fits SCAN_STEP_BYTES at r = 735471: the √n floor
    with pytest.raises(ValueError, match=r"C\(8\+16, 16\) = 735471, chunk 8, .* memory_limit_bytes = 1000000"):
        fast_tensor_attention(*x, coeffs, memory_limit_bytes=1_000_000)
    assert scan_memory_bytes(64, 64, 8, 16, chunk, 8) > 1_000_000


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
