"""``verified-ta prove``: table at 80 columns, strict JSON, exit codes, bad input, and planted bugs in the shipped
products and gradient code make it fail (1) or withhold the all-sizes claim (3)."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

pytest.importorskip("z3")

from tests.mutants import (  # noqa: E402
    MUTANTS,
    khatri_rao_wrong_above_64_rows,
    plant,
    replace_product,
    transposed_khatri_rao,
)
from verified_ta.cli import ExitCode, app  # noqa: E402
from verified_ta.cli.prove import JSON_SCHEMA  # noqa: E402
from verified_ta.spec import spec  # noqa: E402

runner = CliRunner()
pytestmark = [pytest.mark.z3, pytest.mark.timeout(180)]


def _run(tmp_path, *args, width=80):
    """Run prove with --json; the document must follow the command's JSON schema."""
    jsonschema = pytest.importorskip("jsonschema")
    out = tmp_path / "prove.json"
    res = runner.invoke(app, ["prove", *args, "--json", str(out)], env={"COLUMNS": str(width)})
    payload = json.loads(out.read_text())
    jsonschema.validate(payload, JSON_SCHEMA)
    return res, payload


@spec("T1", "T17")
def test_prove_passes_writes_strict_json_and_fits_80_columns(tmp_path):
    res, payload = _run(tmp_path, "--only", "T1", "--only", "T17", "--max-size", "2")
    assert res.exit_code == ExitCode.OK, res.output
    assert payload["tool"] == "verified-ta" and payload["command"] == "prove" and payload["passed"] is True
    recs = payload["records"]
    assert {r["scope"] for r in recs} == {"all sizes", "swept"}
    assert all(r["verdict"] == "proved" and r["control_confirmed"] for r in recs)
    assert all(r["trusted"] for r in recs if r["scope"] == "all sizes")
    assert "all sizes: T1, T17 " in res.output
    lines = res.output.splitlines()
    assert max(map(len, lines)) <= 80
    words = re.findall(r"\S+", res.output)
    for r in recs:  # every word of every proof name and ID is printed whole (none split across lines)
        for w in r["name"].split() + r["spec_ids"]:
            assert any(w in word for word in words), w


@spec("T1", "T17")
def test_json_to_stdout_is_strict(tmp_path):
    res = runner.invoke(app, ["prove", "--only", "T2", "--max-size", "1", "--json", "-"])
    assert res.exit_code == ExitCode.OK
    payload = json.loads(res.stdout[res.stdout.index("{"):], parse_constant=lambda c: pytest.fail(f"non-strict {c}"))
    assert payload["records"] and payload["exit_code"] == 0


@spec("T1", "T17")
def test_planted_transposed_khatri_rao_makes_prove_fail(monkeypatch, tmp_path):
    replace_product(monkeypatch, "khatri_rao", transposed_khatri_rao)
    res, payload = _run(tmp_path, "--only", "T1", "--only", "T17", "--max-size", "2")
    assert res.exit_code == ExitCode.FAILED, res.output
    recs = {r["name"]: r for r in payload["records"]}
    assert recs["T1 mixed product"]["verdict"] == "refuted"
    assert "counterexample" in recs["T1 mixed product"]["detail"]
    assert recs["T17 shipped products realise the pair map"]["verdict"] == "refuted"
    assert recs["T1 mixed product, all sizes"]["verdict"] != "proved"
    assert "all sizes: none" in res.output or "T1" not in res.output.split("all sizes:")[1].split("(")[0]


@spec("T1", "T17")
def test_khatri_rao_wrong_only_above_64_rows_loses_the_all_sizes_claim(monkeypatch, tmp_path):
    """Swept proofs (sizes ≤ 2 here, ≤ 3 by default) pass; prove no longer says "all sizes" for T1, T17; exit 3."""
    replace_product(monkeypatch, "khatri_rao", khatri_rao_wrong_above_64_rows)
    res, payload = _run(tmp_path, "--only", "T1", "--only", "T17", "--max-size", "2")
    assert res.exit_code == ExitCode.INCONCLUSIVE, res.output
    recs = payload["records"]
    assert all(r["verdict"] == "proved" for r in recs if r["scope"] == "swept")
    unknown = [r for r in recs if r["verdict"] == "unknown"]
    assert unknown and all(r["scope"] == "all sizes" and "n1·n2 > 64" in r["detail"] for r in unknown)
    claimed = res.output.split("all sizes:")[1].split("(")[0]
    assert "T1" not in claimed and "T17" not in claimed


@spec("L1", "P18")
@pytest.mark.parametrize("mutant", list(MUTANTS))
def test_planted_gradient_bugs_make_prove_exit_1(monkeypatch, tmp_path, mutant):
    """Each planted bug in the shipped gradient code (tests/mutants.py) is refuted by a proof that runs
    that code: softmax_rows, objective_terms, loss or closed_form_gradient with chunks."""
    plant(monkeypatch, mutant)
    res, payload = _run(tmp_path, "--quick", "--only", "L1")
    assert res.exit_code == ExitCode.FAILED, res.output
    refuted = [r for r in payload["records"] if r["verdict"] == "refuted"]
    assert refuted and all("counterexample" in r["detail"] for r in refuted)
    assert payload["passed"] is False and payload["exit_code"] == ExitCode.FAILED


@spec("L1")
def test_the_l1_proofs_pass_on_the_shipped_code(tmp_path):
    res, payload = _run(tmp_path, "--quick", "--only", "L1")
    assert res.exit_code == ExitCode.OK, res.output
    names = {r["name"] for r in payload["records"]}
    assert {"objective_terms, loss = SPEC §3", "closed_form_gradient, chunk_size=None: = dLoss/dX",
            "closed_form_gradient, chunk_size=1: = dLoss/dX"} <= names


@spec("T17")
def test_prove_rejects_bad_input_with_usage_exit_code():
    res = runner.invoke(app, ["prove", "--only", "T99"])
    assert res.exit_code == ExitCode.USAGE and "T99" in res.output
    res = runner.invoke(app, ["prove", "--max-size", "0"])
    assert res.exit_code == ExitCode.USAGE and "max_size" in res.output
    res = runner.invoke(app, ["prove", "--max-size", "abc"])
    assert res.exit_code == ExitCode.USAGE


@spec("T17")
def test_run_proofs_validates_parameters():
    from verified_ta.prove import run_proofs

    with pytest.raises(ValueError, match="max_size"):
        run_proofs(max_size=0)
    with pytest.raises(ValueError, match="only"):
        run_proofs(only=["nope"])
    with pytest.raises(ValueError, match="rlimit"):
        run_proofs(only=["T2"], rlimit=0)


@spec("T17")
def test_a_solver_unknown_is_inconclusive_not_proved():
    """With a starved resource limit z3 answers unknown: the verdict is unknown (exit 3), never proved."""
    from verified_ta.cli.prove import _exit_code
    from verified_ta.prove import run_proofs

    recs = run_proofs(only=["L6"], max_size=2, rlimit=1000, second_solver=False)
    assert recs and all(r.verdict == "unknown" for r in recs)
    assert _exit_code(recs) == ExitCode.INCONCLUSIVE


@spec("T1", "T17")
def test_quick_prove_rows_pass():
    from verified_ta.prove import quick_prove_rows

    rows = quick_prove_rows()
    assert rows and all(r.passed for r in rows)
    assert {"T1", "T17", "L1", "P18"} <= {i for r in rows for i in r.extra["spec_ids"]}


@spec("L8", "P30", "P31")
def test_prove_reports_the_feature_proofs(tmp_path):
    res, payload = _run(tmp_path, "--only", "L8", "--only", "P31", "--max-size", "2")
    assert res.exit_code == ExitCode.OK, res.output
    recs = {r["name"]: r for r in payload["records"]}
    assert set(recs) == {"L8 polynomial features", "P31 feature count"}
    assert all(r["verdict"] == "proved" and r["control_confirmed"] for r in recs.values())
    # g starts at 0 (P(z) = a_0): the sizes column says so
    assert recs["L8 polynomial features"]["sizes"] == "n,d ∈ 1..2, g ∈ 0..2 (12/12 shapes)"
