"""L8/P30/P31 proofs run the shipped torch feature code on z3 terms; more planted bugs are refuted; L1 reaches n = d = 3."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

z3 = pytest.importorskip("z3")
torch = pytest.importorskip("torch")

from proofs import engine, features, softmax  # noqa: E402
from verified_ta.features import monomials, query_features  # noqa: E402
from verified_ta.spec import spec  # noqa: E402

pytestmark = [pytest.mark.z3, pytest.mark.timeout(120)]

L8 = features.PROOFS[0]


@spec("L8", "P30")
@pytest.mark.parametrize("g, d", [(0, 1), (2, 3), (3, 2)])
def test_object_tensor_runs_the_shipped_code_bit_for_bit(g, d):
    """On float64 values, the shipped code through ObjectTensor gives the torch result exactly (same ops, same order)."""
    x = torch.randn(3, d, dtype=torch.float64, generator=torch.Generator().manual_seed(g * 10 + d))
    via_object = features.shipped_monomials(x.numpy().astype(object), g)
    assert np.array_equal(via_object.astype(float), monomials(x, g).numpy())
    a0, s0 = features.dyadic_coefficients(g), float(features.DYADIC_SCALE)
    u_object = query_features(features.ObjectTensor(x.numpy().astype(object)), a0, s0).a
    assert np.array_equal(u_object.astype(float), query_features(x, a0, s0).numpy())


@spec("L8")
def test_object_tensor_refuses_what_it_does_not_implement():
    with pytest.raises(TypeError, match="does not implement"):
        torch.exp(features.ObjectTensor(np.ones((1, 1), dtype=object)))


@spec("L8", "P30")
def test_l8_proves_up_to_three():
    r = engine.sweep(L8, 3)
    assert r.status == "proved", r.failure
    assert r.shapes_proved == len(engine.shapes_up_to(L8.dims, 3, L8.dim_min)) == 36


@spec("L8", "P30")
@pytest.mark.parametrize("bug", [dict(power_shift=1), dict(power_shift=-1), dict(drop_multinomial=True)],
                         ids=["s^(t+1)", "s^(t-1)", "no multinomial"])
def test_planted_weight_bugs_are_refuted_with_confirmed_counterexamples(bug):
    mutated = dataclasses.replace(L8, build=features.l8_builder(**bug))
    c = engine.run_control(mutated)
    assert c.status == "sat" and c.confirmed, c.detail
    assert c.hypothesis_residual == 0 and c.exact_gap > 0 and c.float_gap > 0


@spec("L1", "T16")
@pytest.mark.parametrize("dims", [dict(n=2, d=3), dict(n=3, d=2)])
def test_l1_gradient_proves_where_it_used_to_time_out(dims):
    """With h free (degree 8, not 12) the §3 dLoss/dx query at n=2, d=3 is unsat in well under a second."""
    proof = next(p for p in softmax.PROOFS if p.name.startswith("§3 dLoss"))
    res, vac = engine.prove_statement(proof, dims, timeout_ms=30_000)
    assert res.status == "unsat", res.reason
    assert vac.status == "sat"


def _all_multinomials_one(table):
    return dataclasses.replace(table, multinomials=(1,) * table.rank)


def _variables_reversed(table):
    return dataclasses.replace(table, variables=tuple(v[::-1] for v in table.variables))


@spec("L8", "P30")
@pytest.mark.parametrize("plant", [_all_multinomials_one, _variables_reversed], ids=lambda f: f.__name__.strip("_"))
def test_planted_bug_in_the_shipped_table_makes_l8_fail(monkeypatch, plant):
    """The proof is about the shipped code: corrupt the table that ``monomials``/``query_features`` read and it fails."""
    import verified_ta.features as shipped

    original = shipped.multi_indices
    for mod in (shipped, features):
        monkeypatch.setattr(mod, "multi_indices", lambda g, d: plant(original(g, d)))
    r = engine.sweep(L8, 2)
    assert r.status == "failed" and "counterexample" in r.failure, r
