"""The main job, the coverage table (issue #2) and the conventions every command follows (issue 11 §4)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from verified_ta import __version__
from verified_ta.cli import ExitCode, app
from verified_ta.cli.check import JSON_SCHEMA as CHECK_SCHEMA
from verified_ta.coverage import markdown_table, scan
from verified_ta.report import JSON_SCHEMA_VERSION, CheckRow, check_output_path, strict_json
from verified_ta.spec import spec

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _strict(name: str):
    raise ValueError(f"non-strict JSON constant {name}")


def test_check_json_to_stdout_is_strict_with_one_line_per_claim_on_stderr():
    result = runner.invoke(app, ["check", "--n", "3", "--d", "2", "--trials", "2", "--json", "-"])
    assert result.exit_code == ExitCode.OK, result.output
    payload = json.loads(result.stdout, parse_constant=_strict)  # stdout is the JSON document alone
    jsonschema.validate(payload, CHECK_SCHEMA)
    assert (payload["schema_version"], payload["tool"], payload["version"], payload["command"]) == (
        JSON_SCHEMA_VERSION, "verified-ta", __version__, "check")
    assert payload["passed"] is True
    assert all(isinstance(r["spec_ids"], list) and r["spec_ids"] for r in payload["rows"])
    assert {"P15", "L4", "L1", "P24"} <= {i for r in payload["rows"] for i in r["spec_ids"]}
    assert all(r["error"] <= r["tolerance"] for r in payload["rows"])
    lines = result.stderr.strip().splitlines()
    claims = {(r["name"], tuple(r["spec_ids"])) for r in payload["rows"]}
    assert len(lines) == len(claims) + 1 < len(payload["rows"]), result.stderr  # two trials: one line per claim
    assert all(line.startswith("PASS ") for line in lines[:-1]) and "over 2 instances" in result.stderr
    assert re.fullmatch(r"\d+ passed, 0 failed", lines[-1])


def test_check_fails_with_exit_1_and_verbose_prints_every_row_unwrapped_at_80_columns(monkeypatch):
    import verified_ta.check as job

    real = job.tensor_attention_reference
    monkeypatch.setattr(job, "tensor_attention_reference", lambda *a, **k: _perturb(real(*a, **k)))
    result = runner.invoke(app, ["check", "--n", "3", "--d", "2", "--trials", "1", "-v"], env={"COLUMNS": "80"})
    assert result.exit_code == ExitCode.FAILED, result.output
    body = result.output.strip().splitlines()
    assert body[0] == "verified-ta check" and body[1].split()[:3] == ["SPEC", "ID", "check"]
    rows = body[2:-1]
    assert all(re.match(r"\S+ .* (PASS|FAIL) ", line) for line in rows), result.output  # one line per row
    assert any(" FAIL " in line for line in rows) and any(len(line) > 80 for line in rows)  # never wrapped
    assert re.fullmatch(r"\d+ passed, [1-9]\d* failed", body[-1])


def test_internal_error_is_exit_5_not_failed(monkeypatch):
    import verified_ta.check as job

    def broken(*a, **k):
        raise ZeroDivisionError("a verified-ta bug")

    monkeypatch.setattr(job, "oracle_checks", broken)
    result = runner.invoke(app, ["check"])
    assert result.exit_code == ExitCode.INTERNAL and "internal error" in result.output


@pytest.mark.parametrize("option", ["--json", "--junit"])
def test_unwritable_output_path_is_a_usage_error_before_any_work(tmp_path, option):
    command = ["check"] if option == "--json" else ["conform", "tests.conform_impls:reference"]
    for path, message in ((tmp_path / "missing" / "out", "does not exist"), (tmp_path, "is a directory")):
        result = runner.invoke(app, [*command, option, str(path)])
        assert result.exit_code == ExitCode.USAGE and message in result.output, result.output
        assert "passed" not in result.output  # nothing ran


def test_usage_errors_are_click_code_2_and_version_prints():
    assert runner.invoke(app, ["check", "--n", "abc"]).exit_code == ExitCode.USAGE == 2
    assert runner.invoke(app, ["check", "--no-such-option"]).exit_code == 2
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.output.strip() == f"verified-ta {__version__}"


def test_cli_start_up_imports_nothing_heavy():
    """``verified-ta --help`` must start fast: registering the commands imports no numerical library."""
    code = ("import sys; import verified_ta.cli; "
            "print(sorted(m for m in ('torch', 'numpy', 'mpmath', 'z3', 'flint', 'hypothesis') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["certify", "--B", "1", "--n", "4096", "--d", "4"]])
def test_cli_commands_that_must_start_fast_never_import_torch(argv):
    """``--help``, ``--version`` and ``certify`` (B = 1, n = 4096, d = 4, float64) run without importing torch (2–4 s
    of start-up on a busy 2-core box): the certificate's bound modules import it only where tensors are built."""
    code = ("import sys; from verified_ta.cli import app; sys.argv = ['verified-ta', *sys.argv[1:]]\n"
            "try:\n    app()\nexcept SystemExit as stop:\n    code = stop.code\n"
            "print('torch' in sys.modules, code, file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert done.returncode == 0 and done.stderr.splitlines()[-1] == "False 0", done.stdout + done.stderr


def test_strict_json_rows_and_path_checks(tmp_path):
    row = CheckRow("L4, P29", "grad_q", float("inf"), 0.0, False, "", {"status": "ERROR"})
    doc = json.loads(strict_json({"rows": [row], "nan": float("nan")}), parse_constant=_strict)
    assert doc["rows"][0]["spec_ids"] == ["L4", "P29"] and doc["rows"][0]["error"] is None and doc["nan"] is None
    assert doc["rows"][0]["status"] == "ERROR"
    check_output_path("-", "--json")
    check_output_path(tmp_path / "new.json", "--json")
    with pytest.raises(ValueError, match="--json .*does not exist"):
        check_output_path(tmp_path / "no" / "x.json", "--json")


def _perturb(res):
    if isinstance(res, tuple):
        return (res[0] * (1 + 1e-9), res[1])
    return res * (1 + 1e-9)


@pytest.mark.parametrize("args, match", [(["--n", "0"], "n must be an integer >= 1"), (["--n", "50"], "n must be in")])
def test_check_bad_input_is_a_clear_error(args, match):
    result = runner.invoke(app, ["check", *args])
    assert result.exit_code == ExitCode.USAGE
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
