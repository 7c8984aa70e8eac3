"""Floating-point error terms used as test tolerances (Higham, *Accuracy and Stability*, §3).

A sum of m products of p factors, evaluated in any order in a format with unit roundoff u, has
error at most γ_k · Σ|terms| with k = m + p − 2 and γ_k = k·u/(1 − k·u). Tests bound the distance
between two evaluations of an identity by the sum of both sides' γ-terms, never by a free rtol.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "unit_roundoff",
    "gamma",
    "rounding_bound",
    "objective_rounding_bounds",
    "objective_gradient_rounding_bound",
    "attention_rounding_bounds",
]

_U = {
    torch.float64: 2.0**-53,
    torch.float32: 2.0**-24,
    torch.float16: 2.0**-11,
    torch.bfloat16: 2.0**-8,
    np.dtype(np.float64): 2.0**-53,
    np.dtype(np.float32): 2.0**-24,
}
_TINY = {
    torch.float64: float(torch.finfo(torch.float64).tiny),
    torch.float32: float(torch.finfo(torch.float32).tiny),
    torch.float16: float(torch.finfo(torch.float16).tiny),
    torch.bfloat16: float(torch.finfo(torch.bfloat16).tiny),
    np.dtype(np.float64): float(np.finfo(np.float64).tiny),
    np.dtype(np.float32): float(np.finfo(np.float32).tiny),
}


def _key(dtype):
    return dtype if isinstance(dtype, torch.dtype) else np.dtype(dtype)


def unit_roundoff(dtype) -> float:
    """Unit roundoff u of a torch or numpy floating dtype (2^-53 for float64)."""
    try:
        return _U[_key(dtype)]
    except KeyError:
        raise ValueError(f"dtype must be float16, bfloat16, float32 or float64; got {dtype}") from None


def gamma(k: int, dtype) -> float:
    """Higham's γ_k = k·u / (1 − k·u); requires k·u < 1."""
    u = unit_roundoff(dtype)
    if k < 0 or k * u >= 1:
        raise ValueError(f"gamma needs 0 <= k < 1/u = {1 / u:.3g}; got k={k}")
    return k * u / (1 - k * u)


def rounding_bound(magnitude, ops: int, dtype):
    """Bound on |fl(x) − x| for x computed with at most ``ops`` rounding steps on every path.

    ``magnitude`` is the same expression evaluated on absolute values (elementwise).
    The absolute term ``ops · tiny`` covers gradual underflow of intermediate products.
    """
    return gamma(ops, dtype) * magnitude + ops * _TINY[_key(dtype)]


def objective_gradient_rounding_bound(A1, A2, A3, A4, A5, E, X, Y, scale: float | None = None, dtype=torch.float64):
    """Rigorous entrywise bound on |Ĝ − G| for L1 evaluated in ``dtype``: ``objective_rounding_bounds(...)["G"]``."""
    return objective_rounding_bounds(A1, A2, A3, A4, A5, E, X, Y, scale, dtype)["G"]


def objective_rounding_bounds(A1, A2, A3, A4, A5, E, X, Y, scale: float | None = None, dtype=torch.float64) -> dict:
    """Rigorous running-error bounds for the SPEC §3 chain evaluated in ``dtype`` (any summation order):
    entrywise for ``c`` and ``G`` (d × d²), and for the scalar ``loss``.

    Each stage of SPEC §3 (z, f, h, c, q, p1, r, p2, p, G) carries an entrywise error bound; products
    propagate |Δx||y| + |x||Δy| + |Δx||Δy|, sums add γ_k times the sum of magnitudes (Higham §3, order-free),
    and the softmax adds its perturbation factor e^{2·max|Δz|} − 1 plus γ_{n²+5} for max, exp (faithful:
    ≤ 2u), sum and division. Inputs are float64 tensors of the exact values; the bound is returned as a
    float64 tensor of the shape of G (d × d²). Assumes no overflow/underflow beyond the tiny term.
    """
    from .products import kron

    t = [x.detach().to(torch.float64).abs() for x in (A1, A2, A3, A4, A5, E, X, Y)]
    a1, a2, a3, a4, a5, e, x, y = t
    n, d = a1.shape
    s = abs(1.0 / d if scale is None else scale)
    g = lambda k: gamma(k, dtype)  # noqa: E731 - local shorthand
    k23, k45 = kron(a2, a3), kron(a4, a5)
    z_mag = (a1 @ x @ k23.T) * s
    dz = g(d**3 + 3) * z_mag  # flat sum over (l, m, o): any evaluation order
    # exact values are needed for f, h, c; evaluate the chain itself in float64 for magnitudes
    from .gradient import objective_terms

    tm = objective_terms(*(v.detach().to(torch.float64) for v in (A1, A2, A3, A4, A5, E, X, Y)), scale=scale)
    f, h, c, q, p1, r, p2 = (v.abs() for v in (tm.f, tm.h, tm.c, tm.q, tm.p1, tm.r, tm.p2))
    eps_f = torch.expm1(2 * dz.amax(dim=1, keepdim=True)) + g(n * n + 5)
    df = eps_f * (1 + eps_f) * f
    dh = g(d * d + 1) * (k45 @ y)
    dc = df @ h + f @ dh + df @ dh + g(n * n + 1) * ((f + df) @ (h + dh) + e)
    dq = dc @ h.T + c @ dh.T + dc @ dh.T + g(d) * ((c + dc) @ (h + dh).T)
    dp1 = df * q + f * dq + df * dq + g(1) * (f + df) * (q + dq)
    dr = dp1.sum(1) + g(n * n) * (p1 + dp1).sum(1)
    dp2 = dr[:, None] * f + r[:, None] * df + dr[:, None] * df + g(1) * (r + dr)[:, None] * (f + df)
    dp = dp1 + dp2 + g(1) * (p1 + dp1 + p2 + dp2)
    p_mag = (p1 + dp1 + p2 + dp2)
    dG = s * (a1.T @ dp @ k23) * (1 + g(1)) + g(n**3 + 3) * s * (a1.T @ p_mag @ k23) + (n**3 + 3) * _TINY[_key(dtype)]
    # loss = ½Σc²: |Σĉ² − Σc²| <= Σ(2|c|Δc + Δc²), plus γ_{nd+2} for the squares, the sum and the halving
    dloss = 0.5 * (2 * c * dc + dc * dc).sum() + 0.5 * g(n * d + 2) * ((c + dc) ** 2).sum()
    return {"c": dc, "G": dG, "loss": dloss}


def attention_rounding_bounds(q, k1, k2, v1, v2, grad_out=None, *, scale: float | None = None, causal: bool = False, dtype=torch.float64) -> dict:
    """Rigorous running-error bounds for exact tensor attention evaluated in ``dtype`` (SPEC §2, L4).

    Single head ``(n, d)`` inputs holding the exact values (float64). Returns entrywise bounds for
    ``out`` and ``lse`` and, with ``grad_out``, for ``dq, dk1, dk2, dv1, dv2``. Scores carry
    γ_{d+2}·s·Σ|q k1 k2|; the softmax adds e^{2·max|Δz|} − 1 plus γ_{n1n2+5} (max, exp ≤ 2u, sum, divide);
    every later sum of m products of p factors adds γ_{m+p}·Σ|terms| with m the length of the flat sum, so the
    bound holds for any summation order or blocking (Higham §3), not only the reference's nested sums.
    Materialises n_q × n1 × n2 magnitudes: for test-sized inputs only.
    """
    q, k1, k2, v1, v2 = (x.detach().to(torch.float64) for x in (q, k1, k2, v1, v2))
    n_q, d = q.shape
    n1, n2 = k1.shape[0], k2.shape[0]
    s = 1.0 / d if scale is None else float(scale)
    g = lambda k: gamma(k, dtype)  # noqa: E731 - local shorthand
    tiny = _TINY[_key(dtype)]
    z = torch.einsum("il,al,bl->iab", q, k1, k2) * s
    z_mag = torch.einsum("il,al,bl->iab", q.abs(), k1.abs(), k2.abs()) * abs(s)
    if causal:
        i = torch.arange(n_q)[:, None, None]
        mask = (torch.arange(n1)[None, :, None] <= i) & (torch.arange(n2)[None, None, :] <= i)
        z = z.masked_fill(~mask, float("-inf"))
        z_mag = z_mag * mask
    dz = g(d + 2) * z_mag
    eps_p = torch.expm1(2 * dz.amax(dim=(1, 2))) + g(n1 * n2 + 5)  # relative error of each P entry
    p = torch.softmax(z.reshape(n_q, -1), -1).reshape(z.shape)
    vv = torch.einsum("ad,bd->abd", v1.abs(), v2.abs())
    pvv = torch.einsum("iab,abd->id", p, vv)
    d_out = (eps_p * (1 + g(n1 * n2 + 2)))[:, None] * pvv + g(n1 * n2 + 2) * pvv + tiny
    bounds = {"out": d_out, "lse": dz.amax(dim=(1, 2)) + g(n1 * n2 + 5) + g(2) * z_mag.amax(dim=(1, 2)) + tiny}
    if grad_out is None:
        return bounds
    do = grad_out.detach().to(torch.float64)
    out = torch.einsum("iab,ad,bd->id", p, v1, v2)
    dp = torch.einsum("id,ad,bd->iab", do, v1, v2)
    dp_err = g(d + 2) * torch.einsum("id,abd->iab", do.abs(), vv)
    delta = (do * out).sum(-1)
    delta_err = ((do.abs() * d_out).sum(-1) + g(d) * (do.abs() * (out.abs() + d_out)).sum(-1))[:, None, None]
    gap = (dp - delta[:, None, None]).abs()
    gap_err = dp_err + delta_err + g(1) * (gap + dp_err + delta_err)
    ds = p * gap
    ds_err = eps_p[:, None, None] * p * (gap + gap_err) + p * gap_err + g(2) * p * (1 + eps_p[:, None, None]) * (gap + gap_err)
    ds_hi, p_hi = ds + ds_err, p * (1 + eps_p[:, None, None])
    k = max(n1 * n2, n_q * n2, n_q * n1) + 4  # longest flat sum (pairs, or queries × one key) plus the factors
    a, b_, c = q.abs(), k1.abs(), k2.abs()
    sums = {
        "dq": (torch.einsum("iab,al,bl->il", ds_err, b_, c), torch.einsum("iab,al,bl->il", ds_hi, b_, c), abs(s)),
        "dk1": (torch.einsum("iab,il,bl->al", ds_err, a, c), torch.einsum("iab,il,bl->al", ds_hi, a, c), abs(s)),
        "dk2": (torch.einsum("iab,il,al->bl", ds_err, a, b_), torch.einsum("iab,il,al->bl", ds_hi, a, b_), abs(s)),
        "dv1": (torch.einsum("iab,il,bl->al", p * eps_p[:, None, None], do.abs(), v2.abs()),
                torch.einsum("iab,il,bl->al", p_hi, do.abs(), v2.abs()), 1.0),
        "dv2": (torch.einsum("iab,il,al->bl", p * eps_p[:, None, None], do.abs(), v1.abs()),
                torch.einsum("iab,il,al->bl", p_hi, do.abs(), v1.abs()), 1.0),
    }
    for name, (err, mag, sc) in sums.items():
        bounds[name] = sc * (err + g(k) * mag) + k * tiny
    return bounds
