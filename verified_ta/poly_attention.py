"""Certified polynomial-method tensor attention as one call: ``tensor_attention(..., method="poly")`` (SPEC A1, L5–L9).

Per call: the entry bound B of q, k1, k2 (given, or measured) fixes the score range M = |s|·Σ_l max|q_l|·max|k1_l|·
max|k2_l| ≤ |s|·d·B³ (L5); the certify machinery (:func:`verified_ta.certificate.build_certificate`, at s = 1/d)
supplies a polynomial with certified relative error δ on [0, 2B_grid³] ⊇ [0, 2M] (L6, L7), cached on
(B_grid, n, d, ε, dtype, family) with B_grid the grid point above B_eff = M^{1/3}; the feature scan of
:mod:`verified_ta.fast` evaluates A1 (causal or full) with a written backward. A call returns, on request, the
certificate and an a-posteriori bound on ‖out − Att‖∞ (L9 with the certified δ, plus A1's floating-point term at the
call's own score range). :func:`gradient_bounds` gives the proved per-call bounds on dQ, dK1, dK2, dV1, dV2 against
the exact path (docs/bounds.md, "Gradients of the polynomial path"), with the derivative error δ' of P certified too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from numbers import Real
from typing import TYPE_CHECKING, Literal, Sequence

import torch

from .error_bounds import (
    attention_gradient_error_bounds,
    attention_marginal_bounds,
    forward_error_bound,
    forward_rounding_ops,
    forward_rounding_term,
    scan_gradient_rounding_ops,
)
from .fast import FAST_DTYPES, fast_tensor_attention, feature_scan, scan_chunk_size, scan_row_bytes
from .features import feature_rank
from .fp_bounds import gamma
from .masks import Window, check_window
from .reference import resolve_scale
from .validation import check_attention_inputs, check_open_unit

if TYPE_CHECKING:
    from .certificate import Certificate

__all__ = [
    "METHODS",
    "B_GRID",
    "PolyCertificate",
    "grid_bound",
    "score_range",
    "certify_poly",
    "check_method_options",
    "poly_tensor_attention",
    "dispatch",
    "gradient_bounds",
    "gradient_bounds_for",
    "gradient_rounding_bounds",
]

Method = Literal["exact", "poly"]
METHODS = ("exact", "poly")
#: certificates are cached on B rounded up to a multiple of 1/B_GRID (B³ then moves by at most ~10% at B ≈ 1)
B_GRID = 32


@dataclass(frozen=True)
class PolyCertificate:
    """A certified polynomial for one (B_grid, n, d, ε, dtype, family): what a poly call relies on.

    ``coefficients`` are the exact shifted a_t of z ↦ P(z + M) with M = B_grid³ (L6); ``delta`` the certified
    sup_{[0, 2M]} |P(x)e^{−x} − 1| (L7; the L9 hypothesis |Ã − A| ≤ δA); ``certificate`` the full record of
    ``verified-ta certify`` (JSON via ``certificate.to_json()``).
    """

    B: Fraction
    n: int
    d: int
    eps: float
    dtype: torch.dtype
    certificate: "Certificate"

    @property
    def M(self) -> Fraction:
        return self.certificate.M

    @property
    def delta(self) -> Fraction:
        return self.certificate.approx.upper

    @property
    def coefficients(self) -> tuple[Fraction, ...]:
        return self.certificate.polynomial.shifted(self.certificate.M)

    @property
    def degree(self) -> int:
        return self.certificate.polynomial.degree

    @property
    def rank(self) -> int:
        return feature_rank(self.degree, self.d)

    @property
    def delta_derivative(self) -> Fraction:
        """Certified sup_{[0, 2M]} |P'(x)e^{−x} − 1| (the gradient bounds' δ'; Arb, as δ)."""
        return _derivative_error(self.certificate.polynomial)


@lru_cache(maxsize=64)
def _derivative_error(poly) -> Fraction:
    from .certificate import certify_polynomial
    from .polynomial import Polynomial

    coeffs = tuple(t * c for t, c in enumerate(poly.coefficients))[1:] or (Fraction(0),)
    return certify_polynomial(Polynomial(poly.family, poly.interval, coeffs)).upper


def score_range(q: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor, scale: float) -> Fraction:
    """M = |s|·Σ_l max|q_l|·max|k1_l|·max|k2_l| exactly (≥ every |s⟨q_i, k1_a∘k2_b⟩|, L5; ≤ |s|·d·B³)."""
    cols = [x.detach().abs().flatten(0, -2).amax(0).to(torch.float64).tolist() for x in (q, k1, k2)]
    return abs(Fraction(scale)) * sum(Fraction(a) * Fraction(b) * Fraction(c) for a, b, c in zip(*cols))


def grid_bound(M: Fraction) -> Fraction:
    """The least B_grid = k/B_GRID (k ≥ 1) with B_grid³ ≥ M: the certificate at s = 1/d covers scores in [−M, M]."""
    k = max(1, math.ceil(float(M) ** (1 / 3) * B_GRID) - 1)
    while Fraction(k, B_GRID) ** 3 < M:
        k += 1
    return Fraction(k, B_GRID)


_DTYPE_NAMES = {torch.float64: "float64", torch.float32: "float32"}


def certify_poly(B: Fraction, n: int, d: int, eps: float, dtype: torch.dtype, family: str = "auto") -> PolyCertificate:
    """The certificate of :func:`verified_ta.certificate.build_certificate` for (B, n, d, ε, dtype, family), cached.

    ε is the certificate's target: its proved forward total (L9 at ‖V1⊘V2‖∞ ≤ B², plus the dtype's rounding term)
    is at most ε. ``ValueError`` when no polynomial is certified to ε (target missed or inconclusive, or its features
    over the memory limit), saying what would: a smaller entry bound, a larger ε, float64, or method="exact".
    """
    return _certify(Fraction(B), n, d, float(eps), _DTYPE_NAMES[dtype], family)


@lru_cache(maxsize=64)
def _certify(B: Fraction, n: int, d: int, eps: float, dtype: str, family: str) -> PolyCertificate:
    from .certificate import CertifyInputs, build_certificate

    inputs = CertifyInputs(B=float(B), n=n, d=d, eps=eps, dtype=dtype, family=family)
    where = f"B = {float(B):g} (scores in [−{float(B) ** 3:.4g}, {float(B) ** 3:.4g}] at s = 1/d), n = {n}, d = {d}, {dtype}"
    advice = (f"what would: a smaller entry bound (bound q, k1, k2, e.g. by normalisation or tanh), a larger eps, "
              f"{'float64, ' if dtype == 'float32' else ''}or method='exact'")
    try:
        cert = build_certificate(inputs)
    except ValueError as exc:
        raise ValueError(f"method='poly': no certified polynomial reaches eps = {eps:g} for {where}: {exc}; {advice}") from None
    if not _proved_within(cert, eps):
        raise ValueError(f"method='poly': no certified polynomial reaches eps = {eps:g} for {where}: {cert.message}; {advice}")
    return PolyCertificate(B, n, d, eps, {v: k for k, v in _DTYPE_NAMES.items()}[dtype], cert)


def _proved_within(cert: "Certificate", eps: float) -> bool:
    """A polynomial whose proved forward total is <= ε and whose features fit the memory limit: verdict "certified",
    or "not applicable" only because the cost model says exact is cheaper at this n (still usable, just not faster)."""
    if cert.verdict == "certified":
        return True
    bounds = cert.bounds
    return (cert.verdict == "not applicable" and cert.polynomial is not None and bounds is not None
            and cert.costs["fits_memory"] and bounds["tag"] == "proved" and bounds["total"] is not None
            and Fraction(bounds["total"]) <= Fraction(eps))


def check_method_options(method: str, eps: float, bound: float | None) -> None:
    """``ValueError`` unless method is one of :data:`METHODS`, 0 < eps < 1 and bound is None or a finite number > 0."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    check_open_unit("eps", eps)
    if bound is not None and (isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound)
                              or bound <= 0):
        raise ValueError(f"bound must be None or a finite number > 0; got {bound!r}")


def _entry_score_range(q, k1, k2, s: float, bound: float | None) -> Fraction:
    if bound is None:
        return score_range(q, k1, k2, s)
    for name, x in (("q", q), ("k1", k1), ("k2", k2)):
        top = float(x.detach().abs().max())
        if top > bound:
            raise ValueError(f"bound = {bound!r} is below max|{name}| = {top!r}: the certificate would not cover these inputs")
    return abs(Fraction(s)) * q.shape[-1] * Fraction(bound) ** 3


def poly_tensor_attention(
    q: torch.Tensor,
    k1: torch.Tensor,
    k2: torch.Tensor,
    v1: torch.Tensor,
    v2: torch.Tensor,
    *,
    scale: float | None = None,
    causal: bool = False,
    window: Window | None = None,
    eps: float = 1e-3,
    bound: float | None = None,
    family: str = "auto",
    chunk_size: int | None = None,
    return_certificate: bool = False,
    return_bound: bool = False,
) -> torch.Tensor | tuple:
    """Tensor attention by the certified polynomial method (A1 with L8 features), differentiable (once).

    Shapes as :func:`verified_ta.tensor_attention`, float32/float64, any device. ``bound``: an entry bound B for q,
    k1, k2 (checked; fixes the certificate across calls), else the inputs' own per-column maxima. ``eps``: the
    certificate's target (:func:`certify_poly`: proved forward total ≤ ε for values with ‖V1⊘V2‖∞ ≤ B_grid²).
    Returns ``out``, then the :class:`PolyCertificate` if ``return_certificate``, then if ``return_bound`` a float ≥
    ‖out − Att‖∞ against exact tensor attention of the same inputs in exact arithmetic (L9 with the certified δ plus
    A1's floating-point term at the call's score range). ``ValueError`` when no polynomial is certified (see
    :func:`certify_poly`), for a sliding window, or for bad input.
    """
    check_attention_inputs(q, k1, k2, v1, v2, causal=causal, window=window)
    if check_window(window, causal) is not None:
        raise ValueError(f"window={tuple(window)!r} is not supported by method='poly' (no bound is proved for the "
                         f"cancelling prefix-sum differences of a sliding window): use method='exact'")
    if q.dtype not in FAST_DTYPES:
        raise ValueError(f"method='poly' supports float32 and float64 only; got {q.dtype}")
    check_method_options("poly", eps, bound)
    s = resolve_scale(scale, q.shape[-1])
    d = q.shape[-1]
    M = _entry_score_range(q, k1, k2, s, bound)
    n = max(q.shape[-2], k1.shape[-2], k2.shape[-2])
    cert = certify_poly(grid_bound(M), n, d, eps, q.dtype, family)
    out = fast_tensor_attention(q, k1, k2, v1, v2, cert.coefficients, scale=s, causal=causal, chunk_size=chunk_size)
    extras: list = []
    if return_certificate:
        extras.append(cert)
    if return_bound:
        vnorm = float(v1.detach().abs().max()) * float(v2.detach().abs().max())
        extras.append(forward_error_bound(cert.delta, vnorm) + forward_rounding_term(
            cert.coefficients, M, d, k1.shape[-2], k2.shape[-2], q.dtype, cert.delta, vnorm))
    return (out, *extras) if extras else out


def dispatch(
    method: str,
    q: torch.Tensor,
    k1: torch.Tensor,
    k2: torch.Tensor,
    v1: torch.Tensor,
    v2: torch.Tensor,
    *,
    scale: float | None,
    causal: bool,
    window: Window | None,
    return_lse: bool,
    backend: str,
    eps: float,
    bound: float | None,
    return_certificate: bool,
    return_bound: bool,
) -> torch.Tensor | tuple:
    """The ``method=`` branch of :func:`verified_ta.tensor_attention`: validates the method options, runs the poly path."""
    check_method_options(method, eps, bound)
    if method == "exact":
        raise ValueError("return_certificate and return_bound need method='poly' (the exact path has no certificate)")
    if return_lse:
        raise ValueError("return_lse is not available with method='poly' (the polynomial path has no log-sum-exp)")
    if backend == "triton":
        raise ValueError("backend='triton' runs the exact kernels; method='poly' runs in plain torch (use backend='auto')")
    return poly_tensor_attention(q, k1, k2, v1, v2, scale=scale, causal=causal, window=window, eps=eps, bound=bound,
                                 return_certificate=return_certificate, return_bound=return_bound)


_GRAD_NAMES = ("dq", "dk1", "dk2", "dv1", "dv2")


def _rows_per_key_head(x: torch.Tensor, group: int) -> torch.Tensor:
    """``(..., H, n, d)`` → ``(..., H/g, g·n, d)``: the query rows that read each key head (grouped-query heads)."""
    return x.unflatten(-3, (x.shape[-3] // group, group)).flatten(-3, -2)


def gradient_rounding_bounds(
    q: torch.Tensor,
    k1: torch.Tensor,
    k2: torch.Tensor,
    v1: torch.Tensor,
    v2: torch.Tensor,
    grad_out: torch.Tensor,
    coefficients: Sequence[Real],
    *,
    scale: float | None = None,
    causal: bool = False,
    chunk_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """Entrywise bounds on |computed − exact| for the poly path's gradients in q's dtype (derived; docs/bounds.md).

    Every gradient entry is a sum of terms t/D̃_i or t'/D̃_i² (t, t' products of leaves); computed, each term carries at
    most K = :func:`scan_gradient_rounding_ops` roundings and the normaliser's relative error ρ_D, so
    |ĝ − g| ≤ ((1+γ_K)/(1−ρ_D)² − 1)·Σ|terms|. Σ|terms| is the gradient w.r.t. |x| of
    Σ_i ⟨|dO_i|, mN_i⟩/D_lo,i + ⟨|dO_i|, mN_i⟩·mD_i/D_lo,i² (mN, mD: the scan on |x| and |a_t|; D_lo = D̂ − γ_k·mD ≤ D̃),
    evaluated in float64 and inflated by (1 + γ_K)⁴ (float64). Assumes no underflow or overflow.
    """
    from .fast import normalised_coefficients

    group = check_attention_inputs(q, k1, k2, v1, v2, causal=causal)
    d, n_q, n1, n2 = q.shape[-1], q.shape[-2], k1.shape[-2], k2.shape[-2]
    s = resolve_scale(scale, d)
    a = normalised_coefficients(coefficients)
    g = len(a) - 1
    chunk = scan_chunk_size(n_q, scan_row_bytes(q, g), chunk_size)
    k_fwd = forward_rounding_ops(g, d, n1, n2)
    K = scan_gradient_rounding_ops(g, d, n_q, n1, n2, group)

    def expand(x):
        return x.repeat_interleave(group, dim=-3) if group > 1 else x

    with torch.no_grad():
        d_hat = feature_scan(q, *(expand(x) for x in (k1, k2, v1, v2)), a, scale=s, causal=causal,
                             chunk_size=chunk)[..., -1].double()
    xa = [x.detach().double().abs().requires_grad_() for x in (q, k1, k2, v1, v2)]
    with torch.enable_grad():
        m = feature_scan(xa[0], *(expand(x) for x in xa[1:]), [abs(c) for c in a], scale=abs(s), causal=causal,
                         chunk_size=chunk)
        mN, mD = m[..., :-1], m[..., -1]
        d_lo = d_hat - gamma(k_fwd, q.dtype) * mD.detach()
        if not bool((d_lo > 0).all()):
            raise ValueError(f"{q.dtype} rounding may reach the size of the normaliser: no gradient rounding bound")
        dO = grad_out.detach().double().abs()
        mL = ((dO * mN).sum(-1) / d_lo).sum() + ((dO * mN.detach()).sum(-1) * mD / d_lo**2).sum()
        mags = torch.autograd.grad(mL, xa)
    rho = gamma(k_fwd, q.dtype) * float((mD.detach() / d_lo).max())
    if rho >= 1:
        raise ValueError(f"{q.dtype} rounding of the normaliser reaches its size (ρ = {rho:.3g}): no gradient rounding bound")
    theta = (1 + gamma(K, q.dtype)) / (1 - rho) ** 2 - 1
    inflate = (1 + gamma(K, torch.float64)) ** 4
    return {name: theta * mag * inflate for name, mag in zip(_GRAD_NAMES, mags)}


def gradient_bounds(
    q: torch.Tensor,
    k1: torch.Tensor,
    k2: torch.Tensor,
    v1: torch.Tensor,
    v2: torch.Tensor,
    grad_out: torch.Tensor,
    certificate: PolyCertificate,
    *,
    scale: float | None = None,
    causal: bool = False,
    chunk_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """Per call: entrywise bounds on |poly gradient as computed − exact-path gradient| for dq, dk1, dk2, dv1, dv2, from
    the certificate's δ and δ' (:func:`gradient_bounds_for`). ``ValueError`` when the inputs' score range exceeds the
    certificate's M."""
    s = resolve_scale(scale, q.shape[-1])
    M = score_range(q, k1, k2, s)
    if M > certificate.M:
        raise ValueError(f"the inputs' score range {float(M):.6g} exceeds the certificate's M = {float(certificate.M):.6g}")
    return gradient_bounds_for(q, k1, k2, v1, v2, grad_out, certificate.coefficients, certificate.delta,
                               certificate.delta_derivative, scale=s, causal=causal, chunk_size=chunk_size)


def gradient_bounds_for(
    q: torch.Tensor,
    k1: torch.Tensor,
    k2: torch.Tensor,
    v1: torch.Tensor,
    v2: torch.Tensor,
    grad_out: torch.Tensor,
    coefficients: Sequence[Real],
    delta: Real,
    delta_derivative: Real,
    *,
    scale: float | None = None,
    causal: bool = False,
    chunk_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """Entrywise bounds on |poly gradient as computed − exact-path gradient| given δ, δ' that hold on these inputs'
    shifted scores: the proved approximation term (:func:`verified_ta.error_bounds.attention_gradient_error_bounds`,
    marginals from :func:`verified_ta.error_bounds.attention_marginal_bounds` at the inputs' score range) plus the
    derived rounding term (:func:`gradient_rounding_bounds`). The exact path is exact tensor attention in exact
    arithmetic; against a computed exact path add its own rounding term (``fp_bounds.attention_rounding_bounds``).
    """
    group = check_attention_inputs(q, k1, k2, v1, v2, causal=causal)
    if tuple(grad_out.shape) != tuple(q.shape):
        raise ValueError(f"grad_out must have q's shape {tuple(q.shape)}; got {tuple(grad_out.shape)}")
    s = resolve_scale(scale, q.shape[-1])
    M = score_range(q, k1, k2, s)
    dO = grad_out.detach().double().abs()
    n_q, n1, n2 = q.shape[-2], k1.shape[-2], k2.shape[-2]
    rows = torch.arange(1, n_q + 1, dtype=torch.float64)
    mass, col_mass = [], []
    for n_key in (n1, n2):
        F = attention_marginal_bounds(M, rows if causal else torch.full((n_q,), float(n_key)))  # F_i(a) ≤ this
        weighted = dO * F[:, None]
        weighted = _rows_per_key_head(weighted, group) if group > 1 else weighted
        sums = (1 + gamma(n_q * group * q.shape[-1], torch.float64))  # float64 evaluation of the sums below
        mass.append(float(weighted.sum((-2, -1)).max()) * sums)
        col_mass.append(float(weighted.sum(-2).max()) * sums)
    approx = attention_gradient_error_bounds(
        delta, delta_derivative, [float(x.detach().abs().max()) for x in (q, k1, k2, v1, v2)],
        float(dO.sum(-1).max()) * (1 + gamma(q.shape[-1], torch.float64)), mass, col_mass, q.shape[-1], s)
    fp = gradient_rounding_bounds(q, k1, k2, v1, v2, grad_out, coefficients, scale=s, causal=causal,
                                  chunk_size=chunk_size)
    return {name: getattr(approx, name) + fp[name] for name in _GRAD_NAMES}
