"""``verified-ta coverage``: the SPEC-ID table generated from the tags in proofs/, properties/ and tests/, checked
against the status each entry of docs/spec.md claims."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import ExitCode

#: what each exit code means for this command (rendered in the CLI reference of the documentation site)
EXIT_CODES = {
    ExitCode.OK: "every SPEC entry's status matches the evidence, and at least --fail-under IDs are covered",
    ExitCode.FAILED: "a status tag disagrees with the tags in proofs/, properties/ or tests/ (or a `paper` tag with "
                     "the headings of docs/bounds.md and docs/certificate.md), a tag names an unknown ID, or fewer "
                     "than --fail-under IDs are covered",
    ExitCode.USAGE: "--root is not a verified-ta checkout, or the --update-readme file lacks the coverage markers",
}

_PLACES = {"type": "array", "items": {"type": "string", "description": "file::function carrying the tag"}}
#: the JSON document ``--json`` writes (JSON Schema, draft 2020-12)
JSON_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "verified-ta coverage",
    "type": "object",
    "required": ["schema_version", "tool", "version", "command", "spec", "ids", "covered", "total", "uncovered",
                 "unproved", "derived_only", "problems", "passed"],
    "properties": {
        "schema_version": {"type": "integer"},
        "tool": {"const": "verified-ta"},
        "version": {"type": "string"},
        "command": {"const": "coverage"},
        "spec": {"type": "string", "description": "the specification the entries link into"},
        "ids": {
            "type": "array",
            "description": "one record per SPEC ID, in SPEC order",
            "items": {
                "type": "object",
                "required": ["id", "claim", "entry", "status", "proved", "property", "tested"],
                "properties": {
                    "id": {"type": "string", "pattern": "^[TLAP][1-9][0-9]*$"},
                    "claim": {"type": "string"},
                    "entry": {"type": "string", "description": "docs/spec.md#<id>"},
                    "status": {"type": "array", "items": {"type": "string"}},
                    "proved": _PLACES,
                    "property": _PLACES,
                    "tested": _PLACES,
                },
                "additionalProperties": False,
            },
        },
        "covered": {"type": "integer", "minimum": 0},
        "total": {"type": "integer", "minimum": 0},
        "uncovered": {"type": "array", "items": {"type": "string"}},
        "unproved": {"type": "array", "items": {"type": "string"}, "description": "T/L/A IDs without z3 or paper"},
        "derived_only": {"type": "array", "items": {"type": "string"}},
        "problems": {
            "type": "array",
            "items": {"type": "object", "required": ["id", "problem"],
                      "properties": {"id": {"type": "string"}, "problem": {"type": "string"}},
                      "additionalProperties": False},
        },
        "passed": {"type": "boolean"},
    },
    "additionalProperties": False,
}

_BEGIN, _END = "<!-- coverage:begin -->", "<!-- coverage:end -->"


def register(app: typer.Typer) -> None:
    @app.command()
    def coverage(
        root: Path = typer.Option(Path("."), help="The verified-ta checkout to scan."),
        markdown: bool = typer.Option(False, "--markdown", help="Print the README's markdown table."),
        json_file: Optional[Path] = typer.Option(None, "--json", help="Write the coverage as JSON ('-': stdout)."),
        fail_under: int = typer.Option(0, help="Exit 1 if fewer SPEC IDs than this are covered."),
        update_readme: Optional[Path] = typer.Option(
            None, help=f"Rewrite the table between {_BEGIN} and {_END} in this file."
        ),
    ) -> None:
        """Which SPEC IDs are proved, property-tested and unit-tested, and where; exit 1 if a status disagrees."""
        from rich.console import Console
        from rich.table import Table

        from ..coverage import derived_only, markdown_table, scan, status_problems, unproved_claims
        from ..report import write_json
        from ..spec import SPEC_IDS, SPEC_STATUS, entry_link

        to_stdout = json_file is not None and str(json_file) == "-"
        console = Console(stderr=to_stdout)
        try:
            cov = scan(root)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--root") from None
        if update_readme:
            text = update_readme.read_text(encoding="utf-8")
            if _BEGIN not in text or _END not in text:
                raise typer.BadParameter(f"{update_readme} lacks the {_BEGIN} / {_END} markers",
                                         param_hint="--update-readme")
            head, rest = text.split(_BEGIN, 1)
            tail = rest.split(_END, 1)[1]
            update_readme.write_text(f"{head}{_BEGIN}\n{markdown_table(cov)}\n{_END}{tail}", encoding="utf-8")
        problems = status_problems(cov, root)
        covered = len(SPEC_IDS) - len(cov.uncovered)
        passed = not problems and covered >= fail_under
        if json_file:
            write_json(json_file, {
                "spec": "docs/spec.md",
                "ids": [{"id": i, "claim": claim, "entry": entry_link(i), "status": list(SPEC_STATUS[i]),
                         **cov.kinds_of(i)} for i, claim in SPEC_IDS.items()],
                "covered": covered, "total": len(SPEC_IDS), "uncovered": cov.uncovered,
                "unproved": unproved_claims(), "derived_only": derived_only(), "problems": problems, "passed": passed,
            }, command="coverage")
        if markdown:
            typer.echo(markdown_table(cov), err=to_stdout)
        else:
            spec_file = (root / "docs" / "spec.md").resolve()
            table = Table(title="SPEC coverage")
            for col in ("ID", "claim", "status", "proved", "properties", "tests"):
                table.add_column(col, overflow="fold")
            for spec_id, claim in SPEC_IDS.items():
                k = cov.kinds_of(spec_id)
                label = (f"[link={spec_file.as_uri()}#{spec_id.lower()}]{spec_id}[/link]" if spec_file.is_file()
                         else spec_id)
                table.add_row(label, claim, ", ".join(SPEC_STATUS[spec_id]),
                              *(str(len(k[kind])) for kind in ("proved", "property", "tested")))
            console.print(table)
        for p in problems:
            typer.echo(f"status mismatch {p['id']}: {p['problem']}", err=True)
        typer.echo(f"{covered}/{len(SPEC_IDS)} SPEC IDs covered; uncovered: {', '.join(cov.uncovered) or 'none'}; "
                   f"status mismatches: {len(problems)}", err=to_stdout)
        if not passed:
            raise typer.Exit(ExitCode.FAILED)
