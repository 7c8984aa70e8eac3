"""The index lemma, for every size, by induction: Σ_{j<m1·m2} g(j) = (Σ_{x<m1} a(x))·(Σ_{y<m2} b(y))
whenever g(q·m2 + t) = a(q)·b(t) for all 0 ≤ q < m1, 0 ≤ t < m2.

g, a, b are uninterpreted functions ℤ → ℝ and m1, m2 symbolic integers, so the lemma holds for any terms put in
their place (a valid formula stays valid under substitution for its function symbols). :mod:`proofs.allsizes`
puts the shipped code's own entries there: g the summand of one side of an identity, a and b the summands of
the other side, and proves the lemma's hypothesis for them (the *link*). With F(t) = Σ_{j<t} g(j),
SA(t) = Σ_{x<t} a(x), SB(t) = Σ_{y<t} b(y) (z3 recursive functions), two inductions, each split into a base
query and a step query:

- block lemma, on t ∈ [0, m2]:  F(q·m2 + t) = F(q·m2) + a(q)·SB(t), for 0 ≤ q < m1;
- outer lemma, on q ∈ [0, m1]:  F(q·m2) = SA(q)·SB(m2)  (the step cites the block lemma at t = m2).

The recursion equations F(x+1) = F(x) + g(x), F(0) = 0 (and for SA, SB) are proved from the recursive
definitions as their own queries; the induction queries then use plain uninterpreted F, SA, SB with ground
instances of those equations only (z3's lazy unfolding of recursive functions made the steps time out at
random), plus a one-line distributivity lemma, itself a proved query.
"""

from __future__ import annotations

import itertools

import z3

from verified_ta.spec import spec

from .allsizes import Obligation

__all__ = ["index_lemma_obligations"]

_FRESH = itertools.count()


@spec("T17")
def index_lemma_obligations() -> list[Obligation]:
    """The obligations of the index lemma (fresh symbols on every call, so two proofs never share a definition)."""
    tag = next(_FRESH)
    fn = lambda name: z3.Function(f"{name}_{tag}", z3.IntSort(), z3.RealSort())  # noqa: E731
    g, a, b = fn("g"), fn("a"), fn("b")
    m1, m2, q, t, x, base = z3.Ints(f"m1_{tag} m2_{tag} q_{tag} t_{tag} x_{tag} base_{tag}")

    rec = {name: z3.RecFunction(f"{name}_rec_{tag}", z3.IntSort(), z3.RealSort()) for name in ("F", "SA", "SB")}
    v = z3.Int(f"v_{tag}")
    for name, term in (("F", g), ("SA", a), ("SB", b)):
        z3.RecAddDefinition(rec[name], [v], z3.If(v <= 0, z3.RealVal(0), rec[name](v - 1) + term(v - 1)))
    recurrences = [
        Obligation(f"{name}: definition unfolds at x+1", (x >= 0,), rec[name](x + 1) == rec[name](x) + term(x))
        for name, term in (("F", g), ("SA", a), ("SB", b))
    ] + [Obligation(f"{name}: empty sum", (), rec[name](0) == 0) for name in ("F", "SA", "SB")]

    # the inductive queries use plain uninterpreted F, SA, SB constrained only by ground instances of the
    # recurrences above: they hold for any functions satisfying them, in particular for the recursive sums
    F, SA, SB = (z3.Function(f"{name}u_{tag}", z3.IntSort(), z3.RealSort()) for name in ("F", "SA", "SB"))

    def step(fn_, term, at):  # ground instance of a recurrence
        return fn_(at + 1) == fn_(at) + term(at)

    block = lambda tt: F(base + tt) == F(base) + a(q) * SB(tt)  # noqa: E731  (base stands for q·m2)
    outer = lambda qq: F(qq * m2) == SA(qq) * SB(m2)  # noqa: E731
    sizes = (m1 >= 0, m2 >= 1, q >= 0, q < m1, base == q * m2)
    link = g(base + t) == a(q) * b(t)  # the lemma's hypothesis at (q, t): what each identity proves
    distribute = a(q) * SB(t + 1) == a(q) * SB(t) + a(q) * b(t)
    return [
        *recurrences,
        Obligation("block lemma: base t = 0", (*sizes, SB(0) == 0), block(0)),
        Obligation("distributivity: a(q)·SB(t+1) = a(q)·SB(t) + a(q)·b(t)", (step(SB, b, t),), distribute),
        Obligation("block lemma: step t → t+1",
                   (*sizes, t >= 0, t < m2, block(t), step(F, g, base + t), step(SB, b, t), link, distribute),
                   block(t + 1)),
        Obligation("outer lemma: base q = 0", (m2 >= 1, F(0) == 0, SA(0) == 0), outer(0)),
        Obligation("outer lemma: step q → q+1", (*sizes, outer(q), block(m2), step(SA, a, q)), outer(q + 1)),
        Obligation("lemma: F(m1·m2) = SA(m1)·SB(m2)", (m1 >= 0, m2 >= 1, z3.substitute(outer(q), (q, m1))),
                   F(m1 * m2) == SA(m1) * SB(m2)),
    ]
