"""The quick certificate rows of ``verified-ta check`` (a few seconds): P32 / L7 bounds, the Poisson cross-check,
L7's minimax-versus-Taylor degree, a certificate that verifies from its JSON, and the same certificate rejected once a
coefficient is tampered with."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from typing import TYPE_CHECKING

from ..polynomial import Polynomial, build_polynomial, fraction_str, parse_fraction
from .build import build_certificate
from .crosscheck import poisson_tail
from .degrees import minimal_degree, taylor_degree
from .enclosure import DEFAULT_GAP, certify_polynomial
from .exact import decimal_down, decimal_up
from .inputs import CertifyInputs
from .verify import verify_certificate

if TYPE_CHECKING:
    from ..report import CheckRow

__all__ = ["quick_certify_rows"]


def quick_certify_rows() -> list[CheckRow]:
    """Rows for ``verified-ta check`` (see the module docstring)."""
    from ..report import CheckRow

    rows: list[CheckRow] = []
    eps = Fraction(1, 10**6)
    taylor = build_polynomial("taylor", 12, (0, 2))
    bound = certify_polynomial(taylor)
    rows.append(CheckRow.compare("P32", "Taylor g=12 on [0, 2]: certified sup |Pe^-x − 1| <= ε", float(bound.upper), float(eps),
                                 f"[{decimal_down(bound.lower, 4)}, {decimal_up(bound.upper, 4)}], {bound.piece_count} pieces"))
    lo, hi = poisson_tail(Fraction(2), 12)
    inside = bound.lower <= hi and lo <= bound.upper
    rows.append(CheckRow.compare("L7", "Poisson-tail formula inside the Arb enclosure (upper/exact − 1 <= gap)",
                                 float((bound.upper - lo) / lo) if inside else math.inf, float(DEFAULT_GAP),
                                 f"exact {decimal_up(hi, 6)}"))
    mm = minimal_degree("minimax", (0, 16), Fraction(1, 1000))
    gt = taylor_degree(Fraction(16), Fraction(1, 1000))
    rows.append(CheckRow.compare("L7", "relative minimax degree <= 0.6 × Taylor degree ([0,16], ε=1e-3)",
                                 mm.degree, 0.6 * gt, f"minimax {mm.degree} (minimal: {mm.minimal}) vs Taylor {gt}"))
    cert = build_certificate(CertifyInputs(B=1.0, n=256, d=2, eps=1e-6))
    data = cert.to_json()
    ok = verify_certificate(data)
    tampered = json.loads(json.dumps(data))
    c0 = parse_fraction(tampered["coefficients"][1], "c")
    tampered["coefficients"][1] = tampered["polynomial"]["coefficients"][1] = fraction_str(c0 * (1 + Fraction(1, 10**4)))
    tampered["polynomial"]["sha256"] = Polynomial(cert.polynomial.family, cert.polynomial.interval,
                                                  tuple(parse_fraction(c, "c") for c in tampered["coefficients"])).sha256()
    bad = verify_certificate(tampered)
    rows.append(CheckRow("L9", "certificate (B=1, n=256, d=2) verifies from its JSON", 0.0 if ok.ok else 1.0, 0.0, ok.ok,
                         f"{cert.verdict}, {ok.pieces_checked} pieces re-checked in {ok.seconds:.2f}s"))
    rows.append(CheckRow("L7", "tampered coefficient (re-hashed) is rejected", 0.0 if not bad.ok else 1.0, 0.0, not bad.ok,
                         bad.problems[0][:80] if bad.problems else "accepted: BUG"))
    return rows
