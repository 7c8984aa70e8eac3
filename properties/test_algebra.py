"""Algebra T1–T17 (SPEC §4) checked numerically in float64 on random shapes (1×1, n = 1, d = 1, non-square, odd).

Tolerances (never a free rtol): an identity LHS = RHS whose two sides are evaluated in float64 with at most
k_L and k_R roundings on every path from the inputs to an entry obeys (Higham §3, order-free)

    |fl(LHS) − fl(RHS)| <= γ_{k_L}·M + γ_{k_R}·M,     M = the same expression on absolute values,

see :func:`identity_gap`. Each test states its k (the number of roundings on the longest path) in a comment.
"Exact" (k = 0) means both sides perform the very same correctly rounded operations, so they must agree bitwise.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from verified_ta.fp_bounds import gamma, rounding_bound
from verified_ta.gradient import chain_terms, softmax_rows
from verified_ta.products import face_split, khatri_rao, kron, pair_index, unvec, vec
from verified_ta.spec import spec
from verified_ta.testing.strategies import dims, matrices

F64 = np.float64


def identity_gap(lhs, rhs, magnitude, k_lhs: int, k_rhs: int) -> tuple[float, float]:
    """``(max |lhs − rhs| / bound, 1.0)``: the identity holds in float64 iff the first number is <= 1.

    bound = γ_{k_L}·M + γ_{k_R}·M (+ the underflow term of ``rounding_bound``). M is itself evaluated in
    float64 with <= max(k_L, k_R) roundings on non-negative terms, so the true magnitude is <= M/(1 − γ_k);
    the factor 1 + γ_3 covers the rounding of the subtraction lhs − rhs and of the bound's own arithmetic.
    """
    lhs, rhs, mag = (np.asarray(x, dtype=F64) for x in (lhs, rhs, magnitude))
    if lhs.shape != rhs.shape:
        return math.inf, 1.0
    mag = mag / (1 - gamma(max(k_lhs, k_rhs), F64))
    bound = (rounding_bound(mag, k_lhs, F64) + rounding_bound(mag, k_rhs, F64)) * (1 + gamma(3, F64))
    diff = np.abs(lhs - rhs)
    ratio = np.divide(diff, bound, out=np.zeros_like(diff), where=bound > 0)
    ratio[(bound == 0) & (diff > 0)] = math.inf
    return float(ratio.max(initial=0.0)), 1.0


def assert_identity(lhs, rhs, magnitude, k_lhs: int, k_rhs: int) -> None:
    ratio, tol = identity_gap(lhs, rhs, magnitude, k_lhs, k_rhs)
    assert ratio <= tol, f"identity violated: |lhs − rhs| / bound = {ratio:.3g}"


def tr(x):
    """Transpose of the last two dimensions (batched)."""
    return np.swapaxes(x, -1, -2)


@st.composite
def arrays(draw, *shapes: tuple[int, ...], bound: float = 1.0):
    """Independent float64 arrays of the given shapes (leading batch dims allowed), entries in [-bound, bound]."""
    out = []
    for shape in shapes:
        *batch, r, c = shape
        mats = [draw(matrices(r, c, bound)) for _ in range(int(np.prod(batch, dtype=int)))]
        out.append(np.stack(mats).reshape(shape))
    return out


batches = st.sampled_from([(), (2,)])


# ---------------------------------------------------------------- T1, T2, T3, T4


@spec("T1")
@given(st.data(), dims(), dims(), dims(), dims(), dims(), batches)
def test_t1_kron_times_khatri_rao(data, n1, n2, d1, d2, k, batch):
    A, B, C, D = data.draw(arrays((*batch, n1, d1), (*batch, n2, d2), (*batch, d1, k), (*batch, d2, k)))
    lhs = kron(A, B) @ khatri_rao(C, D)
    rhs = khatri_rao(A @ C, B @ D)
    mag = kron(abs(A), abs(B)) @ khatri_rao(abs(C), abs(D))
    # k_L = 1 (⊗ entry) + 1 (⊘ entry) + d1·d2 (dot product); k_R = d1 + d2 (two dots) + 1 (⊘ product)
    assert_identity(lhs, rhs, mag, d1 * d2 + 2, d1 + d2 + 1)


@spec("T2")
@given(st.data(), dims(), dims(), dims(), batches)
def test_t2_khatri_rao_transpose_is_face_split(data, d1, d2, k, batch):
    C, D = data.draw(arrays((*batch, d1, k), (*batch, d2, k)))
    # exact: both sides are the single correctly rounded product C[i1,l]·D[i2,l] (k = 0 difference)
    assert_identity(tr(khatri_rao(C, D)), face_split(tr(C), tr(D)), 0.0, 0, 0)


@spec("T3")
@given(st.data(), dims(), dims(), dims(), dims(), batches)
def test_t3_khatri_rao_gram(data, n1, n2, k1, k2, batch):
    V, W, P, R = data.draw(arrays((*batch, n1, k1), (*batch, n2, k1), (*batch, n1, k2), (*batch, n2, k2)))
    lhs = tr(khatri_rao(V, W)) @ khatri_rao(P, R)
    rhs = (tr(V) @ P) * (tr(W) @ R)
    mag = tr(khatri_rao(abs(V), abs(W))) @ khatri_rao(abs(P), abs(R))
    # k_L = 2 (two ⊘ entries) + n1·n2 (dot); k_R = n1 + n2 (two dots) + 1 (Hadamard)
    assert_identity(lhs, rhs, mag, n1 * n2 + 2, n1 + n2 + 1)


@spec("T4")
@given(st.data(), dims(), dims(), dims(), st.booleans())
def test_t4_khatri_rao_times_kron_vector(data, n1, n2, k, ones):
    V, W, a, b = data.draw(arrays((n1, k), (n2, k), (n1, 1), (n2, 1)))
    if ones:  # the normaliser form (V⊘W)^T 1_{n1n2} = (V^T 1)∘(W^T 1)
        a, b = np.ones((n1, 1)), np.ones((n2, 1))
    lhs = tr(khatri_rao(V, W)) @ kron(a, b)
    rhs = (tr(V) @ a) * (tr(W) @ b)
    mag = tr(khatri_rao(abs(V), abs(W))) @ kron(abs(a), abs(b))
    # k_L = 2 (⊘ and ⊗ entries) + n1·n2 (dot); k_R = n1 + n2 + 1
    assert_identity(lhs, rhs, mag, n1 * n2 + 2, n1 + n2 + 1)


# ---------------------------------------------------------------- T5, T6


@spec("T5")
@given(st.data(), dims(), dims(), dims(), dims(), batches)
def test_t5_hadamard_of_low_rank(data, m, n, k1, k2, batch):
    U1, V1, U2, V2 = data.draw(arrays((*batch, m, k1), (*batch, n, k1), (*batch, m, k2), (*batch, n, k2)))
    lhs = (U1 @ tr(V1)) * (U2 @ tr(V2))
    rhs = face_split(U1, U2) @ tr(face_split(V1, V2))
    mag = (abs(U1) @ tr(abs(V1))) * (abs(U2) @ tr(abs(V2)))
    # k_L = k1 + k2 (two dots) + 1 (Hadamard); k_R = 2 (two ⊖ entries) + k1·k2 (dot)
    assert_identity(lhs, rhs, mag, k1 + k2 + 1, k1 * k2 + 2)


@spec("T6")
@given(st.data(), dims(), dims(), dims(), dims(1, 3), dims(1, 3))
def test_t6_hadamard_of_khatri_rao_factorisations(data, m, nv, nw, k1, k2):
    U1, V1, W1, U2, V2, W2 = data.draw(arrays((m, k1), (nv, k1), (nw, k1), (m, k2), (nv, k2), (nw, k2)))
    lhs = (U1 @ khatri_rao(V1, W1).T) * (U2 @ khatri_rao(V2, W2).T)
    rhs = face_split(U1, U2) @ khatri_rao(face_split(V1, V2), face_split(W1, W2)).T
    mag = (abs(U1) @ khatri_rao(abs(V1), abs(W1)).T) * (abs(U2) @ khatri_rao(abs(V2), abs(W2)).T)
    # k_L = (1 + k1) + (1 + k2) + 1; k_R = 1 (U1⊖U2) + 3 (v1v2, w1w2, their product) + k1·k2 (dot)
    assert_identity(lhs, rhs, mag, k1 + k2 + 3, k1 * k2 + 4)
    # the mixed-product rule of the factors: each entry is a product of 4 numbers with 3 roundings per side
    lhs2 = face_split(khatri_rao(V1, W1), khatri_rao(V2, W2))
    rhs2 = khatri_rao(face_split(V1, V2), face_split(W1, W2))
    mag2 = face_split(khatri_rao(abs(V1), abs(W1)), khatri_rao(abs(V2), abs(W2)))
    assert_identity(lhs2, rhs2, mag2, 3, 3)


# ---------------------------------------------------------------- T7, T8, T9


@spec("T7")
@given(st.data(), dims(), dims(), dims(), dims(), batches)
def test_t7_vec_of_sandwich(data, m1, m2, p, q, batch):
    A, X, B = data.draw(arrays((*batch, m1, p), (*batch, p, q), (*batch, m2, q)))
    lhs = vec(A @ X @ tr(B))
    rhs = (kron(A, B) @ vec(X)[..., None])[..., 0]
    mag = vec(abs(A) @ abs(X) @ tr(abs(B)))
    # k_L = p + q (two dots); k_R = 1 (⊗ entry) + p·q (dot)
    assert_identity(lhs, rhs, mag, p + q, p * q + 1)


@spec("T7")
@given(st.data(), dims(1, 3), dims(1, 3), dims(1, 3), dims(1, 3))
def test_t7_vec_of_tensor_scores(data, n1, n2, n3, d):
    A1, A2, A3, X = data.draw(arrays((n1, d), (n2, d), (n3, d), (d, d * d)))
    lhs = vec(A1 @ X @ kron(A2, A3).T)
    rhs = kron(kron(A1, A2), A3) @ vec(X)
    mag = vec(abs(A1) @ abs(X) @ kron(abs(A2), abs(A3)).T)
    # k_L = d + 1 (⊗ entry) + d² ; k_R = 2 (nested ⊗ entry) + d³
    assert_identity(lhs, rhs, mag, d + d * d + 1, d**3 + 2)


@spec("T8")
@given(st.data(), dims(1, 3), dims(1, 3), dims(1, 3), dims(1, 3), dims(1, 3), dims(1, 3), dims(1, 3))
def test_t8_factorised_weights(data, n1, n2, n3, d1, d2, d3, k):
    A1, A2, A3, X1, X2, X3 = data.draw(arrays((n1, d1), (n2, d2), (n3, d3), (d1, k), (d2, k), (d3, k)))
    lhs = A1 @ X1 @ khatri_rao(X2, X3).T @ kron(A2, A3).T
    rhs = (A1 @ X1) @ khatri_rao(A2 @ X2, A3 @ X3).T
    mag = abs(A1) @ abs(X1) @ khatri_rao(abs(X2), abs(X3)).T @ kron(abs(A2), abs(A3)).T
    # k_L = d1 + (1 + k) + (1 + d2·d3); k_R = d1 + (d2 + d3 + 1) + k
    assert_identity(lhs, rhs, mag, d1 + k + d2 * d3 + 2, d1 + d2 + d3 + k + 1)


@spec("T9")
@given(st.data(), dims(), dims(), dims(), dims(1, 3))
def test_t9_identity_tensor(data, n1, n2, n3, d):
    A1, A2, A3 = data.draw(arrays((n1, d), (n2, d), (n3, d)))
    eye = np.eye(d)
    ii = khatri_rao(eye, eye)  # entries 0/1, exact
    lhs = A1 @ ii.T @ kron(A2, A3).T
    rhs = A1 @ khatri_rao(A2, A3).T
    mag = abs(A1) @ khatri_rao(abs(A2), abs(A3)).T
    # k_L = d (dot with I⊘I) + 1 (⊗ entry) + d² ; k_R = 1 (⊘ entry) + d
    assert_identity(lhs, rhs, mag, d + d * d + 1, d + 1)
    lhs2 = kron(A2, A3) @ ii
    rhs2 = khatri_rao(A2, A3)
    # k_L = 1 + d² ; k_R = 1
    assert_identity(lhs2, rhs2, abs(rhs2), d * d + 1, 1)


# ---------------------------------------------------------------- T10, T11, T12, T13


@spec("T10")
@given(st.data(), dims(), dims(), dims(), dims())
def test_t10_scores_index_formula(data, n, n1, n2, d):
    Q, K1, K2 = data.draw(arrays((n, d), (n1, d), (n2, d)))
    lhs = Q @ khatri_rao(K1, K2).T
    rhs = np.empty((n, n1 * n2))
    mag = np.empty((n, n1 * n2))
    for i in range(n):
        for a in range(n1):
            for b in range(n2):
                terms = [Q[i, l] * K1[a, l] * K2[b, l] for l in range(d)]
                rhs[i, a * n2 + b] = sum(terms)  # the explicit SPEC formula, column a*n2 + b
                mag[i, a * n2 + b] = sum(abs(t) for t in terms)
    # k_L = 1 (⊘ entry) + d (dot); k_R = 2 (triple product) + d − 1 (sum)
    assert_identity(lhs, rhs, mag, d + 1, d + 1)


@spec("T11")
@given(st.data(), dims(), dims(), dims(), dims())
def test_t11_mode1_unfolding(data, d1, d2, d3, k):
    G1, G2, G3 = data.draw(arrays((d1, k), (d2, k), (d3, k)))
    lhs = G1 @ khatri_rao(G2, G3).T
    cp = sum(np.kron(np.kron(G1[:, l], G2[:, l]), G3[:, l]) for l in range(k))  # vec of Σ_l g1⊗g2⊗g3 (numpy.kron)
    rhs = cp.reshape(d1, d2 * d3)  # mode-1 unfolding: T[a, b, c] at column b*d3 + c
    mag = abs(G1) @ khatri_rao(abs(G2), abs(G3)).T
    # k_L = 1 + k; k_R = 2 (triple product) + k − 1 (sum over l)
    assert_identity(lhs, rhs, mag, k + 1, k + 1)


@spec("T12")
@given(st.data(), dims(), dims(), dims(), dims(), dims(), batches)
def test_t12_kron_transpose_times_khatri_rao(data, n2, n3, d2, d3, k, batch):
    A2, A3, V, W = data.draw(arrays((*batch, n2, d2), (*batch, n3, d3), (*batch, n2, k), (*batch, n3, k)))
    lhs = tr(kron(A2, A3)) @ khatri_rao(V, W)
    rhs = khatri_rao(tr(A2) @ V, tr(A3) @ W)
    mag = tr(kron(abs(A2), abs(A3))) @ khatri_rao(abs(V), abs(W))
    # k_L = 2 + n2·n3; k_R = n2 + n3 + 1
    assert_identity(lhs, rhs, mag, n2 * n3 + 2, n2 + n3 + 1)


@spec("T13")
@given(st.data(), dims(), dims(), dims(), dims(), dims(), dims())
def test_t13_kron_rules_against_numpy(data, n1, m1, p1, n2, m2, p2):
    A, C, B, D = data.draw(arrays((n1, m1), (m1, p1), (n2, m2), (m2, p2)))
    # exact (k = 0): numpy.kron and the transpose rule compute the same single products
    assert_identity(kron(A, B), np.kron(A, B), 0.0, 0, 0)
    assert_identity(kron(A, B).T, kron(A.T, B.T), 0.0, 0, 0)
    # mixed product: k_L = 2 (two ⊗ entries) + m1·m2; k_R = m1 + m2 + 1
    lhs = kron(A, B) @ kron(C, D)
    rhs = kron(A @ C, B @ D)
    assert_identity(lhs, rhs, kron(abs(A) @ abs(C), abs(B) @ abs(D)), m1 * m2 + 2, m1 + m2 + 1)


@spec("T13")
@given(st.data(), dims(), dims(), dims(), dims())
def test_t13_khatri_rao_associative_and_columnwise_kron(data, na, nb, nc, k):
    A, B, C = data.draw(arrays((na, k), (nb, k), (nc, k)))
    # ⊘ is numpy.kron column by column, ⊖ row by row (exact: same single products)
    cols = np.stack([np.kron(A[:, l], B[:, l]) for l in range(k)], axis=1)
    assert_identity(khatri_rao(A, B), cols, 0.0, 0, 0)
    rows = np.stack([np.kron(A[0], B[0, :])])
    assert_identity(face_split(A[:1], B[:1]), rows, 0.0, 0, 0)
    # associativity: each entry a·b·c with 2 roundings per side
    lhs, rhs = khatri_rao(khatri_rao(A, B), C), khatri_rao(A, khatri_rao(B, C))
    assert_identity(lhs, rhs, khatri_rao(khatri_rao(abs(A), abs(B)), abs(C)), 2, 2)


# ---------------------------------------------------------------- T14, T15, T16


@spec("T14")
@given(st.data(), dims(1, 8))
def test_t14_inner_product_rules(data, m):
    x, y, z = (v[:, 0] for v in data.draw(arrays((m, 1), (m, 1), (m, 1))))
    mag = abs(x) @ (abs(y) * abs(z))
    lhs = (x * y) @ z
    # k = 1 (Hadamard) + m (dot) on both sides
    assert_identity(lhs, x @ (y * z), mag, m + 1, m + 1)
    # x^T diag(y) z: two dots, k = 2m
    assert_identity(lhs, x @ np.diag(y) @ z, mag, m + 1, 2 * m)
    # ⟨x, y⟩ = ⟨x∘y, 1⟩: k = m on both sides (multiplying by 1 is exact)
    assert_identity(x @ y, (x * y) @ np.ones(m), abs(x) @ abs(y), m, m)


@spec("T15")
@given(st.data(), dims(1, 6), st.sampled_from([1.0, 8.0]))
def test_t15_softmax_jacobian(data, m, bound):
    (z,) = data.draw(arrays((m, 1), bound=bound))
    z = torch.from_numpy(z[:, 0])
    u = torch.exp(z)  # both sides use the same computed u: the identity is about the quotient rule

    def normalise(t: torch.Tensor) -> torch.Tensor:
        e = torch.exp(t)
        return e / e.sum()

    jac = torch.autograd.functional.jacobian(normalise, z).numpy()
    f = (u / u.sum()).numpy()
    eye = np.eye(m)
    rhs = f[:, None] * (eye - f[None, :])
    mag = f[:, None] * (eye + f[None, :])
    # autograd: u/S/S (2) times the seed, a broadcast sum (m − 1), the add into grad_u (1), times u (1): k_L = m + 3;
    # formula: f_i, f_j (1 each), δ − f_j (1), product (1): k_R = 4
    assert_identity(jac, rhs, mag, m + 3, 4)


@spec("T16")
@given(st.data(), dims(1, 4), dims(1, 6), dims(1, 3), st.sampled_from([1.0, 8.0]))
def test_t16_softmax_jacobian_times_vector_and_zero_row_sums(data, n, m, d, bound):
    Z, q, h, E = data.draw(arrays((n, m), (m, 1), (m, d), (n, d), bound=bound))
    f = softmax_rows(Z)
    q = q[:, 0]
    for fr in f:
        lhs = (np.diag(fr) - np.outer(fr, fr)) @ q
        rhs = fr * q - (fr @ q) * fr
        mag = fr * abs(q) + (fr @ abs(q)) * fr
        # k_L = 1 (outer) + 1 (subtract) + m (dot); k_R = m (⟨f,q⟩) + 1 (scale) + 1 (subtract)
        assert_identity(lhs, rhs, mag, m + 2, m + 2)
    # rows of p (gradient.chain_terms) sum to ⟨f,q⟩(1 − Σ f̂): the exact defect of the rounded softmax row
    # (measured with math.fsum) plus rounding: p1 (1), r (m), p2 (1), p (1), the check's own sum (m − 1): k = 2m + 2
    t = chain_terms(f, h, E)
    row_sums = t.p.sum(axis=1)
    fq = (f * abs(t.q)).sum(axis=1)
    mag = fq * (1 + f.sum(axis=1))
    defect = np.array([abs(1 - math.fsum(fr)) for fr in f])
    # a float64 softmax row sums to 1 within γ_{m+1} (sum of m terms, one division per entry)
    assert (defect <= gamma(m + 1, F64)).all(), defect
    k = 2 * m + 2
    bound_rows = (rounding_bound(mag / (1 - gamma(k, F64)), k, F64) + fq * defect) * (1 + gamma(3, F64))
    assert (abs(row_sums) <= bound_rows).all(), (row_sums, bound_rows)


# ---------------------------------------------------------------- T17


@spec("T17")
@given(dims(1, 7), dims(1, 7))
def test_t17_pair_index_is_a_bijection(n1, n2):
    images = [pair_index(i1, i2, n2) for i1 in range(n1) for i2 in range(n2)]
    assert sorted(images) == list(range(n1 * n2))
    assert all(divmod(pair_index(i1, i2, n2), n2) == (i1, i2) for i1 in range(n1) for i2 in range(n2))
    assert images == [int(np.ravel_multi_index((i1, i2), (n1, n2))) for i1 in range(n1) for i2 in range(n2)]


@spec("T17")
@given(st.data(), dims(), dims(), dims(), dims(), dims())
def test_t17_products_match_explicit_index_formulas(data, n1, n2, d1, d2, k):
    A, B, C, D = data.draw(arrays((n1, d1), (n2, d2), (n1, k), (n2, k)))
    K, KR = kron(A, B), khatri_rao(C, D)
    FS = face_split(C[: min(n1, n2)], D[: min(n1, n2)])
    for i1 in range(n1):
        for i2 in range(n2):
            for j1 in range(d1):
                for j2 in range(d2):
                    assert K[i1 * n2 + i2, j1 * d2 + j2] == A[i1, j1] * B[i2, j2]
            for l in range(k):
                assert KR[i1 * n2 + i2, l] == C[i1, l] * D[i2, l]
    for i in range(FS.shape[0]):
        for l1 in range(k):
            for l2 in range(k):
                assert FS[i, l1 * k + l2] == C[i, l1] * D[i, l2]


@spec("T17")
@given(st.data(), dims(), dims(), batches)
def test_t17_vec_unvec_inverse(data, r, c, batch):
    (X,) = data.draw(arrays((*batch, r, c)))
    v = vec(X)
    assert v.shape == (*batch, r * c)
    assert np.array_equal(unvec(v, r, c), X)
    assert np.array_equal(vec(unvec(v, r, c)), v)
    for i in range(r):
        for j in range(c):
            assert np.array_equal(v[..., i * c + j], X[..., i, j])
