"""The paper's training objective and its closed-form gradient (SPEC §3: L1, L2, L3, coordinate form).

The algebraic chain (:func:`chain_terms`, :func:`gradient_from_p`) is written once with ``@``, ``*``,
``.T`` and row sums, so the same code runs on torch tensors, float numpy arrays, and numpy ``object``
arrays of mpmath or z3 numbers (the oracles and proofs use it that way).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .products import khatri_rao, kron, unvec
from .validation import check_objective_inputs, check_positive_int

__all__ = [
    "ChainTerms",
    "softmax_rows",
    "chain_terms",
    "gradient_from_p",
    "objective_terms",
    "loss",
    "closed_form_gradient",
    "coordinate_gradient",
    "factor_gradients",
    "value_gradient",
    "value_factor_gradients",
    "compose_X",
    "compose_Y",
]


@dataclass
class ChainTerms:
    """The named objects of SPEC §3 (materialised; n×n² objects exist here by design)."""

    f: Any
    h: Any
    c: Any
    q: Any
    p1: Any
    r: Any
    p2: Any
    p: Any


def _rowsum(x: Any) -> Any:
    return x.sum(axis=1)


def softmax_rows(z: Any) -> Any:
    """Softmax along the last axis, u / Σu with u = exp(z − m) and m the row max (any per-row shift cancels: L6).

    torch tensors use ``torch.softmax``; numpy arrays (float, or object arrays of mpmath numbers) take one path,
    the one ``verified-ta prove`` runs symbolically.
    """
    if isinstance(z, torch.Tensor):
        return torch.softmax(z, dim=-1)
    m = z.max(axis=-1, keepdims=True)
    u = _exp(z - m)
    return u / u.sum(axis=-1, keepdims=True)


def _exp(x: Any) -> Any:
    """exp entrywise: numpy's ufunc (floats, and arrays that override ufuncs, NEP 13); mpmath's for object arrays."""
    if x.dtype == object and type(x) is np.ndarray:
        import mpmath

        return np.vectorize(mpmath.exp, otypes=[object])(x)
    return np.exp(x)


def chain_terms(f: Any, h: Any, E: Any) -> ChainTerms:
    """c = f h − E, q = c h^T, p1 = f∘q, r = p1 1, p2 = diag(r) f, p = p1 − p2 (SPEC §3 table)."""
    c = f @ h - E
    q = c @ h.T
    p1 = f * q
    r = _rowsum(p1)
    p2 = r[:, None] * f  # row scaling: diag(r) f
    return ChainTerms(f=f, h=h, c=c, q=q, p1=p1, r=r, p2=p2, p=p1 - p2)


def gradient_from_p(A1: Any, A2: Any, A3: Any, p: Any, scale: Any) -> Any:
    """L1: dLoss/dX = s · A1^T p (A2 ⊗ A3), a d × d² matrix."""
    return (A1.T @ p @ kron(A2, A3)) * scale


def _scale(scale: float | None, d: int) -> float:
    return 1.0 / d if scale is None else scale


def objective_terms(A1, A2, A3, A4, A5, E, X, Y, scale: float | None = None) -> ChainTerms:
    """Materialised chain for Loss(X) = ½‖D⁻¹exp(s·A1 X (A2⊗A3)^T)(A4⊗A5)Y − E‖² (small n only)."""
    check_objective_inputs(A1, A2, A3, A4, A5, E, X, Y)
    s = _scale(scale, A1.shape[1])
    f = softmax_rows((A1 @ X @ kron(A2, A3).T) * s)
    h = kron(A4, A5) @ Y
    return chain_terms(f, h, E)


def loss(A1, A2, A3, A4, A5, E, X, Y, scale: float | None = None) -> Any:
    """The training objective of SPEC §3 (materialised)."""
    c = objective_terms(A1, A2, A3, A4, A5, E, X, Y, scale).c
    return (c * c).sum() * 0.5


def closed_form_gradient(
    A1: torch.Tensor,
    A2: torch.Tensor,
    A3: torch.Tensor,
    A4: torch.Tensor,
    A5: torch.Tensor,
    E: torch.Tensor,
    X: torch.Tensor,
    Y: torch.Tensor,
    scale: float | None = None,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Loss, dLoss/dX)`` by the L1 chain.

    ``chunk_size=None`` materialises the n×n² objects (SPEC §3 literally); an integer processes that
    many query rows at a time with O(chunk·n² + n²·d) memory, never forming A2⊗A3.
    """
    n, d = check_objective_inputs(A1, A2, A3, A4, A5, E, X, Y)
    s = _scale(scale, d)
    if chunk_size is None:
        t = objective_terms(A1, A2, A3, A4, A5, E, X, Y, s)
        return 0.5 * (t.c * t.c).sum(), gradient_from_p(A1, A2, A3, t.p, s)
    check_positive_int("chunk_size", chunk_size)
    ax = (A1 @ X).reshape(n, d, d)
    hv = (kron(A4, A5) @ Y).reshape(n, n, -1)
    G = torch.zeros_like(X)
    total = A1.new_zeros(())
    for start in range(0, n, chunk_size):
        sl = slice(start, min(n, start + chunk_size))
        z = torch.einsum("jlm,al,bm->jab", ax[sl], A2, A3) * s
        f = softmax_rows(z.reshape(z.shape[0], -1)).reshape(z.shape)
        c = torch.einsum("jab,abo->jo", f, hv) - E[sl]
        p1 = f * torch.einsum("jo,abo->jab", c, hv)
        p = p1 - p1.sum((1, 2))[:, None, None] * f
        T = torch.einsum("jab,al,bm->jlm", p, A2, A3).reshape(p.shape[0], d * d)
        G = G + A1[sl].T @ T
        total = total + 0.5 * (c * c).sum()
    return total, G * s


def coordinate_gradient(A1, A2, A3, A4, A5, E, X, Y, scale: float | None = None) -> Any:
    """The coordinate form behind L1 (SPEC §3), with 𝔸 = A1⊗A2⊗A3 formed explicitly (tiny sizes).

    dLoss/dx_i = s · Σ_{j0,i0} c[j0,i0] · 𝔸_{j0,i}^T (diag(f_j0) − f_j0 f_j0^T) h_{i0}; returns unvec to d×d².
    """
    n, d = A1.shape
    s = _scale(scale, d)
    t = objective_terms(A1, A2, A3, A4, A5, E, X, Y, s)
    big = kron(kron(A1, A2), A3)  # n³ × d³, rows (j0, a, b)
    grad = 0
    for j0 in range(n):
        fj = t.f[j0]
        jac = _diag(fj) - fj[:, None] * fj[None, :]  # softmax Jacobian (T15)
        grad = grad + big[j0 * n * n : (j0 + 1) * n * n].T @ (jac @ (t.h @ t.c[j0]))
    return unvec(grad * s, d, d * d)


def _diag(v: Any) -> Any:
    return torch.diag(v) if isinstance(v, torch.Tensor) else np.diag(v)


def factor_gradients(G: Any, X1: Any, X2: Any, X3: Any) -> tuple[Any, Any, Any]:
    """L2: gradients in X1, X2, X3 for X = X1 (X2 ⊘ X3)^T, from G = dLoss/dX (d × d²)."""
    d = X1.shape[0]
    g3 = G.reshape(d, d, d)  # 𝒢[a,b,c] = G[a, b*d+c]
    dx1 = G @ khatri_rao(X2, X3)
    dx2 = _einsum("abc,al,cl->bl", g3, X1, X3)
    dx3 = _einsum("abc,al,bl->cl", g3, X1, X2)
    return dx1, dx2, dx3


def value_gradient(A1, A2, A3, A4, A5, E, X, Y, scale: float | None = None) -> Any:
    """L3: dLoss/dY = (A4 ⊗ A5)^T f^T c (d² × d)."""
    t = objective_terms(A1, A2, A3, A4, A5, E, X, Y, scale)
    return kron(A4, A5).T @ (t.f.T @ t.c)


def value_factor_gradients(dY: Any, Y1: Any, Y2: Any) -> tuple[Any, Any]:
    """L3 for Y = Y1 ⊘ Y2: dY1[b,l] = Σ_c dY[b*d+c, l] Y2[c,l]; dY2[c,l] = Σ_b dY[b*d+c, l] Y1[b,l]."""
    d = Y1.shape[0]
    dy = dY.reshape(d, d, -1)
    return _einsum("bcl,cl->bl", dy, Y2), _einsum("bcl,bl->cl", dy, Y1)


def _einsum(eq: str, *ops: Any) -> Any:
    if isinstance(ops[0], torch.Tensor):
        return torch.einsum(eq, *ops)
    return np.einsum(eq, *ops)


def compose_X(X1: Any, X2: Any, X3: Any) -> Any:
    """X = X1 (X2 ⊘ X3)^T ∈ R^{d×d²} (SPEC §3)."""
    return X1 @ khatri_rao(X2, X3).T


def compose_Y(Y1: Any, Y2: Any) -> Any:
    """Y = Y1 ⊘ Y2 ∈ R^{d²×d} (SPEC §3)."""
    return khatri_rao(Y1, Y2)

