"""Every z3 proof holds (swept at quick sizes, or for all sizes), is not vacuous, and every negative control is a
confirmed counterexample; claims that used to overstate (issue #10) now fail or stay unproved."""

from __future__ import annotations

import numpy as np
import pytest

z3 = pytest.importorskip("z3")

from proofs import engine, features, hadamard, index_maps, objective, products, softmax, vec_trick  # noqa: E402
from proofs.allsizes import prove_all_sizes  # noqa: E402
from proofs.engine import Ops, Statement, SweptProof  # noqa: E402
from proofs.symarray import SymArray  # noqa: E402
from proofs.traced import traced_proof  # noqa: E402
from tests.mutants import khatri_rao_wrong_above_64_rows, replace_product, transposed_khatri_rao  # noqa: E402
from verified_ta import products as shipped_products  # noqa: E402
from verified_ta.spec import spec  # noqa: E402

SWEPT = [*products.PROOFS, *hadamard.PROOFS, *vec_trick.PROOFS, *softmax.PROOFS, *objective.PROOFS, *features.PROOFS,
         *index_maps.PROOFS]
ALL_SIZES = [*index_maps.ALL_SIZES, *index_maps.TRACED, *products.ALL_SIZES, *hadamard.ALL_SIZES]
QUICK = 2

pytestmark = [pytest.mark.z3, pytest.mark.timeout(120)]


def _ids(p) -> str:
    return p.name


@spec("T1", "T2", "T3", "T4", "T5", "T6", "T7", "T8", "T9", "T10", "T11", "T12", "T13", "T14", "T15", "T16", "T17",
      "L1", "L2", "L3", "L6", "L8", "P18", "P30", "P31")
@pytest.mark.parametrize("proof", SWEPT, ids=_ids)
def test_swept_proof_holds_and_is_not_vacuous(proof):
    k = min(QUICK, proof.default_max)
    r = engine.sweep(proof, k, caps=proof.quick_caps)
    assert r.status == "proved", r.failure
    assert r.vacuity == "sat"
    assert r.shapes_proved == len(engine.shapes_up_to(proof.dims, k, proof.dim_min, proof.quick_caps))


@spec("T1", "T2", "T3", "T4", "T5", "T6", "T7", "T8", "T9", "T10", "T11", "T12", "T13", "T14", "T15", "T16", "T17",
      "L1", "L2", "L3", "L6", "L8", "P18", "P30", "P31")
@pytest.mark.parametrize("proof", SWEPT, ids=_ids)
def test_negative_control_is_a_real_counterexample(proof):
    c = engine.run_control(proof)
    assert c.status == "sat"
    # exact replay of the model: hypotheses hold exactly, the mutated sides differ; float64 replay agrees
    assert c.hypothesis_residual == 0 and c.exact_gap > 0, c.detail
    assert c.float_gap > 0 and c.confirmed


@spec("T1", "T2", "T3", "T4", "T5", "T12", "T13", "T17")
@pytest.mark.parametrize("proof", ALL_SIZES, ids=_ids)
def test_all_sizes_proof_and_control(proof):
    r = prove_all_sizes(proof)
    assert r.status == "proved", r.failure
    assert r.vacuity == "sat"
    c = proof.run_control(engine.DEFAULT_RLIMIT, engine.DEFAULT_TIMEOUT_MS)
    assert c.status == "sat" and c.confirmed and c.exact_gap > 0 and c.float_gap > 0, c.detail


# ---------------------------------------------------------------- claims that used to overstate (issue #10)


@spec("T1", "T17")
def test_khatri_rao_wrong_only_above_64_rows_is_not_proved_for_all_sizes(monkeypatch):
    """The swept proof cannot see it (sizes ≤ 3); the all-sizes proofs refuse to claim anything about it."""
    t1 = next(p for p in products.PROOFS if p.name == "T1 mixed product")
    t1_all = next(p for p in products.ALL_SIZES if p.name.startswith("T1 mixed product"))
    kr_all = next(p for p in index_maps.TRACED if "khatri_rao" in p.name)
    replace_product(monkeypatch, "khatri_rao", khatri_rao_wrong_above_64_rows)
    assert engine.sweep(t1, 3).status == "proved"  # n1·n2 ≤ 9: the planted branch never runs
    for proof in (t1_all, kr_all):
        r = prove_all_sizes(proof)
        assert r.status == "unknown" and "n1·n2 > 64" in r.failure, r.failure


@spec("T3")
def test_a_nonsense_identity_is_not_proved():
    """The old induction proved any F(m1·m2) = SA(m1)·SB(m2) for summands written by hand, so a wrong identity
    could be stated in the same style and "proved". Now the summands are the traced shipped code's own: a wrong
    right-hand side (V^T R)∘(W^T P) fails its link to the index lemma, and is refuted at a concrete size."""
    def nonsense(v, ops, mutant):
        vv, w, p, r = v["V"], v["W"], v["P"], v["R"]
        lhs = shipped_products.khatri_rao(vv, w).T @ shipped_products.khatri_rao(p, r)
        return Statement(lhs, (vv.T @ r) * (w.T @ p))

    claim = SweptProof(("T3",), "nonsense", "(V⊘W)^T(P⊘R) = (V^T R)∘(W^T P)", ("n", "k1", "k2"),
                       lambda s: {"V": (s["n"], s["k1"]), "W": (s["n"], s["k1"]), "P": (s["n"], s["k2"]),
                                  "R": (s["n"], s["k2"])},
                       nonsense, "none", dict(n=2, k1=1, k2=1))
    r = prove_all_sizes(traced_proof(claim))
    assert r.status != "proved" and "link" in r.failure, r
    assert engine.sweep(claim, 2).status == "failed"


@spec("T1")
def test_transposed_khatri_rao_fails_both_ways(monkeypatch):
    t1 = next(p for p in products.PROOFS if p.name == "T1 mixed product")
    replace_product(monkeypatch, "khatri_rao", transposed_khatri_rao)
    assert prove_all_sizes(traced_proof(t1)).status != "proved"
    r = engine.sweep(t1, 2)
    assert r.status == "failed" and "counterexample" in r.failure


# ---------------------------------------------------------------- engine and SymArray


@spec("T15", "L1")
def test_control_replay_reads_exp_from_the_model():
    """The softmax controls replay E from the model; the table is a function and positive."""
    proof = next(p for p in softmax.PROOFS if p.name.startswith("T15 Jacobian"))
    st, ops, values = proof.instantiate(proof.control_dims, mutant=True)
    out = engine.check([*engine._hypotheses(st, ops), engine._goal_negation(st)], ops, congruence=True)
    assert out.status == "sat"
    table = engine.exp_table(out.model, ops)
    assert table and all(v > 0 for v in table.values())
    exact = engine.replay(proof, out.model, ops, values, mutant=True, as_float=False)
    assert np.any(np.asarray(exact.lhs, dtype=object) != np.asarray(exact.rhs, dtype=object))


@spec("P18", "L6")
def test_symarray_turns_max_and_division_into_hypotheses():
    ops = Ops()
    z = SymArray(engine.symbols("z", (1, 2)), ops)
    m = z.max(axis=-1, keepdims=True)
    u = np.exp(z - m)
    w = u / u.sum(axis=-1, keepdims=True)
    assert m.shape == (1, 1) and w.shape == (1, 2)
    facts = [str(f) for f in ops.facts]
    assert any("E(max!0)" in f and "== E(z_0_0)" in f for f in facts)  # L6: E(z − M)E(M) = E(z)
    assert sum(f.startswith("div!") for f in facts) == 2  # w·Σu = u, one per entry
    with pytest.raises(TypeError, match="compares symbolic values"):
        np.maximum(z, z)


@spec("P18")
def test_claimed_positive_enters_the_goal():
    x = z3.Real("x")
    st = Statement(np.array([x], dtype=object), np.array([x + 0], dtype=object), claimed_positive=[x])
    assert engine.check([engine._goal_negation(st)]).status == "sat"  # x ≤ 0 is possible
    st.positives.append(x)
    assert engine.check([x > 0, engine._goal_negation(st)]).status == "unsat"


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
