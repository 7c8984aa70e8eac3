"""The ``verified-ta`` command line: one module per command in this package, each with ``register(app)``.

Heavy dependencies (z3, flint, triton) are imported inside the commands, so ``--help`` is fast and
``import verified_ta`` works where they are missing.
"""

from __future__ import annotations

import importlib
import pkgutil

import typer

app = typer.Typer(
    name="verified-ta",
    help="Tensor attention you can trust: check, prove, certify, conform, coverage.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def main() -> None:
    """Tensor attention you can trust: check, prove, certify, conform, coverage."""


for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_mod}").register(app)
