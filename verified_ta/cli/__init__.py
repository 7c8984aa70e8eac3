"""The ``verified-ta`` command line: one module per command in this package, each with ``register(app)``.

Conventions every command follows (the README documents them): the :class:`ExitCode` table; ``--json FILE`` (``-``
is stdout, and the human output then goes to stderr) with strict JSON (:func:`verified_ta.report.write_json`);
output paths checked before any work (:func:`check_outputs`); ``-q`` (only what failed, and the summary) and ``-v``
(the full table); lines never wrapped by the tool. Heavy dependencies (torch, z3, flint, triton) are imported inside
the commands, so ``verified-ta --help`` starts in well under a second and ``import verified_ta`` works where they are
missing. An exception escaping a command is verified-ta's own bug: exit 5 (INTERNAL), never 1 (FAILED).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import traceback
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from typer.core import TyperGroup

from .. import __version__

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["ExitCode", "app", "QUIET", "VERBOSE", "check_outputs", "human_console"]


class ExitCode(IntEnum):
    """One exit-code table for every command (the README documents it; 2 is click's usage-error code).

    0 OK: every check passed / certified / proved.  1 FAILED: a check failed, a proof was refuted, a certificate
    was rejected or a target was missed.  2 USAGE: bad input or options.  3 INCONCLUSIVE: the tool could not
    decide (solver unknown or timeout, no certified answer within the limits).  4 NOT_APPLICABLE: valid input
    for which the method does not pay or does not fit (e.g. the fast path is slower than exact, or its rank
    exceeds the memory limit).  5 INTERNAL: verified-ta itself crashed (a bug: please report it).
    """

    OK = 0
    FAILED = 1
    USAGE = 2
    INCONCLUSIVE = 3
    NOT_APPLICABLE = 4
    INTERNAL = 5


#: ``-q``: print only what did not pass, and the summary line
QUIET: Any = typer.Option(False, "-q", "--quiet", help="Print only what did not pass, and the summary.")
#: ``-v``: the full table (every row, timings)
VERBOSE: Any = typer.Option(False, "-v", "--verbose", help="Print the full table (every row, with timings).")


def check_outputs(**paths: Optional[Path]) -> None:
    """Usage error (exit 2) before any work if an output path (option name -> path) cannot be written."""
    from ..report import check_output_path

    for option, path in paths.items():
        try:
            check_output_path(path, f"--{option.replace('_', '-')}")
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None


def human_console(json_path: Optional[Path] = None) -> "Console":
    """The console for people: stdout, or stderr when ``--json -`` claims stdout; lines are never wrapped."""
    from rich.console import Console

    return Console(stderr=json_path is not None and str(json_path) == "-", soft_wrap=True, highlight=False)


#: exceptions that are the command line's own control flow (typer may vendor click, so take them from typer)
_CONTROL = (typer.Exit, typer.Abort, *(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"))


class _Group(TyperGroup):
    """Maps an exception escaping a command (a verified-ta bug) to exit 5 with its traceback on stderr."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except _CONTROL:
            raise
        except Exception:
            traceback.print_exc(file=sys.stderr)
            typer.echo("verified-ta: internal error (a bug in verified-ta: please report it with the traceback "
                       "above)", err=True)
            raise typer.Exit(ExitCode.INTERNAL) from None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"verified-ta {__version__}")
        raise typer.Exit(ExitCode.OK)


app = typer.Typer(
    name="verified-ta",
    help="Tensor attention you can trust: check, prove, certify, conform, coverage.\n\n"
         "Exit codes: 0 OK, 1 FAILED, 2 USAGE, 3 INCONCLUSIVE, 4 NOT_APPLICABLE, 5 INTERNAL.",
    no_args_is_help=True,
    add_completion=False,
    cls=_Group,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help and errors: fast to start, never boxed or wrapped
)


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Tensor attention you can trust: check, prove, certify, conform, coverage.

    Exit codes: 0 OK, 1 FAILED, 2 USAGE, 3 INCONCLUSIVE, 4 NOT_APPLICABLE, 5 INTERNAL.
    """


for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_mod}").register(app)
