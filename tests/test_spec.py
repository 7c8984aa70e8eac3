"""docs/spec.md is the specification: the package's ID table is generated from it, and every entry's status tags
agree with the proofs, properties and tests in the repository (issue 14)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from verified_ta.cli import ExitCode, app
from verified_ta.cli.coverage import JSON_SCHEMA
from verified_ta.coverage import derived_only, markdown_table, scan, status_problems, unproved_claims
from verified_ta.spec import SPEC_IDS, SPEC_STATUS, parse_spec, table_source

ROOT = Path(__file__).resolve().parents[1]
SPEC_MD = ROOT / "docs" / "spec.md"
runner = CliRunner()


@pytest.fixture(scope="module")
def repo_coverage():
    """One static scan of the repository (about 2 s) for the tests that only read it."""
    return scan(ROOT)


@pytest.fixture(scope="module")
def coverage_run():
    """One ``verified-ta coverage --json -`` run on the repository."""
    return runner.invoke(app, ["coverage", "--root", str(ROOT), "--json", "-"])


def _entry(spec_id: str = "T1", claim: str = "**Claim:** x = x", status: str = "`property`", drop: str = "") -> str:
    fields = {"Statement": "x = x.", "Assumptions": "none.", "Source": "this project.", "Status": f"{status}. Prose."}
    body = "\n".join(f"- **{k}:** {v}" for k, v in fields.items() if k != drop)
    return f"### {spec_id}\n\n{claim}\n\n{body}\n"


def test_spec_table_is_generated_from_docs_spec_md():
    generated = (ROOT / "verified_ta" / "spec_table.py").read_text(encoding="utf-8")
    assert generated == table_source(parse_spec(SPEC_MD.read_text(encoding="utf-8"))), (
        "verified_ta/spec_table.py differs from docs/spec.md: run `python -m verified_ta.spec`")


def test_every_entry_has_statement_assumptions_source_and_status():
    text = SPEC_MD.read_text(encoding="utf-8")
    entries = parse_spec(text)
    assert [e.id for e in entries] == list(SPEC_IDS) and len(entries) == len(set(SPEC_IDS))
    for a, b in [("T", range(1, 18)), ("L", range(1, 13)), ("A", range(1, 4)), ("P", range(15, 42))]:
        assert {f"{a}{i}" for i in b} <= set(SPEC_IDS)
    assert all(e.status for e in entries)


@pytest.mark.parametrize("text, match", [
    (_entry() + _entry(), "duplicated: \\['T1'\\]"),
    (_entry(claim="no claim line"), "Claim"),
    (_entry(drop="Assumptions"), "missing field\\(s\\) \\['Assumptions'\\]"),
    (_entry(status="`proved`"), "status tags must be"),
    (_entry(status="`z3 swept ≤ 0`"), "status tags must be"),
    (_entry(status="`property` `property`"), "distinct"),
    (_entry(status="plain words"), "must open with tags"),
    ("# no entries\n", "entries: 0"),
])
def test_malformed_spec_is_rejected(text, match):
    with pytest.raises(ValueError, match=match):
        parse_spec(text)


def test_regenerating_writes_the_table(tmp_path):
    """``python -m verified_ta.spec`` (what the table test's message says to run) writes the table of its input."""
    spec_copy, target = tmp_path / "spec.md", tmp_path / "spec_table.py"
    spec_copy.write_text(_entry("T1") + _entry("P15", status="`property` `tested`"), encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "verified_ta.spec", str(spec_copy), str(target)], cwd=ROOT,
                         capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "2 entries" in out.stdout
    assert target.read_text(encoding="utf-8") == table_source(parse_spec(spec_copy.read_text(encoding="utf-8")))


# ------------------------------------------------------------------ status tags against the evidence


def z3_tag_problems(status: dict[str, tuple[str, ...]]) -> list[str]:
    """``z3 all sizes`` iff an all-sizes proof covers the ID; ``z3 swept ≤ K`` iff swept proofs do, K the least
    default sweep among them (what `verified-ta prove` proves by default)."""
    from proofs.allsizes import AllSizesProof

    from verified_ta.prove import catalogue

    all_sizes: set[str] = set()
    swept: dict[str, int] = {}
    for proof in catalogue():
        for i in proof.spec_ids:
            if isinstance(proof, AllSizesProof):
                all_sizes.add(i)
            else:
                swept[i] = min(swept.get(i, proof.default_max), proof.default_max)
    problems = []
    for spec_id, tags in status.items():
        if ("z3 all sizes" in tags) != (spec_id in all_sizes):
            problems.append(f"{spec_id}: `z3 all sizes` tag {'without' if spec_id not in all_sizes else 'missing for'} "
                            "an all-sizes proof")
        declared = [int(t.rsplit(" ", 1)[1]) for t in tags if t.startswith("z3 swept")]
        expected = [swept[spec_id]] if spec_id in swept else []
        if declared != expected:
            problems.append(f"{spec_id}: status says z3 swept ≤ {declared or '—'}, "
                            f"the proofs sweep to {expected or '—'}")
    return problems


def test_z3_tags_match_the_proof_catalogue():
    pytest.importorskip("z3")
    assert z3_tag_problems(SPEC_STATUS) == []


def test_z3_tag_check_catches_overclaims():
    pytest.importorskip("z3")
    planted = {**SPEC_STATUS, "T6": ("z3 all sizes", "z3 swept ≤ 3", "property"),  # T6 has no all-sizes proof
               "T1": ("z3 all sizes", "z3 swept ≤ 4", "property", "tested"),      # its proofs sweep to 3
               "L4": ("derived", "tested", "z3 swept ≤ 2")}                       # no proof at all
    problems = z3_tag_problems(planted)
    assert len(problems) == 3 and all(p.split(":")[0] in {"T1", "T6", "L4"} for p in problems)


def test_status_tags_match_the_tagged_evidence(repo_coverage):
    assert status_problems(repo_coverage, ROOT) == []


@pytest.mark.parametrize("spec_id, tags, expected", [
    ("T2", ("z3 swept ≤ 5", "property", "tested"), "claims `tested` but nothing is tagged in tests/"),
    ("P15", ("property",), "but the status lacks `tested`"),
    ("T2", ("property",), "but the status lacks `z3`"),
    ("T1", ("z3 all sizes", "z3 swept ≤ 3", "property", "tested", "paper"), "claims `paper` but no heading"),
    ("P33", (), "no status tag"),
])
def test_status_check_catches_a_wrong_tag(monkeypatch, repo_coverage, spec_id, tags, expected):
    monkeypatch.setitem(SPEC_STATUS, spec_id, tags)
    problems = status_problems(repo_coverage, ROOT)
    assert {p["id"] for p in problems} == {spec_id} and any(expected in p["problem"] for p in problems)


def test_status_check_catches_a_tag_naming_no_spec_id(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text('@spec("T99")\ndef test_a():\n    pass\n')
    problems = status_problems(scan(tmp_path), tmp_path)
    assert {"id": "T99", "problem": "tests/test_x.py::test_a tags an ID that docs/spec.md does not define"} in problems


def test_readme_lists_the_unproved_and_derived_only_ids(repo_coverage):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for spec_id in unproved_claims() + derived_only():
        assert f"[{spec_id}](docs/spec.md#{spec_id.lower()})" in readme
    assert "**Derived only**" in readme and "**Not proved by the project**" in readme
    table = markdown_table(repo_coverage)
    assert all(f"| [{i}](docs/spec.md#{i.lower()}) |" in table for i in SPEC_IDS)
    assert "\\|" in table or "|" not in "".join(SPEC_IDS.values())  # a '|' in a claim must not split its row


# ------------------------------------------------------------------ the command


def _payload(result) -> dict:
    return json.loads(result.stdout)


def test_coverage_json_on_stdout_follows_its_schema(coverage_run):
    result = coverage_run
    assert result.exit_code == ExitCode.OK, result.output
    payload = _payload(result)
    jsonschema.validate(payload, JSON_SCHEMA)
    assert payload["passed"] is True and payload["problems"] == [] and payload["command"] == "coverage"
    assert [r["id"] for r in payload["ids"]] == list(SPEC_IDS)
    t1 = payload["ids"][0]
    assert t1["entry"] == "docs/spec.md#t1" and t1["status"] == list(SPEC_STATUS["T1"]) and t1["proved"]
    assert "SPEC IDs covered" in result.stderr  # the human summary stays off stdout


def test_coverage_schema_rejects_a_malformed_document(coverage_run):
    payload = _payload(coverage_run)
    del payload["passed"]
    with pytest.raises(jsonschema.ValidationError, match="passed"):
        jsonschema.validate(payload, JSON_SCHEMA)
    payload["passed"], payload["ids"][0]["status"] = True, "property"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(payload, JSON_SCHEMA)


def test_coverage_exits_1_on_a_status_mismatch(monkeypatch, tmp_path):
    monkeypatch.setitem(SPEC_STATUS, "L4", ("derived", "tested"))  # drops `property`: L4 has tagged properties
    out = tmp_path / "coverage.json"
    result = runner.invoke(app, ["coverage", "--root", str(ROOT), "--json", str(out)])
    assert result.exit_code == ExitCode.FAILED
    assert re.search(r"status mismatch L4: .*`property`", result.output)
    payload = json.loads(out.read_text())
    assert payload["passed"] is False and payload["problems"][0]["id"] == "L4"


@pytest.mark.parametrize("args, match", [
    (["--root", "/nonexistent-dir"], "root must be a verified-ta checkout"),
    (["--root", str(ROOT), "--update-readme", str(ROOT / "pyproject.toml")], "lacks the <!-- coverage:begin -->"),
])
def test_coverage_bad_input_is_a_usage_error(args, match):
    result = runner.invoke(app, ["coverage", *args])
    text = re.sub(r"[\s│]+", " ", result.output)
    assert result.exit_code == ExitCode.USAGE and match in text
