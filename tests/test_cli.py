"""The main job and the coverage table (issue #2)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from verified_ta.cli import app
from verified_ta.coverage import markdown_table, scan
from verified_ta.spec import spec

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_check_runs_oracle_rows_and_writes_json(tmp_path):
    out = tmp_path / "check.json"
    result = runner.invoke(app, ["check", "--n", "3", "--d", "2", "--trials", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    assert payload["passed"] is True
    ids = {r["spec_id"] for r in payload["rows"]}
    assert {"P15", "L4", "L1", "P24"} <= ids
    assert all(r["error"] <= r["tolerance"] for r in payload["rows"])
    assert re.search(r"\d+ passed, 0 failed", result.output)


def test_check_fails_with_exit_1_when_the_reference_is_wrong(monkeypatch):
    import verified_ta.check as job

    real = job.tensor_attention_reference
    monkeypatch.setattr(job, "tensor_attention_reference", lambda *a, **k: _perturb(real(*a, **k)))
    result = runner.invoke(app, ["check", "--n", "3", "--d", "2", "--trials", "1"])
    assert result.exit_code == 1
    assert "FAIL" in result.output


def _perturb(res):
    if isinstance(res, tuple):
        return (res[0] * (1 + 1e-9), res[1])
    return res * (1 + 1e-9)


@pytest.mark.parametrize("args, match", [(["--n", "0"], "n must be an integer >= 1"), (["--n", "50"], "n must be in")])
def test_check_bad_input_is_a_clear_error(args, match):
    result = runner.invoke(app, ["check", *args])
    assert result.exit_code == 2
    assert match in result.output


def test_coverage_table_in_readme_is_the_generated_one():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    begin, end = "<!-- coverage:begin -->", "<!-- coverage:end -->"
    assert begin in readme and end in readme, "README must hold the generated coverage table"
    block = readme.split(begin, 1)[1].split(end, 1)[0].strip()
    assert block == markdown_table(scan(ROOT)), "README coverage table is stale: run `verified-ta coverage --markdown`"


def test_coverage_reads_tags_statically(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text('@spec("T3", "P18")\ndef test_a():\n    pass\n')
    cov = scan(tmp_path)
    assert cov.kinds_of("T3")["tested"] == ["tests/test_x.py::test_a"]
    assert "T1" in cov.uncovered and "T3" not in cov.uncovered
    result = runner.invoke(app, ["coverage", "--root", str(tmp_path), "--fail-under", "3"])
    assert result.exit_code == 1 and "2/" in result.output


def test_unknown_spec_id_is_rejected():
    with pytest.raises(ValueError, match="unknown"):
        spec("T99")
    with pytest.raises(ValueError, match="root must be a verified-ta checkout"):
        scan(Path("/nonexistent-dir"))
