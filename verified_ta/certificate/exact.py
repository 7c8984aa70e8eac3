"""Exact and outward-rounded number handling of the certificates (docs/certificate.md §5).

Bounds are stored as decimal strings rounded *outward* (upper bounds up, lower bounds down) and read back
exactly; exact quantities (coefficients, interval, M) are "p/q" strings (``polynomial.fraction_str``).
``float_up`` is the smallest float >= a rational: a bound handed to float code never shrinks.
"""

from __future__ import annotations

import contextlib
import math
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, localcontext
from fractions import Fraction
from typing import Iterator

__all__ = ["decimal_up", "decimal_down", "parse_decimal", "float_up", "magnitude", "arb_precision"]


def decimal_up(x: Fraction, digits: int = 17) -> str:
    """Decimal string >= x with ``digits`` significant digits (outward rounding for upper bounds)."""
    return _decimal(x, digits, ROUND_CEILING)


def decimal_down(x: Fraction, digits: int = 17) -> str:
    """Decimal string <= x with ``digits`` significant digits (outward rounding for lower bounds)."""
    return _decimal(x, digits, ROUND_FLOOR)


def _decimal(x: Fraction, digits: int, rounding: str) -> str:
    with localcontext() as ctx:
        ctx.prec = digits
        ctx.rounding = rounding
        value = Decimal(x.numerator) / Decimal(x.denominator)  # one correctly-rounded division
        value = value.normalize()  # inside the context: strips zeros, never rounds (digits <= ctx.prec)
    return format(value, "e") if value != 0 else "0"


def parse_decimal(text: object, name: str) -> Fraction:
    """The exact value of a finite decimal string (at most 40 characters, exponent in [-3000, 400]: δ limits reach
    2^-8194, bounds stay below the float range); ValueError naming ``name`` otherwise."""
    if not isinstance(text, str) or len(text) > 40:
        raise ValueError(f"{name} must be a decimal string of at most 40 characters; got {str(text)[:60]!r}")
    try:
        value = Decimal(text)
    except ArithmeticError:
        raise ValueError(f"{name} must be a decimal string; got {text!r}") from None
    if not value.is_finite() or not -3000 <= value.adjusted() <= 400:
        raise ValueError(f"{name} must be a finite decimal with exponent in [-3000, 400]; got {text!r}")
    return Fraction(value)


def float_up(x: Fraction) -> float:
    """The smallest float >= x (``OverflowError`` beyond the float range)."""
    f = float(x)
    return f if Fraction(f) >= x else math.nextafter(f, math.inf)


def magnitude(x: int | float) -> str:
    """A count that may exceed the float range (ranks, bytes, flops): exact below 10^15, else "3.142e+612"."""
    if isinstance(x, float):
        return f"{x:.4g}"
    if abs(x) < 10**15:
        return str(x)
    digits = str(abs(x))
    return f"{'-' if x < 0 else ''}{digits[0]}.{digits[1:4]}e+{len(digits) - 1}"


@contextlib.contextmanager
def arb_precision(bits: int) -> Iterator[None]:
    """Set flint's global ``ctx.prec`` for the block and restore it afterwards."""
    from flint import ctx

    saved = ctx.prec
    ctx.prec = bits
    try:
        yield
    finally:
        ctx.prec = saved
