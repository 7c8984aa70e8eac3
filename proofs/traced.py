"""All-sizes proofs of identities on the shipped code: trace the statement on symbolic sizes, then link it to the
index lemma (T1–T5, T12, T13, T17).

A swept proof whose builder uses only the shipped products, ``@``, ``*`` and ``.T`` is run once more on
:class:`proofs.tracing.Traced` leaves of symbolic shape (sizes are z3 Ints ≥ 1, matrices uninterpreted
functions Int × Int → Real). Each output dimension of size s1·…·sk is indexed by digits 0 ≤ xj < sj in Horner
form (onto by T17), and the two traced entries at that index are compared:

- no sums on either side: the entries must be equal (one query);
- a sum against a sum of the same length: the summands must be equal at every x in range;
- a sum Σ_{j<L} g(j) against a product of two sums (Σ_{x<La} a(x))(Σ_{y<Lb} b(y)): L = La·Lb as polynomials,
  and the *link* g(q·Lb + t) = a(q)·b(t) for 0 ≤ q < La, 0 ≤ t < Lb (or with a, b exchanged); the index lemma
  (:mod:`proofs.induction`, its own obligations in the same record) then gives equality.

Every symbolic division made while evaluating the entries adds its side condition (0 ≤ R < s, P ≥ 0) as an
obligation. Code that branches on a size, or does something the tracer does not model, is reported
``unknown``, never proved. The negative control is the swept proof's own (a concrete refuted mutant).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Callable

import z3

import numpy as np

from .allsizes import AllSizesProof, Obligation, solve_control
from .engine import ControlResult, ShapeMismatch, SweptProof, model_values, symbols
from .induction import index_lemma_obligations
from .tracing import NotTraceable, Poly, Prod, Sum, Trace, Traced, concrete_value, digits_for

__all__ = ["traced_proof", "link_obligations", "traced_control"]

_FRESH = itertools.count()


def _leaves(proof: SweptProof, tag: str) -> tuple[dict[str, Any], dict[str, z3.ArithRef], Trace, list[z3.BoolRef]]:
    sizes = {d: Poly(d) for d in proof.dims}
    env = {d: z3.Int(f"{d}_{tag}") for d in proof.dims}
    trace = Trace()
    leaves: dict[str, Any] = {}
    for name, shape in proof.shapes(sizes).items():
        fn = z3.Function(f"{name}_{tag}", *(z3.IntSort(),) * len(shape), z3.RealSort())

        def entry(idx: tuple[Poly, ...], fn=fn) -> z3.ArithRef:
            return fn(*(i.to_z3(env) for i in idx))

        leaves[name] = Traced(shape, entry, trace)
    size_facts = [env[d] >= proof.dim_min.get(d, 1) for d in proof.dims]
    if any(proof.dim_min.get(d, 1) < 1 for d in proof.dims):
        raise ValueError("all-sizes proofs need every size >= 1")
    return leaves, env, trace, size_facts


def _fresh_index(env: dict[str, z3.ArithRef], ranges: list[z3.BoolRef], name: str, size: Poly) -> Poly:
    env[name] = z3.Int(name)
    ranges += [env[name] >= 0, env[name] < size.to_z3(env)]
    return Poly(name)


def _side_conditions(trace: Trace, start: int, env: dict, ranges: list[z3.BoolRef], what: str) -> list[Obligation]:
    out = []
    for p, r, s in trace.side_conditions[start:]:
        goal = z3.And(r.to_z3(env) >= 0, r.to_z3(env) < s.to_z3(env), p.to_z3(env) >= 0)
        out.append(Obligation(f"{what}: index split F = ({p})·({s}) + ({r}) has 0 ≤ R < s, P ≥ 0",
                              tuple(ranges), goal, refutes=False))
    return out


def _plain(e: Any) -> bool:
    return not isinstance(e, (Sum, Prod))


def _sum_against_product(lhs: Sum, rhs: Prod, env: dict, ranges: list, trace: Trace, tag: str) -> list[Obligation]:
    """The link of Σ_{j<L} g(j) with (Σ a)(Σ b): L = La·Lb and g(q·Lb + t) = a(q)·b(t) (a, b in either order)."""
    if len(rhs.factors) != 2 or not all(isinstance(f, Sum) for f in rhs.factors):
        raise NotTraceable(f"the index lemma needs a product of exactly two sums; got {len(rhs.factors)} factors")
    candidates = []
    for sa, sb in (rhs.factors, rhs.factors[::-1]):
        if not lhs.length.same(sa.length * sb.length):
            continue
        rng = list(ranges)
        q = _fresh_index(env, rng, f"q_{tag}_{len(candidates)}", sa.length)
        t = _fresh_index(env, rng, f"t_{tag}_{len(candidates)}", sb.length)
        start = len(trace.side_conditions)
        g, a, b = lhs.body(q * sb.length + t), sa.body(q), sb.body(t)
        if not all(_plain(x) for x in (g, a, b)):
            raise NotTraceable("nested sums are outside the index lemma")
        link = Obligation(f"link: summand at q·{sb.length} + t = a(q)·b(t)", tuple(rng), g == a * b, refutes=False)
        candidates.append([link, *_side_conditions(trace, start, env, rng, "link")])
    if not candidates:
        raise NotTraceable(f"sum length {lhs.length} is not the product of {[f.length for f in rhs.factors]}")
    for obligations in candidates:  # the first ordering whose link holds (both are tried; either proves the claim)
        s = z3.Solver()
        s.set("timeout", 10_000)
        s.add(*obligations[0].hypotheses, z3.Not(obligations[0].goal))
        if s.check() == z3.unsat:
            return obligations
    return candidates[0]


def link_obligations(proof: SweptProof, build: Callable | None = None) -> list[Obligation]:
    """Trace ``build`` (default: the swept proof's builder) on symbolic sizes and return the obligations that
    make its statement hold for every size (raises NotTraceable / ShapeMismatch when it cannot)."""
    tag = f"tr{next(_FRESH)}"
    leaves, env, trace, ranges = _leaves(proof, tag)
    st = (build or proof.build)(leaves, None, False)
    lhs, rhs = st.lhs, st.rhs
    if not (isinstance(lhs, Traced) and isinstance(rhs, Traced)):
        raise NotTraceable("the statement's sides are not traced arrays")
    if st.equalities or st.positives:
        raise NotTraceable("a traced statement must not need hypotheses")
    if len(lhs.shape) != len(rhs.shape) or not all(a.same(b) for a, b in zip(lhs.shape, rhs.shape)):
        raise ShapeMismatch(f"lhs shape {lhs.shape} != rhs shape {rhs.shape}")
    index = []
    for axis, size in enumerate(lhs.shape):
        pairs, idx = digits_for(size, proof.dims, f"y{axis}_{tag}")
        for digit, s in pairs:
            _fresh_index(env, ranges, digit, Poly(s))
        index.append(idx)
    start = len(trace.side_conditions)
    el, er = lhs.entry(tuple(index)), rhs.entry(tuple(index))
    outer = _side_conditions(trace, start, env, ranges, "output index")
    if isinstance(er, Sum) and isinstance(el, Prod):
        el, er = er, el
    if _plain(el) and _plain(er):
        main = [Obligation("entries equal at every index", tuple(ranges), el == er)]
    elif isinstance(el, Sum) and isinstance(er, Sum):
        if not el.length.same(er.length):
            raise NotTraceable(f"sums of lengths {el.length} and {er.length}")
        rng = list(ranges)
        x = _fresh_index(env, rng, f"x_{tag}", el.length)
        s0 = len(trace.side_conditions)
        gl, gr = el.body(x), er.body(x)
        if not (_plain(gl) and _plain(gr)):
            raise NotTraceable("nested sums are outside the index lemma")
        main = [Obligation("summands equal at every x", tuple(rng), gl == gr, refutes=False),
                *_side_conditions(trace, s0, env, rng, "summand")]
    elif isinstance(el, Sum) and isinstance(er, Prod):
        lemma = [dataclasses.replace(ob, refutes=False) for ob in index_lemma_obligations()]
        main = [*_sum_against_product(el, er, env, ranges, trace, tag), *lemma]
    else:
        raise NotTraceable("entry forms outside the index lemma (a product against a product)")
    return [*outer, *main]


def _sides(proof: SweptProof, build: Callable, dims: dict[str, int], values: dict) -> tuple[list, list]:
    leaves = {}
    for name, shape in proof.shapes({d: Poly(k) for d, k in dims.items()}).items():
        leaves[name] = Traced(shape, lambda idx, arr=values[name]: arr[tuple(int(i) for i in idx)], None)
    st = build(leaves, None, True)
    if st.lhs.shape != st.rhs.shape:
        raise ShapeMismatch(f"lhs shape {st.lhs.shape} != rhs shape {st.rhs.shape}")
    cells = list(itertools.product(*(range(int(s)) for s in st.lhs.shape)))
    lhs = [concrete_value(st.lhs.entry(tuple(Poly(i) for i in c))) for c in cells]
    rhs = [concrete_value(st.rhs.entry(tuple(Poly(i) for i in c))) for c in cells]
    return lhs, rhs


def traced_control(proof: SweptProof, build: Callable, rlimit: int, timeout_ms: int) -> ControlResult:
    """The traced statement's mutant (``build(..., mutant=True)``) at ``proof.control_dims``: z3 must find entries
    where its sides differ, and evaluating the traced code again on the model's values (exact, then float64)
    must show the difference."""
    dims = proof.control_dims
    shapes = {k: tuple(int(s) for s in v) for k, v in proof.shapes({d: Poly(k) for d, k in dims.items()}).items()}
    syms = {name: symbols(name, shape) for name, shape in shapes.items()}
    lhs, rhs = _sides(proof, build, dims, syms)
    formulas = [z3.Or([z3.simplify(a - b) != 0 for a, b in zip(lhs, rhs)])]

    def replay(model: z3.ModelRef) -> tuple[float, float]:
        exact = {k: model_values(model, v) for k, v in syms.items()}
        gaps = []
        for vals in (exact, {k: v.astype(float) for k, v in exact.items()}):
            lv, rv = _sides(proof, build, dims, vals)
            gaps.append(max(abs(float(a - b)) for a, b in zip(lv, rv)))
        return gaps[0], gaps[1]

    return solve_control(formulas, replay, rlimit, timeout_ms)


def traced_proof(proof: SweptProof, build: Callable | None = None, name: str | None = None) -> AllSizesProof:
    """The all-sizes version of ``proof``: its statement (or ``build``'s) traced on symbolic sizes; the control
    is the same statement's mutant at the proof's control sizes."""
    builder = build or proof.build
    return AllSizesProof(
        proof.spec_ids, name or f"{proof.name}, all sizes", proof.statement,
        lambda: link_obligations(proof, builder), proof.control,
        lambda rlimit, timeout_ms: traced_control(proof, builder, rlimit, timeout_ms),
    )
