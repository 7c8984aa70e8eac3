"""``verified-ta prove``: z3 proofs of SPEC T1–T17, the §3 gradient chain (L1–L3), L6 and L8, with negative controls."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def prove(
        max_size: Optional[int] = typer.Option(
            None, "--max-size", help="Sweep every dimension over 1..K (default: each proof's own default, < 2 min total)."
        ),
        only: Optional[List[str]] = typer.Option(None, "--only", help="Run only proofs covering these SPEC IDs (repeatable)."),
        json_file: Optional[Path] = typer.Option(None, "--json", help="Write the proof records as JSON."),
    ) -> None:
        """Prove the identities behind the closed-form gradient on the shipped code; exit 1 on any failure or unknown."""
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        from rich.table import Table

        from ..prove import catalogue, run_proofs
        from ..report import write_json

        console = Console()
        try:
            total = len([p for p in catalogue() if not only or set(p.spec_ids) & set(only)])
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=console, transient=True) as bar:
                task = bar.add_task("proving", total=total)

                def started(proof) -> None:
                    bar.update(task, description=f"proving {proof.name}")
                    bar.advance(task, 0)

                records = []
                for rec in run_proofs(max_size=max_size, only=only, on_start=started):
                    records.append(rec)
                    bar.advance(task)
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None
        table = Table(title="verified-ta prove (z3)")
        for col in ("ID", "statement", "sizes", "result", "time", "scope", "negative control"):
            table.add_column(col, overflow="fold")
        for r in records:
            verdict = "[green]proved[/]" if r.result == "proved" else f"[bold red]{r.result}[/]"
            control = "[green]refuted ✓[/]" if r.control_confirmed else "[bold red]NOT refuted[/]"
            scope = "[bold]all sizes[/]" if r.scope == "all sizes" else f"swept ≤ {r.largest_size}"
            table.add_row(",".join(r.spec_ids), r.statement, r.sizes, verdict + (f"\n{r.detail}" if r.detail else ""),
                          f"{r.seconds:.2f}s", scope, control)
        console.print(table)
        all_sizes = sorted({i for r in records if r.scope == "all sizes" and r.passed for i in r.spec_ids})
        console.print(f"all sizes: {', '.join(all_sizes) or 'none'}; the rest hold up to the swept size shown.")
        if json_file:
            write_json(json_file, {"records": records, "passed": all(r.passed for r in records)})
        if not all(r.passed for r in records):
            raise typer.Exit(1)
