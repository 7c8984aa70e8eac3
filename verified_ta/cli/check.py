"""``verified-ta check``: the main job — oracles, quick proofs and a quick certificate, one PASS/FAIL line per claim."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..report import ROW_SCHEMA, document_schema
from ..testing.defaults import CHECK_DEFAULTS
from . import QUIET, VERBOSE, ExitCode, check_outputs, human_console

#: what each exit code means for this command (rendered in the CLI reference of the documentation site)
EXIT_CODES = {
    ExitCode.OK: "every row passed: each error within its rigorous tolerance, the quick proofs proved, the quick "
                 "certificate certified",
    ExitCode.FAILED: "a row failed (an error over its tolerance, a proof not proved, a certificate not verified)",
    ExitCode.USAGE: "bad options (n outside 1..8, d outside 1..4, a non-positive count, an unwritable --json path)",
    ExitCode.INTERNAL: "verified-ta itself crashed",
}
#: the JSON document ``--json`` writes (JSON Schema, draft 2020-12)
JSON_SCHEMA = document_schema("check", "verified-ta check", {
    "rows": {"type": "array", "items": ROW_SCHEMA, "description": "every row of every instance"},
    "passed": {"type": "boolean"},
}, ["rows", "passed"])


def register(app: typer.Typer) -> None:
    @app.command()
    def check(
        n: int = typer.Option(CHECK_DEFAULTS["n"], help="Sequence length of the random instances (1..8)."),
        d: int = typer.Option(CHECK_DEFAULTS["d"], help="Head dimension of the random instances (1..4)."),
        seed: int = typer.Option(CHECK_DEFAULTS["seed"], help="Random seed."),
        trials: int = typer.Option(CHECK_DEFAULTS["trials"], help="Random instances per check."),
        json_file: Optional[Path] = typer.Option(None, "--json", help="Write the rows as JSON ('-': stdout)."),
        quiet: bool = QUIET,
        verbose: bool = VERBOSE,
    ) -> None:
        """Check the exact reference and the closed-form gradient against the mpmath/Arb oracles.

        One line per claim (the worst of its instances) and a summary; -v prints every row.
        """
        from rich.progress import Progress

        from ..certificate import quick_certify_rows
        from ..check import oracle_checks
        from ..prove import quick_prove_rows
        from ..report import render_rows, summary_lines, write_json

        check_outputs(json=json_file)
        console = human_console(json_file)
        with Progress(console=console, transient=True, disable=not console.is_terminal) as progress:
            task = progress.add_task("oracle checks", total=trials)
            try:
                rows = oracle_checks(n, d, seed, trials, advance=lambda: progress.advance(task))
            except ValueError as exc:
                raise typer.BadParameter(str(exc)) from None
            progress.update(task, description="quick proofs (z3)")
            rows += quick_prove_rows()
            progress.update(task, description="quick certificate")
            rows += quick_certify_rows()
        if verbose:
            render_rows(rows, "verified-ta check", console)
        else:
            for line in summary_lines(rows, failed_only=quiet):
                console.print(line, markup=False)
        failed = [r for r in rows if not r.passed]
        console.print(f"{len(rows) - len(failed)} passed, {len(failed)} failed", markup=False)
        if json_file:
            write_json(json_file, {"rows": rows, "passed": not failed}, command="check")
        if failed:
            raise typer.Exit(ExitCode.FAILED)
