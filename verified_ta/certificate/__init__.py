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

python-flint, torch and mpmath are imported only where used.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name → submodule; imported on first use (PEP 562), so ``import verified_ta.certificate`` (and the CLI's
#: start-up, which reads ``limits``) stays cheap
_EXPORTS = {
    "ApproxBound": "enclosure",
    "Piece": "enclosure",
    "certify_polynomial": "enclosure",
    "recheck_pieces": "enclosure",
    "witness_lower": "enclosure",
    "poisson_tail": "crosscheck",
    "sollya_supnorm": "crosscheck",
    "taylor_degree": "degrees",
    "degree_lower_bound": "degrees",
    "DegreeResult": "degrees",
    "minimal_degree": "degrees",
    "regime": "regime",
    "rank_exponent": "regime",
    "fast_path_costs": "regime",
    "score_interval": "inputs",
    "CertifyInputs": "inputs",
    "decimal_up": "exact",
    "decimal_down": "exact",
    "Plan": "plan",
    "make_plan": "plan",
    "build_certificate": "build",
    "Certificate": "document",
    "VerifyResult": "verify",
    "decode_certificate": "verify",
    "verify_certificate": "verify",
    "quick_certify_rows": "quick",
}

__all__ = [*_EXPORTS, "certificate_to_json"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def certificate_to_json(cert: Any) -> str:
    """The certificate as strict JSON text with the tool's header (``report.strict_json``)."""
    from ..report import strict_json

    return strict_json(cert.to_json(), "certify")
