"""Planted bugs for issue #10, shared by the tests that must catch them.

Gradient mutants are made by editing the shipped source text, so each is the shipped function with one change (the
edit must match exactly once, or the helper raises): tests/test_prove_cli.py (``verified-ta prove`` must exit 1)
and tests/test_gradient_mutations.py (the independent oracles must reject the result). Product mutants replace
``khatri_rao`` everywhere it was imported: tests/test_products.py, proofs/test_proofs.py, tests/test_prove_cli.py.
"""

from __future__ import annotations

import inspect
import sys
import textwrap
from typing import Any, Callable

import pytest

from verified_ta import gradient, products

__all__ = ["MUTANTS", "mutate", "plant", "transposed_khatri_rao", "khatri_rao_wrong_above_64_rows", "replace_product"]

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


_KHATRI_RAO = products.khatri_rao


def transposed_khatri_rao(c: Any, d: Any) -> Any:
    """Planted bug: rows in (i2, i1) order instead of the gauge's i1·n2 + i2."""
    n1, n2, k = c.shape[-2], d.shape[-2], c.shape[-1]
    return (c[..., None, :, :] * d[..., :, None, :]).reshape(*c.shape[:-2], n1 * n2, k)


def khatri_rao_wrong_above_64_rows(c: Any, d: Any) -> Any:
    """Planted bug: the transposed order only once n1·n2 > 64 (no swept size and no small test reaches it)."""
    if c.shape[-2] * d.shape[-2] > 64:
        return transposed_khatri_rao(c, d)
    return _KHATRI_RAO(c, d)


def replace_product(monkeypatch: pytest.MonkeyPatch, name: str, fn: Callable) -> None:
    """Replace ``verified_ta.products.<name>`` in that module and in every verified_ta/proofs module importing it."""
    import proofs.index_maps  # noqa: F401 - every proof module imported before planting
    import proofs.products  # noqa: F401

    original = getattr(products, name)
    for mod in list(sys.modules.values()):
        ours = mod is not None and mod.__name__.startswith(("verified_ta", "proofs"))
        if ours and getattr(mod, name, None) is original:
            monkeypatch.setattr(mod, name, fn)
