"""Hadamard reductions on the shipped products (T3–T6): the identities the fast forward/gradient (A1, A2) rely on."""

from __future__ import annotations

import numpy as np

from verified_ta.products import face_split, khatri_rao, kron
from verified_ta.spec import spec

from .allsizes import AllSizesProof
from .engine import Ops, Statement, SweptProof
from .traced import traced_proof

__all__ = ["PROOFS", "ALL_SIZES"]

V = dict[str, np.ndarray]


@spec("T3")
def t3_gram_of_khatri_rao(v: V, ops: Ops, mutant: bool) -> Statement:
    """(V⊘W)^T (P⊘R) = (V^T P) ∘ (W^T R); control: (V^T R) ∘ (W^T P) (swapped factor)."""
    vv, w, p, r = v["V"], v["W"], v["P"], v["R"]
    rhs = (vv.T @ r) * (w.T @ p) if mutant else (vv.T @ p) * (w.T @ r)
    return Statement(khatri_rao(vv, w).T @ khatri_rao(p, r), rhs)


@spec("T4", "P34")
def t4_normaliser(v: V, ops: Ops, mutant: bool) -> Statement:
    """(V⊘W)^T (a⊗b) = (V^T a) ∘ (W^T b), and with a = b = 1 the normaliser (V^T 1)∘(W^T 1); control: swapped a, b."""
    vv, w, a, b = v["V"], v["W"], v["a"], v["b"]
    ones = np.ones((vv.shape[0], 1), dtype=object)
    rhs = (vv.T @ b) * (w.T @ a) if mutant else (vv.T @ a) * (w.T @ b)
    lhs = khatri_rao(vv, w).T @ kron(a, b)
    norm_lhs = khatri_rao(vv, w).T @ kron(ones, ones)
    norm_rhs = (vv.T @ ones) * (w.T @ ones)
    return Statement(np.concatenate([lhs, norm_lhs]), np.concatenate([rhs, norm_rhs]))


@spec("T4")
def t4_kron_vector(v: V, ops: Ops, mutant: bool) -> Statement:
    """(V⊘W)^T (a⊗b) = (V^T a) ∘ (W^T b) for V, a with n1 rows and W, b with n2 (a = b = 1: the normaliser);
    control: swapped a, b (needs n1 = n2)."""
    vv, w, a, b = v["V"], v["W"], v["a"], v["b"]
    rhs = (vv.T @ b) * (w.T @ a) if mutant else (vv.T @ a) * (w.T @ b)
    return Statement(khatri_rao(vv, w).T @ kron(a, b), rhs)


@spec("T5")
def t5_hadamard_of_low_rank(v: V, ops: Ops, mutant: bool) -> Statement:
    """(U1V1^T) ∘ (U2V2^T) = (U1⊖U2)(V1⊖V2)^T; control: (U1⊖U2)(V2⊖V1)^T (wrong index order)."""
    u1, u2, v1, v2 = v["U1"], v["U2"], v["V1"], v["V2"]
    right = face_split(v2, v1) if mutant else face_split(v1, v2)
    return Statement((u1 @ v1.T) * (u2 @ v2.T), face_split(u1, u2) @ right.T)


@spec("T6")
def t6_hadamard_of_khatri_rao_factorisations(v: V, ops: Ops, mutant: bool) -> Statement:
    """(U1(V1⊘W1)^T)∘(U2(V2⊘W2)^T) = (U1⊖U2)((V1⊖V2)⊘(W1⊖W2))^T and (V1⊘W1)⊖(V2⊘W2) = (V1⊖V2)⊘(W1⊖W2).

    Control: (W1⊖W2) and (V1⊖V2) swapped in the ⊘ on the right (wrong index order).
    """
    u1, u2, v1, v2, w1, w2 = (v[k] for k in ("U1", "U2", "V1", "V2", "W1", "W2"))
    vs, ws = face_split(v1, v2), face_split(w1, w2)
    right = khatri_rao(ws, vs) if mutant else khatri_rao(vs, ws)
    lhs = (u1 @ khatri_rao(v1, w1).T) * (u2 @ khatri_rao(v2, w2).T)
    stacked_lhs = face_split(khatri_rao(v1, w1), khatri_rao(v2, w2))
    return Statement(
        np.concatenate([lhs.reshape(-1), stacked_lhs.reshape(-1)]),
        np.concatenate([(face_split(u1, u2) @ right.T).reshape(-1), right.reshape(-1)]),
    )


PROOFS: list[SweptProof] = [
    SweptProof(
        ("T3",), "T3 Gram of ⊘", "(V⊘W)^T(P⊘R) = (V^T P)∘(W^T R)", ("n1", "n2", "k1", "k2"),
        lambda s: {"V": (s["n1"], s["k1"]), "W": (s["n2"], s["k1"]), "P": (s["n1"], s["k2"]), "R": (s["n2"], s["k2"])},
        t3_gram_of_khatri_rao, "swapped factor: (V^T R)∘(W^T P)", dict(n1=2, n2=2, k1=1, k2=1), default_max=4,
    ),
    SweptProof(
        ("T4", "P34"), "T4 ⊘ against ⊗ vector; normaliser", "(V⊘W)^T(a⊗b) = (V^T a)∘(W^T b); (V⊘W)^T 1 = (V^T 1)∘(W^T 1)",
        ("n", "k"),
        lambda s: {"V": (s["n"], s["k"]), "W": (s["n"], s["k"]), "a": (s["n"], 1), "b": (s["n"], 1)},
        t4_normaliser, "swapped factor: (V^T b)∘(W^T a)", dict(n=2, k=1), default_max=5,
    ),
    SweptProof(
        ("T5",), "T5 Hadamard of low rank", "(U1V1^T)∘(U2V2^T) = (U1⊖U2)(V1⊖V2)^T", ("n", "m", "k1", "k2"),
        lambda s: {"U1": (s["n"], s["k1"]), "U2": (s["n"], s["k2"]), "V1": (s["m"], s["k1"]), "V2": (s["m"], s["k2"])},
        t5_hadamard_of_low_rank, "wrong index order: (V2⊖V1)", dict(n=1, m=1, k1=2, k2=2), default_max=4,
    ),
    SweptProof(
        ("T6",), "T6 Hadamard of ⊘ factorisations",
        "(U1(V1⊘W1)^T)∘(U2(V2⊘W2)^T) = (U1⊖U2)((V1⊖V2)⊘(W1⊖W2))^T; (V1⊘W1)⊖(V2⊘W2) = (V1⊖V2)⊘(W1⊖W2)",
        ("n", "m1", "m2", "k1", "k2"),
        lambda s: {
            "U1": (s["n"], s["k1"]), "U2": (s["n"], s["k2"]), "V1": (s["m1"], s["k1"]), "V2": (s["m1"], s["k2"]),
            "W1": (s["m2"], s["k1"]), "W2": (s["m2"], s["k2"]),
        },
        t6_hadamard_of_khatri_rao_factorisations, "wrong index order: (W1⊖W2)⊘(V1⊖V2)", dict(n=1, m1=2, m2=2, k1=1, k2=1),
        default_max=3,
    ),
]

_T4_TWO_SIZES = SweptProof(
    ("T4", "P34"), "T4 ⊘ against ⊗ vector", "(V⊘W)^T(a⊗b) = (V^T a)∘(W^T b)", ("n1", "n2", "k"),
    lambda s: {"V": (s["n1"], s["k"]), "W": (s["n2"], s["k"]), "a": (s["n1"], 1), "b": (s["n2"], 1)},
    t4_kron_vector, "swapped factor: (V^T b)∘(W^T a)", dict(n1=2, n2=2, k=1), default_max=1,
)

#: T3, T4 (with n1 ≠ n2 allowed) and T5 traced on symbolic sizes (T6 stacks two statements: swept only)
ALL_SIZES: list[AllSizesProof] = [traced_proof(PROOFS[0]), traced_proof(_T4_TWO_SIZES), traced_proof(PROOFS[2])]
