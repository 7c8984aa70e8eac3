"""Degrees (SPEC L7, P32): the least certified degree per family, the exact Taylor degree, and a proved lower bound
on the degree of *every* polynomial reaching a relative error (docs/certificate.md §2)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Sequence

from ..polynomial import FAMILIES, Polynomial, as_fraction, build_polynomial, to_fmpq
from .enclosure import DEFAULT_GAP, ApproxBound, certify_polynomial
from .exact import arb_precision
from .limits import MAX_DEGREE, TimeLimit

__all__ = ["taylor_degree", "degree_lower_bound", "DegreeResult", "minimal_degree"]


def taylor_degree(b: Fraction, eps: Fraction, max_degree: int = 100000) -> int:
    """Least g with P[Poisson(b) > g] <= ε: the least Taylor-at-0 degree reaching ε on [0, b] (Arb, rigorous upper side).

    The partial sums e^{-b} Σ_{k≤g} b^k/k! are accumulated in one pass; positive terms keep their relative
    precision, so the working precision covers ε and the number of terms (plus e^{±b} up to 8192 bits).
    ``ValueError`` when no g <= ``max_degree`` reaches ε.
    """
    from flint import arb

    b, eps = as_fraction(b), as_fraction(eps)
    eps_bits = max(0, eps.denominator.bit_length() - eps.numerator.bit_length())
    bits = 96 + eps_bits + min(8192, 2 * math.ceil(float(b) * 1.45))
    with arb_precision(bits):
        ball_b, ball_eps = arb(to_fmpq(b)), arb(to_fmpq(eps))
        term = (-ball_b).exp()
        partial = term
        for g in range(max_degree + 1):
            tail = 1 - partial
            if tail.upper() <= ball_eps.lower():
                return g
            term = term * ball_b / (g + 1)
            partial += term
    raise ValueError(f"no Taylor degree <= {max_degree} reaches eps = {float(eps):.3g} on [0, {float(b):.3g}]")


_H_BEST = Fraction(12785, 10000)  # near the maximiser of h/(1 + e^h)
_GROWTH_SPLITS = tuple(Fraction(k, 20) for k in range(1, 20))


def _impossible(g: int, length: Fraction, eps: Fraction) -> bool:
    """True when *no* polynomial of degree <= g has |P(x)e^{-x} − 1| <= ε on [0, L] (docs/certificate.md §2).

    (i) Divided differences at x_i = ih, i = 0..g+1, (g+1)h <= L: ε >= (h/(1 + e^h))^{g+1}.
    (ii) Chebyshev growth: |P| <= (1+ε)e^a on [0, a] forces P(L) <= (1+ε)e^a·T_g(2L/a − 1), yet P(L) >= (1−ε)e^L.
    Both are evaluated in Arb and compared endpoint-wise, so True is proved.
    """
    from flint import arb

    e = arb(to_fmpq(eps))
    h = arb(to_fmpq(min(length / (g + 1), _H_BEST)))
    if e.upper() < ((h / (1 + h.exp())) ** (g + 1)).lower():
        return True
    big_l = arb(to_fmpq(length))
    target = (1 - e) * big_l.exp()
    for t in _GROWTH_SPLITS:
        a = big_l * to_fmpq(t)
        growth = (1 + e) * a.exp() * (g * (arb(to_fmpq(2 / t - 1))).acosh()).cosh()
        if growth.upper() < target.lower():
            return True
    return False


def degree_lower_bound(length: Fraction | float, eps: Fraction | float, cap: int = MAX_DEGREE + 1) -> int:
    """A proved lower bound on the degree of any polynomial P with |P(x)e^{-x} − 1| <= ε on [0, L] (SPEC L7).

    The least g <= ``cap`` that :func:`_impossible` does not rule out (impossibility is inherited by lower
    degrees, so bisection is exact); ``cap`` when even degree ``cap − 1`` is ruled out.
    """
    length, eps = as_fraction(length), as_fraction(eps)
    if not length > 0 or not 0 < eps < 1:
        raise ValueError(f"need L > 0 and eps in (0, 1); got L = {length}, eps = {eps}")
    with arb_precision(128):
        if not _impossible(0, length, eps):
            return 0
        lo, hi = 0, cap  # degree lo is impossible; hi is not ruled out (or is the cap)
        if _impossible(cap - 1, length, eps):
            return cap
        hi = cap - 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if _impossible(mid, length, eps) else (lo, mid)
        return hi


@dataclass
class DegreeResult:
    """Least degree of ``family`` certified to ε (``bound.upper <= ε``) and the refutation of degree − 1."""

    family: str
    degree: int
    polynomial: Polynomial
    bound: ApproxBound
    below: ApproxBound | None  # certificate for degree − 1; refuted iff below.lower > ε
    probes: int
    eps: Fraction

    @property
    def minimal(self) -> bool:
        """True when degree − 1 is refuted (its certified lower bound exceeds ε), or degree = 0."""
        return self.degree == 0 or (self.below is not None and self.below.lower > self.eps)


_GUESS = {"taylor": 1.0, "taylor-mid": 1.0, "chebyshev": 0.8, "minimax": 0.5}


def minimal_degree(
    family: str,
    interval: Sequence[Any],
    eps: Fraction | float,
    *,
    gap: Fraction | float = DEFAULT_GAP,
    max_degree: int = MAX_DEGREE,
    min_degree: int = 0,
    time_limit: TimeLimit | None = None,
) -> DegreeResult:
    """Least degree g of ``family`` whose certified sup |P e^{-x} − 1| is <= ε (SPEC L7, P32; assumes error falls with g).

    Probes start at a guess from the Taylor degree (never below ``min_degree``, e.g. a proved lower bound),
    gallop, then bisect; degree g−1 is certified too, so the result says whether g is minimal (g−1's certified
    lower bound > ε) for this family's construction. ``ValueError`` when no degree <= ``max_degree`` reaches ε;
    ``TimeoutError`` when ``time_limit`` runs out.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}; got {family!r}")
    eps = as_fraction(eps)
    if not 0 < eps < 1:
        raise ValueError(f"eps must lie in the open interval (0, 1); got {float(eps)!r}")
    a, b = as_fraction(interval[0]), as_fraction(interval[1])
    probes: dict[int, tuple[Polynomial, ApproxBound]] = {}
    deadline = None if time_limit is None else time_limit.deadline

    def probe(g: int) -> tuple[Polynomial, ApproxBound]:
        if g not in probes:
            poly = build_polynomial(family, g, (a, b), deadline=deadline)
            probes[g] = (poly, certify_polynomial(poly, gap=gap, decide=eps, time_limit=time_limit))
        return probes[g]

    def passes(g: int) -> bool:
        return probe(g)[1].upper <= eps

    try:
        reference = taylor_degree(b - a, eps, max_degree) if a >= 0 else max_degree // 2
    except ValueError:
        reference = max_degree
    lo, hi = min_degree - 1, None  # lo fails (or is below the known lower bound), hi passes
    g = max(min_degree, min(max_degree, round(_GUESS[family] * reference)))
    step = 1
    while hi is None:
        if passes(g):
            hi = g
        else:
            lo = g
            if g >= max_degree:
                raise ValueError(f"family {family!r} does not reach eps = {float(eps):.3g} with degree <= {max_degree}")
            g, step = min(max_degree, g + step), step * 2
    step = 1
    while lo == min_degree - 1 and hi > min_degree:  # gallop down until a failure is found
        g = max(min_degree, hi - step)
        if passes(g):
            hi, step = g, step * 2
        else:
            lo = g
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if passes(mid):
            hi = mid
        else:
            lo = mid
    poly, bound = probe(hi)
    below = probe(hi - 1)[1] if hi > 0 else None
    return DegreeResult(family, hi, poly, bound, below, len(probes), eps)
