"""Independent cross-checks of the enclosure (SPEC L7; docs/certificate.md §1): the exact Poisson-tail formula
for Taylor at 0, and Sollya's ``supnorm`` when a ``sollya`` binary is on PATH."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
from decimal import Decimal
from fractions import Fraction
from typing import Any

from ..polynomial import Polynomial, arb_fraction, as_fraction, to_fmpq
from .enclosure import ApproxBound
from .exact import arb_precision, decimal_down, decimal_up

__all__ = ["poisson_tail", "poisson_check", "sollya_supnorm", "sollya_check"]


def poisson_tail(b: Fraction, g: int, prec: int = 256) -> tuple[Fraction, Fraction]:
    """Enclosure of P[Poisson(b) > g] = 1 − e^{-b} Σ_{k≤g} b^k/k!: the exact sup of |T_g(x)e^{-x} − 1| on [0, b].

    For Taylor at 0, T_g(x)e^{-x} − 1 = −P[Poisson(x) > g], increasing in x (SPEC L7, docs/certificate.md §1).
    """
    from flint import arb

    b = as_fraction(b)
    partial = sum((b**k / math.factorial(k) for k in range(g + 1)), Fraction(0))
    bits = prec
    while True:
        with arb_precision(bits):
            tail = 1 - (-arb(to_fmpq(b))).exp() * arb(to_fmpq(partial))
            if tail.rad() * 2**20 < abs(tail.mid()) or bits > 1 << 15:
                return arb_fraction(tail.lower()), arb_fraction(tail.upper())
        bits *= 2


def poisson_check(poly: Polynomial, approx: ApproxBound) -> dict[str, Any]:
    """The Poisson-tail cross-check of a Taylor-at-0 enclosure: the exact sup must lie in [lower, upper]."""
    lo, hi = poisson_tail(poly.interval[1], poly.degree)
    return {
        "name": "poisson-tail", "polynomial": f"taylor degree {poly.degree}", "exact": [decimal_down(lo), decimal_up(hi)],
        "certified": [decimal_down(approx.lower), decimal_up(approx.upper)],
        "agrees": approx.lower <= hi and lo <= approx.upper,
    }


def sollya_supnorm(poly: Polynomial, accuracy_bits: int = 30, timeout_s: float = 60.0) -> tuple[Fraction, Fraction] | None:
    """Sollya's ``supnorm(P, exp(x), [a;b], relative, 2^-bits)`` when the ``sollya`` binary exists; None otherwise."""
    exe = shutil.which("sollya")
    if exe is None:
        return None
    a, b = poly.interval
    terms = " + ".join(f"({c.numerator})/({c.denominator})*x^{k}" for k, c in enumerate(poly.coefficients))
    script = (
        f"prec=300!; display=decimal!;\n"
        f"P = {terms};\n"
        f"r = supnorm(P, exp(x), [({a.numerator})/({a.denominator}); ({b.numerator})/({b.denominator})], relative, 2^(-{accuracy_bits}));\n"
        "print(inf(r)); print(sup(r));\nquit;\n"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".sollya", delete=False) as fh:
        fh.write(script)
        path = fh.name
    try:
        out = subprocess.run([exe, path], capture_output=True, text=True, timeout=timeout_s)
    finally:
        os.unlink(path)
    lines = [ln.strip() for ln in out.stdout.splitlines() if ln.strip()]
    try:
        return Fraction(Decimal(lines[-2])), Fraction(Decimal(lines[-1]))
    except (IndexError, ValueError, ArithmeticError):
        raise RuntimeError(f"could not parse sollya output: {out.stdout!r} {out.stderr!r}") from None


def sollya_check(poly: Polynomial, approx: ApproxBound, timeout_s: float) -> dict[str, Any]:
    """Sollya's sup norm against the enclosure, or why it was skipped."""
    if timeout_s <= 0:
        return {"name": "sollya-supnorm", "skipped": "time limit reached"}
    try:
        sol = sollya_supnorm(poly, timeout_s=timeout_s)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return {"name": "sollya-supnorm", "skipped": f"sollya failed: {exc}"}
    if sol is None:
        return {"name": "sollya-supnorm", "skipped": "no sollya binary on PATH"}
    return {"name": "sollya-supnorm", "exact": [decimal_down(sol[0]), decimal_up(sol[1])],
            "agrees": approx.lower <= sol[1] and sol[0] <= approx.upper}
