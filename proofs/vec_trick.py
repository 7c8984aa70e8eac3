"""The vec / tensor trick on the shipped ``vec``, ``kron``, ``khatri_rao``, ``compose_X`` (T7–T11)."""

from __future__ import annotations

import numpy as np

from verified_ta.gradient import compose_X, compose_Y
from verified_ta.products import khatri_rao, kron, vec
from verified_ta.spec import spec

from .engine import Ops, Statement, SweptProof

__all__ = ["PROOFS"]

V = dict[str, np.ndarray]


def _identity(d: int) -> np.ndarray:
    return np.eye(d, dtype=int).astype(object)


@spec("T7")
def t7_vec_trick(v: V, ops: Ops, mutant: bool) -> Statement:
    """vec(A X B^T) = (A⊗B) vec(X); control: (B⊗A) vec(X) (swapped factor)."""
    a, x, b = v["A"], v["X"], v["B"]
    k = kron(b, a) if mutant else kron(a, b)
    return Statement(vec(a @ x @ b.T), k @ vec(x))


@spec("T7")
def t7_three_way_vec_trick(v: V, ops: Ops, mutant: bool) -> Statement:
    """vec(A1 X (A2⊗A3)^T) = (A1⊗A2⊗A3) vec(X) for X d×d²; control: (A1⊗A3⊗A2) vec(X)."""
    a1, a2, a3, x = v["A1"], v["A2"], v["A3"], v["X"]
    big = kron(kron(a1, a3), a2) if mutant else kron(kron(a1, a2), a3)
    return Statement(vec(a1 @ x @ kron(a2, a3).T), big @ vec(x))


@spec("T8")
def t8_factored_scores(v: V, ops: Ops, mutant: bool) -> Statement:
    """A1 X1 (X2⊘X3)^T (A2⊗A3)^T = (A1X1)((A2X2)⊘(A3X3))^T with X = compose_X(X1,X2,X3); control: (A3X3)⊘(A2X2)."""
    a1, a2, a3, x1, x2, x3 = (v[k] for k in ("A1", "A2", "A3", "X1", "X2", "X3"))
    k1, k2 = a2 @ x2, a3 @ x3
    right = khatri_rao(k2, k1) if mutant else khatri_rao(k1, k2)
    return Statement(a1 @ compose_X(x1, x2, x3) @ kron(a2, a3).T, (a1 @ x1) @ right.T)


@spec("T9")
def t9_identity_tensor(v: V, ops: Ops, mutant: bool) -> Statement:
    """A1 (I⊘I)^T (A2⊗A3)^T = A1 (A2⊘A3)^T and (A4⊗A5)(I⊘I) = A4⊘A5 (via compose_Y(I, I)); control: (A3⊘A2), (A5⊘A4)."""
    a1, a2, a3, a4, a5 = (v[k] for k in ("A1", "A2", "A3", "A4", "A5"))
    i_i = compose_Y(_identity(a1.shape[1]), _identity(a1.shape[1]))  # I⊘I, d² × d
    r1 = a1 @ (khatri_rao(a3, a2) if mutant else khatri_rao(a2, a3)).T
    r2 = khatri_rao(a5, a4) if mutant else khatri_rao(a4, a5)
    lhs1 = a1 @ i_i.T @ kron(a2, a3).T
    lhs2 = kron(a4, a5) @ i_i
    return Statement(np.concatenate([lhs1.reshape(-1), lhs2.reshape(-1)]), np.concatenate([r1.reshape(-1), r2.reshape(-1)]))


@spec("T10")
def t10_score_entries(v: V, ops: Ops, mutant: bool) -> Statement:
    """[Q(K1⊘K2)^T][i, a·n2+b] = Σ_l Q[i,l]K1[a,l]K2[b,l], the RHS by the SPEC §1 index formula; control: column b·n1+a."""
    q, k1, k2 = v["Q"], v["K1"], v["K2"]
    nq, n1, n2, d = q.shape[0], k1.shape[0], k2.shape[0], q.shape[1]
    rhs = np.empty((nq, n1 * n2), dtype=object)
    for i in range(nq):
        for a in range(n1):
            for b in range(n2):
                col = b * n1 + a if mutant else a * n2 + b
                rhs[i, col] = sum(q[i, l] * k1[a, l] * k2[b, l] for l in range(d))
    return Statement(q @ khatri_rao(k1, k2).T, rhs)


@spec("T11")
def t11_mode1_unfolding(v: V, ops: Ops, mutant: bool) -> Statement:
    """G1 (G2⊘G3)^T = mode-1 unfolding [a, b·d3+c] of Σ_l g1_l⊗g2_l⊗g3_l (built from its entries); control: [a, c·d2+b]."""
    g1, g2, g3 = v["G1"], v["G2"], v["G3"]
    d1, d2, d3, k = g1.shape[0], g2.shape[0], g3.shape[0], g1.shape[1]
    unfolding = np.empty((d1, d2 * d3), dtype=object)
    for a in range(d1):
        for b in range(d2):
            for c in range(d3):
                col = c * d2 + b if mutant else b * d3 + c
                unfolding[a, col] = sum(g1[a, l] * g2[b, l] * g3[c, l] for l in range(k))
    return Statement(g1 @ khatri_rao(g2, g3).T, unfolding)


PROOFS: list[SweptProof] = [
    SweptProof(
        ("T7",), "T7 vec trick", "vec(A X B^T) = (A⊗B) vec(X)", ("n1", "m1", "n2", "m2"),
        lambda s: {"A": (s["n1"], s["m1"]), "X": (s["m1"], s["m2"]), "B": (s["n2"], s["m2"])},
        t7_vec_trick, "swapped factor: (B⊗A) vec(X)", dict(n1=2, m1=2, n2=2, m2=2), default_max=4,
    ),
    SweptProof(
        ("T7",), "T7 three-way vec trick", "vec(A1 X (A2⊗A3)^T) = (A1⊗A2⊗A3) vec(X)", ("n", "d"),
        lambda s: {"A1": (s["n"], s["d"]), "A2": (s["n"], s["d"]), "A3": (s["n"], s["d"]), "X": (s["d"], s["d"] ** 2)},
        t7_three_way_vec_trick, "swapped factor: (A1⊗A3⊗A2) vec(X)", dict(n=2, d=2), default_max=4,
    ),
    SweptProof(
        ("T8",), "T8 factored scores", "A1 X1 (X2⊘X3)^T (A2⊗A3)^T = (A1X1)((A2X2)⊘(A3X3))^T", ("n", "d", "k"),
        lambda s: {
            "A1": (s["n"], s["d"]), "A2": (s["n"], s["d"]), "A3": (s["n"], s["d"]),
            "X1": (s["d"], s["k"]), "X2": (s["d"], s["k"]), "X3": (s["d"], s["k"]),
        },
        t8_factored_scores, "swapped factor: (A3X3)⊘(A2X2)", dict(n=2, d=1, k=1), default_max=4,
    ),
    SweptProof(
        ("T9",), "T9 identity tensor", "A1(I⊘I)^T(A2⊗A3)^T = A1(A2⊘A3)^T; (A4⊗A5)(I⊘I) = A4⊘A5", ("n", "d"),
        lambda s: {k: (s["n"], s["d"]) for k in ("A1", "A2", "A3", "A4", "A5")},
        t9_identity_tensor, "swapped factors: A3⊘A2, A5⊘A4", dict(n=2, d=1), default_max=4,
    ),
    SweptProof(
        ("T10",), "T10 score entries", "[Q(K1⊘K2)^T][i, a·n2+b] = Σ_l Q[i,l]K1[a,l]K2[b,l]", ("nq", "n1", "n2", "d"),
        lambda s: {"Q": (s["nq"], s["d"]), "K1": (s["n1"], s["d"]), "K2": (s["n2"], s["d"])},
        t10_score_entries, "wrong index order: column b·n1+a", dict(nq=1, n1=2, n2=2, d=1), default_max=4,
    ),
    SweptProof(
        ("T11",), "T11 mode-1 unfolding", "G1(G2⊘G3)^T = unfold_1(Σ_l g1_l⊗g2_l⊗g3_l)", ("d1", "d2", "d3", "k"),
        lambda s: {"G1": (s["d1"], s["k"]), "G2": (s["d2"], s["k"]), "G3": (s["d3"], s["k"])},
        t11_mode1_unfolding, "wrong index order: column c·d2+b", dict(d1=1, d2=2, d3=2, k=1), default_max=4,
    ),
]
