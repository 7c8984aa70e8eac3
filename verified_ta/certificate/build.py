"""``build_certificate``: plan, search, certify and assemble within the time limit (SPEC L5–L11; docs/certificate.md §3–4).

Order of work, so that every call answers within ``inputs.time_limit_s``: the plan first (δ limit, proved degree
lower bound, costs; no search when the least possible degree is beyond the cap); then the degree search per family
(cheap families first, every probe under the clock); then the tight enclosure of the chosen polynomial and the
cross-checks with whatever time is left; each stage that runs out of time keeps what it has.
"""

from __future__ import annotations

import time
from fractions import Fraction
from typing import Any, Callable

from ..polynomial import FAMILIES, build_polynomial
from .crosscheck import poisson_check, sollya_check
from .degrees import minimal_degree
from .document import Certificate
from .enclosure import ApproxBound, certify_polynomial
from .exact import decimal_down, decimal_up, parse_decimal
from .inputs import CertifyInputs, score_interval
from .limits import MAX_DEGREE, TimeLimit
from .plan import make_plan
from .regime import fast_path_costs, regime
from .verdict import bound_lines, decide

__all__ = ["SEARCH_ORDER", "build_certificate"]

#: families in the order ``auto`` searches them: minimax first (the best family, about half Taylor's degree, so a
#: short time limit still finds the best answer), then Taylor (degree known in closed form: two probes), then the
#: two that mostly fill the table
SEARCH_ORDER = ("minimax", "taylor", "chebyshev", "taylor-mid")
assert sorted(SEARCH_ORDER) == sorted(FAMILIES)


def _row(family: str, d: int, poly=None, bound: ApproxBound | None = None, **extra: Any) -> dict[str, Any]:
    from ..features import feature_rank

    row: dict[str, Any] = {"family": family, "degree": None, "rank": None}
    if poly is not None and bound is not None:
        row.update(degree=poly.degree, rank=feature_rank(poly.degree, d), upper=decimal_up(bound.upper, 6))
    row.update(extra)
    return row


def _search(inputs: CertifyInputs, interval, budget: Fraction, lower: int, limit: TimeLimit, say: Callable[[str], None]):
    """Per family: the least certified degree (or the fixed ``inputs.degree``); returns (table rows, candidates)."""
    families = SEARCH_ORDER if inputs.family == "auto" else (inputs.family,)
    table: list[dict[str, Any]] = []
    candidates: list[tuple[Any, ApproxBound]] = []
    for fam in families:
        if limit.expired():
            table.append(_row(fam, inputs.d, note="not searched: time limit"))
            continue
        say(f"degree search: {fam}")
        try:
            if inputs.degree is not None:
                poly = build_polynomial(fam, inputs.degree, interval, deadline=limit.deadline)
                bound = certify_polynomial(poly, gap=inputs.gap, decide=budget, time_limit=limit)
                table.append(_row(fam, inputs.d, poly, bound, note="fixed degree (--degree)"))
            else:
                res = minimal_degree(fam, interval, budget, gap=inputs.gap, max_degree=MAX_DEGREE, min_degree=lower,
                                     time_limit=limit)
                poly, bound = res.polynomial, res.bound
                table.append(_row(fam, inputs.d, poly, bound, minimal=res.minimal, probes=res.probes,
                                  below_lower=None if res.below is None else decimal_down(res.below.lower, 6)))
            candidates.append((poly, bound))
        except TimeoutError:
            table.append(_row(fam, inputs.d, note="stopped: time limit"))
        except (ValueError, RuntimeError) as exc:  # no degree <= the cap reaches the budget; precision cap reached
            table.append(_row(fam, inputs.d, note=str(exc)))
    return table, candidates


def build_certificate(inputs: CertifyInputs, empirical: int = 0, progress: Callable[[str], None] | None = None) -> Certificate:
    """Plan, search, certify and assemble (SPEC L5–L11) within ``inputs.time_limit_s``. ``progress(str)`` is called
    between stages; ``empirical`` random + adversarial instances are compared with the mpmath oracle (unverified)."""
    say = progress or (lambda _msg: None)
    if isinstance(empirical, bool) or not isinstance(empirical, int) or empirical < 0:
        raise ValueError(f"empirical must be an integer >= 0; got {empirical!r}")
    started = time.perf_counter()
    M, a, b = score_interval(inputs)  # imports the bound modules: start-up, not counted below
    limit = TimeLimit(inputs.time_limit_s)
    say("plan: δ limit, degree lower bound, costs")
    plan = make_plan(inputs, M)
    table: list[dict[str, Any]] = []
    candidates: list[tuple[Any, ApproxBound]] = []
    if plan.budget is not None:
        table, candidates = _search(inputs, (a, b), plan.budget, plan.lower_degree, limit, say)
    unverified: dict[str, Any] = {"degree_table": table}
    poly = approx = bounds = None
    cross_checks: list[dict[str, Any]] = []
    costs = plan.costs
    if candidates:
        poly, approx = min(candidates, key=lambda c: (c[0].degree, c[1].upper))
        if not limit.expired():
            say("tight enclosure")
            try:
                tight = certify_polynomial(poly, gap=inputs.gap, time_limit=limit)
                if tight.upper <= approx.upper or tight.upper <= plan.budget:
                    approx = tight
            except (TimeoutError, RuntimeError):  # keep the probe's (decided) enclosure
                pass
        approx.upper = parse_decimal(decimal_up(approx.upper), "upper")  # as stored: verify recomputes from these
        approx.lower = parse_decimal(decimal_down(approx.lower), "lower")
        if poly.family == "taylor":
            cross_checks.append(poisson_check(poly, approx))
        say("cross-checks")
        unverified["sollya"] = sollya_check(poly, approx, limit.remaining(unlimited=60.0))
        bounds = bound_lines(inputs, poly.shifted(M), M, approx.upper)
        costs = fast_path_costs(inputs.n, inputs.d, poly.degree, inputs.itemsize, inputs.target, inputs.memory_limit_bytes)
    if empirical and poly is not None:
        say(f"empirical: {empirical} instances")
        from .empirical import empirical_instances

        unverified["empirical"] = empirical_instances(inputs, poly.shifted(M), M, approx.upper, empirical, limit)
    ratio = (unverified.get("empirical") or {}).get("worst_ratio")
    verdict, code, message = decide(
        inputs, lower_degree=plan.lower_degree, costs=costs, approx_lower=None if approx is None else approx.lower,
        bounds=bounds, no_budget_reason=plan.no_budget_reason,
        empirical_ratio=ratio,
    )
    unverified["seconds"] = {"total": time.perf_counter() - started,
                             "enclosure": None if approx is None else approx.seconds}
    return Certificate(inputs, M, plan.to_json(), regime(M, inputs.n), poly, approx, cross_checks, bounds, costs,
                       verdict, code, message, unverified)
