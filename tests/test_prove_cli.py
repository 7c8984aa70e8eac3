"""``verified-ta prove``: table, JSON, exit codes, bad input, and a planted bug in a product function makes it fail."""

from __future__ import annotations

import json
import sys

import pytest
from typer.testing import CliRunner

pytest.importorskip("z3")

from verified_ta import products  # noqa: E402
from verified_ta.cli import app  # noqa: E402
from verified_ta.spec import spec  # noqa: E402

runner = CliRunner()
pytestmark = [pytest.mark.z3, pytest.mark.timeout(120)]


def _transposed_khatri_rao(c, d):
    """Planted bug: rows in (i2, i1) order instead of the gauge's i1·n2 + i2."""
    n1, n2, k = c.shape[-2], d.shape[-2], c.shape[-1]
    return (c[..., None, :, :] * d[..., :, None, :]).reshape(*c.shape[:-2], n1 * n2, k)


def _plant(monkeypatch, name, fn):
    """Replace ``name`` in verified_ta.products and in every module that imported it by name."""
    original = getattr(products, name)
    for mod in list(sys.modules.values()):
        if mod is not None and getattr(mod, name, None) is original and mod.__name__.startswith(("verified_ta", "proofs")):
            monkeypatch.setattr(mod, name, fn)


@spec("T1", "T17")
def test_prove_passes_and_writes_json(tmp_path):
    out = tmp_path / "prove.json"
    res = runner.invoke(app, ["prove", "--only", "T1", "--only", "T17", "--max-size", "2", "--json", str(out)])
    assert res.exit_code == 0, res.output
    payload = json.loads(out.read_text())
    assert payload["passed"] is True
    recs = payload["records"]
    assert {r["scope"] for r in recs} == {"all sizes", "swept"}
    assert all(r["result"] == "proved" and r["control_confirmed"] for r in recs)
    assert all("T1" in r["spec_ids"] or "T17" in r["spec_ids"] for r in recs)
    assert "all sizes: T1, T17" in res.output


@spec("T1", "T17")
def test_planted_transposed_khatri_rao_makes_prove_fail(monkeypatch, tmp_path):
    import proofs.index_maps  # noqa: F401 - make sure every proof module is imported before planting
    import proofs.products  # noqa: F401

    _plant(monkeypatch, "khatri_rao", _transposed_khatri_rao)
    out = tmp_path / "prove.json"
    res = runner.invoke(app, ["prove", "--only", "T1", "--only", "T17", "--max-size", "2", "--json", str(out)])
    assert res.exit_code == 1, res.output
    recs = {r["name"]: r for r in json.loads(out.read_text())["records"]}
    assert recs["T1 mixed product"]["result"] == "failed"
    assert "counterexample" in recs["T1 mixed product"]["detail"]
    assert recs["T17 shipped products realise the pair map"]["result"] == "failed"


@spec("T17")
def test_prove_rejects_bad_input():
    res = runner.invoke(app, ["prove", "--only", "T99"])
    assert res.exit_code != 0 and "T99" in res.output
    res = runner.invoke(app, ["prove", "--max-size", "0"])
    assert res.exit_code != 0 and "max_size" in res.output


@spec("T17")
def test_run_proofs_validates_parameters():
    from verified_ta.prove import run_proofs

    with pytest.raises(ValueError, match="max_size"):
        run_proofs(max_size=0)
    with pytest.raises(ValueError, match="only"):
        run_proofs(only=["nope"])
    with pytest.raises(ValueError, match="rlimit"):
        run_proofs(only=["T2"], rlimit=0)


@spec("T1", "T17")
def test_quick_prove_rows_pass():
    from verified_ta.prove import quick_prove_rows

    rows = quick_prove_rows()
    assert rows and all(r.passed for r in rows)
    assert {"T1", "T17", "L1"} <= {i for r in rows for i in r.extra["spec_ids"]}


@spec("L8", "P30", "P31")
def test_prove_reports_the_feature_proofs(tmp_path):
    out = tmp_path / "prove.json"
    res = runner.invoke(app, ["prove", "--only", "L8", "--only", "P31", "--max-size", "2", "--json", str(out)])
    assert res.exit_code == 0, res.output
    recs = {r["name"]: r for r in json.loads(out.read_text())["records"]}
    assert set(recs) == {"L8 polynomial features", "P31 feature count"}
    assert all(r["result"] == "proved" and r["control_confirmed"] for r in recs.values())
    # g starts at 0 (P(z) = a_0): the sizes column says so
    assert recs["L8 polynomial features"]["sizes"] == "n,d ∈ 1..2, g ∈ 0..2 (12/12 shapes)"
