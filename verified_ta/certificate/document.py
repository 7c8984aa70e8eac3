"""The certificate document: what a certificate vouches for, its JSON form and a strict parser for untrusted JSON
(docs/certificate.md §5).

Everything outside ``unverified`` is recomputed by ``--verify``; ``unverified`` (the search log with the degree
table, timings, Sollya's output and ``--empirical`` instances) is reported, never vouched for. The parser checks
every field's type, size and range before any arithmetic and raises ``ValueError`` naming the field.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from fractions import Fraction
from typing import Any

from ..polynomial import FAMILIES, Polynomial, fraction_str, parse_fraction
from .enclosure import METHOD, ApproxBound, Piece
from .exact import decimal_down, decimal_up, parse_decimal
from .inputs import CertifyInputs, scale_upper
from .limits import (
    MAX_DEGREE, MAX_ENDPOINT_DIGITS, MAX_ORDER, MAX_PIECES, MAX_PRECISION_BITS, MAX_RATIONAL_DIGITS, MIN_PRECISION_BITS,
)

__all__ = ["FORMAT", "HEADER_KEYS", "UNVERIFIED_NOTE", "Certificate", "parse_certificate"]

FORMAT = "verified-ta certificate v2"
#: keys ``report.write_json`` puts in front of every JSON document (accepted, not vouched for)
HEADER_KEYS = ("schema_version", "tool", "version", "command")
UNVERIFIED_NOTE = "not vouched for by the certificate and ignored by --verify (except to downgrade a verdict)"
_STATUSES = ("tight", "decided", "max-pieces")


@dataclass
class Certificate:
    """Everything ``verified-ta certify`` claims (``polynomial``, ``approx`` and ``bounds`` are None when no polynomial
    was certified, e.g. when the plan already shows that the fast path does not pay)."""

    inputs: CertifyInputs
    M: Fraction
    plan: dict[str, Any]
    regime: dict[str, Any]
    polynomial: Polynomial | None
    approx: ApproxBound | None
    cross_checks: list[dict[str, Any]]
    bounds: dict[str, Any] | None
    costs: dict[str, Any]
    verdict: str
    exit_code: int
    message: str
    unverified: dict[str, Any] = field(default_factory=dict)

    @property
    def degree_table(self) -> list[dict[str, Any]]:
        """The search log: least certified degree per family (reported, not vouched for)."""
        return self.unverified.get("degree_table", [])

    @property
    def empirical(self) -> dict[str, Any] | None:
        return self.unverified.get("empirical")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: exact rationals as "p/q", certified bounds as outward-rounded decimal strings."""
        poly, approx = self.polynomial, self.approx
        return {
            "format": FORMAT,
            "inputs": asdict(self.inputs),
            "scale": fraction_str(scale_upper(self.inputs.scale, self.inputs.d)),
            "M": fraction_str(self.M),
            "interval": ["0/1", fraction_str(2 * self.M)],
            "plan": self.plan,
            "regime": self.regime,
            "polynomial": None if poly is None else {
                "family": poly.family,
                "degree": poly.degree,
                "coefficients": poly.coefficient_strings(),
                "sha256": poly.sha256(),
            },
            "coefficients": None if poly is None else poly.coefficient_strings(),
            "approx_error": None if approx is None else {
                "lower": decimal_down(approx.lower),
                "upper": decimal_up(approx.upper),
                "witness": fraction_str(approx.witness),
                "method": approx.method,
                "precision_bits": approx.precision_bits,
                "piece_count": approx.piece_count,
                "status": approx.status,
                "pieces": [[fraction_str(p.lo), fraction_str(p.hi), p.order, decimal_up(p.upper)] for p in approx.pieces],
            },
            "cross_checks": self.cross_checks,
            "bounds": self.bounds,
            "costs": self.costs,
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "message": self.message,
            "unverified": {"note": UNVERIFIED_NOTE, **self.unverified},
        }


# --- strict parsing of untrusted JSON ------------------------------------------------------------------

_KEYS = ("format", "inputs", "scale", "M", "interval", "plan", "regime", "polynomial", "coefficients", "approx_error",
         "cross_checks", "bounds", "costs", "verdict", "exit_code", "message", "unverified")


def _expect(ok: bool, path: str, what: str, value: Any) -> None:
    if not ok:
        shown = repr(value)
        raise ValueError(f"{path} must be {what}; got {shown[:80]}{'…' if len(shown) > 80 else ''}")


def _object(value: Any, path: str, keys: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    _expect(isinstance(value, dict), path, "an object", value)
    missing = [k for k in keys if k not in value]
    extra = [k for k in value if k not in keys and k not in optional]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}")
    if extra:
        raise ValueError(f"{path} has unexpected field(s) {', '.join(map(str, extra[:5]))}")
    return value


def _int(value: Any, path: str, lo: int, hi: int) -> int:
    _expect(isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi, path,
            f"an integer in [{lo}, {hi}]", value)
    return value


def _rational(value: Any, path: str, max_digits: int = MAX_RATIONAL_DIGITS) -> Fraction:
    _expect(isinstance(value, str) and len(value) <= 2 * max_digits + 2, path,
            f"an exact rational 'p/q' of at most {max_digits} digits each", value)
    return parse_fraction(value, path)


def _list(value: Any, path: str, max_len: int) -> list:
    _expect(isinstance(value, list) and len(value) <= max_len, path, f"a list of at most {max_len} entries", value)
    return value


def _inputs(value: Any) -> CertifyInputs:
    names = tuple(f.name for f in fields(CertifyInputs))
    raw = _object(value, "inputs", names)
    try:
        return CertifyInputs(**raw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"inputs: {exc}") from None


def _polynomial(raw: dict[str, Any]) -> Polynomial | None:
    poly = raw["polynomial"]
    if poly is None:
        _expect(raw["coefficients"] is None and raw["approx_error"] is None, "coefficients and approx_error",
                "null when polynomial is null", [raw["coefficients"], raw["approx_error"]])
        return None
    poly = _object(poly, "polynomial", ("family", "degree", "coefficients", "sha256"))
    _expect(poly["family"] in FAMILIES, "polynomial.family", f"one of {', '.join(FAMILIES)}", poly["family"])
    degree = _int(poly["degree"], "polynomial.degree", 0, MAX_DEGREE)
    coeffs = _list(raw["coefficients"], "coefficients", MAX_DEGREE + 1)
    _expect(coeffs == poly["coefficients"], "polynomial.coefficients", "equal to coefficients", poly["coefficients"])
    _expect(len(coeffs) == degree + 1, "polynomial.degree", f"len(coefficients) − 1 = {len(coeffs) - 1}", degree)
    _expect(isinstance(poly["sha256"], str) and len(poly["sha256"]) == 64, "polynomial.sha256", "a SHA-256 hex digest",
            poly["sha256"])
    interval = _list(raw["interval"], "interval", 2)
    _expect(len(interval) == 2, "interval", "a pair", interval)
    a, b = (_rational(x, f"interval[{i}]") for i, x in enumerate(interval))
    values = tuple(_rational(c, f"coefficients[{i}]") for i, c in enumerate(coeffs))
    try:
        polynomial = Polynomial(poly["family"], (a, b), values)
    except ValueError as exc:
        raise ValueError(f"polynomial: {exc}") from None
    if poly["sha256"] != polynomial.sha256():
        raise ValueError("polynomial.sha256 does not match the coefficients: the polynomial was changed")
    return polynomial


def _approx(value: Any) -> ApproxBound:
    ae = _object(value, "approx_error", ("lower", "upper", "witness", "method", "precision_bits", "piece_count",
                                         "status", "pieces"))
    _expect(ae["method"] == METHOD, "approx_error.method", repr(METHOD), ae["method"])
    _expect(ae["status"] in _STATUSES, "approx_error.status", f"one of {', '.join(_STATUSES)}", ae["status"])
    prec = _int(ae["precision_bits"], "approx_error.precision_bits", MIN_PRECISION_BITS, MAX_PRECISION_BITS)
    raw_pieces = _list(ae["pieces"], "approx_error.pieces", MAX_PIECES)
    _int(ae["piece_count"], "approx_error.piece_count", len(raw_pieces), len(raw_pieces))
    pieces = []
    for i, p in enumerate(raw_pieces):
        path = f"approx_error.pieces[{i}]"
        _expect(isinstance(p, list) and len(p) == 4, path, "[lo, hi, order, upper]", p)
        pieces.append(Piece(_rational(p[0], f"{path}.lo", MAX_ENDPOINT_DIGITS), _rational(p[1], f"{path}.hi", MAX_ENDPOINT_DIGITS),
                            _int(p[2], f"{path}.order", 0, MAX_ORDER), parse_decimal(p[3], f"{path}.upper")))
    return ApproxBound(parse_decimal(ae["lower"], "approx_error.lower"), parse_decimal(ae["upper"], "approx_error.upper"),
                       _rational(ae["witness"], "approx_error.witness", MAX_ENDPOINT_DIGITS), pieces, prec, math.nan,
                       ae["status"], ae["method"])


def parse_certificate(data: Any) -> tuple[Certificate, dict[str, Any]]:
    """Parse untrusted JSON (already decoded) into a :class:`Certificate` and the raw dict; ``ValueError`` naming the
    first malformed field. Recomputed fields (plan, regime, bounds, costs, verdict, …) are kept as given, for
    comparison."""
    raw = _object(data, "certificate", _KEYS, HEADER_KEYS)
    _expect(raw["format"] == FORMAT, "format", repr(FORMAT), raw["format"])
    inputs = _inputs(raw["inputs"])
    polynomial = _polynomial(raw)
    approx = None if polynomial is None else _approx(raw["approx_error"])
    _expect(isinstance(raw["verdict"], str) and isinstance(raw["message"], str), "verdict and message", "strings",
            [raw["verdict"], raw["message"]])
    _int(raw["exit_code"], "exit_code", 0, 5)
    _list(raw["cross_checks"], "cross_checks", 4)
    _expect(isinstance(raw["unverified"], dict), "unverified", "an object", raw["unverified"])
    cert = Certificate(inputs, _rational(raw["M"], "M"), raw["plan"], raw["regime"], polynomial, approx,
                       raw["cross_checks"], raw["bounds"], raw["costs"], raw["verdict"], raw["exit_code"], raw["message"],
                       {k: v for k, v in raw["unverified"].items() if k != "note"})
    return cert, raw
