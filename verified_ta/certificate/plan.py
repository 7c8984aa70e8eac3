"""What certify knows before it searches (SPEC L7, L9–L11; docs/certificate.md §3): the largest admissible δ, a
proved lower bound on the degree of every polynomial that meets the target, the costs at that degree, and the
δ budget the search aims for. Cheap (well under a second) and deterministic, so ``--verify`` recomputes it."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from ..polynomial import build_polynomial
from .degrees import degree_lower_bound, taylor_degree
from .exact import decimal_down, decimal_up, parse_decimal
from .inputs import CertifyInputs
from .limits import MAX_DEGREE
from .regime import fast_path_costs
from .verdict import delta_budget, delta_limit, floating_point_bound

__all__ = ["LOWER_BOUND_CAP", "Plan", "make_plan"]

#: the lower-bound search stops here (the bound is then ">= LOWER_BOUND_CAP", still proved)
LOWER_BOUND_CAP = 10**4


@dataclass(frozen=True)
class Plan:
    """``delta_limit``: no polynomial with relative error >= δ_limit meets the target (the approximation line alone
    exceeds ε); ``lower_degree``: proved least possible degree below δ_limit; ``costs`` at that degree (capped at
    MAX_DEGREE + 1); ``budget``: the δ the search aims for (None when the floating-point term alone exceeds ε,
    explained by ``note``). Bounds are stored as outward-rounded decimals (the limit up, the budget down) and used
    as stored."""

    delta_limit: Fraction
    lower_degree: int
    costs: dict[str, Any]
    proxy_degree: int | None
    budget: Fraction | None
    note: str

    @property
    def no_budget_reason(self) -> str:
        """Why no search ran although the degree cap allowed one (the floating-point term alone exceeds ε), or ""."""
        return self.note if self.budget is None and self.lower_degree <= MAX_DEGREE else ""

    def to_json(self) -> dict[str, Any]:
        return {
            "delta_limit": decimal_up(self.delta_limit),
            "degree_lower_bound": self.lower_degree,
            "lower_bound_costs": self.costs,
            "proxy_taylor_degree": self.proxy_degree,
            "delta_budget": None if self.budget is None else decimal_down(self.budget),
            "note": self.note,
        }


def _stored_down(x: Fraction | None, name: str) -> Fraction | None:
    """``x`` rounded down to its stored decimal (so build and verify use the same number)."""
    return None if x is None else parse_decimal(decimal_down(x), name)


def make_plan(inputs: CertifyInputs, M: Fraction) -> Plan:
    """The plan of a certify call (docs/certificate.md §3): δ limit, proved degree lower bound, costs, budget."""
    limit = parse_decimal(decimal_up(delta_limit(inputs)), "delta_limit")  # rounded up: still a limit
    lower = 0 if limit >= 1 else degree_lower_bound(2 * M, limit, LOWER_BOUND_CAP)
    costs = fast_path_costs(inputs.n, inputs.d, min(lower, MAX_DEGREE + 1), inputs.itemsize, inputs.target,
                            inputs.memory_limit_bytes)
    if lower > MAX_DEGREE:
        return Plan(limit, lower, costs, None, None, "no search: the least possible degree exceeds the degree cap")
    try:
        proxy = taylor_degree(2 * M, min(limit, Fraction(1, 2)), MAX_DEGREE)
    except ValueError:
        proxy = MAX_DEGREE
    shifted = build_polynomial("taylor", proxy, (0, 2 * M)).shifted(M)
    budget = _stored_down(delta_budget(inputs, shifted, M), "delta_budget")
    note = ""
    if budget is None:
        kind = "proved" if inputs.target == "forward" else "derived"
        advice = "a smaller B or scale, " + ("float64, " if inputs.dtype == "float32" else "") + "or a larger ε"
        try:
            fp = f"is {floating_point_bound(inputs, shifted, M, min(limit, Fraction(1, 2))):.3e} > ε"
        except ValueError:
            fp = "has no finite bound (ρ >= 1: the worst-case rounding error reaches the normaliser itself)"
        note = (f"{inputs.dtype} cannot be certified to ε: the {inputs.target} floating-point term ({kind} bound, docs/bounds.md) "
                f"of a degree-{proxy} Taylor proxy on [0, 2M] = [0, {float(2 * M):.4g}] alone {fp} "
                f"(it grows like e^(2M)·n·u); {advice}")
    return Plan(limit, lower, costs, proxy, budget, note)
