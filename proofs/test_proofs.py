"""Every z3 proof holds (swept at quick sizes, or for all sizes) and every negative control is a confirmed counterexample."""

from __future__ import annotations

import numpy as np
import pytest

z3 = pytest.importorskip("z3")

from proofs import engine, features, hadamard, index_maps, induction, products, softmax, vec_trick  # noqa: E402
from proofs.allsizes import prove_all_sizes, run_all_sizes_control  # noqa: E402
from verified_ta.spec import spec  # noqa: E402

SWEPT = [*products.PROOFS, *hadamard.PROOFS, *vec_trick.PROOFS, *softmax.PROOFS, *features.PROOFS, *index_maps.PROOFS]
ALL_SIZES = [*index_maps.ALL_SIZES, *induction.ALL_SIZES]
QUICK = 2

pytestmark = [pytest.mark.z3, pytest.mark.timeout(120)]


def _ids(p) -> str:
    return p.name


@spec("T1", "T2", "T3", "T4", "T5", "T6", "T7", "T8", "T9", "T10", "T11", "T12", "T13", "T14", "T15", "T16", "T17",
      "L1", "L2", "L3", "L6", "L8", "P30", "P31")
@pytest.mark.parametrize("proof", SWEPT, ids=_ids)
def test_swept_proof_holds_and_is_not_vacuous(proof):
    r = engine.sweep(proof, min(QUICK, proof.default_max))
    assert r.status == "proved", r.failure
    assert r.vacuity == "sat"
    assert r.shapes_proved == len(engine.shapes_up_to(proof.dims, min(QUICK, proof.default_max), proof.dim_min))


@spec("T1", "T2", "T3", "T4", "T5", "T6", "T7", "T8", "T9", "T10", "T11", "T12", "T13", "T14", "T15", "T16", "T17",
      "L1", "L2", "L3", "L6", "L8", "P30", "P31")
@pytest.mark.parametrize("proof", SWEPT, ids=_ids)
def test_negative_control_is_a_real_counterexample(proof):
    c = engine.run_control(proof)
    assert c.status == "sat"
    # exact replay of the model: hypotheses hold exactly, the mutated sides differ; float64 replay agrees
    assert c.hypothesis_residual == 0 and c.exact_gap > 0, c.detail
    assert c.float_gap > 0 and c.confirmed


@spec("T1", "T3", "T4", "T5", "T12", "T13", "T17")
@pytest.mark.parametrize("proof", ALL_SIZES, ids=_ids)
def test_all_sizes_proof_and_control(proof):
    r = prove_all_sizes(proof)
    assert r.status == "proved", r.failure
    c = run_all_sizes_control(proof)
    assert c.status == "sat" and c.confirmed and c.exact_gap > 0 and c.float_gap > 0, c.detail


@spec("T15", "L1")
def test_control_replay_reads_exp_from_the_model():
    """The softmax controls replay E from the model; the table is a function and positive."""
    proof = next(p for p in softmax.PROOFS if p.name.startswith("T15 softmax"))
    st, ops, values = proof.instantiate(proof.control_dims, mutant=True)
    out = engine.check([*engine._hypotheses(st, ops), engine._goal_negation(st)], ops, congruence=True)
    assert out.status == "sat"
    table = engine.exp_table(out.model, ops)
    assert table and all(v > 0 for v in table.values())
    exact = engine.replay(proof, out.model, ops, values, mutant=True, as_float=False)
    assert np.any(np.asarray(exact.lhs, dtype=object) != np.asarray(exact.rhs, dtype=object))


@spec("T1")
def test_self_comparison_is_rejected():
    a = engine.symbols("A", (2, 2))
    with pytest.raises(ValueError, match="itself"):
        engine._goal_negation(engine.Statement(a, a))


@spec("T1")
def test_smt2_export_round_trips_through_z3():
    """The SMT-LIB export (what cvc5 would get) is still unsat when z3 parses it back."""
    proof = products.PROOFS[0]
    text = engine.query_smt2(proof, proof.control_dims)
    s = z3.Solver()
    s.from_string(text)
    assert s.check() == z3.unsat


@spec("T1")
def test_cvc5_recheck_skips_cleanly_or_agrees():
    proof = products.PROOFS[0]
    verdict = engine.cvc5_recheck(engine.query_smt2(proof, proof.control_dims))
    assert verdict in ("skipped", "unsat")
