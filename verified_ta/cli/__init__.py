"""The ``verified-ta`` command line: one module per command in this package, each with ``register(app)``.

Heavy dependencies (z3, flint, triton) are imported inside the commands, so ``--help`` is fast and
``import verified_ta`` works where they are missing.
"""

from __future__ import annotations

import importlib
import pkgutil
from enum import IntEnum

import typer

from .. import __version__


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


def _version(value: bool) -> None:
    if value:
        typer.echo(f"verified-ta {__version__}")
        raise typer.Exit(ExitCode.OK)


app = typer.Typer(
    name="verified-ta",
    help="Tensor attention you can trust: check, prove, certify, conform, coverage.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Tensor attention you can trust: check, prove, certify, conform, coverage."""


for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_mod}").register(app)
