"""Error-bound lines, the δ budget and the verdict of a certificate (SPEC L9, L10; docs/certificate.md §3–4).

Shared by build and verify, so that ``--verify`` recomputes exactly what ``certify`` printed. Every line comes
from ``verified_ta.error_bounds`` (proofs: docs/bounds.md) and is tagged **proved** or **derived**; a total is
proved only when each of its parts is. The verdict compares the chosen target's total with ε and says
"certified" only for a proved total.
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from typing import Any, Sequence

from .exact import decimal_down, decimal_up, float_up, magnitude
from .inputs import CertifyInputs, scale_upper
from .limits import MAX_DEGREE

__all__ = [
    "VERDICT_CODES", "bound_lines", "approximation_bound", "floating_point_bound", "delta_limit", "delta_budget",
    "decide",
]

#: verdict → exit code (the numbers of ``verified_ta.cli.ExitCode``: OK, FAILED, INCONCLUSIVE, NOT_APPLICABLE)
VERDICT_CODES = {"certified": 0, "target missed": 1, "inconclusive": 3, "not applicable": 4}

_GRADIENT_NOTE = "assumes X_i = Y_i = I (||A_i||∞ <= B) and ||E||∞ <= B²; scales with ||A1||∞||A2||∞||A3||∞"


def _gradient_setting(inputs: CertifyInputs, delta: Fraction):
    """(H, ||E||∞, ||q̃||∞ bound, ||c̃_j||₁ bound, a_norms) of the gradient lines' stated setting (X_i = Y_i = I)."""
    from ..error_bounds import value_bound

    H = Fraction(value_bound(inputs.B))  # ||h||∞ = ||V1 ⊘ V2||∞ <= B² (L5)
    e_norm = H  # assumption: targets within the value range
    eta = 2 * delta / (1 - delta)
    c_inf = (1 + eta) * H + e_norm
    return H, e_norm, inputs.d * c_inf * H, inputs.d * c_inf, (inputs.B, inputs.B, inputs.B)


def approximation_bound(inputs: CertifyInputs, delta: Fraction) -> float:
    """The approximation line of the chosen target at relative error δ: L9 (forward) or L10's ‖G̃ − G‖∞ (gradient)."""
    from ..error_bounds import forward_error_bound, gradient_error_bounds, value_bound

    if inputs.target == "forward":
        return forward_error_bound(delta, value_bound(inputs.B))
    H, _, q_norm, _, a_norms = _gradient_setting(inputs, delta)
    return gradient_error_bounds(delta, H, q_norm, inputs.n, inputs.d, a_norms, scale_upper(inputs.scale, inputs.d)).G


def floating_point_bound(inputs: CertifyInputs, shifted: Sequence[Fraction], M: Fraction, delta: Fraction) -> float:
    """The chosen target's floating-point term (A1 or A2) for the shifted coefficients; ValueError when the dtype
    cannot evaluate the polynomial on this range (ρ >= 1)."""
    from ..error_bounds import forward_rounding_term, gradient_rounding_term, value_bound

    dtype = inputs.dtype  # by name: the bounds need no torch (``verified_ta.fp_bounds``)
    if inputs.target == "forward":
        return forward_rounding_term(shifted, M, inputs.d, inputs.n, inputs.n, dtype, delta, value_bound(inputs.B))
    H, e_norm, _, c_l1, a_norms = _gradient_setting(inputs, delta)
    return gradient_rounding_term(shifted, M, inputs.n, inputs.d, dtype, delta, H, e_norm, c_l1, a_norms,
                                  scale_upper(inputs.scale, inputs.d))


#: per target: (approximation line, its tag and SPEC ID, floating-point line, its tag and SPEC ID), docs/bounds.md
_LINES = {
    "forward": (("forward approximation ||Att̃ − Att||∞ <= 2δ/(1−δ)·B²", "proved", "L9",
                 "δ = certified approximation error, ||V1⊘V2||∞ <= B² (L5); docs/bounds.md L9"),
                ("forward floating-point term", "proved", "A1",
                 "Higham γ_k with the feature amplification κ; docs/bounds.md, floating-point term of A1")),
    "gradient": (("gradient approximation ||G̃ − G||∞", "derived", "L10", _GRADIENT_NOTE),
                 ("gradient floating-point term", "derived", "A2", _GRADIENT_NOTE)),
}


def bound_lines(inputs: CertifyInputs, shifted: Sequence[Fraction], M: Fraction, delta: Fraction) -> dict[str, Any]:
    """The JSON-ready bounds of a certificate whose polynomial has certified relative error <= δ on [0, 2M].

    Lines for both targets (approximation, floating-point term, total; the gradient also its intermediate L10
    lines); a total is tagged proved iff both its parts are. ``rho`` is the forward floating-point term as a
    relative per-entry error (η = 2ρ/(1−ρ) inverted); ``total``/``tag`` are the chosen target's total line.
    Values are rounded up.
    """
    from ..error_bounds import forward_rounding_term, gradient_error_bounds

    lines: list[dict[str, Any]] = []
    out: dict[str, Any] = {"target": f"{inputs.target} total", "rho": None, "total": None, "tag": "derived",
                           "fp_message": "", "lines": lines}
    if delta >= 1:
        out["fp_message"] = "approximation error >= 1: no bound"
        return out
    try:
        eta_fp = Fraction(forward_rounding_term(shifted, M, inputs.d, inputs.n, inputs.n, inputs.dtype, delta, 1))
        rho = eta_fp / (2 + eta_fp)
        out["rho"] = decimal_up(rho)
        out["fp_message"] = (f"{inputs.dtype} rounding of features and dot products adds ρ <= {float(rho):.3e} "
                             "(relative, per entry)")
    except ValueError:
        out["fp_message"] = (f"{inputs.dtype} cannot be certified to ε: the worst-case rounding error of the features "
                             "and dot products reaches the normaliser itself (ρ >= 1; docs/bounds.md, A1)")

    def line(name: str, value: float | None, tag: str, spec_id: str, note: str = "") -> None:
        lines.append({"name": name, "value": value, "tag": tag, "spec": spec_id, "note": note})

    for target, (approx_line, fp_line) in _LINES.items():
        sub = replace(inputs, target=target)
        if target == "gradient":
            H, _, q_norm, _, a_norms = _gradient_setting(inputs, delta)
            g = gradient_error_bounds(delta, H, q_norm, inputs.n, inputs.d, a_norms, scale_upper(inputs.scale, inputs.d))
            line("gradient ||c̃ − c||∞ <= ηH", g.c, "derived", "L10")
            line("gradient max_j ||p̃_j − p_j||₁", g.p_row_l1, "derived", "L10")
        approx = approximation_bound(sub, delta)
        try:
            fp = floating_point_bound(sub, shifted, M, delta)
        except ValueError:
            fp = None
        line(approx_line[0], approx, *approx_line[1:])
        line(f"{fp_line[0]} ({inputs.dtype})", fp, *fp_line[1:])
        tag = "proved" if approx_line[1] == fp_line[1] == "proved" else "derived"
        value = None if fp is None else float_up(Fraction(approx) + Fraction(fp))
        line(f"{target} total", value, tag, approx_line[2])
        if target == inputs.target:
            out["tag"] = tag
            out["total"] = None if value is None else decimal_up(Fraction(value))
    return out


def _threshold(ok, hi: Fraction = Fraction(1, 2)) -> tuple[Fraction | None, Fraction]:
    """For ok monotone in δ (true below a threshold δ*): (lo, up) with ok(lo) and not ok(up), lo <= δ* <= up within
    ~1e-6 relative; lo is None when ok fails down to hi·2^-8192; up is 1 when ok(hi) holds (no limit below 1)."""
    if ok(hi):
        return hi, Fraction(1)
    k = 1
    while not ok(hi / 2**k):  # find the binary order of magnitude
        k *= 2
        if k > 1 << 13:
            return None, hi / 2 ** (k // 2)
    lo_k = k // 2
    while k - lo_k > 1:
        mid = (k + lo_k) // 2
        k, lo_k = (mid, lo_k) if ok(hi / 2**mid) else (k, mid)
    lo, up = hi / 2**k, hi / 2 ** (k - 1)
    for _ in range(20):
        mid = (lo + up) / 2
        lo, up = (mid, up) if ok(mid) else (lo, mid)
    return lo, up


def _fits(inputs: CertifyInputs, allowance: Fraction):
    eps = Fraction(inputs.eps)
    return lambda delta: Fraction(approximation_bound(inputs, delta)) <= eps - allowance


def delta_limit(inputs: CertifyInputs) -> Fraction:
    """An upper limit on the relative error of *every* polynomial that meets the target (docs/certificate.md §3):
    the chosen target's approximation line alone exceeds ε at and above it (the floating-point term is >= 0).
    1 when the line stays below ε up to δ = 1/2."""
    return _threshold(_fits(inputs, Fraction(0)))[1]


def delta_budget(inputs: CertifyInputs, shifted: Sequence[Fraction], M: Fraction) -> Fraction | None:
    """The relative error δ the search aims for, so that the chosen target's total stays <= ε for a proxy polynomial
    with these ``shifted`` coefficients (docs/certificate.md §3): the floating-point term at the largest δ the
    approximation line allows is set aside first (it grows with δ). None when no δ > 0 fits.
    """
    largest = _threshold(_fits(inputs, Fraction(0)))[0]
    if largest is None:
        return None
    try:
        fp = Fraction(floating_point_bound(inputs, shifted, M, largest))
    except ValueError:
        return None
    return None if fp >= Fraction(inputs.eps) else _threshold(_fits(inputs, fp))[0]


def decide(
    inputs: CertifyInputs,
    *,
    lower_degree: int,
    costs: dict[str, Any],
    approx_lower: Fraction | None,
    bounds: dict[str, Any] | None,
    no_budget_reason: str = "",
    empirical_ratio: float | None = None,
) -> tuple[str, int, str]:
    """(verdict, exit code, message) from vouched data only (so ``--verify`` recomputes it; docs/certificate.md §4).

    Order: not applicable (the fast path does not fit or pay) > target missed > inconclusive > certified.
    ``bounds`` is None when no polynomial was certified; ``costs`` are then those at ``lower_degree`` (capped), and
    ``no_budget_reason`` says why no search ran when the floating-point term alone exceeds ε.
    """
    eps = Fraction(inputs.eps)
    target = f"{inputs.target} total"
    proved = ""
    if bounds is not None:
        forward = next(ln for ln in bounds["lines"] if ln["name"] == "forward total")
        if forward["value"] is not None:
            proved = f"; proved: forward total <= {forward['value']:.4g}"
    why_not = []
    if not costs["fits_memory"]:
        fit = costs["max_degree_fitting"]
        why_not.append(f"its features need {magnitude(costs['fast_memory_bytes'])} bytes, over the memory limit "
                       f"{costs['memory_limit_bytes']} ({f'features fit up to degree {fit}' if fit >= 0 else 'not even degree 0 fits'}; "
                       "raise --memory-limit or use exact attention)")
    if not costs["fast_pays"]:
        why_not.append(f"exact is cheaper at n = {inputs.n} (cost model; crossover n = {magnitude(costs['crossover_n'])})")
    if why_not:
        at = (f"degree {costs['degree']}, rank r = {magnitude(costs['rank'])}" if bounds is not None
              else f"every polynomial reaching ε has degree >= {lower_degree} (proved), so rank r >= "
                   f"{magnitude(costs['rank'])}")
        return "not applicable", 4, f"the fast path does not pay here: {at}: {'; '.join(why_not)}{proved}"
    if bounds is None:
        if no_budget_reason:
            return "target missed", 1, no_budget_reason
        if lower_degree > MAX_DEGREE:
            return "target missed", 1, (f"every polynomial reaching ε has degree >= {lower_degree} (proved), beyond "
                                        f"the degree cap {MAX_DEGREE}")
        budget = "no time limit" if inputs.time_limit_s is None else f"{inputs.time_limit_s:g} s"
        return "inconclusive", 3, (f"no polynomial was certified within the limits (degree <= {MAX_DEGREE}, {budget}); "
                                   f"the least possible degree is {lower_degree} (proved)")
    if bounds["total"] is None:
        return "target missed", 1, bounds["fp_message"]
    if empirical_ratio is not None and empirical_ratio > 1:
        return "inconclusive", 3, f"an observed error exceeds its bound (ratio {empirical_ratio:.3g}): please report"
    value = Fraction(bounds["total"])
    if value <= eps:
        if bounds["tag"] == "proved":
            return "certified", 0, f"{target} <= {bounds['total']} <= ε = {inputs.eps:g} (proved)"
        return "inconclusive", 3, (f"not certified: {target} <= {bounds['total']} <= ε = {inputs.eps:g} is derived "
                                   f"(docs/bounds.md), not proved{proved}")
    if approx_lower is not None and Fraction(approximation_bound(inputs, approx_lower)) > eps:
        return "target missed", 1, (f"the polynomial's error >= {decimal_down(approx_lower, 6)} (proved by a witness) "
                                    f"puts the {inputs.target} approximation bound above ε = {inputs.eps:g}")
    return "inconclusive", 3, f"{target} {bounds['total']} > ε = {inputs.eps:g}, not refuted{proved}"
