"""Index maps (T17): the pair map of SPEC §1 for every n1, n2 (integer arithmetic), and the shipped products realise it.

The all-sizes part is about ``verified_ta.products.pair_index`` applied to symbolic z3 Ints; the swept part
checks that ``kron``, ``khatri_rao``, ``face_split``, ``vec`` and ``unvec`` (numpy reshape) place entries exactly
where ``pair_index`` says.
"""

from __future__ import annotations

import numpy as np
import z3

from verified_ta.products import face_split, khatri_rao, kron, pair_index, unvec, vec
from verified_ta.spec import spec

from .allsizes import AllSizesProof, Obligation, solve_control
from .engine import ControlResult, Ops, Statement, SweptProof
from .traced import traced_proof
from .tracing import Traced

__all__ = ["PROOFS", "ALL_SIZES", "TRACED", "left_inverse"]

n1, n2, i1, i2, j1, j2, k = z3.Ints("n1 n2 i1 i2 j1 j2 k")


def _in_range(a: z3.ArithRef, n: z3.ArithRef) -> z3.BoolRef:
    return z3.And(0 <= a, a < n)


def left_inverse(a: z3.ArithRef, b: z3.ArithRef, m: z3.ArithRef) -> z3.BoolRef:
    """pair_index(a, b, m) div m = a and mod m = b (the fact recursive-sum inductions cite, for a ≥ 0, 0 ≤ b < m)."""
    p = pair_index(a, b, m)
    return z3.And(p / m == a, p % m == b)


@spec("T17")
def t17_obligations(stride: z3.ArithRef = n2) -> list[Obligation]:
    """(i1, i2) ↦ i1·n2 + i2 maps [n1]×[n2] into [n1n2] injectively and onto, with inverse k ↦ (k div n2, k mod n2).

    ``stride`` is the multiplier of i1 (n2 in the gauge; the negative control passes n1: wrong index order).
    """
    sizes = (n1 >= 1, n2 >= 1)
    dom_i = (_in_range(i1, n1), _in_range(i2, n2))
    dom_j = (_in_range(j1, n1), _in_range(j2, n2))
    p = pair_index(i1, i2, stride)
    return [
        Obligation("into [n1·n2]", (*sizes, *dom_i), _in_range(p, n1 * n2)),
        Obligation("injective", (*sizes, *dom_i, *dom_j, p == pair_index(j1, j2, stride)), z3.And(i1 == j1, i2 == j2)),
        Obligation("left inverse (div, mod)", (i1 >= 0, _in_range(i2, n2)), left_inverse(i1, i2, n2)),
        Obligation(
            "onto, right inverse", (*sizes, _in_range(k, n1 * n2)),
            z3.And(_in_range(k / n2, n1), _in_range(k % n2, n2), pair_index(k / n2, k % n2, n2) == k),
        ),
    ]


def _control(rlimit: int, timeout_ms: int) -> ControlResult:
    """Wrong index order i1·n1 + i2: not injective on [n1]×[n2]; replay the colliding pairs in Python ints."""
    ob = t17_obligations(stride=n1)[1]
    formulas = [*ob.hypotheses, z3.Not(ob.goal)]

    def replay(m: z3.ModelRef) -> tuple[float, float]:
        v = {x: m.eval(x, model_completion=True).as_long() for x in (n1, n2, i1, i2, j1, j2)}
        ok = all(0 <= v[a] < v[n] for a, n in ((i1, n1), (j1, n1), (i2, n2), (j2, n2)))
        collide = ok and (v[i1], v[i2]) != (v[j1], v[j2]) and v[i1] * v[n1] + v[i2] == v[j1] * v[n1] + v[j2]
        # a collision: two distinct pairs, one index; the "gap" is the distance between the pairs
        gap = float(abs(v[i1] - v[j1]) + abs(v[i2] - v[j2])) if collide else 0.0
        return gap, float(np.abs(np.array([v[i1] - v[j1], v[i2] - v[j2]], dtype=float)).sum()) if collide else 0.0

    return solve_control(formulas, replay, rlimit, timeout_ms)


ALL_SIZES: list[AllSizesProof] = [
    AllSizesProof(
        ("T17",), "T17 pair map is a bijection (all n1, n2)",
        "(i1,i2) ↦ i1·n2+i2 : [n1]×[n2] → [n1n2] bijective, inverse (div, mod)",
        t17_obligations, "wrong index order: i1·n1 + i2", _control,
    ),
]


@spec("T17")
def t17_shipped_index_maps(v: dict[str, np.ndarray], ops: Ops, mutant: bool) -> Statement:
    """Entries of the shipped kron, khatri_rao, face_split, vec sit at pair_index; unvec∘vec = id, vec∘unvec = id.

    The right side is built entry by entry from the SPEC §1 formulas. Control: pair_index(i2, i1, n1) (wrong order).
    """
    a, b, c, d = v["A"], v["B"], v["C"], v["D"]
    (na, da), (nb, db) = a.shape, b.shape
    pi = (lambda x, y, m, mx: pair_index(y, x, mx)) if mutant else (lambda x, y, m, mx: pair_index(x, y, m))
    kr = np.empty((na * nb, da * db), dtype=object)
    for x1, y1, x2, y2 in np.ndindex(na, da, nb, db):
        kr[pi(x1, x2, nb, na), pi(y1, y2, db, da)] = a[x1, y1] * b[x2, y2]
    kh = np.empty((na * c.shape[0], da), dtype=object)  # C has da columns: khatri_rao(A, C)
    for x1, x2, l in np.ndindex(na, c.shape[0], da):
        kh[pi(x1, x2, c.shape[0], na), l] = a[x1, l] * c[x2, l]
    fs = np.empty((na, da * d.shape[1]), dtype=object)  # D has na rows: face_split(A, D)
    for x, l1, l2 in np.ndindex(na, da, d.shape[1]):
        fs[x, pi(l1, l2, d.shape[1], da)] = a[x, l1] * d[x, l2]
    ve = np.empty(na * da, dtype=object)
    for x, y in np.ndindex(na, da):
        ve[pi(x, y, da, na)] = a[x, y]
    lhs = [kron(a, b), khatri_rao(a, c), face_split(a, d), vec(a), unvec(vec(a), na, da), vec(unvec(ve, na, da))]
    rhs = [kr, kh, fs, ve, a, ve]
    return Statement(np.concatenate([np.asarray(x).reshape(-1) for x in lhs]),
                     np.concatenate([np.asarray(x).reshape(-1) for x in rhs]))


PROOFS: list[SweptProof] = [
    SweptProof(
        ("T17",), "T17 shipped products realise the pair map",
        "kron/khatri_rao/face_split/vec entries at pair_index; unvec∘vec = id; vec∘unvec = id", ("na", "da", "nb", "db", "nc", "kd"),
        lambda s: {"A": (s["na"], s["da"]), "B": (s["nb"], s["db"]), "C": (s["nc"], s["da"]), "D": (s["na"], s["kd"])},
        t17_shipped_index_maps, "wrong index order: pair_index(i2, i1, n1)",
        dict(na=2, da=2, nb=3, db=1, nc=1, kd=1), default_max=3,
    ),
]


def _pair(index, size, trace, wrong: bool):
    """SPEC §1 read backwards: row i1·n2 + i2 ↦ (i1, i2) (div, mod by n2); ``wrong`` swaps the pair (control)."""
    hi, lo = index.divmod_by(size, trace)
    return (lo, hi) if wrong else (hi, lo)


def _formula(shape, entry, like: Traced) -> Traced:
    return Traced(shape, entry, like.trace)


@spec("T17")
def t17_kron_formula(v: dict[str, Traced], ops: Ops, mutant: bool) -> Statement:
    """kron(A, B)[(i1·n2+i2), (j1·d2+j2)] = A[i1,j1]·B[i2,j2] (SPEC §1); control: pairs read in swapped order."""
    a, b = v["A"], v["B"]
    (na, da), (nb, db) = a.shape, b.shape

    def entry(idx):
        (x1, x2), (y1, y2) = _pair(idx[0], nb, a.trace, mutant), _pair(idx[1], db, a.trace, mutant)
        return a.entry((x1, y1)) * b.entry((x2, y2))

    return Statement(kron(a, b), _formula((na * nb, da * db), entry, a))


@spec("T17")
def t17_khatri_rao_formula(v: dict[str, Traced], ops: Ops, mutant: bool) -> Statement:
    """khatri_rao(C, D)[(i1·n2+i2), l] = C[i1,l]·D[i2,l] (SPEC §1); control: swapped pair."""
    c, d = v["C"], v["D"]
    (nc, k), (nd, _) = c.shape, d.shape

    def entry(idx):
        x1, x2 = _pair(idx[0], nd, c.trace, mutant)
        return c.entry((x1, idx[1])) * d.entry((x2, idx[1]))

    return Statement(khatri_rao(c, d), _formula((nc * nd, k), entry, c))


@spec("T17")
def t17_face_split_formula(v: dict[str, Traced], ops: Ops, mutant: bool) -> Statement:
    """face_split(C, D)[i, (l1·k2+l2)] = C[i,l1]·D[i,l2] (SPEC §1); control: swapped pair."""
    c, d = v["C"], v["F"]
    (n, k1), (_, k2) = c.shape, d.shape

    def entry(idx):
        y1, y2 = _pair(idx[1], k2, c.trace, mutant)
        return c.entry((idx[0], y1)) * d.entry((idx[0], y2))

    return Statement(face_split(c, d), _formula((n, k1 * k2), entry, c))


@spec("T17")
def t17_vec_formula(v: dict[str, Traced], ops: Ops, mutant: bool) -> Statement:
    """vec(X)[i·c + j] = X[i, j] (row-major, SPEC §1); control: swapped pair."""
    x = v["X"]
    r, c = x.shape
    return Statement(vec(x), _formula((r * c,), lambda idx: x.entry(_pair(idx[0], c, x.trace, mutant)), x))


@spec("T17")
def t17_unvec_inverts_vec(v: dict[str, Traced], ops: Ops, mutant: bool) -> Statement:
    """unvec(vec(X)) = X and vec(unvec(w)) = w; control: unvec with rows and columns exchanged (then .T)."""
    x = v["X"]
    r, c = x.shape
    back = unvec(vec(x), c, r).T if mutant else unvec(vec(x), r, c)
    return Statement(back, _formula(x.shape, x.entry, x))


@spec("T17")
def t17_vec_inverts_unvec(v: dict[str, Traced], ops: Ops, mutant: bool) -> Statement:
    """vec(unvec(w, r, c)) = w; control: unvec with rows and columns exchanged, then transposed."""
    w = v["w"]
    r, c = v["X"].shape
    there = unvec(w, c, r).T if mutant else unvec(w, r, c)
    return Statement(vec(there), _formula(w.shape, w.entry, w))


def _traced(name: str, statement: str, build, shapes, control_dims) -> AllSizesProof:
    dims = tuple(control_dims)
    carrier = SweptProof(("T17",), name, statement, dims, shapes, build, "pair read in swapped order",
                         control_dims, default_max=1)
    return traced_proof(carrier, name=name)


TRACED: list[AllSizesProof] = [
    _traced("T17 kron realises SPEC §1", "kron(A,B)[(i1·n2+i2),(j1·d2+j2)] = A[i1,j1]·B[i2,j2]", t17_kron_formula,
            lambda s: {"A": (s["n1"], s["d1"]), "B": (s["n2"], s["d2"])}, dict(n1=2, d1=1, n2=2, d2=1)),
    _traced("T17 khatri_rao realises SPEC §1", "khatri_rao(C,D)[(i1·n2+i2), l] = C[i1,l]·D[i2,l]",
            t17_khatri_rao_formula, lambda s: {"C": (s["n1"], s["k"]), "D": (s["n2"], s["k"])},
            dict(n1=2, n2=2, k=1)),
    _traced("T17 face_split realises SPEC §1", "face_split(C,D)[i, (l1·k2+l2)] = C[i,l1]·D[i,l2]",
            t17_face_split_formula, lambda s: {"C": (s["n"], s["k1"]), "F": (s["n"], s["k2"])},
            dict(n=1, k1=2, k2=2)),
    _traced("T17 vec realises SPEC §1", "vec(X)[i·c + j] = X[i, j]", t17_vec_formula,
            lambda s: {"X": (s["r"], s["c"])}, dict(r=2, c=2)),
    _traced("T17 unvec inverts vec", "unvec(vec(X), r, c) = X", t17_unvec_inverts_vec,
            lambda s: {"X": (s["r"], s["c"])}, dict(r=2, c=3)),
    _traced("T17 vec inverts unvec", "vec(unvec(w, r, c)) = w", t17_vec_inverts_unvec,
            lambda s: {"X": (s["r"], s["c"]), "w": (s["r"] * s["c"],)}, dict(r=2, c=3)),
]
