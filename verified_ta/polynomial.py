"""Candidate polynomials P ≈ e^x on an interval [a, b] with exact rational coefficients (SPEC L6, L7, L8).

Families: ``taylor`` (Taylor at 0), ``taylor-mid`` (Taylor at the midpoint), ``chebyshev``
(interpolation at Chebyshev nodes) and ``minimax`` (relative minimax, Remez exchange for the weight
e^{-x}). Construction uses mpmath; every coefficient is then an exact :class:`fractions.Fraction`
(binary mpf values convert without rounding), so a certificate (``verified_ta.certificate``) is about
exactly the polynomial that is used. Pure Python + mpmath: no python-flint needed here.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Sequence

import mpmath

__all__ = ["FAMILIES", "Polynomial", "build_polynomial", "as_fraction", "fraction_str", "parse_fraction"]

FAMILIES = ("taylor", "taylor-mid", "chebyshev", "minimax")

# Working precision for constructing candidates (certification never uses it): this many digits beyond
# the expected error level 2(L/4)^{g+1}/(g+1)! of a near-best degree-g approximant on an interval of length L.
_GUARD_DPS = 30


def _build_dps(degree: int, length: Fraction) -> int:
    log10_error = (math.log10(2) + (degree + 1) * math.log10(float(length) / 4) - math.lgamma(degree + 2) / math.log(10))
    return _GUARD_DPS + max(0, math.ceil(-log10_error))


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


def _mpf(c: Fraction) -> mpmath.mpf:
    return mpmath.mpf(c.numerator) / c.denominator


def _taylor_shift(coefficients: Sequence[Fraction], shift: Fraction) -> tuple[Fraction, ...]:
    """Exact coefficients of z ↦ P(z + shift) (repeated synthetic division, O(g²) rational operations)."""
    b = list(coefficients)
    g = len(b) - 1
    for i in range(g):
        for j in range(g - 1, i - 1, -1):
            b[j] += shift * b[j + 1]
    return tuple(b)


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
        elif isinstance(x, (mpmath.mpf, mpmath.mpc)):
            coeffs = [_mpf(c) for c in self.coefficients]
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


# --- construction (floats/mpmath allowed; the result is rationalised exactly) -------------------


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


def _chebyshev_to_monomial(cheb: Sequence[Fraction], a: Fraction, b: Fraction) -> tuple[Fraction, ...]:
    """Exact monomial coefficients in x of Σ_k cheb[k] T_k(t), t = (2x − a − b)/(b − a) (Clenshaw on polynomials)."""
    t = [-(a + b) / (b - a), Fraction(2) / (b - a)]  # t as a polynomial in x

    def axpy(p: list[Fraction], q: list[Fraction], s: Fraction = Fraction(1)) -> list[Fraction]:
        out = [Fraction(0)] * max(len(p), len(q))
        for i, v in enumerate(p):
            out[i] += v
        for i, v in enumerate(q):
            out[i] += s * v
        return out

    def times_t(p: list[Fraction], s: Fraction) -> list[Fraction]:
        out = [Fraction(0)] * (len(p) + 1)
        for i, v in enumerate(p):
            out[i] += s * t[0] * v
            out[i + 1] += s * t[1] * v
        return out

    b1: list[Fraction] = [Fraction(0)]
    b2: list[Fraction] = [Fraction(0)]
    for k in range(len(cheb) - 1, 0, -1):
        b1, b2 = axpy(axpy([cheb[k]], times_t(b1, Fraction(2))), b2, Fraction(-1)), b1
    result = axpy(axpy([cheb[0]], times_t(b1, Fraction(1))), b2, Fraction(-1))
    return tuple(result[: len(cheb)])  # degree <= g: the start b1 = [0] only pads an exact zero on top


def _cheb_eval(c: Sequence[mpmath.mpf], t: mpmath.mpf) -> mpmath.mpf:
    b1 = b2 = mpmath.mpf(0)
    for ck in reversed(c[1:]):
        b1, b2 = ck + 2 * t * b1 - b2, b1
    return c[0] + t * b1 - b2


def _chebyshev_interpolant(g: int, a: Fraction, b: Fraction) -> list[mpmath.mpf]:
    """Chebyshev coefficients of the degree-g interpolant of e^x at the g+1 Chebyshev nodes of [a, b]."""
    mid, half = _mpf((a + b) / 2), _mpf((b - a) / 2)
    m = g + 1
    thetas = [mpmath.pi * (j + mpmath.mpf(1) / 2) / m for j in range(m)]
    values = [mpmath.exp(mid + half * mpmath.cos(th)) for th in thetas]
    coeffs = [2 * mpmath.fsum(v * mpmath.cos(k * th) for v, th in zip(values, thetas)) / m for k in range(m)]
    coeffs[0] /= 2
    return coeffs


def _remez_relative(g: int, a: Fraction, b: Fraction, max_iter: int = 30) -> list[mpmath.mpf]:
    """Chebyshev coefficients of the relative minimax P (min max |P(x)e^{-x} − 1|) by Remez exchange.

    Construction only: the result is certified afterwards, so convergence heuristics cannot make a
    certificate wrong, only the polynomial worse.
    """
    mid, half = _mpf((a + b) / 2), _mpf((b - a) / 2)
    n = g + 2
    ref = [-mpmath.cos(mpmath.pi * i / (g + 1)) for i in range(n)]  # extrema of T_{g+1}

    def err(c: list[mpmath.mpf], t: mpmath.mpf) -> mpmath.mpf:
        return _cheb_eval(c, t) * mpmath.exp(-(mid + half * t)) - 1

    coeffs: list[mpmath.mpf] = []
    for _ in range(max_iter):
        mat = mpmath.matrix(n, n)
        rhs = mpmath.matrix(n, 1)
        for i, t in enumerate(ref):
            w = mpmath.exp(-(mid + half * t))
            tk_prev, tk = mpmath.mpf(1), t
            mat[i, 0] = w
            if g >= 1:
                mat[i, 1] = w * t
            for k in range(2, g + 1):
                tk_prev, tk = tk, 2 * t * tk - tk_prev
                mat[i, k] = w * tk
            mat[i, g + 1] = (-1) ** i
            rhs[i] = 1
        sol = mpmath.lu_solve(mat, rhs)
        coeffs = [sol[k] for k in range(g + 1)]
        level = abs(sol[g + 1])
        # new reference: the extremum of |err| between consecutive sign changes, endpoints included
        grid_per_gap = 12
        knots = sorted({mpmath.mpf(-1), mpmath.mpf(1), *ref})
        pts = [(knots[0], mpmath.mpf(0))]
        for lo, hi in zip(knots[:-1], knots[1:]):
            pts += [(lo + (hi - lo) * j / grid_per_gap, (hi - lo) / grid_per_gap) for j in range(1, grid_per_gap + 1)]
        groups: list[tuple[mpmath.mpf, mpmath.mpf, mpmath.mpf]] = []  # (t, err, step) of the largest |err| per sign run
        for t, step in pts:
            v = err(coeffs, t)
            if groups and mpmath.sign(groups[-1][1]) == mpmath.sign(v):
                if abs(v) > abs(groups[-1][1]):
                    groups[-1] = (t, v, step)
            else:
                groups.append((t, v, step))
        refined = [_golden_max(lambda s: abs(err(coeffs, s)), t, step) for t, _, step in groups]
        refined_vals = [err(coeffs, t) for t in refined]
        if len(refined) < n:
            break  # lost alternation: keep the current solution (certification judges it)
        while len(refined) > n:  # drop the smaller end
            if abs(refined_vals[0]) < abs(refined_vals[-1]):
                refined, refined_vals = refined[1:], refined_vals[1:]
            else:
                refined, refined_vals = refined[:-1], refined_vals[:-1]
        peak = max(abs(v) for v in refined_vals)
        ref = refined
        if peak <= level * (1 + mpmath.mpf(10) ** -4):
            break
    return coeffs


def _golden_max(fn, t0: mpmath.mpf, width: mpmath.mpf, steps: int = 14) -> mpmath.mpf:
    """Local maximiser of fn near t0 within [t0 − width, t0 + width] ∩ [−1, 1] (golden section)."""
    lo, hi = max(mpmath.mpf(-1), t0 - width), min(mpmath.mpf(1), t0 + width)
    ratio = (mpmath.sqrt(5) - 1) / 2
    x1, x2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    f1, f2 = fn(x1), fn(x2)
    for _ in range(steps):
        if f1 > f2:
            hi, x2, f2 = x2, x1, f1
            x1 = hi - ratio * (hi - lo)
            f1 = fn(x1)
        else:
            lo, x1, f1 = x1, x2, f2
            x2 = lo + ratio * (hi - lo)
            f2 = fn(x2)
    best = max([(fn(lo), lo), (f1, x1), (f2, x2), (fn(hi), hi), (fn(t0), t0)], key=lambda p: p[0])
    return best[1]


def _rationalise(values: Sequence[mpmath.mpf]) -> tuple[Fraction, ...]:
    """Each value exactly, as a rational (binary mpf at the working precision: no further rounding)."""
    return tuple(as_fraction(+v) for v in values)


def build_polynomial(family: str, degree: int, interval: Sequence[Any]) -> Polynomial:
    """A degree-``degree`` candidate P ≈ e^x on ``interval`` from ``family`` (SPEC L7), exact rational coefficients."""
    a, b = _check_build_args(family, degree, interval)
    with mpmath.workdps(_build_dps(degree, b - a)):
        if family == "taylor":
            coeffs = tuple(Fraction(1, math.factorial(k)) for k in range(degree + 1))
        elif family == "taylor-mid":
            m = (a + b) / 2
            scale = _rationalise([mpmath.exp(_mpf(m))])[0]
            coeffs = _taylor_shift([scale / math.factorial(k) for k in range(degree + 1)], -m)
        else:
            cheb = _chebyshev_interpolant(degree, a, b) if family == "chebyshev" else _remez_relative(degree, a, b)
            coeffs = _chebyshev_to_monomial(_rationalise(cheb), a, b)
    return Polynomial(family, (a, b), coeffs)
