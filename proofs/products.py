"""Products and mixed-product rules, proved on the shipped ``kron`` / ``khatri_rao`` / ``face_split`` (T1, T2, T12, T13)."""

from __future__ import annotations


import numpy as np

from verified_ta.products import face_split, khatri_rao, kron
from verified_ta.spec import spec

from .allsizes import AllSizesProof
from .engine import Ops, Statement, SweptProof
from .traced import traced_proof

__all__ = ["PROOFS", "ALL_SIZES"]

V = dict[str, np.ndarray]


@spec("T1")
def t1_mixed_product(v: V, ops: Ops, mutant: bool) -> Statement:
    """(A⊗B)(C⊘D) = (AC)⊘(BD); control: swapped factors (BD)⊘(AC) on the right."""
    a, b, c, d = v["A"], v["B"], v["C"], v["D"]
    rhs = khatri_rao(b @ d, a @ c) if mutant else khatri_rao(a @ c, b @ d)
    return Statement(kron(a, b) @ khatri_rao(c, d), rhs)


@spec("T2")
def t2_transpose(v: V, ops: Ops, mutant: bool) -> Statement:
    """(C⊘D)^T = C^T ⊖ D^T; control: (C⊘D)^T = D^T ⊖ C^T."""
    c, d = v["C"], v["D"]
    rhs = face_split(d.T, c.T) if mutant else face_split(c.T, d.T)
    return Statement(khatri_rao(c, d).T, rhs)


@spec("T12")
def t12_transposed_kron(v: V, ops: Ops, mutant: bool) -> Statement:
    """(A2⊗A3)^T (V⊘W) = (A2^T V) ⊘ (A3^T W); control: swapped factors (A3^T W) ⊘ (A2^T V)."""
    a2, a3, vv, w = v["A2"], v["A3"], v["V"], v["W"]
    rhs = khatri_rao(a3.T @ w, a2.T @ vv) if mutant else khatri_rao(a2.T @ vv, a3.T @ w)
    return Statement(kron(a2, a3).T @ khatri_rao(vv, w), rhs)


@spec("T13")
def t13_kron_transpose(v: V, ops: Ops, mutant: bool) -> Statement:
    """(A⊗B)^T = A^T ⊗ B^T; control: B^T ⊗ A^T."""
    a, b = v["A"], v["B"]
    rhs = kron(b.T, a.T) if mutant else kron(a.T, b.T)
    return Statement(kron(a, b).T, rhs)


@spec("T13")
def t13_kron_mixed_product(v: V, ops: Ops, mutant: bool) -> Statement:
    """(A⊗B)(C⊗D) = (AC)⊗(BD); control: (BD)⊗(AC) (swapped factors)."""
    a, b, c, d = v["A"], v["B"], v["C"], v["D"]
    rhs = kron(b @ d, a @ c) if mutant else kron(a @ c, b @ d)
    return Statement(kron(a, b) @ kron(c, d), rhs)


@spec("T13")
def t13_khatri_rao_associative(v: V, ops: Ops, mutant: bool) -> Statement:
    """(A⊘B)⊘C = A⊘(B⊘C); control: (A⊘B)⊘C = B⊘(A⊘C)."""
    a, b, c = v["A"], v["B"], v["C"]
    rhs = khatri_rao(b, khatri_rao(a, c)) if mutant else khatri_rao(a, khatri_rao(b, c))
    return Statement(khatri_rao(khatri_rao(a, b), c), rhs)


def _m(*shape: int) -> tuple[int, ...]:
    """A shape tuple (readability in the catalogue below)."""
    return tuple(shape)


PROOFS: list[SweptProof] = [
    SweptProof(
        ("T1",), "T1 mixed product", "(A⊗B)(C⊘D) = (AC)⊘(BD)", ("n1", "d1", "n2", "d2", "k"),
        lambda s: {"A": _m(s["n1"], s["d1"]), "B": _m(s["n2"], s["d2"]), "C": _m(s["d1"], s["k"]), "D": _m(s["d2"], s["k"])},
        t1_mixed_product, "swapped factors: (BD)⊘(AC)", dict(n1=2, d1=2, n2=2, d2=2, k=2), default_max=3,
    ),
    SweptProof(
        ("T2",), "T2 ⊘ transpose", "(C⊘D)^T = C^T ⊖ D^T", ("d1", "d2", "k"),
        lambda s: {"C": _m(s["d1"], s["k"]), "D": _m(s["d2"], s["k"])},
        t2_transpose, "swapped factors: D^T ⊖ C^T", dict(d1=2, d2=2, k=1), default_max=5,
    ),
    SweptProof(
        ("T12",), "T12 transposed Kronecker", "(A2⊗A3)^T(V⊘W) = (A2^T V)⊘(A3^T W)", ("n2", "n3", "d2", "d3", "k"),
        lambda s: {"A2": _m(s["n2"], s["d2"]), "A3": _m(s["n3"], s["d3"]), "V": _m(s["n2"], s["k"]), "W": _m(s["n3"], s["k"])},
        t12_transposed_kron, "swapped factors: (A3^T W)⊘(A2^T V)", dict(n2=2, n3=2, d2=2, d3=2, k=1), default_max=3,
    ),
    SweptProof(
        ("T13",), "T13 Kronecker transpose", "(A⊗B)^T = A^T⊗B^T", ("n1", "d1", "n2", "d2"),
        lambda s: {"A": _m(s["n1"], s["d1"]), "B": _m(s["n2"], s["d2"])},
        t13_kron_transpose, "swapped factors: B^T⊗A^T", dict(n1=2, d1=2, n2=2, d2=2), default_max=4,
    ),
    SweptProof(
        ("T13",), "T13 Kronecker mixed product", "(A⊗B)(C⊗D) = (AC)⊗(BD)", ("n1", "d1", "n2", "d2", "k1", "k2"),
        lambda s: {"A": _m(s["n1"], s["d1"]), "B": _m(s["n2"], s["d2"]), "C": _m(s["d1"], s["k1"]), "D": _m(s["d2"], s["k2"])},
        t13_kron_mixed_product, "swapped factors: (BD)⊗(AC)", dict(n1=2, d1=2, n2=2, d2=2, k1=1, k2=1), default_max=3,
    ),
    SweptProof(
        ("T13",), "T13 ⊘ associativity", "(A⊘B)⊘C = A⊘(B⊘C)", ("n1", "n2", "n3", "k"),
        lambda s: {"A": _m(s["n1"], s["k"]), "B": _m(s["n2"], s["k"]), "C": _m(s["n3"], s["k"])},
        t13_khatri_rao_associative, "swapped factors: B⊘(A⊘C)", dict(n1=2, n2=2, n3=1, k=1), default_max=4,
    ),
]

#: every identity above, traced on symbolic sizes (the same builders, so the same shipped code)
ALL_SIZES: list[AllSizesProof] = [traced_proof(p) for p in PROOFS]
