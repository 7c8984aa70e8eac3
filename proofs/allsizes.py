"""Proofs for every size: obligations over symbolic sizes (integer arithmetic, recursive sums), each a separate z3 query.

An :class:`AllSizesProof` is a list of :class:`Obligation` (hypotheses ⊢ goal, e.g. an induction's base case and
step) plus a negative control: a mutated claim that must be refuted at a concrete size, with the model replayed
in exact and float64 arithmetic.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import z3

from .engine import DEFAULT_RLIMIT, DEFAULT_TIMEOUT_MS, ControlResult

__all__ = ["Obligation", "AllSizesProof", "AllSizesResult", "prove_all_sizes", "run_all_sizes_control"]


@dataclass(frozen=True)
class Obligation:
    """``hypotheses ⊢ goal``: proved when hypotheses ∧ ¬goal is unsat; the hypotheses alone must be sat."""

    name: str
    hypotheses: tuple[z3.BoolRef, ...]
    goal: z3.BoolRef


@dataclass(frozen=True)
class AllSizesProof:
    """An identity for every size. ``control()`` returns (formulas that must be sat, replay(model) -> (exact gap, float gap))."""

    spec_ids: tuple[str, ...]
    name: str
    statement: str
    obligations: Callable[[], list[Obligation]]
    control: str
    control_query: Callable[[], tuple[list[z3.BoolRef], Callable[[z3.ModelRef], tuple[float, float]]]]


@dataclass
class AllSizesResult:
    status: str  # proved | failed | unknown
    obligations: int
    seconds: float
    vacuity: str
    failure: str = ""


def _check(formulas: Sequence[z3.BoolRef], rlimit: int, timeout_ms: int) -> tuple[z3.CheckSatResult, z3.Solver]:
    s = z3.Solver()
    s.set("rlimit", rlimit)
    s.set("timeout", timeout_ms)
    s.add(*formulas)
    return s.check(), s


def prove_all_sizes(proof: AllSizesProof, rlimit: int = DEFAULT_RLIMIT, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> AllSizesResult:
    """Discharge every obligation (each its own query) and check each one's hypotheses are satisfiable."""
    t0 = time.perf_counter()
    obligations = proof.obligations()
    for k, ob in enumerate(obligations):
        vac, _ = _check(ob.hypotheses, rlimit, timeout_ms)
        if vac != z3.sat:
            return AllSizesResult("failed" if vac == z3.unsat else "unknown", k, time.perf_counter() - t0, str(vac),
                                  f"{ob.name}: hypotheses alone are {vac}")
        res, s = _check([*ob.hypotheses, z3.Not(ob.goal)], rlimit, timeout_ms)
        if res != z3.unsat:
            status = "failed" if res == z3.sat else "unknown"
            why = s.reason_unknown() if res == z3.unknown else "counterexample"
            return AllSizesResult(status, k, time.perf_counter() - t0, "sat", f"{ob.name}: {why}")
    return AllSizesResult("proved", len(obligations), time.perf_counter() - t0, "sat")


def run_all_sizes_control(proof: AllSizesProof, rlimit: int = DEFAULT_RLIMIT, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> ControlResult:
    """The mutated claim must be sat at its concrete size, and its model a counterexample when replayed."""
    t0 = time.perf_counter()
    formulas, replay = proof.control_query()
    res, s = _check(formulas, rlimit, timeout_ms)
    if res != z3.sat:
        return ControlResult(str(res), False, 0.0, 0.0, 0.0, time.perf_counter() - t0)
    gap, fgap = replay(s.model())
    return ControlResult("sat", gap > 0 and fgap > 0, gap, fgap, 0.0, time.perf_counter() - t0,
                         f"mutated claim off by {gap:.3g} (float64 replay {fgap:.3g})")
