"""mkdocs hooks (``hooks:`` in mkdocs.yml): the parts of the site that are generated from the code at build time.

A page asks for generated content with a placeholder comment on a line of its own (invisible where the file is
read raw, e.g. on a forge):

- ``<!-- generated:readme-setup -->``: the README's two set-up lines (between its setup markers);
- ``<!-- generated:exit-codes -->``: the exit-code table of ``verified_ta.cli.ExitCode``;
- ``<!-- generated:cli-reference -->``: every command of the ``verified-ta`` typer app with its options, exit
  codes and JSON schema (a command module declares ``EXIT_CODES`` and ``JSON_SCHEMA``; see docs/cli.md);
- ``<!-- generated:coverage -->``: the SPEC coverage table, each ID linked to its entry in spec.md;
- ``<!-- generated:modules -->``: a mkdocstrings section for every module of the package;
- ``<!-- generated:results -->``: benchmarks/RESULTS.md, then every benchmarks/*.png not shown there.

So new commands, modules, docstrings, SPEC entries and benchmark figures reach the site without editing it.
"""

from __future__ import annotations

import json
import pkgutil
import re
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
PLACEHOLDER = re.compile(r"^<!-- generated:([a-z-]+) -->$", re.M)


def readme_setup() -> str:
    """The README's set-up block (the two lines CI runs), verbatim."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text.split("<!-- setup:begin -->", 1)[1].split("<!-- setup:end -->", 1)[0].strip()


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _option_rows(command: Any, ctx: Any) -> list[str]:
    """The options and arguments as ``--help`` shows them (click's help records: names, metavar, help, default)."""
    rows = ["| option | description |", "|---|---|"]
    for p in command.get_params(ctx):
        record = p.get_help_record(ctx)
        if record is not None:
            rows.append(f"| `{record[0]}` | {_cell(record[1])} |")
    return rows


def _exit_code_rows(module: Any) -> list[str]:
    from verified_ta.cli import ExitCode

    declared = getattr(module, "EXIT_CODES", None)
    rows = ["| exit code | name | meaning for this command |", "|---|---|---|"]
    if declared is None:
        rows = ["This command does not declare its exit codes (`EXIT_CODES`) yet; it follows the table of "
                "[`ExitCode`](#exit-codes).", ""]
        return rows
    for code, meaning in sorted(declared.items()):
        rows.append(f"| {int(code)} | `{ExitCode(code).name}` | {_cell(meaning)} |")
    return rows


def _schema_block(module: Any) -> list[str]:
    from verified_ta import report

    schema = getattr(module, "JSON_SCHEMA", None)
    if schema is None:
        header = {"schema_version": report.JSON_SCHEMA_VERSION, "tool": "verified-ta", "version": "…",
                  "command": "…"}
        return ["This command does not declare the JSON schema of its `--json` output (`JSON_SCHEMA`) yet. "
                "Every document written through `verified_ta.report.write_json` starts with this header:", "",
                "```json", json.dumps(header, indent=2, ensure_ascii=False), "```"]
    return ["```json", json.dumps(schema, indent=2, ensure_ascii=False), "```"]


def exit_codes() -> str:
    """The table of ``verified_ta.cli.ExitCode`` (value, name) and its docstring, which says what each one means.

    (Not a mkdocstrings block: the "All other modules" page documents ``verified_ta.cli``, and an object rendered
    twice would have two addresses.)"""
    import inspect

    from verified_ta.cli import ExitCode

    rows = ["| exit code | name |", "|---|---|", *(f"| {int(c)} | `{c.name}` |" for c in ExitCode)]
    return "\n".join([*rows, "", inspect.cleandoc(ExitCode.__doc__ or "")])


def cli_reference() -> str:
    """Markdown for every command registered on ``verified_ta.cli.app``, sub-groups' commands included
    (``verified-ta demo match3``), in registration order."""
    import importlib

    import typer

    from verified_ta.cli import app

    def commands(typer_app: typer.Typer, click_group, prefix: str):
        for info in typer_app.registered_commands:
            name = info.name or info.callback.__name__.replace("_", "-")
            yield f"{prefix} {name}", click_group.commands[name], info.callback.__module__
        for info in typer_app.registered_groups:
            yield from commands(info.typer_instance, click_group.commands[info.name], f"{prefix} {info.name}")

    lines: list[str] = []
    for name, command, module_name in commands(app, typer.main.get_command(app), "verified-ta"):
        module = importlib.import_module(module_name)
        ctx = typer.Context(command, info_name=name)
        usage = " ".join(command.collect_usage_pieces(ctx))
        lines += [f"## `{name}`", "", (command.help or "").strip(), "",
                  f"**Usage:** `{name} {usage}`", "", *_option_rows(command, ctx), "",
                  "**Exit codes**", "", *_exit_code_rows(module), "",
                  "**JSON output** (`--json FILE`; `-` writes to stdout)", "", *_schema_block(module), ""]
    return "\n".join(lines)


def coverage_table() -> str:
    """The README's coverage table, every ID linked to its entry on the SPEC page."""
    from verified_ta.coverage import markdown_table, scan

    return markdown_table(scan(ROOT), spec_link="spec.md")


def module_reference() -> str:
    """A mkdocstrings block for every public module of ``verified_ta`` that no other API page (docs/api/*.md) shows
    (rendering an object twice would give it two addresses); private modules (``_name``) and the package root
    (its lazy exports are documented where they are defined) are left out."""
    import verified_ta

    shown = {m for page in (ROOT / "docs" / "api").glob("*.md")
             for m in re.findall(r"^::: (\S+)", page.read_text(encoding="utf-8"), re.M)}
    names = sorted(m.name for m in pkgutil.walk_packages(verified_ta.__path__, "verified_ta.")
                   if not any(part.startswith("_") for part in m.name.split(".")) and m.name not in shown)
    return "\n\n".join(f"::: {name}\n    options:\n      heading_level: 2" for name in names)


def _figures() -> list[Path]:
    return sorted(BENCHMARKS.glob("*.png"))


def results() -> str:
    """benchmarks/RESULTS.md as it is, then each benchmark figure it does not already show."""
    text = (BENCHMARKS / "RESULTS.md").read_text(encoding="utf-8").strip()
    shown = [f for f in _figures() if f"]({f.name})" not in text]
    gallery = [f"### `benchmarks/{f.name}`\n\n![{f.stem}]({f.name})" for f in shown]
    return "\n\n".join([text, *(["## Figures", *gallery] if gallery else [])])


GENERATORS: dict[str, Callable[[], str]] = {
    "readme-setup": readme_setup,
    "exit-codes": exit_codes,
    "cli-reference": cli_reference,
    "coverage": coverage_table,
    "modules": module_reference,
    "results": results,
}


def expand(markdown: str) -> str:
    """Replace every placeholder in ``markdown``; an unknown placeholder is an error (strict builds fail)."""
    def replace(match: re.Match) -> str:
        key = match.group(1)
        if key not in GENERATORS:
            raise ValueError(f"unknown placeholder <!-- generated:{key} -->; known: {sorted(GENERATORS)}")
        return GENERATORS[key]()

    return PLACEHOLDER.sub(replace, markdown)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    return expand(markdown)


def on_files(files: Any, config: Any) -> Any:
    """Publish benchmarks/*.png next to results.md, so RESULTS.md's own relative image links work unchanged."""
    from mkdocs.structure.files import File

    for fig in _figures():
        files.append(File.generated(config, fig.name, abs_src_path=str(fig)))
    return files
