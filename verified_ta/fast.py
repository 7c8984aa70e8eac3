"""Fast tensor attention and its training gradient through polynomial features (SPEC A1, A2, L8).

Both paths hold O(n·r + r·d) numbers (r = C(g+d, d)) and never form an n × n² object (P37):
the normaliser uses T4, the numerator T3, the gradient T6/T12/T11. Coefficients are the shifted a_t of
z ↦ P(z + M) with P ≈ e^x on [0, 2M] (L6); they are rescaled exactly by max|a_t| first (the scale cancels in
D̃⁻¹N), which keeps float32 away from overflow. Error bounds: :mod:`verified_ta.error_bounds` (L9, L10).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from numbers import Real
from typing import Sequence

import torch

from .features import DEFAULT_MEMORY_LIMIT_BYTES, check_feature_memory, exact_coefficients, feature_maps
from .gradient import factor_gradients
from .products import face_split
from .reference import resolve_scale
from .validation import check_attention_inputs, check_finite

__all__ = ["normalised_coefficients", "normaliser", "fast_tensor_attention", "FastGradient", "fast_objective_gradient"]

FAST_DTYPES = (torch.float32, torch.float64)


def normalised_coefficients(coefficients: Sequence[Real]) -> tuple[Fraction, ...]:
    """a_t / max_t |a_t| exactly (the fast paths' internal scaling; D̃⁻¹N is unchanged)."""
    a = exact_coefficients(coefficients)
    top = max(abs(c) for c in a)
    return tuple(c / top for c in a)


def _check_dtype(name: str, t: torch.Tensor) -> None:
    if t.dtype not in FAST_DTYPES:
        raise ValueError(f"{name} dtype: the fast path supports float32 and float64 only; got {t.dtype}")


def normaliser(U: torch.Tensor, V: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """D̃ = U((V^T 1) ∘ (W^T 1)) (T4, P34): the row sums of U(V ⊘ W)^T without forming it; shape ``(..., n_q, 1)``."""
    return U @ (V.sum(-2) * W.sum(-2)).unsqueeze(-1)


def _features(q, k1, k2, coefficients, scale, memory_limit_bytes):
    a = normalised_coefficients(coefficients)
    check_feature_memory(
        q.shape[-2], k1.shape[-2], k2.shape[-2], len(a) - 1, q.shape[-1], q.element_size(), math.prod(q.shape[:-2]),
        memory_limit_bytes,
    )
    return feature_maps(q, k1, k2, a, scale)


def fast_tensor_attention(
    q: torch.Tensor,
    k1: torch.Tensor,
    k2: torch.Tensor,
    v1: torch.Tensor,
    v2: torch.Tensor,
    coefficients: Sequence[Real],
    *,
    scale: float | None = None,
    memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT_BYTES,
) -> torch.Tensor:
    """A1: Att̃ = D̃⁻¹N with D̃ = U((V^T 1)∘(W^T 1)) (T4) and N = U((V^T V1)∘(W^T V2)) (T3); shapes ``(..., n, d)``.

    Differentiable (autograd through the features gives the gradients in Q, K1, K2, V1, V2 with O(n·r) memory).
    O(n·r·d) time. ``ValueError`` for bad shapes, dtypes other than float32/float64, non-finite values, or
    features over ``memory_limit_bytes``.
    """
    check_attention_inputs(q, k1, k2, v1, v2)
    _check_dtype("q", q)
    s = resolve_scale(scale, q.shape[-1])
    U, V, W = _features(q, k1, k2, coefficients, s, memory_limit_bytes)
    numerator = U @ ((V.transpose(-1, -2) @ v1) * (W.transpose(-1, -2) @ v2))  # T3: (..., n_q, d)
    return numerator / normaliser(U, V, W)


@dataclass
class FastGradient:
    """A2's outputs: loss, G̃ = dLoss/dX (d × d²), the factor gradients (L2), and c̃, r̃ (for L10 bounds)."""

    loss: torch.Tensor
    G: torch.Tensor
    dX1: torch.Tensor
    dX2: torch.Tensor
    dX3: torch.Tensor
    c: torch.Tensor
    r: torch.Tensor


def fast_objective_gradient(
    A1: torch.Tensor,
    A2: torch.Tensor,
    A3: torch.Tensor,
    A4: torch.Tensor,
    A5: torch.Tensor,
    E: torch.Tensor,
    X1: torch.Tensor,
    X2: torch.Tensor,
    X3: torch.Tensor,
    Y1: torch.Tensor,
    Y2: torch.Tensor,
    coefficients: Sequence[Real],
    *,
    scale: float | None = None,
    memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT_BYTES,
) -> FastGradient:
    """A2: the gradient of the training objective (SPEC §3) at X = X1(X2 ⊘ X3)^T, Y = Y1 ⊘ Y2, never forming n×n².

    A1..A5, E are ``(..., n, d)``; X_i, Y_i are ``(..., d, d)``. Steps (SPEC §5):
    1. U, V, W from Q = A1X1, K1 = A2X2, K2 = A3X3; U1 = U/D̃ (T4).  2. Va = A4Y1, Vb = A5Y2.
    3. c̃ = U1((V^T Va)∘(W^T Vb)) − E (T3).  4–7. q̃ = c̃h^T is rank d and kept implicit;
    r̃_j = U3((V3^T 1)∘(W3^T 1)) = ⟨c̃_j, c̃_j + E_j⟩ (T6, T4).
    8–9. G̃ = s[(A1⊖c̃)^T U1 · ((A2⊖Va)^T V ⊘ (A3⊖Vb)^T W) − (A1^T diag(r̃)U1)((A2^T V)⊘(A3^T W))^T] (T12, T11),
    where (A1⊖c̃)^T U1 is A1^T U3 regrouped (d² × r, not n × rd). O(n·r·d²) time, O(n·r + n·d² + r·d²) memory.
    """
    named = {"A1": A1, "A2": A2, "A3": A3, "A4": A4, "A5": A5, "E": E}
    factors = {"X1": X1, "X2": X2, "X3": X3, "Y1": Y1, "Y2": Y2}
    check_attention_inputs(A1, A2, A3, A4, A5, check_values=False)  # finiteness: in the loop below, with E and X, Y
    _check_dtype("A1", A1)
    n, d = A1.shape[-2:]
    for name, t in {**named, **factors}.items():
        if not isinstance(t, torch.Tensor) or t.dtype != A1.dtype or t.device != A1.device:
            raise ValueError(f"{name} must be a tensor with A1's dtype {A1.dtype} and device {A1.device}")
        want = (*A1.shape[:-2], n, d) if name in named else (*A1.shape[:-2], d, d)
        if tuple(t.shape) != want:
            raise ValueError(f"{name} must have shape {want}; got {tuple(t.shape)}")
        check_finite(name, t)
    s = resolve_scale(scale, d)
    T = lambda x: x.transpose(-1, -2)  # noqa: E731 - local shorthand
    Q, K1, K2, Va, Vb = A1 @ X1, A2 @ X2, A3 @ X3, A4 @ Y1, A5 @ Y2
    U, V, W = _features(Q, K1, K2, coefficients, s, memory_limit_bytes)
    U1 = U / normaliser(U, V, W)  # step 1, T4
    fh = U1 @ ((T(V) @ Va) * (T(W) @ Vb))  # step 3, T3
    c = fh - E
    r = (c * fh).sum(-1)  # step 6
    r_ = U.shape[-1]
    t1 = (T(face_split(A1, c)) @ U1).reshape(*U.shape[:-2], d, d, r_)  # [l, c, α]
    t2 = (T(face_split(A2, Va)) @ V).reshape(*U.shape[:-2], d, d, r_)
    t3 = (T(face_split(A3, Vb)) @ W).reshape(*U.shape[:-2], d, d, r_)
    first = torch.einsum("...lca,...mca,...oca->...lmo", t1, t2, t3)
    second = torch.einsum("...la,...ma,...oa->...lmo", T(A1) @ (r.unsqueeze(-1) * U1), T(A2) @ V, T(A3) @ W)
    G = (first - second).reshape(*U.shape[:-2], d, d * d) * s
    dX1, dX2, dX3 = (
        factor_gradients(G, X1, X2, X3) if G.dim() == 2 else _batched_factor_gradients(G, X1, X2, X3)
    )
    return FastGradient(loss=0.5 * (c * c).sum((-2, -1)), G=G, dX1=dX1, dX2=dX2, dX3=dX3, c=c, r=r)


def _batched_factor_gradients(G, X1, X2, X3):
    out = [factor_gradients(g, x1, x2, x3) for g, x1, x2, x3 in zip(G.flatten(0, -3), *(x.flatten(0, -3) for x in (X1, X2, X3)))]
    return tuple(torch.stack([o[i] for o in out]).reshape(X1.shape) for i in range(3))
