"""Planted bugs in the shipped gradient code (issue #10), made by editing its source text, so each mutant is the
shipped function with one change (the edit must match exactly once, or the helper raises).

Used by tests/test_prove_cli.py (``verified-ta prove`` must exit 1) and tests/test_gradient_mutations.py (the
independent oracles must reject the result).
"""

from __future__ import annotations

import inspect
import textwrap
from typing import Callable

import pytest

from verified_ta import gradient

__all__ = ["MUTANTS", "mutate", "plant"]

#: name → (function in verified_ta.gradient, source text, its replacement)
MUTANTS: dict[str, tuple[str, str, str]] = {
    "chunked gradient, wrong sign in p": (
        "closed_form_gradient", "p = p1 - p1.sum((1, 2))[:, None, None] * f",
        "p = p1 + p1.sum((1, 2))[:, None, None] * f",
    ),
    "c = f h + E": ("chain_terms", "c = f @ h - E", "c = f @ h + E"),
    "softmax_rows subtracts the column max": (
        "softmax_rows", "m = z.max(axis=-1, keepdims=True)", "m = z.max(axis=0, keepdims=True)",
    ),
    "objective scores with kron(A3, A2)": ("objective_terms", "kron(A2, A3).T", "kron(A3, A2).T"),
}


def mutate(name: str, old: str, new: str) -> Callable:
    """``verified_ta.gradient.<name>`` with ``old`` replaced by ``new`` in its source (globals: the module's own)."""
    src = textwrap.dedent(inspect.getsource(getattr(gradient, name)))
    if src.count(old) != 1:
        raise AssertionError(f"{name}: {old!r} occurs {src.count(old)} times in the shipped source")
    scope: dict = {}
    exec(compile(src.replace(old, new), f"<mutant of gradient.{name}>", "exec"), vars(gradient), scope)
    return scope[name]


def plant(monkeypatch: pytest.MonkeyPatch, mutant: str) -> None:
    """Install the named mutant in verified_ta.gradient for the rest of the test."""
    name, old, new = MUTANTS[mutant]
    monkeypatch.setattr(gradient, name, mutate(name, old, new))
