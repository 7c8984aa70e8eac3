"""Candidate polynomials P ≈ e^x on an interval [a, b] with exact rational coefficients (SPEC L6, L7, L8).

Families: ``taylor`` (Taylor at 0), ``taylor-mid`` (Taylor at the midpoint), ``chebyshev``
(interpolation at Chebyshev nodes) and ``minimax`` (relative minimax, Remez exchange for the weight
e^{-x}). Construction runs in python-flint's Arb at a working precision chosen from the degree and the
interval (only the balls' midpoints are used: construction need not be rigorous); every coefficient is then
an exact :class:`fractions.Fraction` (binary midpoints convert without rounding), so a certificate
(``verified_ta.certificate``) is about exactly the polynomial that is used. Exact conversions (Chebyshev to
monomial basis, Taylor shifts) run on flint's ``fmpq_poly``. Neither flint nor mpmath is imported until used.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Sequence

__all__ = [
    "FAMILIES", "Polynomial", "build_polynomial", "as_fraction", "fraction_str", "parse_fraction",
    "to_fmpq", "to_fmpq_poly", "arb_fraction",
]

FAMILIES = ("taylor", "taylor-mid", "chebyshev", "minimax")

# Working precision for constructing candidates (certification never uses it): this many bits beyond the
# expected error level 2(L/4)^{g+1}/(g+1)! of a near-best degree-g approximant on an interval of length L,
# plus the bits lost to cancellation (e^L between P(0) ≈ 1 and P(L) ≈ e^L; (1+√2)^g in the t-monomial form).
_GUARD_BITS = 100


def _build_bits(degree: int, length: Fraction) -> int:
    log2_length = math.log2(length.numerator) - math.log2(length.denominator)  # exact inputs: no float underflow
    log2_error = 1 + (degree + 1) * (log2_length - 2) - math.lgamma(degree + 2) / math.log(2)
    return _GUARD_BITS + max(0, math.ceil(-log2_error)) + math.ceil(1.45 * float(length)) + math.ceil(1.28 * degree)


def _round_bits(x: Fraction, bits: int) -> Fraction:
    """x rounded to ``bits`` significant binary digits (a dyadic rational: keeps JSON and exact arithmetic small)."""
    if x == 0:
        return x
    shift = bits - (abs(x.numerator).bit_length() - x.denominator.bit_length())
    scaled = (x.numerator << shift) // x.denominator if shift >= 0 else x.numerator // (x.denominator << -shift)
    return Fraction(scaled, 1 << shift) if shift >= 0 else Fraction(scaled << -shift)


def _is_mpmath(x: Any) -> bool:
    return type(x).__module__.startswith("mpmath")


def as_fraction(x: Any) -> Fraction:
    """An exact Fraction for an int, Fraction, "p/q" string, binary float or mpf (no decimal round trip)."""
    if isinstance(x, Fraction):
        return x
    if isinstance(x, bool):
        raise ValueError(f"expected a number, got {x!r}")
    if isinstance(x, (int, str)):
        return Fraction(x)
    if isinstance(x, float):
        if not math.isfinite(x):
            raise ValueError(f"expected a finite number, got {x!r}")
        return Fraction(x)
    if _is_mpmath(x):
        import mpmath

        if isinstance(x, mpmath.mpf):
            if not mpmath.isfinite(x):  # man_exp of ±inf and nan reads as 0
                raise ValueError(f"expected a finite number, got {x!r}")
            man, exp = x.man_exp
            return Fraction(int(man)) * (Fraction(2) ** int(exp))
    raise ValueError(f"cannot convert {type(x).__name__} exactly to a rational")


def fraction_str(x: Fraction) -> str:
    """The exact "p/q" form of a rational (the JSON and hashing form; parse back with :func:`parse_fraction`)."""
    return f"{x.numerator}/{x.denominator}"


def parse_fraction(text: str, name: str = "value") -> Fraction:
    """Parse an exact rational string "p/q" (or an integer); ValueError naming ``name`` otherwise."""
    try:
        return Fraction(text)
    except (TypeError, ValueError, ZeroDivisionError):
        raise ValueError(f"{name} must be an exact rational string 'p/q'; got {text!r}") from None


def to_fmpq(x: Fraction):
    """``x`` as a flint ``fmpq`` (exact)."""
    from flint import fmpq

    return fmpq(x.numerator, x.denominator)


def to_fmpq_poly(coefficients: Sequence[Fraction]):
    """The exact flint polynomial Σ coefficients[t] x^t."""
    from flint import fmpq_poly

    return fmpq_poly([to_fmpq(c) for c in coefficients])


def _fractions(poly, length: int) -> tuple[Fraction, ...]:
    """The first ``length`` coefficients of an ``fmpq_poly`` as Fractions (zeros padded on top)."""
    coeffs = [Fraction(int(c.p), int(c.q)) for c in poly.coeffs()]
    return tuple(coeffs[:length] + [Fraction(0)] * (length - len(coeffs)))


def _taylor_shift(coefficients: Sequence[Fraction], shift: Fraction) -> tuple[Fraction, ...]:
    """Exact coefficients of z ↦ P(z + shift) (an exact ``fmpq_poly`` composition)."""
    from flint import fmpq_poly

    return _fractions(to_fmpq_poly(coefficients)(fmpq_poly([to_fmpq(shift), 1])), len(coefficients))


@dataclass(frozen=True)
class Polynomial:
    """P(x) = Σ_t coefficients[t] x^t ≈ e^x on ``interval`` (exact rationals, increasing degree)."""

    family: str
    interval: tuple[Fraction, Fraction]
    coefficients: tuple[Fraction, ...]

    def __post_init__(self) -> None:
        a, b = (as_fraction(v) for v in self.interval)
        if not a < b:
            raise ValueError(f"interval must satisfy a < b; got [{a}, {b}]")
        if not self.coefficients:
            raise ValueError("coefficients must be non-empty")
        object.__setattr__(self, "interval", (a, b))
        object.__setattr__(self, "coefficients", tuple(as_fraction(c) for c in self.coefficients))

    @property
    def degree(self) -> int:
        return len(self.coefficients) - 1

    def shifted(self, M: Any) -> tuple[Fraction, ...]:
        """Exact coefficients a_t of z ↦ P(z + M), so P(S + M) = Σ_t a_t S^t (SPEC L6, L8)."""
        return _taylor_shift(self.coefficients, as_fraction(M))

    def __call__(self, x: Any) -> Any:
        """Horner evaluation: exact for int/Fraction, mpf for mpmath numbers, float otherwise (arrays, tensors)."""
        if isinstance(x, (int, Fraction)) and not isinstance(x, bool):
            coeffs: Sequence[Any] = self.coefficients
        elif _is_mpmath(x):
            import mpmath

            coeffs = [mpmath.mpf(c.numerator) / c.denominator for c in self.coefficients]
        else:
            coeffs = [float(c) for c in self.coefficients]
        acc: Any = coeffs[-1]
        for c in reversed(coeffs[:-1]):
            acc = acc * x + c
        return acc

    def coefficient_strings(self) -> list[str]:
        """Coefficients as exact "p/q" strings (the JSON form)."""
        return [fraction_str(c) for c in self.coefficients]

    def sha256(self) -> str:
        """SHA-256 of the canonical text: family, interval and coefficients as "p/q", one per line."""
        a, b = self.interval
        lines = [self.family, fraction_str(a), fraction_str(b)]
        return hashlib.sha256("\n".join(lines + self.coefficient_strings()).encode()).hexdigest()


# --- construction (Arb midpoints; the result is rationalised exactly) ----------------------------


def _check_build_args(family: str, degree: int, interval: Sequence[Any]) -> tuple[Fraction, Fraction]:
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}; got {family!r}")
    if isinstance(degree, bool) or not isinstance(degree, int) or degree < 0:
        raise ValueError(f"degree must be an integer >= 0; got {degree!r}")
    if len(interval) != 2:
        raise ValueError(f"interval must be a pair [a, b]; got {interval!r}")
    a, b = as_fraction(interval[0]), as_fraction(interval[1])
    if not a < b:
        raise ValueError(f"interval must satisfy a < b; got [{a}, {b}]")
    return a, b


def arb_fraction(x) -> Fraction:
    """The midpoint of an arb ball (or an exact arb such as ``.upper()``), exactly: a binary rational."""
    man, exp = x.mid().man_exp()
    man, exp = int(man), int(exp)
    return Fraction(man << exp) if exp >= 0 else Fraction(man, 1 << -exp)


def _chebyshev_to_monomial(cheb: Sequence[Fraction], a: Fraction, b: Fraction) -> tuple[Fraction, ...]:
    """Exact monomial coefficients in x of Σ_k cheb[k] T_k(t), t = (2x − a − b)/(b − a) (Clenshaw on ``fmpq_poly``)."""
    from flint import fmpq_poly

    t = fmpq_poly([to_fmpq(-(a + b) / (b - a)), to_fmpq(Fraction(2) / (b - a))])
    b1 = b2 = fmpq_poly([0])
    for ck in reversed(cheb[1:]):
        b1, b2 = 2 * t * b1 - b2 + to_fmpq(ck), b1
    return _fractions(t * b1 - b2 + to_fmpq(cheb[0]), len(cheb))


def _chebyshev_basis(g: int):
    """T_0..T_g as ``arb_poly`` in t (exact integer coefficients)."""
    from flint import arb_poly

    basis = [arb_poly([1]), arb_poly([0, 1])]
    while len(basis) <= g:
        basis.append(2 * arb_poly([0, 1]) * basis[-1] - basis[-2])
    return basis[: g + 1]


def _chebyshev_interpolant(g: int, a: Fraction, b: Fraction) -> list[Fraction]:
    """Chebyshev coefficients of the degree-g interpolant of e^x at the g+1 Chebyshev nodes of [a, b]."""
    from flint import arb

    mid, half = arb(to_fmpq((a + b) / 2)), arb(to_fmpq((b - a) / 2))
    m = g + 1
    thetas = [arb.pi() * (2 * j + 1) / (2 * m) for j in range(m)]
    values = [(mid + half * th.cos()).exp() for th in thetas]
    coeffs = [2 * sum((v * (k * th).cos() for v, th in zip(values, thetas)), arb(0)) / m for k in range(m)]
    coeffs[0] /= 2
    return [arb_fraction(c) for c in coeffs]


def _check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise TimeoutError("time limit reached while constructing a polynomial")


def _remez_relative(g: int, a: Fraction, b: Fraction, deadline: float | None, max_iter: int = 30) -> list[Fraction]:
    """Chebyshev coefficients of the relative minimax P (min max |P(x)e^{-x} − 1|) by Remez exchange.

    Construction only: the result is certified afterwards, so convergence heuristics cannot make a
    certificate wrong, only the polynomial worse. Errors are compared as floats (their level is far above
    float64's range limits); points and coefficients are Arb midpoints.
    """
    from flint import arb, arb_mat

    mid, half = arb(to_fmpq((a + b) / 2)), arb(to_fmpq((b - a) / 2))
    n = g + 2
    basis = _chebyshev_basis(g)
    ref = [-(arb.pi() * i / (g + 1)).cos().mid() for i in range(n)]  # extrema of T_{g+1}
    one = arb(1)

    def errors(coeffs_poly, ts: list) -> list[float]:
        values = coeffs_poly.evaluate(ts)
        return [float((v * (-(mid + half * t)).exp() - 1).mid()) for v, t in zip(values, ts)]

    def cheb_row(t) -> list:
        row, prev, cur = [one], one, t
        if g >= 1:
            row.append(t)
        for _ in range(2, g + 1):
            prev, cur = cur, 2 * t * cur - prev
            row.append(cur)
        return row

    coeffs: list = []
    for _ in range(max_iter):
        _check_deadline(deadline)
        rows = []
        for i, t in enumerate(ref):
            w = (-(mid + half * t)).exp()
            rows.append([w * v for v in cheb_row(t)] + [arb((-1) ** i)])
        sol = arb_mat(rows).solve(arb_mat([[1]] * n), algorithm="approx")
        coeffs = [sol[k, 0].mid() for k in range(g + 1)]
        level = abs(float(sol[g + 1, 0].mid()))
        poly = sum((c * basis[k] for k, c in enumerate(coeffs)), basis[0] * 0)
        # new reference: the extremum of |err| between consecutive sign changes, endpoints included
        grid_per_gap = 12
        knots = sorted({float(t): t for t in [arb(-1), *ref, arb(1)]}.values(), key=float)
        pts, steps = [knots[0]], [arb(0)]
        for lo, hi in zip(knots[:-1], knots[1:]):
            step = ((hi - lo) / grid_per_gap).mid()
            pts += [(lo + step * j).mid() for j in range(1, grid_per_gap + 1)]
            steps += [step] * grid_per_gap
        groups: list[list] = []  # [t, err, step] of the largest |err| per sign run
        for t, v, step in zip(pts, errors(poly, pts), steps):
            if groups and (groups[-1][1] > 0) == (v > 0):
                if abs(v) > abs(groups[-1][1]):
                    groups[-1] = [t, v, step]
            else:
                groups.append([t, v, step])
        refined = _golden_max(lambda ts: [abs(e) for e in errors(poly, ts)], [(t, s) for t, _, s in groups])
        refined_vals = errors(poly, refined)
        if len(refined) < n:
            break  # lost alternation: keep the current solution (certification judges it)
        while len(refined) > n:  # drop the smaller end
            if abs(refined_vals[0]) < abs(refined_vals[-1]):
                refined, refined_vals = refined[1:], refined_vals[1:]
            else:
                refined, refined_vals = refined[:-1], refined_vals[:-1]
        peak = max(abs(v) for v in refined_vals)
        ref = refined
        if peak <= level * (1 + 1e-4):
            break
    return [arb_fraction(c) for c in coeffs]


def _golden_max(fn, starts: list, steps: int = 14) -> list:
    """Per (t0, width): a local maximiser of fn near t0 in [t0 − width, t0 + width] ∩ [−1, 1] (golden section,
    all searches advanced together so that ``fn`` evaluates one batch of points per step)."""
    from flint import arb

    ratio = ((arb(5).sqrt() - 1) / 2).mid()
    lo = [max(arb(-1), t - w, key=float).mid() for t, w in starts]
    hi = [min(arb(1), t + w, key=float).mid() for t, w in starts]
    x1 = [(h - ratio * (h - l)).mid() for l, h in zip(lo, hi)]
    x2 = [(l + ratio * (h - l)).mid() for l, h in zip(lo, hi)]
    f1, f2 = fn(x1), fn(x2)
    for _ in range(steps):
        left = [f1[i] > f2[i] for i in range(len(starts))]
        probe = []
        for i, go_left in enumerate(left):
            if go_left:
                hi[i], x2[i], f2[i] = x2[i], x1[i], f1[i]
                x1[i] = (hi[i] - ratio * (hi[i] - lo[i])).mid()
                probe.append(x1[i])
            else:
                lo[i], x1[i], f1[i] = x1[i], x2[i], f2[i]
                x2[i] = (lo[i] + ratio * (hi[i] - lo[i])).mid()
                probe.append(x2[i])
        for i, (go_left, value) in enumerate(zip(left, fn(probe))):
            if go_left:
                f1[i] = value
            else:
                f2[i] = value
    ends = fn(lo), fn(hi), fn([t for t, _ in starts])
    best = []
    for i, (t0, _) in enumerate(starts):
        cands = [(ends[0][i], lo[i]), (f1[i], x1[i]), (f2[i], x2[i]), (ends[1][i], hi[i]), (ends[2][i], t0)]
        best.append(max(cands, key=lambda p: p[0])[1])
    return best


def build_polynomial(family: str, degree: int, interval: Sequence[Any], *, deadline: float | None = None) -> Polynomial:
    """A degree-``degree`` candidate P ≈ e^x on ``interval`` from ``family`` (SPEC L7), exact rational coefficients.

    ``deadline`` (a ``time.monotonic()`` value) stops a long Remez exchange with ``TimeoutError``.
    """
    a, b = _check_build_args(family, degree, interval)
    if family == "taylor":
        return Polynomial(family, (a, b), tuple(Fraction(1, math.factorial(k)) for k in range(degree + 1)))
    from flint import arb, ctx

    saved = ctx.prec
    ctx.prec = _build_bits(degree, b - a)
    try:
        if family == "taylor-mid":
            m = (a + b) / 2
            scale = arb_fraction(arb(to_fmpq(m)).exp())
            coeffs = _taylor_shift([scale / math.factorial(k) for k in range(degree + 1)], -m)
        else:
            cheb = (_chebyshev_interpolant(degree, a, b) if family == "chebyshev"
                    else _remez_relative(degree, a, b, deadline))
            coeffs = _chebyshev_to_monomial(cheb, a, b)
    finally:
        ctx.prec = saved
    bits = _build_bits(degree, b - a)  # far below the approximation error: rounding is harmless, and certified anyway
    return Polynomial(family, (a, b), tuple(_round_bits(c, bits) for c in coeffs))
