"""The hardness reduction A3 as code, with the derivative bounds L12 (P38–P40; P41's rank trend is
``verified_ta.certificate.rank_exponent``).

A forward instance (Q, K1, K2, V1, V2) becomes the training objective with A1=Q, A2=K1, A3=K2, A4=V1, A5=V2,
E=0, Y = I⊘I, X = λX0, X0 = (I⊘I)^T, so F(λ) = 2·Loss(λX0) = ||softmax(λ·s·Q(K1⊘K2)^T)(V1⊘V2)||_F².
F(1) is recovered from gradient evaluations by a Riemann sum: F(0) + (1/m)Σ_{i<m} F'(i/m), within b/m.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import torch

from .error_bounds import derivative_bounds
from .gradient import closed_form_gradient
from .products import khatri_rao
from .reference import resolve_scale
from .validation import check_attention_inputs, check_positive_int

__all__ = [
    "identity_tensor",
    "objective_value",
    "objective_derivative",
    "objective_at_zero",
    "score_range",
    "curvature_bound",
    "RiemannRecovery",
    "riemann_recovery",
]


def identity_tensor(d: int, like: torch.Tensor) -> torch.Tensor:
    """X0 = (I⊘I)^T ∈ R^{d×d²} (T9); Y = I⊘I is its transpose."""
    eye = torch.eye(d, dtype=like.dtype, device=like.device)
    return khatri_rao(eye, eye).T


def _value_and_gradient(lam: float, q, k1, k2, v1, v2, scale):
    check_attention_inputs(q, k1, k2, v1, v2)
    if q.dim() != 2 or not (q.shape[0] == k1.shape[0] == k2.shape[0]):
        raise ValueError(f"the reduction takes one head with n_q = n1 = n2; got shapes {tuple(q.shape)}, {tuple(k1.shape)}")
    d = q.shape[-1]
    X0 = identity_tensor(d, q)
    Y = X0.T.contiguous()
    loss, G = closed_form_gradient(
        q, k1, k2, v1, v2, torch.zeros_like(q), lam * X0, Y, scale=scale, chunk_size=max(1, (1 << 20) // q.shape[0] ** 2)
    )
    return 2 * loss, G, X0


def objective_value(
    lam: float,
    q: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor, v1: torch.Tensor, v2: torch.Tensor,
    *,
    scale: float | None = None,
) -> float:
    """A3: F(λ) = 2·Loss(λX0) with E = 0, Y = I⊘I."""
    return float(_value_and_gradient(lam, q, k1, k2, v1, v2, scale)[0])


def objective_derivative(
    lam: float,
    q: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor, v1: torch.Tensor, v2: torch.Tensor,
    *,
    scale: float | None = None,
) -> float:
    """A3: F'(λ) = 2⟨∇Loss(λX0), X0⟩ from the closed-form gradient L1 (P26)."""
    _, G, X0 = _value_and_gradient(lam, q, k1, k2, v1, v2, scale)
    return float(2 * (G * X0).sum())


def objective_at_zero(v1: torch.Tensor, v2: torch.Tensor) -> float:
    """P40: at λ = 0 every softmax row is uniform, so each output row is mean(V1)∘mean(V2) and F(0) = n·||·||²."""
    row = v1.mean(-2) * v2.mean(-2)
    return float(v1.shape[-2] * (row * row).sum())


def score_range(q: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor, *, scale: float | None = None) -> float:
    """B̂ of L12: the largest per-row range max_ab S − min_ab S of S = s·Q(K1⊘K2)^T."""
    s = resolve_scale(scale, q.shape[-1])
    S = (q @ khatri_rao(k1, k2).T) * s
    return float((S.amax(-1) - S.amin(-1)).max())


def curvature_bound(
    q: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor, v1: torch.Tensor, v2: torch.Tensor,
    *,
    scale: float | None = None,
) -> float:
    """b ≥ sup_{λ∈[0,1]} |F''(λ)|: L12 with F(λ) ≤ n·d·||V1||∞²||V2||∞² (needs V1⊘V2 ≥ 0 entrywise).

    The F bound is exact and the result rounded up; B̂ is :func:`score_range`, computed in the inputs' dtype.
    """
    f_max = q.shape[-2] * q.shape[-1] * (Fraction(float(v1.abs().max())) * Fraction(float(v2.abs().max()))) ** 2
    return derivative_bounds(score_range(q, k1, k2, scale=scale), f_max)[1]


@dataclass(frozen=True)
class RiemannRecovery:
    """F(1) recovered from F(0) and m derivative evaluations, with the L12 error budget b/m."""

    estimate: float
    exact: float
    error: float
    bound: float
    m: int


def riemann_recovery(
    q: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor, v1: torch.Tensor, v2: torch.Tensor,
    m: int,
    *,
    scale: float | None = None,
) -> RiemannRecovery:
    """A3: F(0) + (1/m) Σ_{i<m} F'(i/m) (left Riemann sum) against F(1); |error| ≤ sup|F''|/(2m) ≤ b/m (P39)."""
    check_positive_int("m", m)
    if bool((khatri_rao(v1, v2) < 0).any()):
        raise ValueError("the L12 bound needs V1 ⊘ V2 >= 0 entrywise (e.g. V1, V2 >= 0)")
    estimate = objective_at_zero(v1, v2) + sum(
        objective_derivative(i / m, q, k1, k2, v1, v2, scale=scale) for i in range(m)
    ) / m
    exact = objective_value(1.0, q, k1, k2, v1, v2, scale=scale)
    b = curvature_bound(q, k1, k2, v1, v2, scale=scale)
    return RiemannRecovery(estimate=estimate, exact=exact, error=abs(estimate - exact), bound=b / m, m=m)
