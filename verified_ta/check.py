"""``verified-ta check``: random instances of the exact reference and the closed-form gradient against the oracles.

Every row compares a float64 result with a 50-digit mpmath oracle under a rigorous floating-point bound
(verified_ta.fp_bounds), or two high-precision computations under their working precision, or checks
that an Arb enclosure holds the mpmath value. Tolerances are never free parameters.
"""

from __future__ import annotations

from typing import Callable, Iterator

import mpmath
import numpy as np
import torch

from . import gradient as gr
from .fp_bounds import attention_rounding_bounds, objective_gradient_rounding_bound
from .oracles import (arb_attention, mp_attention, mp_attention_vjp, mp_finite_difference_gradient, mp_gradient,
                      to_mp)
from .reference import tensor_attention_reference
from .report import CheckRow
from .testing.defaults import CHECK_DEFAULTS
from .validation import check_positive_int

__all__ = ["DEFAULTS", "oracle_checks"]

DPS = 50
FD_DIGITS = 30
DEFAULTS = CHECK_DEFAULTS


def _worst(name: str, spec_id: str, err: np.ndarray, bound: np.ndarray, detail: str) -> CheckRow:
    """Row for an entrywise check err <= bound, reported at the entry of the worst ratio."""
    err, bound = np.asarray(err, dtype=np.float64), np.asarray(bound, dtype=np.float64)
    k = int(np.argmax(err / bound))
    row = CheckRow.compare(spec_id, name, float(err.flat[k]), float(bound.flat[k]), detail)
    row.passed = bool((err <= bound).all())
    return row


def _forward_rows(x, causal: bool, detail: str) -> Iterator[CheckRow]:
    out, lse = tensor_attention_reference(*x, causal=causal, return_lse=True)
    mo, ml = mp_attention(*x, causal=causal, dps=DPS)
    b = attention_rounding_bounds(*x, causal=causal)
    tag = "causal " if causal else ""
    yield _worst(f"{tag}forward vs mpmath", "P15", np.abs(out.numpy() - mo.astype(float)), b["out"].numpy(), detail)
    yield _worst(f"{tag}LSE vs mpmath", "P15", np.abs(lse.numpy() - ml.astype(float)), b["lse"].numpy(), detail)
    eo, el = arb_attention(*x, causal=causal)
    with mpmath.workdps(DPS):
        gaps = [abs(m - mid) - rad for m, mid, rad in zip(mo.ravel(), eo.mid.ravel(), eo.rad.ravel())]
        gaps += [abs(m - mid) - rad for m, mid, rad in zip(ml.ravel(), el.mid.ravel(), el.rad.ravel())]
    worst = max(gaps)
    yield CheckRow(
        "P15", f"{tag}Arb enclosure holds mpmath", float(max(worst, 0)), 0.0, bool(worst <= 0),
        f"{detail}; max radius {float(max(eo.rad.max(), el.rad.max())):.1e}",
    )


def _backward_row(x, grad_out, causal: bool, detail: str) -> CheckRow:
    xs = [t.clone().requires_grad_() for t in x]
    out = tensor_attention_reference(*xs, causal=causal)
    grads = torch.autograd.grad(out, xs, grad_out)
    exact = mp_attention_vjp(*x, grad_out, causal=causal, dps=DPS)
    b = attention_rounding_bounds(*x, grad_out, causal=causal)
    names = ("dq", "dk1", "dk2", "dv1", "dv2")
    err = np.concatenate([np.abs(g.numpy() - e.astype(float)).ravel() for g, e in zip(grads, exact)])
    bound = np.concatenate([b[k].numpy().ravel() for k in names])
    tag = "causal " if causal else ""
    return _worst(f"{tag}L4 backward vs mpmath.diff", "L4", err, bound, detail)


def shipped_mp_gradient(inputs, dps: int = DPS) -> np.ndarray:
    """The shipped materialised L1 chain (objective_terms, gradient_from_p) run on ``dps``-digit mpmath numbers."""
    mp = [to_mp(x) for x in inputs]
    with mpmath.workdps(dps):
        s = mpmath.mpf(1) / mp[0].shape[1]
        return gr.gradient_from_p(mp[0], mp[1], mp[2], gr.objective_terms(*mp, scale=s).p, s)


def _gradient_rows(inputs, detail: str) -> Iterator[CheckRow]:
    exact = mp_gradient(*inputs, dps=DPS)  # independent index loops written from SPEC §3
    bound = objective_gradient_rounding_bound(*inputs).numpy()
    for label, chunk in (("materialised", None), ("chunked", 1)):
        _, G = gr.closed_form_gradient(*inputs, chunk_size=chunk)
        yield _worst(f"L1 gradient ({label}) vs mpmath", "L1", np.abs(G.numpy() - exact.astype(float)), bound, detail)
    shipped = shipped_mp_gradient(inputs)  # the shipped chain at 50 digits against mpmath.diff of the independent loss
    fd = mp_finite_difference_gradient(*inputs, dps=DPS)
    with mpmath.workdps(DPS):
        scale = 1 + max(abs(g) for g in shipped.ravel())
        gap = max(abs(a - b) for a, b in zip(shipped.ravel(), fd.ravel())) / scale
    yield CheckRow.compare("P24", "L1 closed form vs mpmath.diff (relative)", float(gap), 10.0**-FD_DIGITS, detail)


def oracle_checks(
    n: int = DEFAULTS["n"], d: int = DEFAULTS["d"], seed: int = DEFAULTS["seed"], trials: int = DEFAULTS["trials"],
    advance: Callable[[], None] = lambda: None,
) -> list[CheckRow]:
    """Random instances (entries uniform in [-2, 2]) of forward, LSE, L4 and L1 against the oracles."""
    check_positive_int("n", n)
    check_positive_int("d", d)
    check_positive_int("trials", trials)
    if n > 8 or d > 4:
        raise ValueError(f"n must be in [1, 8] and d in [1, 4] (the mpmath oracles are O(n³d)); got n={n}, d={d}")
    gen = torch.Generator().manual_seed(seed)
    rand = lambda *shape: (torch.rand(*shape, generator=gen, dtype=torch.float64) * 4 - 2)  # noqa: E731
    rows: list[CheckRow] = []
    for trial in range(trials):
        detail = f"n={n} d={d} seed={seed} trial={trial}"
        x = tuple(rand(n, d) for _ in range(5))
        for causal in (False, True):
            rows += _forward_rows(x, causal, detail)
            rows.append(_backward_row(x, rand(n, d), causal, detail))
        inputs = tuple(rand(n, d) for _ in range(6)) + (rand(d, d * d), rand(d * d, d))
        rows += _gradient_rows(inputs, detail)
        advance()
    return rows
