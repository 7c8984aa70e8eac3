"""Proofs for every size: obligations over symbolic sizes (integer arithmetic, recursive sums), each a separate z3 query.

An :class:`AllSizesProof` is a list of :class:`Obligation` (hypotheses ⊢ goal, e.g. an induction's base case and
step, or the link from traced shipped code to the index lemma) plus a negative control: a mutated claim that must
be refuted at a concrete size, with the model replayed in exact and float64 arithmetic. Building the obligations
may fail: code the tracer cannot follow gives ``unknown``, a statement whose sides cannot match gives ``failed``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import z3

from .engine import DEFAULT_RLIMIT, DEFAULT_TIMEOUT_MS, ControlResult, ShapeMismatch
from .tracing import NotTraceable

__all__ = ["Obligation", "AllSizesProof", "AllSizesResult", "prove_all_sizes", "solve_control"]


@dataclass(frozen=True)
class Obligation:
    """``hypotheses ⊢ goal``: proved when hypotheses ∧ ¬goal is unsat; the hypotheses alone must be sat.

    ``refutes``: a model of hypotheses ∧ ¬goal is a counterexample to the claim itself (``failed``). False for a
    step of one proof route (a link to the index lemma, an index split), whose failure only means ``unknown``.
    """

    name: str
    hypotheses: tuple[z3.BoolRef, ...]
    goal: z3.BoolRef
    refutes: bool = True


@dataclass(frozen=True)
class AllSizesProof:
    """An identity for every size; ``control(rlimit, timeout_ms)`` runs its negative control."""

    spec_ids: tuple[str, ...]
    name: str
    statement: str
    obligations: Callable[[], list[Obligation]]
    control: str
    run_control: Callable[[int, int], ControlResult]


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
    try:
        obligations = proof.obligations()
    except NotTraceable as e:
        return AllSizesResult("unknown", 0, time.perf_counter() - t0, "not run", f"no all-sizes proof: {e}")
    except (ShapeMismatch, ValueError) as e:
        return AllSizesResult("failed", 0, time.perf_counter() - t0, "not run", f"statement fails: {e}")
    for k, ob in enumerate(obligations):
        vac, _ = _check(ob.hypotheses, rlimit, timeout_ms)
        if vac != z3.sat:
            return AllSizesResult("failed" if vac == z3.unsat else "unknown", k, time.perf_counter() - t0, str(vac),
                                  f"{ob.name}: hypotheses alone are {vac}")
        res, s = _check([*ob.hypotheses, z3.Not(ob.goal)], rlimit, timeout_ms)
        if res != z3.unsat:
            status = "failed" if res == z3.sat and ob.refutes else "unknown"
            why = s.reason_unknown() if res == z3.unknown else "counterexample" if ob.refutes else "does not hold"
            return AllSizesResult(status, k, time.perf_counter() - t0, "sat", f"{ob.name}: {why}")
    return AllSizesResult("proved", len(obligations), time.perf_counter() - t0, "sat")


def solve_control(
    formulas: Sequence[z3.BoolRef], replay: Callable[[z3.ModelRef], tuple[float, float]], rlimit: int, timeout_ms: int
) -> ControlResult:
    """The mutated claim (``formulas``) must be sat, and its model a counterexample when replayed (exact, float64)."""
    t0 = time.perf_counter()
    res, s = _check(formulas, rlimit, timeout_ms)
    if res != z3.sat:
        return ControlResult(str(res), False, 0.0, 0.0, 0.0, time.perf_counter() - t0)
    gap, fgap = replay(s.model())
    return ControlResult("sat", gap > 0 and fgap > 0, gap, fgap, 0.0, time.perf_counter() - t0,
                         f"mutated claim off by {gap:.3g} (float64 replay {fgap:.3g})")
