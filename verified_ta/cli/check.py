"""``verified-ta check``: the main job — oracles, quick proofs and a quick certificate, one PASS/FAIL table."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..check import DEFAULTS


def register(app: typer.Typer) -> None:
    @app.command()
    def check(
        n: int = typer.Option(DEFAULTS["n"], help="Sequence length of the random instances (1..8)."),
        d: int = typer.Option(DEFAULTS["d"], help="Head dimension of the random instances (1..4)."),
        seed: int = typer.Option(DEFAULTS["seed"], help="Random seed."),
        trials: int = typer.Option(DEFAULTS["trials"], help="Random instances per check."),
        json_file: Optional[Path] = typer.Option(None, "--json", help="Write the rows as JSON."),
    ) -> None:
        """Check the exact reference and the closed-form gradient against the mpmath/Arb oracles."""
        from rich.progress import Progress

        from ..certificate import quick_certify_rows
        from ..check import oracle_checks
        from ..prove import quick_prove_rows
        from ..report import render_rows, write_json

        with Progress(transient=True) as progress:
            task = progress.add_task("oracle checks", total=trials)
            try:
                rows = oracle_checks(n, d, seed, trials, advance=lambda: progress.advance(task))
            except ValueError as exc:
                raise typer.BadParameter(str(exc)) from None
            progress.update(task, description="quick proofs (z3)")
            rows += quick_prove_rows()
            progress.update(task, description="quick certificate")
            rows += quick_certify_rows()
        render_rows(rows, "verified-ta check")
        failed = [r for r in rows if not r.passed]
        typer.echo(f"{len(rows) - len(failed)} passed, {len(failed)} failed")
        if json_file:
            write_json(json_file, {"rows": rows, "passed": not failed})
        if failed:
            raise typer.Exit(1)
