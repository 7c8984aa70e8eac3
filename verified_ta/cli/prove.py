"""``verified-ta prove``: z3 proofs on the shipped code (SPEC T1–T17, §3 objective and gradient, L1–L3, L6, L8),
each with a vacuity check and a negative control."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, List, Optional

import typer

from ..report import document_schema
from . import ExitCode, check_outputs, human_console

#: what each exit code means for this command (rendered in the CLI reference of the documentation site)
EXIT_CODES = {
    ExitCode.OK: "every proof selected is proved, is not vacuous, and its negative control is refuted",
    ExitCode.FAILED: "a statement is refuted (z3 found a counterexample on the shipped code), or a negative control "
                     "was not refuted (the check may be blind)",
    ExitCode.USAGE: "bad options: an unknown SPEC ID in --only, --max-size below 1",
    ExitCode.INCONCLUSIVE: "z3 answered unknown (resource limit or timeout), or an all-sizes proof could not be built "
                           "(the code branches on a size, or leaves the traced model): nothing is claimed for it",
    ExitCode.INTERNAL: "verified-ta itself crashed",
}

_TEXT, _BOOL = {"type": "string"}, {"type": "boolean"}
#: the JSON document ``--json`` writes (JSON Schema, draft 2020-12)
JSON_SCHEMA = document_schema("prove", "verified-ta prove", {
    "records": {
        "type": "array",
        "description": "one record per proof run, in catalogue order",
        "items": {
            "type": "object",
            "required": ["spec_ids", "name", "statement", "scope", "sizes", "largest_size", "result", "seconds",
                         "vacuity", "negative_control", "control_status", "control_confirmed", "trusted",
                         "second_solver", "detail", "extra", "verdict"],
            "properties": {
                "spec_ids": {"type": "array", "items": {"type": "string", "pattern": "^[TLAP][1-9][0-9]*$"}},
                "name": _TEXT,
                "statement": _TEXT,
                "scope": {"enum": ["all sizes", "swept"],
                          "description": "all sizes: traced on symbolic sizes; swept: every shape up to the size"},
                "sizes": _TEXT,
                "largest_size": {"type": ["integer", "null"],
                                 "description": "swept: every dimension up to this size is proved"},
                "result": {"enum": ["proved", "failed", "unknown"]},
                "seconds": {"type": ["number", "null"]},
                "vacuity": {"type": "string",
                            "description": "z3's answer on the hypotheses alone (sat: not vacuous)"},
                "negative_control": _TEXT,
                "control_status": _TEXT,
                "control_confirmed": _BOOL,
                "trusted": {"type": "string", "description": "what an all-sizes proof takes on trust"},
                "second_solver": _TEXT,
                "detail": _TEXT,
                "extra": {"type": "object"},
                "verdict": {"enum": ["proved", "refuted", "unknown", "control failed"]},
            },
            "additionalProperties": False,
        },
    },
    "passed": _BOOL,
    "exit_code": {"enum": [int(c) for c in (ExitCode.OK, ExitCode.FAILED, ExitCode.INCONCLUSIVE)]},
}, ["records", "passed", "exit_code"])
JSON_SCHEMA["additionalProperties"] = False

_VERDICT_STYLE = {"proved": "green", "refuted": "bold red", "unknown": "bold yellow", "control failed": "bold red"}


def _exit_code(records: list[Any]) -> ExitCode:
    verdicts = {r.verdict for r in records}
    if verdicts & {"refuted", "control failed"}:
        return ExitCode.FAILED
    if "unknown" in verdicts:
        return ExitCode.INCONCLUSIVE
    return ExitCode.OK


def _summary(records: list[Any]) -> list[str]:
    """Plain sentences saying exactly what was proved, at which sizes, and what was not."""
    from ..prove import ALL_SIZES_TRUSTS
    from ..spec import SPEC_IDS

    order = list(SPEC_IDS)

    by_id: dict[str, list[Any]] = {}
    for r in records:
        for i in r.spec_ids:
            by_id.setdefault(i, []).append(r)
    def all_sizes_proved(rs: list[Any]) -> bool:
        scoped = [r for r in rs if r.scope == "all sizes"]
        return bool(scoped) and all(r.passed for r in scoped)

    all_sizes = sorted((i for i, rs in by_id.items() if all_sizes_proved(rs)), key=order.index)
    lines = [f"all sizes: {', '.join(all_sizes) or 'none'} (rows scoped 'all': the shipped code traced on symbolic "
             f"sizes; trusts {ALL_SIZES_TRUSTS})."]
    swept = [r for r in records if r.scope == "swept" and r.passed]
    if swept:
        lines.append("Rows scoped '≤ k' hold at every shape with each dimension up to k, nothing beyond.")
    for verdict in ("refuted", "control failed", "unknown"):
        bad = [r for r in records if r.verdict == verdict]
        for r in bad:
            lines.append(f"{verdict.upper()}: {r.name}: {r.detail or r.negative_control}")
    return lines


def register(app: typer.Typer) -> None:
    @app.command()
    def prove(
        max_size: Optional[int] = typer.Option(
            None, "--max-size", help="Sweep every dimension over 1..K (default: each proof's own size)."
        ),
        only: Optional[List[str]] = typer.Option(None, "--only", help="Run only proofs covering these SPEC IDs (repeatable)."),
        quick: bool = typer.Option(False, "--quick", help="Sizes <= 2 and each proof's quick caps (what check runs)."),
        json_file: Optional[Path] = typer.Option(None, "--json", help="Write the proof records as JSON ('-': stdout)."),
    ) -> None:
        """Prove the identities behind the closed-form gradient on the shipped code.

        Exit 0 all proved, 1 a statement refuted or a negative control not refuted, 3 a solver unknown or timeout
        (or no all-sizes proof), 2 bad options.
        """
        from rich import box
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        from rich.table import Table

        from ..prove import catalogue, run_proofs, select
        from ..report import write_json

        check_outputs(json=json_file)
        console = human_console(json_file)
        try:
            total = len(select(catalogue(), only))
            if max_size is not None and (isinstance(max_size, bool) or max_size < 1):
                raise ValueError(f"max_size must be an integer >= 1; got {max_size!r}")
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as bar:
            task = bar.add_task("proving", total=total)

            def started(proof: Any) -> None:
                bar.update(task, description=f"proving {proof.name}")
                bar.advance(task, 0)

            records = []
            for rec in run_proofs(max_size=max_size, only=only, on_start=started, quick=quick):
                records.append(rec)
                bar.advance(task)

        longest = max(len(w) for r in records for w in r.name.split())
        table = Table(title="verified-ta prove (z3)", box=box.SIMPLE_HEAD, pad_edge=False)
        table.add_column("ID", overflow="fold", max_width=12)
        table.add_column("proof", min_width=longest, ratio=1)
        table.add_column("result", no_wrap=True)
        table.add_column("scope", no_wrap=True)
        table.add_column("time", no_wrap=True, justify="right")
        for r in records:
            scope = "all" if r.scope == "all sizes" else f"≤ {r.largest_size}"
            table.add_row(", ".join(r.spec_ids), r.name, f"[{_VERDICT_STYLE[r.verdict]}]{r.verdict}[/]", scope,
                          f"{r.seconds:.1f}s")
        console.print(table)
        for line in _summary(records):
            console.print(textwrap.fill(line, width=min(console.width, 100), break_long_words=False,
                                        break_on_hyphens=False), markup=False)
        code = _exit_code(records)
        if json_file:
            payload = {
                "records": [{**_record(r), "verdict": r.verdict} for r in records],
                "passed": code == ExitCode.OK,
                "exit_code": int(code),
            }
            write_json(json_file, payload, command="prove")
        if code != ExitCode.OK:
            raise typer.Exit(int(code))


def _record(r: Any) -> dict:
    from dataclasses import asdict

    return asdict(r)
