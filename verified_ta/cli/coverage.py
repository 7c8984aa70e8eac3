"""``verified-ta coverage``: the SPEC-ID table generated from the tags in proofs/, properties/ and tests/."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def coverage(
        root: Path = typer.Option(Path("."), help="The verified-ta checkout to scan."),
        markdown: bool = typer.Option(False, "--markdown", help="Print the README's markdown table."),
        json_file: Optional[Path] = typer.Option(None, "--json", help="Write {ID: {kind: [places]}} as JSON."),
        fail_under: int = typer.Option(0, help="Exit 1 if fewer SPEC IDs than this are covered."),
        update_readme: Optional[Path] = typer.Option(
            None, help="Rewrite the table between <!-- coverage:begin --> and <!-- coverage:end --> in this file."
        ),
    ) -> None:
        """Which SPEC IDs are proved, property-tested and unit-tested, and where."""
        from rich.console import Console
        from rich.table import Table

        from ..coverage import markdown_table, scan
        from ..report import write_json
        from ..spec import SPEC_IDS

        try:
            cov = scan(root)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--root") from None
        if json_file:
            write_json(json_file, {i: cov.kinds_of(i) for i in SPEC_IDS})
        if update_readme:
            text = update_readme.read_text(encoding="utf-8")
            begin, end = "<!-- coverage:begin -->", "<!-- coverage:end -->"
            if begin not in text or end not in text:
                raise typer.BadParameter(f"{update_readme} lacks the {begin} / {end} markers", param_hint="--update-readme")
            head, rest = text.split(begin, 1)
            tail = rest.split(end, 1)[1]
            update_readme.write_text(f"{head}{begin}\n{markdown_table(cov)}\n{end}{tail}", encoding="utf-8")
        if markdown:
            typer.echo(markdown_table(cov))
        else:
            table = Table(title="SPEC coverage")
            for col in ("ID", "statement", "proved", "properties", "tests"):
                table.add_column(col, overflow="fold")
            for spec_id, statement in SPEC_IDS.items():
                k = cov.kinds_of(spec_id)
                table.add_row(spec_id, statement, *(str(len(k[kind])) for kind in ("proved", "property", "tested")))
            Console().print(table)
        covered = len(SPEC_IDS) - len(cov.uncovered)
        typer.echo(f"{covered}/{len(SPEC_IDS)} SPEC IDs covered; uncovered: {', '.join(cov.uncovered) or 'none'}")
        if covered < fail_under:
            raise typer.Exit(1)
