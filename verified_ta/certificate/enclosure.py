"""Rigorous enclosure of sup_{[a,b]} |P(x)e^{-x} − 1| by Taylor models in Arb (SPEC L7, P32; docs/certificate.md §1).

P is shifted exactly in rationals (``fmpq_poly``) to each piece's centre c, so the only rounded quantities
per piece are e^{-c} and e^{r}, both Arb balls; the upper endpoint of the final ball is the bound.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

from ..polynomial import Polynomial, arb_fraction, as_fraction, to_fmpq, to_fmpq_poly
from .exact import arb_precision
from .limits import MAX_ORDER, MAX_PIECES, MAX_PRECISION_BITS, TimeLimit

__all__ = ["DEFAULT_GAP", "METHOD", "Piece", "ApproxBound", "certify_polynomial", "recheck_pieces", "witness_lower"]

DEFAULT_GAP = Fraction(1, 100)
METHOD = "Taylor models in Arb: exact fmpq shift of P to each piece centre c, e^{-h} to order K with Lagrange remainder"


@dataclass(frozen=True)
class Piece:
    """Sub-interval [lo, hi] with a rigorous ``upper`` >= sup |P(x)e^{-x} − 1| on it (exp truncated at order K)."""

    lo: Fraction
    hi: Fraction
    order: int
    upper: Fraction


@functools.lru_cache(maxsize=MAX_ORDER + 1)
def _exp_truncation(order: int):
    """E_K(h) = Σ_{k≤K} (−h)^k/k! as an exact ``fmpq_poly``."""
    from flint import fmpq, fmpq_poly

    return fmpq_poly([fmpq((-1) ** k, math.factorial(k)) for k in range(order + 1)])


def _abs_sum(coefficients, r):
    """Σ_k |c_k| r^k, exactly (``fmpq``)."""
    from flint import fmpq_poly

    return fmpq_poly([abs(c) for c in coefficients])(r)


def _enclose(poly_q, lo: Fraction, hi: Fraction, order: int | None, tol: Fraction):
    """Enclose f(x) = P(x)e^{-x} − 1 on [lo, hi] (SPEC L7; proof in docs/certificate.md §1).

    With c = (lo+hi)/2, r = (hi−lo)/2, P_c(h) = P(c+h) exactly and E_K(h) = Σ_{k≤K} (−h)^k/k!:
    f(c+h) = e^{-c}(P_c E_K)(h) − 1 + e^{-c} P_c(h) R_K(h), |R_K(h)| ≤ r^{K+1} e^r/(K+1)!, so
    sup |f| ≤ |e^{-c}q_0 − 1| + e^{-c} Σ_{k≥1} |q_k| r^k + e^{-c} Σ_k |p_k| r^k · r^{K+1} e^r/(K+1)!, q = P_c E_K
    (the sums are exact rationals; e^{-c} > 0 and e^r are Arb balls).
    Returns (upper arb endpoint, ball for f(c), K). ``order=None`` picks the least K <= MAX_ORDER with remainder ≤ tol.
    """
    from flint import arb, fmpq_poly

    c, r = to_fmpq((lo + hi) / 2), to_fmpq((hi - lo) / 2)
    pc = poly_q(fmpq_poly([c, 1]))
    e_c = (-arb(c)).exp()
    r_arb = arb(r)
    scale = e_c * arb(_abs_sum(pc.coeffs(), r)) * r_arb.exp()
    remainder = scale * r_arb / 1  # r^{K+1}/(K+1)! built up incrementally from K = 0
    k = 0
    target = None if order is None else order
    if target is None:
        tol_arb = arb(to_fmpq(tol))
    while True:
        if target is None and (k >= 2 and remainder.upper() <= tol_arb.lower() or k >= MAX_ORDER):
            break
        if target is not None and k >= target:
            break
        k += 1
        remainder = remainder * r_arb / (k + 1)
    order = k
    q = (pc * _exp_truncation(order)).coeffs()
    q0 = q[0] if q else to_fmpq(Fraction(0))
    center = e_c * arb(q0) - 1
    rest = _abs_sum(q, r) - abs(q0)
    total = abs(center) + e_c * arb(rest) + remainder
    return total.upper(), center, order


@dataclass
class ApproxBound:
    """Certified enclosure lower <= sup_{[a,b]} |P(x)e^{-x} − 1| <= upper (SPEC L7, P32)."""

    lower: Fraction
    upper: Fraction
    witness: Fraction
    pieces: list[Piece]
    precision_bits: int
    seconds: float
    status: str  # "tight" (upper <= (1+gap)·lower), "decided" (stopped at a decision threshold), "max-pieces"
    method: str = METHOD

    @property
    def piece_count(self) -> int:
        return len(self.pieces)


def _witness_value(poly_q, x: Fraction):
    """Ball for f(x) = P(x)e^{-x} − 1 at a rational point x (P(x) exact)."""
    from flint import arb

    return arb(poly_q(to_fmpq(x))) * (-arb(to_fmpq(x))).exp() - 1


def _ball_lower(ball) -> Fraction:
    """A rigorous lower bound on |ball| (0 when the ball contains 0)."""
    return Fraction(0) if ball.contains(0) else arb_fraction(abs(ball).lower())


def certify_polynomial(
    poly: Polynomial,
    *,
    gap: Fraction | float = DEFAULT_GAP,
    decide: Fraction | float | None = None,
    max_pieces: int = MAX_PIECES,
    time_limit: TimeLimit | None = None,
) -> ApproxBound:
    """Rigorous [lower, upper] for sup_{[a,b]} |P(x)e^{-x} − 1| (SPEC L7; docs/certificate.md §1).

    Bisects the piece with the largest upper bound until upper <= (1+gap)·lower. With ``decide = ε``
    it also stops as soon as upper <= ε or lower > ε (used by the degree search). ``time_limit`` is checked
    between pieces (``TimeoutError``).
    """
    import time

    gap = as_fraction(gap)
    if gap <= 0:
        raise ValueError(f"gap must be > 0; got {gap}")
    start = time.perf_counter()
    a, b = poly.interval
    poly_q = to_fmpq_poly(poly.coefficients)
    initial = 4 * (poly.degree + 2)
    edges = [a + (b - a) * Fraction(i, initial) for i in range(initial + 1)]
    prec = 96 + _level_bits(poly_q, edges[::2] + [edges[-1]])
    level = Fraction(1, 2 ** (prec - 96))
    for _attempt in range(4):
        if prec > MAX_PRECISION_BITS:
            break
        with arb_precision(prec):
            result = _adaptive(
                poly_q, edges, gap, None if decide is None else as_fraction(decide), max_pieces, prec, level,
                time_limit,
            )
        if result is not None:
            result.seconds = time.perf_counter() - start
            return result
        prec *= 2
    raise RuntimeError(f"certify_polynomial: no enclosure within {MAX_PRECISION_BITS} bits of precision")


def _level_bits(poly_q, points: list[Fraction]) -> int:
    """−log2 of the error level max |f| over ``points`` (>= 0), at a precision that resolves it (f may be ~2^-1000)."""
    bits = 256
    while True:
        with arb_precision(bits):
            balls = [abs(_witness_value(poly_q, x)) for x in points]
        top = max(balls, key=lambda ball: arb_fraction(ball.mid()))
        level = arb_fraction(top.mid())
        if level > 0 and arb_fraction(top.rad()) * 2**20 < level or bits >= 1 << 15:
            break
        bits *= 4
    if level <= 0:
        return 100
    return min(max(0, level.denominator.bit_length() - level.numerator.bit_length()), MAX_PRECISION_BITS // 2)


def _adaptive(poly_q, edges, gap, decide, max_pieces, prec, level: Fraction, time_limit: TimeLimit | None):
    """Bisection loop of :func:`certify_polynomial`; None when ball radii reach the gap (needs more precision)."""
    best_lower, witness = Fraction(0), edges[0]
    tol = level * gap / 64  # exp-truncation remainder per piece, well below the gap at this error level

    def note_witness(x: Fraction, ball) -> None:
        nonlocal best_lower, witness
        low = _ball_lower(ball)
        if low > best_lower:
            best_lower, witness = low, x

    for x in (edges[0], edges[-1]):
        note_witness(x, _witness_value(poly_q, x))
    heap: list[tuple[Fraction, int, Piece]] = []  # (−upper, insertion number, piece): never compares pieces
    counter = itertools.count()
    pending = list(zip(edges[:-1], edges[1:]))
    while True:
        for lo, hi in pending:
            if time_limit is not None:
                time_limit.check()
            upper, center, order = _enclose(poly_q, lo, hi, None, tol)
            if arb_fraction(center.rad()) > tol:
                return None
            note_witness((lo + hi) / 2, center)
            piece = Piece(lo, hi, order, arb_fraction(upper))
            heapq.heappush(heap, (-piece.upper, next(counter), piece))
        top = heap[0][2].upper
        status = None
        if top <= (1 + gap) * best_lower:
            status = "tight"
        elif decide is not None and (top <= decide or best_lower > decide):
            status = "decided"
        elif len(heap) >= max_pieces:
            status = "max-pieces"
        if status is not None:
            pieces = sorted((p for _, _, p in heap), key=lambda p: p.lo)
            return ApproxBound(best_lower, top, witness, pieces, prec, 0.0, status)
        _, _, worst = heapq.heappop(heap)
        mid = (worst.lo + worst.hi) / 2
        pending = [(worst.lo, mid), (mid, worst.hi)]


def recheck_pieces(
    coefficients: Sequence[Fraction],
    interval: tuple[Fraction, Fraction],
    pieces: Sequence[Piece],
    prec: int,
    time_limit: TimeLimit | None = None,
) -> list[str]:
    """Re-enclose every stored piece (no search) and list the problems: gaps in the cover, bounds too low.

    ``time_limit`` is checked between pieces (``TimeoutError``).
    """
    problems: list[str] = []
    a, b = interval
    if not pieces:
        return ["no pieces"]
    if pieces[0].lo != a or pieces[-1].hi != b:
        problems.append(f"pieces cover [{pieces[0].lo}, {pieces[-1].hi}], not the interval [{a}, {b}]")
    for prev, nxt in zip(pieces[:-1], pieces[1:]):
        if prev.hi != nxt.lo:
            problems.append(f"pieces are not contiguous at {prev.hi} / {nxt.lo}")
    poly_q = to_fmpq_poly(coefficients)
    with arb_precision(prec):
        for i, p in enumerate(pieces):
            if time_limit is not None:
                time_limit.check()
            if not p.lo < p.hi:
                problems.append(f"piece {i} is empty: [{p.lo}, {p.hi}]")
                continue
            if not 0 <= p.order <= MAX_ORDER:  # K < 0 would drop the "− 1" of f: the enclosure would not hold
                problems.append(f"piece {i}: exp truncation order must be in [0, {MAX_ORDER}]; got {p.order}")
                continue
            upper, _, _ = _enclose(poly_q, p.lo, p.hi, p.order, Fraction(0))
            if arb_fraction(upper) > p.upper:
                problems.append(
                    f"piece {i} [{float(p.lo):.6g}, {float(p.hi):.6g}]: recomputed bound "
                    f"{float(arb_fraction(upper)):.6e} exceeds the stored {float(p.upper):.6e}"
                )
    return problems


def witness_lower(coefficients: Sequence[Fraction], x: Fraction, prec: int) -> Fraction:
    """Rigorous lower bound on |P(x)e^{-x} − 1| at the witness x."""
    with arb_precision(prec):
        return _ball_lower(_witness_value(to_fmpq_poly(coefficients), x))
