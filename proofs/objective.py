"""The shipped objective and gradient against SPEC §3 written out independently (L1, T7, T8, P18).

The *shipped* side runs ``verified_ta.gradient`` unchanged on :class:`proofs.symarray.SymArray` inputs:
``objective_terms`` and ``loss`` (materialised), and ``closed_form_gradient`` with ``chunk_size=None`` and
with chunks. The *SPEC* side is built here from the §3 formulas by index loops, sharing no code with
``gradient.py``: S[j, a·n+b] = s·Σ_{l,m,o} A1[j,l] X[l, m·d+o] A2[a,m] A3[b,o], h[a·n+b, o] =
Σ_{l,m} A4[a,l] A5[b,m] Y[l·d+m, o], f = softmax(S) (E uninterpreted), c = f h − E, Loss = ½Σc². Its
derivative in each coordinate x_i of X is taken by dual numbers through S, with df = S'∘f − ⟨S', f⟩f, and the
statement itself checks that this df solves the defining equation (α f)' = E(S)' of the softmax derivative
(α = ΣE(S) > 0 makes the solution unique), so no other proof is cited.

The shipped softmax (``softmax_rows``, with its row max and division) enters through a *cut*
(:func:`softmax_cut`): a separate query per row proves that the shipped output w satisfies
w_k·Σ_l E(z_l) = E(z_k) and Σ_k w_k = 1 (the max shift cancels by the L6 instances E(z − M)E(M) = E(z)); the
main query then uses the SPEC softmax of z. Rows that are equal polynomials share one SPEC softmax, so the
shipped scores must equal the SPEC scores as polynomials for the two sides to meet.
"""

from __future__ import annotations

import contextlib
from fractions import Fraction
from typing import Any, Iterator

import numpy as np
import z3

from verified_ta import gradient
from verified_ta.spec import spec

from .engine import Cut, Dual, Ops, Statement, SweptProof, parts
from .symarray import SymArray

__all__ = ["PROOFS", "softmax_cut", "spec_scores", "spec_values"]

V = dict[str, np.ndarray]
INPUTS = ("A1", "A2", "A3", "A4", "A5", "E", "X", "Y")


def _flat(*arrays: Any) -> np.ndarray:
    return np.concatenate([np.asarray(a, dtype=object).reshape(-1) for a in arrays])


def spec_scores(a1: np.ndarray, a2: np.ndarray, a3: np.ndarray, x: np.ndarray, s: Any) -> np.ndarray:
    """S = s·A1 X (A2⊗A3)^T entry by entry: S[j, a·n+b] = s·Σ_{l,m,o} A1[j,l] X[l, m·d+o] A2[a,m] A3[b,o]."""
    n, d = a1.shape
    out = np.empty((n, n * n), dtype=object)
    for j, a, b in np.ndindex(n, n, n):
        # X first: its entries may be duals, which z3 terms do not multiply from the left
        out[j, a * n + b] = sum(x[l, m * d + o] * a1[j, l] * a2[a, m] * a3[b, o]
                                for l in range(d) for m in range(d) for o in range(d)) * s
    return out


def spec_values(a4: np.ndarray, a5: np.ndarray, y: np.ndarray) -> np.ndarray:
    """h = (A4⊗A5) Y entry by entry: h[a·n+b, o] = Σ_{l,m} A4[a,l] A5[b,m] Y[l·d+m, o]."""
    n, d = a4.shape
    out = np.empty((n * n, y.shape[1]), dtype=object)
    for a, b, o in np.ndindex(n, n, y.shape[1]):
        out[a * n + b, o] = sum(a4[a, l] * a5[b, m] * y[l * d + m, o] for l in range(d) for m in range(d))
    return out


@contextlib.contextmanager
def softmax_cut(ops: Ops) -> Iterator[None]:
    """While active, ``gradient.softmax_rows`` on a SymArray is the SPEC softmax of its rows, justified by a cut that
    runs the shipped ``softmax_rows`` (whatever ``gradient.softmax_rows`` is now, planted bugs included).

    A replay reads the SPEC softmax from the model (the cut, proved, says the shipped function computes it)."""
    shipped = gradient.softmax_rows

    def cut(z: Any) -> Any:
        if not isinstance(z, SymArray):
            return shipped(z)
        rows = np.asarray(z).reshape(-1, z.shape[-1])
        if not ops.symbolic:
            return SymArray(ops.softmax(rows).reshape(z.shape), ops)
        sub = ops.sub()
        w = np.asarray(shipped(SymArray(np.asarray(z), sub))).reshape(rows.shape)
        u = np.array([[ops.exp(t) for t in row] for row in rows], dtype=object)
        claims = [w[j, k] * z3.Sum(list(u[j])) == u[j, k] for j, k in np.ndindex(*rows.shape)]
        claims += [z3.Sum(list(w[j])) == 1 for j in range(rows.shape[0])]
        ops.cuts.append(Cut("shipped softmax_rows = SPEC softmax", list(sub.facts), claims))
        return SymArray(ops.softmax(rows).reshape(z.shape), ops)

    gradient.softmax_rows = cut
    try:
        yield
    finally:
        gradient.softmax_rows = shipped


def _shipped(v: V, ops: Ops) -> list[SymArray]:
    return [SymArray(v[k], ops) for k in INPUTS]


@spec("L1")
def objective_terms_are_spec(v: V, ops: Ops, mutant: bool) -> Statement:
    """The shipped ``objective_terms`` gives the SPEC f, h, c, and ``loss`` the SPEC loss, for every scale s.

    Control: the SPEC scores built with A3, A2 exchanged (wrong index order).
    """
    a1, a2, a3, a4, a5, e, x, y = (v[k] for k in INPUTS)
    s = v["s"][0]
    with softmax_cut(ops):
        t = gradient.objective_terms(*_shipped(v, ops), scale=s)
        value = gradient.loss(*_shipped(v, ops), scale=s)
    f = ops.softmax(spec_scores(a1, a3, a2, x, s) if mutant else spec_scores(a1, a2, a3, x, s))
    h = spec_values(a4, a5, y)
    c = f @ h - e
    spec_loss = (c * c).sum() * ops.const(Fraction(1, 2))
    return Statement(_flat(t.f, t.h, t.c, [value]), _flat(f, h, c, [spec_loss]))


def gradient_is_spec_derivative(chunk_size: int | None) -> Any:
    """The L1 statement for ``closed_form_gradient(..., chunk_size=chunk_size)``."""

    @spec("L1")
    def build(v: V, ops: Ops, mutant: bool) -> Statement:
        """The shipped ``closed_form_gradient`` returns the SPEC loss and, in every coordinate x_i of X, its
        derivative d/dx_i ½‖f h − E‖² (dual numbers through the SPEC scores; df = S'∘f − ⟨S', f⟩f, checked
        against (α f)' = E(S)' in the same statement). Control: the SPEC loss without its ½."""
        a1, a2, a3, a4, a5, e, x, y = (v[k] for k in INPUTS)
        s = v["s"][0]
        n, d = a1.shape
        with softmax_cut(ops):
            value, grad = gradient.closed_form_gradient(*_shipped(v, ops), scale=s, chunk_size=chunk_size)
        scores = spec_scores(a1, a2, a3, x, s)
        f = ops.softmax(scores)
        h = spec_values(a4, a5, y)
        c = f @ h - e
        half = ops.const(1 if mutant else Fraction(1, 2))
        u = np.vectorize(ops.exp, otypes=[object])(scores)
        derivative, lhs_eq, rhs_eq = [], [], []
        for i in range(x.size):
            direction = np.zeros(x.shape, dtype=int).astype(object)
            direction[np.unravel_index(i, x.shape)] = 1
            ds = parts(spec_scores(a1, a2, a3, np.vectorize(Dual, otypes=[object])(x, direction), s))[1]
            df = f * ds - (f * ds).sum(axis=1)[:, None] * f
            derivative.append((c * (df @ h)).sum() * 2 * half)
            # df solves (α f)' = u' with u = E(S), u' = u∘S', α' = Σ u': here α f' + α' f = u', u = α f
            u_dot = np.vectorize(lambda t, de: ops.exp_dual(Dual(t, de)).e, otypes=[object])(scores, ds)
            lhs_eq.append(u.sum(axis=1)[:, None] * df + u_dot.sum(axis=1)[:, None] * f)
            rhs_eq.append(u_dot)
        spec_loss = (c * c).sum() * half
        return Statement(_flat(np.asarray(grad).reshape(-1), [value], *lhs_eq),
                         _flat(derivative, [spec_loss], *rhs_eq))

    return build


def _shapes(s: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    n, d = s["n"], s["d"]
    return {**{k: (n, d) for k in ("A1", "A2", "A3", "A4", "A5", "E")}, "X": (d, d * d), "Y": (d * d, d), "s": (1,)}


PROOFS: list[SweptProof] = [
    SweptProof(
        ("L1",), "objective_terms, loss = SPEC §3",
        "shipped f, h, c and loss = SPEC §3 built by index loops (softmax_rows cut to the SPEC softmax)", ("n", "d"),
        _shapes, objective_terms_are_spec, "SPEC scores with A3, A2 exchanged", dict(n=2, d=1), default_max=2,
        quick_caps={"d": 1},
    ),
    *[
        SweptProof(
            ("L1",), f"closed_form_gradient, chunk_size={chunk}: = dLoss/dX",
            f"shipped (Loss, G) with chunk_size={chunk} = (SPEC loss, its derivative in every x_i)", ("n", "d"),
            _shapes, gradient_is_spec_derivative(chunk), "SPEC loss without its ½", dict(n=2, d=1), default_max=2,
            quick_caps={"d": 1},
        )
        for chunk in (None, 1)
    ],
]
