"""The finite-sum identities for every size, by induction (T1, T3, T4, T5, T12, T13).

Each identity's entry is a flattened double sum over j ∈ [m1·m2] of the SPEC §1 entry products, which factor
as a(j div m2)·b(j mod m2). With z3 recursive functions F(t) = Σ_{j<t} a(j div m2) b(j mod m2),
SA(t) = Σ_{j<t} a(j), SB(t) = Σ_{j<t} b(j) (matrices are uninterpreted functions Int×Int → Real, sizes and
indices symbolic Ints), the claim F(m1·m2) = SA(m1)·SB(m2) is proved by two inductions, each split into a
base-case query and a step query:

- block lemma, on t ∈ [0, m2]:  F(q·m2 + t) = F(q·m2) + a(q)·SB(t)  (the step cites T17's left inverse:
  (q·m2 + t) div m2 = q, mod = t, proved for all sizes in :mod:`proofs.index_maps` and restated here);
- outer lemma, on q ≥ 0:  F(q·m2) = SA(q)·SB(m2)  (the step cites the block lemma at t = m2).

The recursion equations F(x+1) = F(x) + a(x div m2)b(x mod m2), F(0) = 0 (and for SA, SB) are proved from the
recursive definitions as their own queries; the induction queries then use plain uninterpreted F, SA, SB with
ground instances of those equations only (z3's lazy unfolding of recursive functions made the steps time out
at random), plus two one-line hint lemmas (congruence, distributivity), each also a proved query.

The identity's two sides are then F(m1·m2) (left: the entry by the product definitions) and SA(m1)·SB(m2)
(right: the entry of the Hadamard / ⊘ / ⊗ of two ordinary matrix products).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import z3

from verified_ta.spec import spec

from .allsizes import AllSizesProof, Obligation
from .index_maps import left_inverse

__all__ = ["ALL_SIZES", "ProductOfSums"]

Term = Callable[[dict[str, Callable], z3.ArithRef], z3.ArithRef]


@dataclass(frozen=True)
class ProductOfSums:
    """An entry Σ_{j<m1·m2} a(j div m2)·b(j mod m2) whose factors a, b read the matrices (uninterpreted functions)."""

    key: str
    matrices: tuple[str, ...]
    a: Term
    b: Term


def _functions(inst: ProductOfSums) -> dict[str, z3.FuncDeclRef]:
    return {m: z3.Function(f"{inst.key}_{m}", z3.IntSort(), z3.IntSort(), z3.RealSort()) for m in inst.matrices}


_FRESH = itertools.count()


def _sums(inst: ProductOfSums, mats: dict, hi: Callable, lo: Callable, tag: str):
    """Recursive F(t) = Σ_{j<t} a(hi(j))·b(lo(j)), SA, SB (fresh names: z3 defines a recursive function once)."""
    tag = f"{tag}_{next(_FRESH)}"
    F = z3.RecFunction(f"F_{tag}", z3.IntSort(), z3.RealSort())
    SA = z3.RecFunction(f"SA_{tag}", z3.IntSort(), z3.RealSort())
    SB = z3.RecFunction(f"SB_{tag}", z3.IntSort(), z3.RealSort())
    t = z3.Int(f"t_{tag}")
    z3.RecAddDefinition(F, [t], z3.If(t <= 0, z3.RealVal(0), F(t - 1) + inst.a(mats, hi(t - 1)) * inst.b(mats, lo(t - 1))))
    z3.RecAddDefinition(SA, [t], z3.If(t <= 0, z3.RealVal(0), SA(t - 1) + inst.a(mats, t - 1)))
    z3.RecAddDefinition(SB, [t], z3.If(t <= 0, z3.RealVal(0), SB(t - 1) + inst.b(mats, t - 1)))
    return F, SA, SB


def _obligations(inst: ProductOfSums) -> Callable[[], list[Obligation]]:
    def build() -> list[Obligation]:
        mats = _functions(inst)
        m1, m2, q, t, x, base = z3.Ints(f"m1_{inst.key} m2_{inst.key} q_{inst.key} t_{inst.key}b x_{inst.key} base_{inst.key}")
        # the flattened index j ↦ (j div m2, j mod m2) enters as uninterpreted Hi, Lo: the inductions use only
        # the left-inverse facts Hi(q·m2 + t) = q, Lo(q·m2 + t) = t, which T17 proves for div and mod
        hi = z3.Function(f"Hi_{inst.key}", z3.IntSort(), z3.IntSort())
        lo = z3.Function(f"Lo_{inst.key}", z3.IntSort(), z3.IntSort())
        F, SA, SB = _sums(inst, mats, hi, lo, inst.key)
        a, b = (lambda i: inst.a(mats, i)), (lambda i: inst.b(mats, i))  # noqa: E731
        summand = lambda i: a(hi(i)) * b(lo(i))  # noqa: E731
        # the recursion equations of F, SA, SB (each proved from the recursive definition by one unfolding);
        # the inductive queries use their ground instances only, never the recursive definitions themselves
        recurrences = [
            Obligation(f"{name}: definition unfolds at x+1", (x >= 0,), fn(x + 1) == fn(x) + term(x))
            for name, fn, term in (("F", F, summand), ("SA", SA, a), ("SB", SB, b))
        ] + [Obligation(f"{name}: empty sum", (), fn(0) == 0) for name, fn in (("F", F), ("SA", SA), ("SB", SB))]

        # the inductive queries use plain uninterpreted F, SA, SB constrained only by ground instances of the
        # recurrences above (so z3 never unfolds a recursive definition there): they hold for any functions
        # satisfying the recurrences, in particular for the recursive sums
        F, SA, SB = (z3.Function(f"{n}u_{inst.key}_{next(_FRESH)}", z3.IntSort(), z3.RealSort()) for n in ("F", "SA", "SB"))

        def step(fn, term, at):  # ground instance of a recurrence
            return fn(at + 1) == fn(at) + term(at)

        # base stands for q·m2, so every sum argument is linear
        block = lambda tt: F(base + tt) == F(base) + a(q) * SB(tt)  # noqa: E731
        outer = lambda qq: F(qq * m2) == SA(qq) * SB(m2)  # noqa: E731
        size = (m2 >= 1, q >= 0, base >= 0)
        inverse = (hi(base + t) == q, lo(base + t) == t)
        congruent = summand(base + t) == a(q) * b(t)
        distribute = a(q) * SB(t + 1) == a(q) * SB(t) + a(q) * b(t)
        return [
            *recurrences,
            Obligation("T17: div, mod by m2 are left inverse at base = q·m2",
                       (m2 >= 1, q >= 0, t >= 0, t < m2, base == q * m2),
                       z3.And(left_inverse(q, t, m2), (base + t) / m2 == q, (base + t) % m2 == t)),
            Obligation("block lemma: base t = 0", (*size, SB(0) == 0), block(0)),
            Obligation("congruence: a(Hi(base+t))·b(Lo(base+t)) = a(q)·b(t)", inverse, congruent),
            Obligation("distributivity: a(q)·SB(t+1) = a(q)·SB(t) + a(q)·b(t)", (step(SB, b, t),), distribute),
            Obligation("block lemma: step t → t+1",
                       (*size, t >= 0, t < m2, block(t), step(F, summand, base + t), step(SB, b, t), congruent, distribute),
                       block(t + 1)),
            Obligation("outer lemma: base q = 0", (m2 >= 1, F(0) == 0, SA(0) == 0), outer(0)),
            Obligation("outer lemma: step q → q+1",
                       (*size, base == q * m2, outer(q), block(m2), step(SA, a, q)),  # block lemma at t = m2
                       outer(q + 1)),
            Obligation("identity: F(m1·m2) = SA(m1)·SB(m2)", (m1 >= 0, m2 >= 1, z3.substitute(outer(q), (q, m1))),
                       F(m1 * m2) == SA(m1) * SB(m2)),
        ]

    return build


def _control(inst: ProductOfSums) -> Callable:
    """Wrong index order (div and mod exchanged in the flattened sum), refuted at m1 = 2, m2 = 3 with the real div/mod."""

    def build():
        mats = _functions(inst)
        m1v, m2v = 2, 3
        F, SA, SB = _sums(inst, mats, lambda j: j % m2v, lambda j: j / m2v, f"{inst.key}_mut")
        formulas = [F(m1v * m2v) != SA(m1v) * SB(m2v)]

        def replay(model: z3.ModelRef) -> tuple[float, float]:
            def reader(as_float: bool) -> dict[str, Callable]:
                def entry(fn):
                    def get(i, j):
                        v = model.eval(fn(i, j), model_completion=True)
                        fr = Fraction(v.numerator_as_long(), v.denominator_as_long())
                        return float(fr) if as_float else fr
                    return get
                return {m: entry(fn) for m, fn in mats.items()}

            gaps = []
            for as_float in (False, True):
                r = reader(as_float)
                lhs = sum(inst.a(r, j % m2v) * inst.b(r, j // m2v) for j in range(m1v * m2v))
                rhs = sum(inst.a(r, x) for x in range(m1v)) * sum(inst.b(r, y) for y in range(m2v))
                gaps.append(float(abs(lhs - rhs)))
            return gaps[0], gaps[1]

        return formulas, replay

    return build


# Entries: free indices are fixed symbolic Ints (or literals in a replay); each factor reads two matrices.
def _ix(name: str) -> z3.ArithRef:
    return z3.Int(name)


T1 = ProductOfSums("T1", ("A", "B", "C", "D"),
                   lambda M, x: M["A"](_ix("i1"), x) * M["C"](x, _ix("l")), lambda M, y: M["B"](_ix("i2"), y) * M["D"](y, _ix("l")))
T3 = ProductOfSums("T3", ("V", "W", "P", "R"),
                   lambda M, x: M["V"](x, _ix("l")) * M["P"](x, _ix("m")), lambda M, y: M["W"](y, _ix("l")) * M["R"](y, _ix("m")))
T4 = ProductOfSums("T4", ("V", "W", "a", "b"),
                   lambda M, x: M["V"](x, _ix("l")) * M["a"](x, 0), lambda M, y: M["W"](y, _ix("l")) * M["b"](y, 0))
T5 = ProductOfSums("T5", ("U1", "U2", "V1", "V2"),
                   lambda M, x: M["U1"](_ix("i"), x) * M["V1"](_ix("j"), x), lambda M, y: M["U2"](_ix("i"), y) * M["V2"](_ix("j"), y))
T12 = ProductOfSums("T12", ("A2", "A3", "V", "W"),
                    lambda M, x: M["A2"](x, _ix("j1")) * M["V"](x, _ix("l")), lambda M, y: M["A3"](y, _ix("j2")) * M["W"](y, _ix("l")))
T13 = ProductOfSums("T13", ("A", "B", "C", "D"),
                    lambda M, x: M["A"](_ix("i1"), x) * M["C"](x, _ix("l1")), lambda M, y: M["B"](_ix("i2"), y) * M["D"](y, _ix("l2")))


@spec("T1")
def t1_all_sizes() -> AllSizesProof:
    """[(A⊗B)(C⊘D)][(i1,i2), l] = Σ_{j<d1d2} A[i1,j div d2]B[i2,j mod d2]C[j div d2,l]D[j mod d2,l] = (AC)[i1,l](BD)[i2,l]."""
    return AllSizesProof(("T1",), "T1 by induction (all sizes)", "(A⊗B)(C⊘D) = (AC)⊘(BD), every n1, d1, n2, d2, k",
                         _obligations(T1), "wrong index order (div/mod exchanged)", _control(T1))


@spec("T3")
def t3_all_sizes() -> AllSizesProof:
    """[(V⊘W)^T(P⊘R)][l, m] = Σ_{j<n1n2} V[j div n2,l]W[j mod n2,l]P[j div n2,m]R[j mod n2,m] = (V^T P)[l,m](W^T R)[l,m]."""
    return AllSizesProof(("T3",), "T3 by induction (all sizes)", "(V⊘W)^T(P⊘R) = (V^T P)∘(W^T R), every size",
                         _obligations(T3), "wrong index order (div/mod exchanged)", _control(T3))


@spec("T4")
def t4_all_sizes() -> AllSizesProof:
    """[(V⊘W)^T(a⊗b)][l] = Σ_j V[j div n,l]W[j mod n,l]a[j div n]b[j mod n] = (V^T a)[l](W^T b)[l]."""
    return AllSizesProof(("T4",), "T4 by induction (all sizes)", "(V⊘W)^T(a⊗b) = (V^T a)∘(W^T b), every size",
                         _obligations(T4), "wrong index order (div/mod exchanged)", _control(T4))


@spec("T5")
def t5_all_sizes() -> AllSizesProof:
    """[(U1⊖U2)(V1⊖V2)^T][i,j] = Σ_{l<k1k2} U1[i,l div k2]U2[i,l mod k2]V1[j,l div k2]V2[j,l mod k2] = (U1V1^T)[i,j](U2V2^T)[i,j]."""
    return AllSizesProof(("T5",), "T5 by induction (all sizes)", "(U1V1^T)∘(U2V2^T) = (U1⊖U2)(V1⊖V2)^T, every size",
                         _obligations(T5), "wrong index order (div/mod exchanged)", _control(T5))


@spec("T12")
def t12_all_sizes() -> AllSizesProof:
    """[(A2⊗A3)^T(V⊘W)][(j1,j2), l] = Σ_{i<n2n3} A2[i div n3,j1]A3[i mod n3,j2]V[i div n3,l]W[i mod n3,l] = (A2^T V)[j1,l](A3^T W)[j2,l]."""
    return AllSizesProof(("T12",), "T12 by induction (all sizes)", "(A2⊗A3)^T(V⊘W) = (A2^T V)⊘(A3^T W), every size",
                         _obligations(T12), "wrong index order (div/mod exchanged)", _control(T12))


@spec("T13")
def t13_all_sizes() -> AllSizesProof:
    """[(A⊗B)(C⊗D)][(i1,i2),(l1,l2)] = Σ_j A[i1,j div d2]B[i2,j mod d2]C[j div d2,l1]D[j mod d2,l2] = (AC)[i1,l1](BD)[i2,l2]."""
    return AllSizesProof(("T13",), "T13 mixed product by induction (all sizes)", "(A⊗B)(C⊗D) = (AC)⊗(BD), every size",
                         _obligations(T13), "wrong index order (div/mod exchanged)", _control(T13))


ALL_SIZES: list[AllSizesProof] = [t1_all_sizes(), t3_all_sizes(), t4_all_sizes(), t5_all_sizes(), t12_all_sizes(), t13_all_sizes()]
