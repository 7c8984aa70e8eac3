"""Symbolic-size tracing: the shipped products run on arrays whose sizes are symbols (SPEC §1, T17).

The shipped ``kron``, ``khatri_rao``, ``face_split``, ``vec`` and ``unvec`` run unchanged on :class:`Traced`
arrays. A shape is a tuple of integer polynomials (:class:`Poly`) in named sizes; an entry is a function of a
symbolic index (again :class:`Poly`) returning an :data:`Expr`: a term over the input matrices (z3
uninterpreted functions Int × Int → Real, or numbers in the concrete mode), a :class:`Sum` from ``@``, or a
:class:`Prod` of such. What is modelled, and trusted, is numpy's documented semantics of

- indexing with ``...``, ``:`` and ``None`` (a new axis of size 1), broadcasting ``*``, ``.T`` and ``@``;
- ``reshape`` in C order: output index y reads the input at unravel(ravel(y)).

``proofs/test_tracing.py`` checks this model against numpy entry by entry at concrete sizes. Unravelling
divides a flat index F by a size s: F = P·s + R with P, R read off the polynomial (R the monomials without the
factor s) gives F div s = P and F mod s = R by the left-inverse lemma (T17, proved for all sizes in
:mod:`proofs.index_maps`), under the side conditions 0 ≤ R < s and P ≥ 0, which are recorded in the
:class:`Trace` and become proof obligations.

A size comparison in the code (validation, or a branch such as ``if n1 * n2 > 64``) is answered only when it
follows from "every size is ≥ 1"; otherwise tracing stops with :class:`SymbolicBranch`: code that branches
on a size has no all-sizes proof here.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import z3

__all__ = [
    "Poly", "SymbolicBranch", "NotTraceable", "Trace", "Traced", "Sum", "Prod", "Expr", "mul", "digits_for",
    "concrete_value",
]

Monomial = tuple[str, ...]  # sorted symbol names, repeated for powers


class NotTraceable(Exception):
    """The code did something the tracer does not model (so no all-sizes claim can be made about it)."""


class SymbolicBranch(NotTraceable):
    """The code compared sizes in a way that does not follow from "every size is ≥ 1"."""


class Poly:
    """An integer polynomial in named symbols, kept canonical (monomial → non-zero coefficient)."""

    __slots__ = ("terms",)

    def __init__(self, terms: "dict[Monomial, int] | int | str" = 0) -> None:
        if isinstance(terms, str):
            terms = {(terms,): 1}
        elif isinstance(terms, int):
            terms = {(): terms}
        self.terms = {m: c for m, c in terms.items() if c}

    @staticmethod
    def lift(x: Any) -> "Poly":
        if isinstance(x, Poly):
            return x
        if isinstance(x, int) and not isinstance(x, bool):
            return Poly(x)
        raise NotTraceable(f"a size or index must be an integer polynomial; got {x!r}")

    def __add__(self, other: Any) -> "Poly":
        o, out = Poly.lift(other), dict(self.terms)
        for m, c in o.terms.items():
            out[m] = out.get(m, 0) + c
        return Poly(out)

    __radd__ = __add__

    def __neg__(self) -> "Poly":
        return Poly({m: -c for m, c in self.terms.items()})

    def __sub__(self, other: Any) -> "Poly":
        return self + (-Poly.lift(other))

    def __rsub__(self, other: Any) -> "Poly":
        return Poly.lift(other) - self

    def __mul__(self, other: Any) -> "Poly":
        o, out = Poly.lift(other), {}
        for m1, c1 in self.terms.items():
            for m2, c2 in o.terms.items():
                m = tuple(sorted(m1 + m2))
                out[m] = out.get(m, 0) + c1 * c2
        return Poly(out)

    __rmul__ = __mul__

    def __pow__(self, k: int) -> "Poly":
        out = Poly(1)
        for _ in range(k):
            out = out * self
        return out

    def same(self, other: Any) -> bool:
        """Structural equality (the same polynomial); what the tracer itself uses."""
        return self.terms == Poly.lift(other).terms

    def __eq__(self, other: object) -> bool:
        """Equality as the shipped code sees it: True when equal for every size ≥ 1, False when unequal for every
        size ≥ 1, else :class:`SymbolicBranch` (``n·m == n`` depends on m)."""
        try:
            o = Poly.lift(other)
        except NotTraceable:
            return NotImplemented
        if self.terms == o.terms:
            return True
        lo, hi = (self - o)._range_when_sizes_at_least_one()
        if lo > 0 or hi < 0:
            return False
        raise SymbolicBranch(f"the code tests {self} == {o}, which depends on the sizes")

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __hash__(self) -> int:
        return hash(frozenset(self.terms.items()))

    @property
    def is_const(self) -> bool:
        return all(not m for m in self.terms)

    def const(self) -> int:
        if not self.is_const:
            raise NotTraceable(f"{self} is not a constant")
        return self.terms.get((), 0)

    __int__ = const

    def __index__(self) -> int:
        return self.const()

    def _range_when_sizes_at_least_one(self) -> tuple[float, float]:
        """(min, max) over every assignment of sizes ≥ 1, when monotone in each symbol; else raise."""
        coeffs = [c for m, c in self.terms.items() if m]
        at_one = sum(self.terms.values())  # the value with every symbol = 1
        if all(c > 0 for c in coeffs):  # non-decreasing in every symbol: the minimum is at all ones
            return at_one, (at_one if not coeffs else math.inf)
        if all(c < 0 for c in coeffs):
            return -math.inf, at_one
        raise SymbolicBranch(f"the code compares sizes: the sign of {self} depends on the sizes")

    def _decide(self, other: Any, holds: Callable[[float], bool], fails: Callable[[float], bool], op: str) -> bool:
        lo, hi = (self - other)._range_when_sizes_at_least_one()
        if holds(lo) and holds(hi):
            return True
        if fails(lo) and fails(hi):
            return False
        raise SymbolicBranch(f"the code tests {self} {op} {other}, which depends on the sizes")

    def __lt__(self, other: Any) -> bool:
        return self._decide(other, lambda x: x < 0, lambda x: x >= 0, "<")

    def __le__(self, other: Any) -> bool:
        return self._decide(other, lambda x: x <= 0, lambda x: x > 0, "<=")

    def __gt__(self, other: Any) -> bool:
        return self._decide(other, lambda x: x > 0, lambda x: x <= 0, ">")

    def __ge__(self, other: Any) -> bool:
        return self._decide(other, lambda x: x >= 0, lambda x: x < 0, ">=")

    def __bool__(self) -> bool:
        lo, hi = self._range_when_sizes_at_least_one()
        if lo > 0 or hi < 0:
            return True
        if lo == hi == 0:
            return False
        raise SymbolicBranch(f"the code tests {self} != 0, which depends on the sizes")

    def monomial_factor(self) -> Monomial | None:
        """The symbols of a monomial with coefficient 1 (``()`` for the constant 1), else None."""
        if len(self.terms) == 1:
            (m, c), = self.terms.items()
            if c == 1:
                return m
        return None

    def divmod_by(self, size: "Poly", trace: "Trace | None") -> tuple["Poly", "Poly"]:
        """(F div s, F mod s) for this F and a size s: exact for constants; otherwise split F = P·s + R by
        monomials and record the side conditions 0 ≤ R < s, P ≥ 0 in ``trace``."""
        if self.is_const and size.is_const:
            q, r = divmod(self.const(), size.const())
            return Poly(q), Poly(r)
        ms = size.monomial_factor()
        if ms is None:
            raise NotTraceable(f"cannot divide an index by the size {size} (not a product of sizes)")
        need = Counter(ms)
        quotient: dict[Monomial, int] = {}
        remainder: dict[Monomial, int] = {}
        for m, c in self.terms.items():
            have = Counter(m)
            if all(have[s] >= k for s, k in need.items()):
                quotient[tuple(sorted((have - need).elements()))] = c
            else:
                remainder[m] = c
        p, r = Poly(quotient), Poly(remainder)
        if trace is None:
            raise NotTraceable("a symbolic division needs a Trace to record its side conditions")
        trace.side_conditions.append((p, r, size))
        return p, r

    def symbols(self) -> set[str]:
        return {s for m in self.terms for s in m}

    def to_z3(self, env: dict[str, z3.ArithRef]) -> z3.ArithRef:
        total: Any = z3.IntVal(0)
        for m, c in sorted(self.terms.items()):
            term: Any = z3.IntVal(c)
            for s in m:
                term = term * env[s]
            total = total + term
        return total

    def __repr__(self) -> str:
        if not self.terms:
            return "0"
        parts = []
        for m, c in sorted(self.terms.items()):
            body = "·".join(m)
            parts.append(str(c) if not m else body if c == 1 else f"{c}·{body}")
        return " + ".join(parts)


@dataclass
class Trace:
    """What evaluating traced entries needed: the side conditions (P, R, s) of every symbolic division."""

    side_conditions: list[tuple[Poly, Poly, Poly]] = field(default_factory=list)


@dataclass(frozen=True)
class Sum:
    """Σ_{x < length} body(x): an entry of a matrix product (numpy's ``@``)."""

    length: Poly
    body: Callable[[Poly], "Expr"]


@dataclass(frozen=True)
class Prod:
    """A product of factors at least one of which is a :class:`Sum`."""

    factors: tuple["Expr", ...]


Expr = Any  # a z3 term, a number, a Sum or a Prod


def mul(a: Expr, b: Expr) -> Expr:
    """a·b, keeping sums as nodes (a Prod) and everything else as plain products."""
    if isinstance(a, (Sum, Prod)) or isinstance(b, (Sum, Prod)):
        fa = a.factors if isinstance(a, Prod) else (a,)
        fb = b.factors if isinstance(b, Prod) else (b,)
        return Prod(fa + fb)
    return a * b


def concrete_value(e: Expr) -> Any:
    """The value of an entry in the concrete mode (every size and index a constant)."""
    if isinstance(e, Sum):
        total: Any = 0
        for x in range(e.length.const()):
            total = total + concrete_value(e.body(Poly(x)))
        return total
    if isinstance(e, Prod):
        out: Any = 1
        for f in e.factors:
            out = out * concrete_value(f)
        return out
    return e


def _product(xs: Sequence[Poly]) -> Poly:
    out = Poly(1)
    for x in xs:
        out = out * x
    return out


def _ravel(index: Sequence[Poly], shape: Sequence[Poly]) -> Poly:
    flat = Poly(0)
    for i, s in zip(index, shape):
        flat = flat * s + i
    return flat


def _unravel(flat: Poly, shape: Sequence[Poly], trace: Trace | None) -> tuple[Poly, ...]:
    out: list[Poly] = []
    for s in reversed(shape[1:]):
        flat, r = flat.divmod_by(s, trace)
        out.append(r)
    out.append(flat)  # the outermost index (in range whenever the flat index is)
    return tuple(reversed(out))


class Traced:
    """An array of symbolic shape; ``entry(index)`` gives the term at a symbolic index (tuple of Poly)."""

    def __init__(self, shape: Sequence[Any], entry: Callable[[tuple[Poly, ...]], Expr], trace: Trace | None) -> None:
        self._shape = tuple(Poly.lift(s) for s in shape)
        self.entry = entry
        self.trace = trace

    @property
    def shape(self) -> tuple[Poly, ...]:
        return self._shape

    @property
    def ndim(self) -> int:
        return len(self._shape)

    def __getitem__(self, key: Any) -> "Traced":
        key = key if isinstance(key, tuple) else (key,)
        if sum(k is Ellipsis for k in key) > 1:
            raise NotTraceable("at most one ... in an index")
        if any(k is not Ellipsis and k is not None and k != slice(None) for k in key):
            raise NotTraceable(f"only ..., : and None are modelled in an index; got {key!r}")
        n_axes = sum(k == slice(None) for k in key if k is not None and k is not Ellipsis)
        if n_axes > self.ndim:
            raise NotTraceable(f"too many indices for a {self.ndim}-d array")
        expanded: list[Any] = []
        for k in key:
            expanded.extend([slice(None)] * (self.ndim - n_axes) if k is Ellipsis else [k])
        expanded += [slice(None)] * (self.ndim - sum(k is not None for k in expanded))
        shape, source = [], []  # source[j] = input axis of output axis j, or None for a new axis
        axis = 0
        for k in expanded:
            if k is None:
                shape.append(Poly(1))
                source.append(None)
            else:
                shape.append(self._shape[axis])
                source.append(axis)
                axis += 1

        def entry(idx: tuple[Poly, ...]) -> Expr:
            return self.entry(tuple(i for i, s in zip(idx, source) if s is not None))

        return Traced(shape, entry, self.trace)

    def _broadcast(self, other: "Traced") -> tuple[tuple[Poly, ...], Callable, Callable]:
        nd = max(self.ndim, other.ndim)
        sa = (Poly(1),) * (nd - self.ndim) + self._shape
        sb = (Poly(1),) * (nd - other.ndim) + other.shape
        shape = []
        for x, y in zip(sa, sb):
            if x.same(y) or y.same(1):
                shape.append(x)
            elif x.same(1):
                shape.append(y)
            else:
                raise NotTraceable(f"shapes {self._shape} and {other.shape} do not broadcast")

        def pick(arr_shape: tuple[Poly, ...], own: int) -> Callable:
            def index(idx: tuple[Poly, ...]) -> tuple[Poly, ...]:
                tail = idx[len(idx) - own:]
                return tuple(Poly(0) if s.same(1) else i for i, s in zip(tail, arr_shape[len(arr_shape) - own:]))
            return index

        return tuple(shape), pick(sa, self.ndim), pick(sb, other.ndim)

    def __mul__(self, other: Any) -> "Traced":
        if not isinstance(other, Traced):
            return NotImplemented
        shape, ia, ib = self._broadcast(other)
        return Traced(shape, lambda idx: mul(self.entry(ia(idx)), other.entry(ib(idx))), self.trace)

    def reshape(self, *shape: Any) -> "Traced":
        if len(shape) == 1 and isinstance(shape[0], tuple):
            shape = shape[0]
        dims = [Poly.lift(s) for s in shape]
        total = _product(self._shape)
        if sum(d.same(-1) for d in dims) == 1:
            known = _product([d for d in dims if not d.same(-1)])
            q, r = total.divmod_by(known, None) if total.is_const and known.is_const else _exact_quotient(total, known)
            dims = [q if d.same(-1) else d for d in dims]
        if not _product(dims).same(total):
            raise NotTraceable(f"cannot reshape {self._shape} into {tuple(dims)}")
        old = self._shape

        def entry(idx: tuple[Poly, ...]) -> Expr:
            return self.entry(_unravel(_ravel(idx, dims), old, self.trace))

        return Traced(dims, entry, self.trace)

    @property
    def T(self) -> "Traced":  # noqa: N802 - numpy's name
        if self.ndim != 2:
            raise NotTraceable(".T is modelled for 2-d arrays only")
        return Traced(self._shape[::-1], lambda idx: self.entry(idx[::-1]), self.trace)

    def __matmul__(self, other: "Traced") -> "Traced":
        if not isinstance(other, Traced) or self.ndim != 2 or other.ndim != 2:
            raise NotTraceable("@ is modelled for two 2-d arrays")
        (r, k), (k2, c) = self._shape, other.shape
        if not k.same(k2):
            raise NotTraceable(f"@ of shapes {self._shape} and {other.shape}")

        def entry(idx: tuple[Poly, ...]) -> Expr:
            i, l = idx
            return Sum(k, lambda x: mul(self.entry((i, x)), other.entry((x, l))))

        return Traced((r, c), entry, self.trace)


def _exact_quotient(total: Poly, known: Poly) -> tuple[Poly, Poly]:
    ms = known.monomial_factor()
    if ms is None:
        raise NotTraceable(f"reshape with -1: cannot divide {total} by {known}")
    q, r = total.divmod_by(known, Trace())
    if not r.same(0):
        raise NotTraceable(f"reshape with -1: {known} does not divide {total}")
    return q, r


def digits_for(size: Poly, order: Sequence[str], name: str) -> tuple[list[tuple[str, str]], Poly]:
    """Index a dimension of size s1·s2·…·sk (a product of sizes) by digits x1..xk, 0 ≤ xj < sj: the index is the
    Horner form (x1·s2 + x2)·s3 + … (onto [s1…sk] by T17, applied k − 1 times). Factors follow ``order``.

    Returns ([(digit name, size name)], index polynomial).
    """
    m = size.monomial_factor()
    if m is None:
        raise NotTraceable(f"a dimension of size {size} is not a product of sizes")
    factors = sorted(m, key=lambda s: order.index(s) if s in order else len(order))
    pairs = [(f"{name}_{j}", s) for j, s in enumerate(factors)]
    index = Poly(0)
    for digit, s in pairs:
        index = index * Poly(s) + Poly(digit)
    return pairs, index
