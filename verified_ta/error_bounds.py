"""Computed error bounds of the polynomial method (SPEC L5, L9, L10, L12), as floats rounded upward.

Every bound is evaluated in exact rational arithmetic from its (float or rational) inputs and rounded up
once, so a returned float is never below the mathematical bound. Proofs: ``docs/bounds.md``.
The floating-point terms bound the distance between the fast path run in a dtype and the same algorithm
in exact arithmetic (Higham's γ_k; ``verified_ta.fp_bounds``); they add to the approximation terms. Their ``dtype``
is a torch dtype or its name ("float32"): given names, this module runs without importing torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from numbers import Real
from typing import TYPE_CHECKING, Sequence

from .features import exact_coefficients, feature_rank
from .fp_bounds import gamma, smallest_normal, unit_roundoff
from .validation import check_positive_int

if TYPE_CHECKING:
    import torch

__all__ = [
    "score_bound",
    "value_bound",
    "row_l1_bound",
    "forward_error_bound",
    "GradientErrorBounds",
    "gradient_error_bounds",
    "derivative_bounds",
    "feature_amplification",
    "forward_rounding_ops",
    "forward_rounding_term",
    "gradient_rounding_term",
    "AttentionGradientBounds",
    "attention_gradient_error_bounds",
    "attention_marginal_bounds",
    "scan_gradient_rounding_ops",
]


def _up(x: Fraction) -> float:
    """The smallest float >= x."""
    f = float(x)
    return f if Fraction(f) >= x else math.nextafter(f, math.inf)


def _nonneg(name: str, x: Real) -> Fraction:
    if isinstance(x, bool) or not isinstance(x, Real) or not math.isfinite(float(x)) or x < 0:
        raise ValueError(f"{name} must be a finite number >= 0; got {x!r}")
    return Fraction(x)


def _delta(delta: Real) -> Fraction:
    if isinstance(delta, bool) or not isinstance(delta, Real) or not (0 <= float(delta) < 1):
        raise ValueError(f"delta must lie in [0, 1); got {delta!r}")
    return Fraction(delta)


def _abs_scale(scale: Real | None, d: int) -> Fraction:
    """|s| exactly: 1/d for ``None`` (not the float ``reference.resolve_scale`` rounds it to, which may lie below)."""
    check_positive_int("d", d)
    if scale is None:
        return Fraction(1, d)
    if isinstance(scale, bool) or not isinstance(scale, Real) or not math.isfinite(float(scale)):
        raise ValueError(f"scale must be a finite real number (or None for 1/d); got {scale!r}")
    return abs(Fraction(scale))


def _a_norms(a_norms: Sequence[Real]) -> tuple[Fraction, Fraction, Fraction]:
    if len(a_norms) != 3:
        raise ValueError(f"a_norms must hold (||A1||∞, ||A2||∞, ||A3||∞); got {len(a_norms)} values")
    a1, a2, a3 = (_nonneg(f"a_norms[{i}]", a) for i, a in enumerate(a_norms))
    return a1, a2, a3


def _gamma(k: int, dtype: torch.dtype | str) -> Fraction:
    """Higham's γ_k = k·u/(1 − k·u) exactly (``fp_bounds.gamma`` returns a float that may round below it)."""
    gamma(k, dtype)  # validates 0 <= k·u < 1
    u = Fraction(unit_roundoff(dtype))
    return k * u / (1 - k * u)


def _tiny(dtype: torch.dtype | str) -> Fraction:
    """The smallest positive normal number of ``dtype``, exactly (the gradual-underflow unit)."""
    return Fraction(smallest_normal(dtype))


def score_bound(B: Real, d: int, scale: Real | None = None) -> float:
    """L5: entries of Q, K1, K2 bounded by B ⇒ every score s⟨q, k1∘k2⟩ lies in [−M, M], M = |s|·d·B³ (B³ at s = 1/d)."""
    b = _nonneg("B", B)
    return _up(_abs_scale(scale, d) * d * b**3)


def value_bound(B: Real) -> float:
    """L5: entries of V1, V2 bounded by B ⇒ ||V1 ⊘ V2||∞ ≤ B²."""
    return _up(_nonneg("B", B) ** 2)


def _eta(delta: Fraction) -> Fraction:
    return 2 * delta / (1 - delta)


def row_l1_bound(delta: Real) -> float:
    """L9 core: |Ã − A| ≤ δA entrywise (δ < 1) ⇒ each normalised row satisfies ||f̃ − f||₁ ≤ η = 2δ/(1−δ)."""
    return _up(_eta(_delta(delta)))


def forward_error_bound(delta: Real, value_norm: Real) -> float:
    """L9: ||D̃⁻¹ÃV − D⁻¹AV||∞ ≤ 2δ/(1−δ) · ||V||∞, with ||V||∞ = ||V1 ⊘ V2||∞ ≤ ||V1||∞||V2||∞ (≤ 4δ||V||∞ for δ ≤ ½)."""
    return _up(_eta(_delta(delta)) * _nonneg("value_norm", value_norm))


@dataclass(frozen=True)
class GradientErrorBounds:
    """The four inequalities of L10 (each an upper bound, rounded up)."""

    c: float  # ||c̃ − c||∞
    q: float  # ||q̃ − q||∞
    p_row_l1: float  # max_j Σ |p̃ − p|[j, ·]
    G: float  # ||G̃ − G||∞


def gradient_error_bounds(
    delta: Real,
    h_norm: Real,
    q_tilde_norm: Real,
    n: int,
    d: int,
    a_norms: Sequence[Real],
    scale: Real | None = None,
) -> GradientErrorBounds:
    """L10 with η = 2δ/(1−δ), H = ||h||∞, n query rows, ``a_norms`` = (||A1||∞, ||A2||∞, ||A3||∞), s = 1/d by default.

    ||c̃ − c||∞ ≤ ηH; ||q̃ − q||∞ ≤ dηH²; max_j ||p̃_j − p_j||₁ ≤ 3η||q̃||∞ + 2||q̃ − q||∞;
    ||G̃ − G||∞ ≤ |s|·n·||A1||∞||A2||∞||A3||∞ · max_j ||p̃_j − p_j||₁ (= (n/d)(…) at s = 1/d).
    """
    eta = _eta(_delta(delta))
    H = _nonneg("h_norm", h_norm)
    qn = _nonneg("q_tilde_norm", q_tilde_norm)
    check_positive_int("n", n)
    a1, a2, a3 = _a_norms(a_norms)
    s = _abs_scale(scale, d)
    c = eta * H
    q = d * eta * H**2
    p = 3 * eta * qn + 2 * q
    return GradientErrorBounds(c=_up(c), q=_up(q), p_row_l1=_up(p), G=_up(s * n * a1 * a2 * a3 * p))


def derivative_bounds(score_range: Real, F: Real) -> tuple[float, float]:
    """L12 (needs V1 ⊘ V2 ≥ 0 entrywise): |F'(λ)| ≤ 2B̂F(λ) and |F''(λ)| ≤ 24B̂²F(λ), B̂ = max row range of the scores."""
    b = _nonneg("score_range", score_range)
    f = _nonneg("F", F)
    return _up(2 * b * f), _up(24 * b**2 * f)


def feature_amplification(coefficients: Sequence[Real], abs_score_bound: Real, delta: Real) -> Fraction:
    """κ = Σ_t |a_t| M^t / (1 − δ): the feature terms' absolute sum over the normaliser's lower bound (L8, L6).

    M bounds |s|·Σ_l |q_l k1_l k2_l| (≤ |s|·d·B³, L5); for P(x) ≈ e^x on [0, 2M] this is about e^{2M}.
    """
    a = exact_coefficients(coefficients)
    m = _nonneg("abs_score_bound", abs_score_bound)
    return sum(abs(c) * m**t for t, c in enumerate(a)) / (1 - _delta(delta))


def forward_rounding_ops(g: int, d: int, n1: int, n2: int) -> int:
    """Roundings on any path of the fast forward A1: weight (2) + monomials (3g) + the three contractions + division."""
    return 3 * g + n1 + n2 + feature_rank(g, d) + 4


def forward_rounding_term(
    coefficients: Sequence[Real],
    abs_score_bound: Real,
    d: int,
    n1: int,
    n2: int,
    dtype: torch.dtype | str,
    delta: Real,
    value_norm: Real,
) -> float:
    """Floating-point term of A1: ||Att_dtype − Att̃_exact||∞ ≤ 2ρ/(1−ρ)·||V||∞ + 2τ/(1−ρ).

    ρ = γ_k κ + τ is the relative error of the computed normaliser, τ = k·r·tiny·max|a_t|/(1−δ) the gradual-underflow
    term (absolute per entry, relative to the normaliser, which fast.py scales by 1/max|a_t|); κ from
    :func:`feature_amplification`, k = :func:`forward_rounding_ops`. Needs ρ < 1, else ``ValueError``
    (the dtype cannot evaluate this polynomial on this range: the alternating sum loses everything).
    """
    a = exact_coefficients(coefficients)
    check_positive_int("n1", n1)
    check_positive_int("n2", n2)
    k = forward_rounding_ops(len(a) - 1, d, n1, n2)
    rho, tau, _ = _normaliser_error(a, abs_score_bound, d, k, dtype, delta)
    return _up(_eta(rho) * _nonneg("value_norm", value_norm) + 2 * tau / (1 - rho))


def _normaliser_error(
    a: tuple[Fraction, ...], abs_score_bound: Real, d: int, k: int, dtype: torch.dtype | str, delta: Real
) -> tuple[Fraction, Fraction, Fraction]:
    """(ρ, τ, κ) of :func:`forward_rounding_term`; ``ValueError`` when ρ >= 1."""
    g = len(a) - 1
    kappa = feature_amplification(a, abs_score_bound, delta)
    tau = k * feature_rank(g, d) * _tiny(dtype) * max(abs(c) for c in a) / (1 - _delta(delta))
    rho = _gamma(k, dtype) * kappa + tau
    if rho >= 1:
        raise ValueError(
            f"floating-point term ρ = {float(rho):.3g} >= 1: {dtype} cannot evaluate a degree-{g} polynomial on scores "
            f"up to M = {float(abs_score_bound):.3g} (amplification ≈ e^(2M)); use float64 or a smaller B"
        )
    return rho, tau, kappa


def gradient_rounding_term(
    coefficients: Sequence[Real],
    abs_score_bound: Real,
    n: int,
    d: int,
    dtype: torch.dtype | str,
    delta: Real,
    h_norm: Real,
    e_norm: Real,
    c_l1: Real,
    a_norms: Sequence[Real],
    scale: Real | None = None,
) -> float:
    """Floating-point term of A2 (derived): ||G̃_dtype − G̃_exact||∞ for n = n1 = n2, given Q, K1, K2, Va, Vb.

    With κ, ρ, τ as in :func:`forward_rounding_term`, F = H + 2ρ/(1−ρ)·H + 2τ/(1−ρ) (bounds |f̃h| as computed),
    θ = (γ_K + ρ)/(1 − ρ) the relative error of one product path of steps 8–9 (K = 3g + 3n + d·r + 8),
    Δc = d(F − H + u(F + ||E||∞)) the ℓ1 error of a computed row c̃_j, C = ``c_l1`` + Δc
    (``c_l1`` = max_j ||c̃_j||₁ as computed) and Δr = Δc·F + C·(F − H) + γ_d·C·F:
    ||ΔG||∞ ≤ |s|·n·||A1||∞||A2||∞||A3||∞·κ·[H(Δc + Cθ) + Δr + C·F·θ] + 2|s|·K·n³d²r·tiny (underflow).
    """
    a = exact_coefficients(coefficients)
    g = len(a) - 1
    check_positive_int("n", n)
    k = forward_rounding_ops(g, d, n, n)
    rho, tau, kappa = _normaliser_error(a, abs_score_bound, d, k, dtype, delta)
    H, E, C0 = _nonneg("h_norm", h_norm), _nonneg("e_norm", e_norm), _nonneg("c_l1", c_l1)
    a1, a2, a3 = _a_norms(a_norms)
    s = _abs_scale(scale, d)
    u = Fraction(unit_roundoff(dtype))
    fp_rows = _eta(rho) * H + 2 * tau / (1 - rho)
    F = H + fp_rows
    big_k = 3 * g + 3 * n + d * feature_rank(g, d) + 8
    theta = (_gamma(big_k, dtype) + rho) / (1 - rho)
    dc = d * (fp_rows + u * (F + E))
    C = C0 + dc
    dr = dc * F + C * fp_rows + _gamma(d, dtype) * C * F
    underflow_G = 2 * s * big_k * n**3 * d**2 * feature_rank(g, d) * _tiny(dtype)
    return _up(s * n * a1 * a2 * a3 * kappa * (H * (dc + C * theta) + dr + C * F * theta) + underflow_G)


@dataclass(frozen=True)
class AttentionGradientBounds:
    """Upper bounds on ‖d̃X − dX‖∞ for the five attention inputs: the polynomial path's gradient of ⟨dO, Att̃⟩ against
    the exact path's gradient of ⟨dO, Att⟩, both in exact arithmetic (docs/bounds.md, "Gradients of the polynomial path")."""

    dq: float
    dk1: float
    dk2: float
    dv1: float
    dv2: float


def attention_gradient_error_bounds(
    delta: Real,
    delta_derivative: Real,
    norms: Sequence[Real],
    dout_row_l1: Real,
    dout_mass: Sequence[Real],
    dout_col_mass: Sequence[Real],
    d: int,
    scale: Real | None = None,
) -> AttentionGradientBounds:
    """Gradients of the polynomial path against the exact path (any product mask; L4 with P in place of exp).

    Hypotheses: |P(x) − eˣ| ≤ δeˣ and |P'(x) − eˣ| ≤ δ'eˣ on the shifted scores (δ < 1). With η = 2δ/(1−δ),
    κ = 2(δ + δ')/(1−δ) + η, H = ‖V1‖∞‖V2‖∞ and ``norms`` = (‖Q‖∞, ‖K1‖∞, ‖K2‖∞, ‖V1‖∞, ‖V2‖∞):
    dQ ≤ |s|‖K1‖‖K2‖·κH·max_i‖dO_i‖₁;  dK1 ≤ |s|‖Q‖‖K2‖·κH·m1;  dK2 ≤ |s|‖Q‖‖K1‖·κH·m2;
    dV1 ≤ η‖V2‖·c1;  dV2 ≤ η‖V1‖·c2, where ``dout_mass`` = (m1, m2) bound max_a Σ_i F_i(a)‖dO_i‖₁ and ``dout_col_mass``
    = (c1, c2) bound max_{a,c} Σ_i F_i(a)|dO_ic| for each key side, F_i(a) = Σ_b f_iab the attention row i gives key a
    (:func:`attention_marginal_bounds`; ≤ 1 always).
    """
    dl = _delta(delta)
    dp = _nonneg("delta_derivative", delta_derivative)
    if len(norms) != 5:
        raise ValueError(f"norms must hold (||Q||, ||K1||, ||K2||, ||V1||, ||V2||) (max |entry|); got {len(norms)} values")
    nq, n1, n2, nv1, nv2 = (_nonneg(f"norms[{i}]", x) for i, x in enumerate(norms))
    row = _nonneg("dout_row_l1", dout_row_l1)
    for name, pair in (("dout_mass", dout_mass), ("dout_col_mass", dout_col_mass)):
        if len(pair) != 2:
            raise ValueError(f"{name} must hold one value per key side (k1, k2); got {len(pair)} values")
    m1, m2 = (_nonneg(f"dout_mass[{i}]", x) for i, x in enumerate(dout_mass))
    c1, c2 = (_nonneg(f"dout_col_mass[{i}]", x) for i, x in enumerate(dout_col_mass))
    s = _abs_scale(scale, d)
    eta = _eta(dl)
    kappa = 2 * (dl + dp) / (1 - dl) + eta
    H = nv1 * nv2
    return AttentionGradientBounds(
        dq=_up(s * n1 * n2 * kappa * H * row),
        dk1=_up(s * nq * n2 * kappa * H * m1),
        dk2=_up(s * nq * n1 * kappa * H * m2),
        dv1=_up(eta * nv2 * c1),
        dv2=_up(eta * nv1 * c2),
    )


def attention_marginal_bounds(abs_score_bound: Real, visible: torch.Tensor) -> torch.Tensor:
    """F_i(a) ≤ min(1, e^{2M}/|A_i|) (float64, rounded up): scores in [−M, M] make every pair's softmax weight at most
    e^{2M}/|Ω_i| with |Ω_i| = |A_i|·|B_i| visible pairs, so a key's marginal is at most e^{2M}/|A_i| (``visible`` = |A_i|
    per query row, e.g. n1, or i + 1 under the causal mask)."""
    import mpmath
    import torch

    m = _nonneg("abs_score_bound", abs_score_bound)
    with mpmath.workdps(40):
        e2m = Fraction(mpmath.nstr(mpmath.exp(2 * mpmath.mpf(m.numerator) / m.denominator), 35)) * (1 + Fraction(1, 10**30))
    return torch.clamp(_up(e2m) / visible.to(torch.float64), max=1.0)


def scan_gradient_rounding_ops(g: int, d: int, n_q: int, n1: int, n2: int, group: int = 1) -> int:
    """Roundings on any path of the scan's backward (derived, docs/bounds.md): A1's forward count, the normaliser's
    gradient (d + 4), the suffix sums over queries (n_q), two Hadamard products and a sum over d + 1 columns, the
    monomials' VJP (g levels of ≤ d + 4), the sum over r features, and the sum over the ``group`` query heads."""
    check_positive_int("n_q", n_q)
    check_positive_int("group", group)
    return forward_rounding_ops(g, d, n1, n2) + n_q + 2 * d + g * (d + 4) + feature_rank(g, d) + group + 16
