"""Rigorous certificates for the polynomial method (SPEC L5–L11, P31, P32, P41; docs/certificate.md).

One module per seam, each readable and testable alone:

* :mod:`.exact` — outward-rounded decimals, exact floats, Arb precision; :mod:`.limits` — time budget and caps.
* :mod:`.enclosure` — :func:`certify_polynomial`: sup_{[a,b]} |P(x)e^{-x} − 1| between a witness lower bound and a
  Taylor-model upper bound in Arb (python-flint), with :func:`recheck_pieces` for re-checking stored pieces.
* :mod:`.crosscheck` — the exact Poisson-tail formula for Taylor at 0 and Sollya's ``supnorm``.
* :mod:`.degrees` — the least certified degree per family, the exact Taylor degree, and a proved lower bound on the
  degree of *every* polynomial reaching ε.
* :mod:`.regime` — the regime label (a finite-n heuristic for L11) and the cost and memory model.
* :mod:`.inputs`, :mod:`.plan` — what is asked, and what is known before searching (δ limit, degree lower bound, costs).
* :mod:`.verdict` — the L9/L10 error lines (proved/derived), the δ budget and the verdict.
* :mod:`.document`, :mod:`.build`, :mod:`.verify` — the certificate, its assembly within the time limit, and its
  re-check from untrusted JSON; :mod:`.empirical`, :mod:`.quick`, :mod:`.regime_map` — ``--empirical``, the rows of
  ``verified-ta check`` and ``certify --map``.

python-flint, torch and mpmath are imported only where used; the CLI imports nothing from here until a command runs.
"""

from __future__ import annotations

from typing import Any

from .build import build_certificate
from .crosscheck import poisson_tail, sollya_supnorm
from .degrees import DegreeResult, degree_lower_bound, minimal_degree, taylor_degree
from .document import Certificate
from .enclosure import ApproxBound, Piece, certify_polynomial, recheck_pieces, witness_lower
from .exact import decimal_down, decimal_up
from .inputs import CertifyInputs, score_interval
from .plan import Plan, make_plan
from .quick import quick_certify_rows
from .regime import fast_path_costs, rank_exponent, regime
from .verify import VerifyResult, decode_certificate, verify_certificate

__all__ = [
    "ApproxBound",
    "Piece",
    "certify_polynomial",
    "recheck_pieces",
    "witness_lower",
    "poisson_tail",
    "sollya_supnorm",
    "taylor_degree",
    "degree_lower_bound",
    "DegreeResult",
    "minimal_degree",
    "regime",
    "rank_exponent",
    "fast_path_costs",
    "score_interval",
    "decimal_up",
    "decimal_down",
    "Plan",
    "make_plan",
    "build_certificate",
    "certificate_to_json",
    "CertifyInputs",
    "Certificate",
    "VerifyResult",
    "decode_certificate",
    "verify_certificate",
    "quick_certify_rows",
]


def certificate_to_json(cert: Any) -> str:
    """The certificate as strict JSON text with the tool's header (``report.strict_json``)."""
    from ..report import strict_json

    return strict_json(cert.to_json(), "certify")
