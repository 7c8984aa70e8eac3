"""Run the z3 proofs of ``proofs/`` (SPEC §4 T1–T17, §3 objective and gradient, L1–L3, L6, L8/P30–P31); one
record per proof.

Two kinds of claim, never mixed up:

- ``all sizes``: the statement, run on the shipped code with symbolic sizes (``proofs/tracing.py``), holds for
  every size: the link from the traced code to the index lemma and the lemma itself are proved. Trusted: numpy's
  semantics of indexing, broadcasting, C-order reshape, ``@`` and ``.T``, as modelled in ``proofs/tracing.py``
  (and tested there against numpy).
- ``swept``: the statement, run on the shipped code with symbolic entries, holds at every shape with each dimension
  up to the size shown.

Every proof also checks that its hypotheses are satisfiable (not vacuous) and runs its negative control, a mutated
statement that must be refuted with a counterexample confirmed by an exact and a float64 replay. z3 is imported
lazily.
"""

from __future__ import annotations

import importlib.util
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .report import CheckRow
from .spec import SPEC_IDS
from .validation import check_positive_int

__all__ = ["ProofRecord", "catalogue", "run_proofs", "quick_prove_rows", "QUICK_MAX_SIZE", "ALL_SIZES_TRUSTS"]

QUICK_MAX_SIZE = 2

#: what an all-sizes proof takes on trust (JSON ``trusted``; README)
ALL_SIZES_TRUSTS = ("numpy's indexing, broadcasting, C-order reshape, @ and .T semantics, as modelled in "
                    "proofs/tracing.py")


@dataclass
class ProofRecord:
    """One proof: what it states, at which sizes, the verdict, and its negative control.

    ``result`` is the proof's own outcome (proved | failed | unknown); ``verdict`` also counts the control:
    proved (and control refuted), refuted (a counterexample to the statement), unknown (solver unknown or
    timeout, or no proof route), or control failed (the mutated statement was not refuted: the check may be blind).
    """

    spec_ids: list[str]
    name: str
    statement: str
    scope: str  # "all sizes" | "swept"
    sizes: str
    largest_size: int | None
    result: str  # proved | failed | unknown
    seconds: float
    vacuity: str
    negative_control: str
    control_status: str
    control_confirmed: bool
    trusted: str = ""
    second_solver: str = "skipped"
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        if self.result == "failed":
            return "refuted"
        if self.result == "unknown" or self.control_status == "unknown":
            return "unknown"
        if not self.control_confirmed:
            return "control failed"
        return "proved"

    @property
    def passed(self) -> bool:
        return self.verdict == "proved"


def catalogue() -> list[Any]:
    """Every proof object (:class:`proofs.engine.SweptProof` or :class:`proofs.allsizes.AllSizesProof`)."""
    from proofs import features, hadamard, index_maps, objective, products, softmax, vec_trick

    all_sizes = [*index_maps.ALL_SIZES, *index_maps.TRACED, *products.ALL_SIZES, *hadamard.ALL_SIZES]
    swept = [*products.PROOFS, *hadamard.PROOFS, *vec_trick.PROOFS, *softmax.PROOFS, *objective.PROOFS,
             *features.PROOFS, *index_maps.PROOFS]
    return [*all_sizes, *swept]


def select(proofs: list[Any], only: Sequence[str] | None) -> list[Any]:
    """The proofs covering any of the SPEC IDs in ``only`` (all when empty); ValueError names unknown IDs."""
    if not only:
        return proofs
    unknown = [i for i in only if i not in SPEC_IDS]
    if unknown:
        raise ValueError(f"only must list SPEC IDs (e.g. T1, T17, L1); unknown: {unknown}")
    chosen = [p for p in proofs if set(p.spec_ids) & set(only)]
    if not chosen:
        raise ValueError(f"only: no proof covers {list(only)}; proved IDs: {sorted({i for p in proofs for i in p.spec_ids})}")
    return chosen


def _cvc5_available() -> bool:
    return shutil.which("cvc5") is not None or importlib.util.find_spec("cvc5") is not None


def _control_text(c: Any, description: str) -> str:
    if c.status == "sat" and c.confirmed:
        return f"refuted ({description}); {c.detail}"
    return f"NOT refuted ({description}): {c.status} {c.detail}".strip()


def _run_one(proof: Any, max_size: int | None, rlimit: int, timeout_ms: int, second_solver: bool,
             quick: bool) -> ProofRecord:
    from proofs import engine
    from proofs.allsizes import AllSizesProof, prove_all_sizes

    if isinstance(proof, AllSizesProof):
        r = prove_all_sizes(proof, rlimit, timeout_ms)
        c = proof.run_control(rlimit, timeout_ms)
        return ProofRecord(list(proof.spec_ids), proof.name, proof.statement, "all sizes",
                           f"every size ({r.obligations} obligations)", None, r.status, r.seconds + c.seconds,
                           r.vacuity, _control_text(c, proof.control), c.status, c.confirmed, ALL_SIZES_TRUSTS,
                           "skipped", r.failure)
    k = (QUICK_MAX_SIZE if quick else proof.default_max) if max_size is None else max_size
    caps = proof.quick_caps if quick else None
    r = engine.sweep(proof, k, rlimit, timeout_ms, caps=caps)
    c = engine.run_control(proof, None, rlimit, timeout_ms)
    shapes = engine.shapes_up_to(proof.dims, k, proof.dim_min, caps)
    top = {name: max(s[name] for s in shapes) for name in proof.dims}
    by_range: dict[tuple[int, int], list[str]] = {}
    for name in proof.dims:
        by_range.setdefault((proof.dim_min.get(name, 1), min(top[name], r.largest_size)), []).append(name)
    ranges = ", ".join(f"{','.join(names)} ∈ {lo}..{hi}" for (lo, hi), names in by_range.items())
    sizes = f"{ranges} ({r.shapes_proved}/{len(shapes)} shapes)"
    other = "skipped (cvc5 not installed)"
    if second_solver and _cvc5_available() and r.status == "proved":
        other = f"cvc5: {engine.cvc5_recheck(engine.query_smt2(proof, shapes[-1]))}"
    return ProofRecord(list(proof.spec_ids), proof.name, proof.statement, "swept", sizes, r.largest_size, r.status,
                       r.seconds + c.seconds, r.vacuity, _control_text(c, proof.control), c.status, c.confirmed, "",
                       other, r.failure, {"max_size": k, "caps": dict(caps or {})})


def run_proofs(
    max_size: int | None = None,
    only: Sequence[str] | None = None,
    rlimit: int | None = None,
    timeout_ms: int | None = None,
    second_solver: bool = True,
    on_start: Callable[[Any], None] | None = None,
    quick: bool = False,
) -> list[ProofRecord]:
    """Run the proofs covering ``only`` (SPEC IDs; all when empty), sweeping each dimension over 1..max_size.

    ``max_size=None`` uses each proof's default (``quick``: size 2 with the proof's quick caps). ``second_solver``
    re-checks swept proofs with cvc5 when it is installed.
    """
    from proofs import engine

    if max_size is not None:
        check_positive_int("max_size", max_size)
    rl = engine.DEFAULT_RLIMIT if rlimit is None else check_positive_int("rlimit", rlimit)
    tm = engine.DEFAULT_TIMEOUT_MS if timeout_ms is None else check_positive_int("timeout_ms", timeout_ms)
    records = []
    for proof in select(catalogue(), only):
        if on_start:
            on_start(proof)
        records.append(_run_one(proof, max_size, rl, tm, second_solver, quick))
    return records


def quick_prove_rows() -> list[CheckRow]:
    """A quick prove run for ``verified-ta check``: every proof at sizes ≤ 2 (quick caps), controls included."""
    t0 = time.perf_counter()
    rows = []
    for rec in run_proofs(second_solver=False, quick=True):
        rows.append(CheckRow.compare(
            rec.spec_ids[0], f"z3: {rec.name}", 0.0 if rec.passed else float("inf"), 0.0,
            f"{rec.verdict} ({rec.scope}: {rec.sizes}); control {'confirmed' if rec.control_confirmed else 'FAILED'}",
            spec_ids=rec.spec_ids, seconds=rec.seconds,
        ))
    rows[-1].extra["total_seconds"] = time.perf_counter() - t0
    return rows
