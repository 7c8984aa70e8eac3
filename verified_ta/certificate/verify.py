"""``verify_certificate``: re-check a certificate from its JSON alone, treating the file as untrusted (docs/certificate.md §5, §7).

Decoding is capped (size, UTF-8, nesting depth, strict JSON), every field is parsed strictly
(``document.parse_certificate``), and then everything the certificate vouches for is recomputed without any
search: M and the interval, the plan, the regime, every enclosure piece, the witness, the cross-check, the bound
lines, the costs, the verdict, its exit code and its message. The clock is checked between pieces.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from ..polynomial import fraction_str
from .crosscheck import poisson_check
from .document import Certificate, parse_certificate
from .enclosure import recheck_pieces, witness_lower
from .inputs import score_interval, scale_upper
from .limits import MAX_FILE_BYTES, MAX_NESTING, MAX_PIECES, TimeLimit
from .plan import make_plan
from .regime import fast_path_costs, regime
from .verdict import bound_lines, decide

__all__ = ["DEFAULT_VERIFY_TIME_LIMIT_S", "VerifyResult", "decode_certificate", "verify_certificate"]

DEFAULT_VERIFY_TIME_LIMIT_S = 60.0
_REL_SLACK = Fraction(1, 10**12)  # stored 17-digit decimal bounds may exceed recomputed ones by this much
_STRUCTURE = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]')


@dataclass
class VerifyResult:
    """Outcome of :func:`verify_certificate`: ``status`` is "valid", "rejected", "inconclusive" (the time limit ran
    out first) or "internal" (the checker itself failed: a bug to report); ``ok`` iff valid."""

    ok: bool
    problems: list[str]
    pieces_checked: int
    seconds: float
    status: str = "valid"

    @property
    def exit_code(self) -> int:
        """``verified_ta.cli.ExitCode``: 0 valid, 1 rejected, 3 inconclusive, 5 internal."""
        return {"valid": 0, "rejected": 1, "inconclusive": 3, "internal": 5}[self.status]


def decode_certificate(data: bytes | str) -> Any:
    """Decode untrusted certificate bytes: at most MAX_FILE_BYTES, UTF-8, nesting <= MAX_NESTING, strict JSON
    (no NaN/Infinity). ``ValueError`` with the reason otherwise."""
    if isinstance(data, str):
        data = data.encode("utf-8", errors="surrogatepass")
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"file has {len(data)} bytes, over the cap of {MAX_FILE_BYTES}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    depth = 0
    for match in _STRUCTURE.finditer(text):
        ch = match.group(0)[0]
        if ch in "[{":
            depth += 1
            if depth > MAX_NESTING:
                raise ValueError(f"JSON nested deeper than {MAX_NESTING} levels (at character {match.start()})")
        elif ch in "]}":
            depth -= 1

    def no_constants(name: str) -> None:
        raise ValueError(f"not strict JSON: {name} is not a number")

    try:
        return json.loads(text, parse_constant=no_constants)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    except ValueError as exc:  # e.g. an integer beyond Python's digit limit
        raise ValueError(f"not acceptable JSON ({exc})") from None


def _canonical(x: Any) -> Any:
    """``x`` as it reads back from strict JSON (tuples become lists)."""
    return json.loads(json.dumps(x, allow_nan=False))


def _difference(stored: Any, fresh: Any, path: str) -> str | None:
    """Where two JSON values first differ (None if equal)."""
    if isinstance(stored, dict) and isinstance(fresh, dict):
        for key in sorted(set(stored) | set(fresh), key=str):
            if key not in stored or key not in fresh:
                return f"{path}.{key} is {'missing' if key not in stored else 'unexpected'}"
            found = _difference(stored[key], fresh[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(stored, list) and isinstance(fresh, list) and len(stored) == len(fresh):
        for i, (s, f) in enumerate(zip(stored, fresh)):
            found = _difference(s, f, f"{path}[{i}]")
            if found:
                return found
        return None
    if stored == fresh and type(stored) is type(fresh):
        return None
    shown = repr(stored)
    return f"{path} = {shown[:60]}{'…' if len(shown) > 60 else ''} but recomputes to {repr(fresh)[:60]}"


def _empirical_ratio(cert: Certificate) -> float | None:
    """The unverified ``--empirical`` worst ratio, read only because a ratio > 1 downgrades the verdict."""
    emp = cert.unverified.get("empirical")
    ratio = emp.get("worst_ratio") if isinstance(emp, dict) else None
    return float(ratio) if isinstance(ratio, (int, float)) and not isinstance(ratio, bool) else None


def _recheck(cert: Certificate, raw: dict[str, Any], limit: TimeLimit) -> tuple[list[str], int]:
    problems: list[str] = []

    def compare(name: str, stored: Any, fresh: Any) -> None:
        found = _difference(stored, _canonical(fresh), name)
        if found:
            problems.append(found)

    inputs = cert.inputs
    M, _, b = score_interval(inputs)
    compare("M", raw["M"], fraction_str(M))
    compare("interval", raw["interval"], ["0/1", fraction_str(b)])
    compare("scale", raw["scale"], fraction_str(scale_upper(inputs.scale, inputs.d)))
    plan = make_plan(inputs, M)
    compare("plan", raw["plan"], plan.to_json())
    compare("regime", raw["regime"], regime(M, inputs.n))
    poly, approx = cert.polynomial, cert.approx
    checked, bounds, costs = 0, None, plan.costs
    if poly is None or approx is None:
        compare("bounds", raw["bounds"], None)
        compare("cross_checks", raw["cross_checks"], [])
    else:
        if poly.interval != (0, b):
            problems.append(f"the polynomial's interval is not [0, 2M] = [0, {b}] for B = {inputs.B}, d = {inputs.d}")
        else:
            problems += recheck_pieces(poly.coefficients, poly.interval, approx.pieces, approx.precision_bits, limit)
            checked = len(approx.pieces)
        top = max((p.upper for p in approx.pieces), default=Fraction(0))
        if not top <= approx.upper <= top * (1 + _REL_SLACK):
            problems.append(f"approx_error.upper {float(approx.upper):.17g} is not the largest piece bound {float(top):.17g}")
        if not 0 <= approx.witness <= b:
            problems.append("approx_error.witness lies outside [0, 2M]")
        else:
            low = witness_lower(poly.coefficients, approx.witness, approx.precision_bits)
            if not approx.lower <= low or approx.lower < low * (1 - _REL_SLACK):
                problems.append(f"approx_error.lower {float(approx.lower):.17g} is not the witness bound {float(low):.17g}")
        if approx.lower > approx.upper:
            problems.append(f"approx_error.lower {float(approx.lower):.17g} exceeds upper {float(approx.upper):.17g}")
        if approx.status == "tight" and approx.upper > (1 + Fraction(inputs.gap)) * approx.lower:
            problems.append("status 'tight' but upper > (1 + gap)·lower")
        if approx.status == "decided" and not (plan.budget is not None and (
                approx.upper <= plan.budget * (1 + _REL_SLACK) or approx.lower > plan.budget)):
            problems.append("status 'decided' but the enclosure decides nothing about the δ budget")
        if approx.status == "max-pieces" and len(approx.pieces) < MAX_PIECES:
            problems.append(f"status 'max-pieces' with {len(approx.pieces)} < {MAX_PIECES} pieces")
        compare("cross_checks", raw["cross_checks"], [poisson_check(poly, approx)] if poly.family == "taylor" else [])
        bounds = bound_lines(inputs, poly.shifted(M), M, approx.upper)
        compare("bounds", raw["bounds"], bounds)
        costs = fast_path_costs(inputs.n, inputs.d, poly.degree, inputs.itemsize, inputs.target, inputs.memory_limit_bytes)
    compare("costs", raw["costs"], costs)
    verdict, code, message = decide(
        inputs, lower_degree=plan.lower_degree, costs=costs, approx_lower=None if approx is None else approx.lower,
        bounds=bounds, no_budget_reason=plan.no_budget_reason,
        empirical_ratio=_empirical_ratio(cert),
    )
    if (cert.verdict, cert.exit_code) != (verdict, code):
        problems.append(f"verdict {cert.verdict!r} (exit {cert.exit_code}) but the checks give {verdict!r} (exit {code})")
    elif cert.message != message:
        problems.append(f"message does not recompute: stored {cert.message[:60]!r}…, expected {message[:60]!r}…")
    return problems, checked


def verify_certificate(data: dict[str, Any] | str | bytes, time_limit_s: float | None = DEFAULT_VERIFY_TIME_LIMIT_S) -> VerifyResult:
    """Re-check a certificate from its JSON alone, piece by piece, without any search (SPEC L5–L11).

    ``data`` is the decoded dict, or the raw text/bytes of the file (decoded with :func:`decode_certificate`).
    Never raises: a malformed input is "rejected" with the reason, a check that runs out of time "inconclusive".
    """
    start = time.perf_counter()
    limit = TimeLimit(time_limit_s)

    def result(status: str, problems: list[str], checked: int = 0) -> VerifyResult:
        return VerifyResult(status == "valid", problems, checked, time.perf_counter() - start, status)

    try:
        payload = decode_certificate(data) if isinstance(data, (str, bytes)) else data
        cert, raw = parse_certificate(payload)
    except (ValueError, RecursionError) as exc:
        return result("rejected", [f"malformed certificate: {exc}"])
    try:
        problems, checked = _recheck(cert, raw, limit)
    except TimeoutError as exc:
        return result("inconclusive", [f"verification stopped: {exc}"])
    except Exception as exc:  # the checker's own failure on a parsed certificate: never a crash, never accepted
        return result("internal", [f"internal error while checking (please report): {type(exc).__name__}: {exc}"])
    return result("valid" if not problems else "rejected", problems, checked)
