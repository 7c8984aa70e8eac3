"""Floating-point error terms used as test tolerances (Higham, *Accuracy and Stability*, §3).

A sum of m products of p factors, evaluated in any order in a format with unit roundoff u, has
error at most γ_k · Σ|terms| with k = m + p − 2 and γ_k = k·u/(1 − k·u). Tests bound the distance
between two evaluations of an identity by the sum of both sides' γ-terms, never by a free rtol.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = [
    "unit_roundoff",
    "gamma",
    "smallest_normal",
    "rounding_bound",
    "objective_rounding_bounds",
    "objective_gradient_rounding_bound",
    "attention_rounding_bounds",
]

#: name → (unit roundoff u, smallest positive normal number), exact powers of two; a test checks them against
#: ``torch.finfo`` (eps/2, tiny). Keyed by name so that the certificate's bounds need neither torch nor numpy.
_FORMATS = {
    "float64": (2.0**-53, 2.0**-1022),
    "float32": (2.0**-24, 2.0**-126),
    "float16": (2.0**-11, 2.0**-14),
    "bfloat16": (2.0**-8, 2.0**-126),
}


def _format(dtype: Any) -> tuple[float, float]:
    """(u, tiny) of a dtype given by name ("float64"), as a torch dtype, or as anything ``numpy.dtype`` accepts."""
    if isinstance(dtype, str) and dtype in _FORMATS:
        name = dtype
    elif str(dtype).startswith("torch."):  # torch dtypes print as "torch.float64"
        name = str(dtype).removeprefix("torch.")
    else:
        import numpy as np

        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = None
    if name not in _FORMATS:
        raise ValueError(f"dtype must be float16, bfloat16, float32 or float64; got {dtype}")
    return _FORMATS[name]


def unit_roundoff(dtype: Any) -> float:
    """Unit roundoff u of a floating dtype: a name, a torch dtype or a numpy dtype (2^-53 for float64)."""
    return _format(dtype)[0]


def smallest_normal(dtype: Any) -> float:
    """The smallest positive normal number of a floating dtype (name, torch or numpy dtype): the gradual-underflow
    unit (2^-1022 for float64)."""
    return _format(dtype)[1]


def gamma(k: int, dtype) -> float:
    """Higham's γ_k = k·u / (1 − k·u), as the smallest float >= its exact value; requires k·u < 1."""
    u = unit_roundoff(dtype)
    if k < 0 or k * u >= 1:
        raise ValueError(f"gamma needs 0 <= k < 1/u = {1 / u:.3g}; got k={k}")
    exact = Fraction(k) * Fraction(u) / (1 - Fraction(k) * Fraction(u))
    value = float(exact)
    return value if Fraction(value) >= exact else math.nextafter(value, math.inf)


def rounding_bound(magnitude, ops: int, dtype):
    """Bound on |fl(x) − x| for x computed with at most ``ops`` rounding steps on every path.

    ``magnitude`` is the same expression evaluated on absolute values (elementwise).
    The absolute term ``ops · tiny`` covers gradual underflow of intermediate products.
    """
    return gamma(ops, dtype) * magnitude + ops * smallest_normal(dtype)


def objective_gradient_rounding_bound(A1, A2, A3, A4, A5, E, X, Y, scale: float | None = None, dtype="float64"):
    """Rigorous entrywise bound on |Ĝ − G| for L1 evaluated in ``dtype``: ``objective_rounding_bounds(...)["G"]``."""
    return objective_rounding_bounds(A1, A2, A3, A4, A5, E, X, Y, scale, dtype)["G"]


def objective_rounding_bounds(A1, A2, A3, A4, A5, E, X, Y, scale: float | None = None, dtype="float64") -> dict:
    """Rigorous running-error bounds for the SPEC §3 chain evaluated in ``dtype`` in any summation order:
    entrywise tensors for ``c`` (n × d) and ``G`` (d × d²), and a scalar tensor for ``loss``.

    Each stage (z, f, h, c, q, p1, r, p2, p, G) carries an entrywise bound Δx on |x̂ − x| for any evaluation x̂.
    A product obeys |x̂ŷ − xy| <= Δx·|ŷ| + |x|·Δy; a sum of m terms adds γ_m times the sum of magnitudes (Higham
    §3, order-free); the softmax adds e^{2·max Δz} − 1 for perturbed logits plus γ_{n²+5} for max, exp
    (faithful: <= 2u), sum and division. Magnitudes are taken as x̃ + 2Δx, where x̃ is this function's own
    float64 evaluation: an upper bound on the exact |x| and on |x̂| for every evaluation, so cancellation
    (c = f h − E, p = p1 − p2) is covered. The bound formulas themselves are evaluated in float64, so the
    result is scaled by (1 + γ_K)^4 with K the longest sum. Assumes no overflow and no underflow beyond the
    tiny term. Inputs hold the exact values (any float dtype; read as float64).
    """
    import torch

    from .gradient import objective_terms
    from .products import kron
    from .reference import resolve_scale

    exact = [v.detach().to(torch.float64) for v in (A1, A2, A3, A4, A5, E, X, Y)]
    a1, a2, a3, a4, a5, e, x, y = (v.abs() for v in exact)
    n, d = a1.shape
    s = abs(resolve_scale(scale, d))
    g = lambda k: gamma(k, dtype)  # noqa: E731 - local shorthand
    tiny = smallest_normal(dtype)
    k23, k45 = kron(a2, a3), kron(a4, a5)
    t = objective_terms(*exact, scale=scale)
    # logits z = s·A1 X (A2⊗A3)^T: a flat sum over d³ products of 4 factors (any order)
    K = max(n**3, d**3, n * n * d) + 8  # longest flat sum anywhere in the chain
    under = K * tiny  # gradual underflow: each operation adds at most u·tiny absolutely; K·tiny covers a stage
    dz = g(d**3 + 4) * s * (a1 @ x @ k23.T) + under
    eps_f = torch.expm1(2 * dz.amax(dim=1, keepdim=True)) + g(n * n + 5)
    df = eps_f / (1 - eps_f) * t.f.abs() + under
    fu = t.f.abs() + 2 * df
    hm = k45 @ y  # |A4⊗A5||Y|: h is a flat sum of d² products of 3 factors
    dh = g(d * d + 3) * hm + under
    hu = hm * (1 + g(d * d + 3))
    dc = df @ hu + fu @ dh + g(n * n + 1) * (fu @ hu + e) + under
    cu = t.c.abs() + 2 * dc
    dq = dc @ hu.T + cu @ dh.T + g(d) * (cu @ hu.T) + under
    qu = t.q.abs() + 2 * dq
    dp1 = df * qu + fu * dq + g(1) * fu * qu + under
    p1u = t.p1.abs() + 2 * dp1
    dr = dp1.sum(1) + g(n * n) * p1u.sum(1) + under
    ru = t.r.abs() + 2 * dr
    dp2 = dr[:, None] * fu + ru[:, None] * df + g(1) * ru[:, None] * fu + under
    p2u = t.p2.abs() + 2 * dp2
    dp = dp1 + dp2 + g(1) * (p1u + p2u) + under
    # G = s·A1^T p (A2⊗A3): a flat sum over n³ products of 4 factors
    dG = s * (a1.T @ dp @ k23) + g(n**3 + 4) * s * (a1.T @ (p1u + p2u) @ k23) + under
    # loss = ½Σc²: |Σĉ² − Σc²| <= Σ(2|c|Δc + Δc²) <= Σ 2·cu·Δc, plus γ_{nd+2} for the squares, the sum and ½
    dloss = (cu * dc).sum() + 0.5 * g(n * d + 2) * (cu * cu).sum() + under
    inflate = (1 + g(K)) ** 4  # the float64 evaluation of these formulas
    return {"c": dc * inflate, "G": dG * inflate, "loss": dloss * inflate}


def attention_rounding_bounds(q, k1, k2, v1, v2, grad_out=None, *, scale: float | None = None, causal: bool = False,
                              window=None, dtype="float64") -> dict:
    """Rigorous running-error bounds for exact tensor attention evaluated in ``dtype`` (SPEC §2, L4).

    Single head ``(n, d)`` inputs holding the exact values (read as float64). Returns entrywise bounds for
    ``out`` and ``lse`` and, with ``grad_out``, for ``dq, dk1, dk2, dv1, dv2``. Scores carry
    γ_{d+2}·s·Σ|q k1 k2|; the softmax adds e^{2·max|Δz|} − 1 plus γ_{n1n2+5} (max, exp <= 2u, sum, divide);
    every later sum of m products of p factors adds γ_{m+p}·Σ|terms| with m the length of the flat sum, so the
    bound holds for any summation order or blocking (Higham §3), not only the reference's nested sums.
    Magnitudes are taken as x̃ + 2Δx (x̃ this function's float64 evaluation), an upper bound on the exact |x|
    and on |x̂| of any evaluation, so cancellation in dP − δ is covered; the bound formulas' own float64
    evaluation is covered by a final factor (1 + γ_K)^4. Materialises n_q × n1 × n2 magnitudes: for test-sized
    inputs only.
    """
    import torch

    from .masks import check_window
    from .reference import causal_mask, resolve_scale

    q, k1, k2, v1, v2 = (x.detach().to(torch.float64) for x in (q, k1, k2, v1, v2))
    n_q, d = q.shape
    n1, n2 = k1.shape[0], k2.shape[0]
    s = resolve_scale(scale, d)
    g = lambda k: gamma(k, dtype)  # noqa: E731 - local shorthand
    tiny = smallest_normal(dtype)
    k_long = max(n1 * n2, n_q * n2, n_q * n1) + 6  # longest flat sum (pairs, or queries × one key) plus factors
    inflate = (1 + g(k_long + d)) ** 4
    under = (k_long + d) * tiny  # gradual underflow: each operation adds at most u·tiny absolutely
    z = torch.einsum("il,al,bl->iab", q, k1, k2) * s
    z_mag = torch.einsum("il,al,bl->iab", q.abs(), k1.abs(), k2.abs()) * abs(s)
    if causal:
        mask = causal_mask(0, n_q, n1, n2, z.device, check_window(window, causal))
        z = z.masked_fill(~mask, float("-inf"))
        z_mag = z_mag * mask
    dz = g(d + 2) * z_mag + under
    eps_p = torch.expm1(2 * dz.amax(dim=(1, 2))) + g(n1 * n2 + 5)  # relative error of each P entry
    p = torch.softmax(z.reshape(n_q, -1), -1).reshape(z.shape)
    dp_abs = (eps_p / (1 - eps_p))[:, None, None] * p + under  # |P̂ − P| for any evaluation
    pu = p + 2 * dp_abs
    vv = torch.einsum("ad,bd->abd", v1.abs(), v2.abs())
    d_out = torch.einsum("iab,abd->id", dp_abs, vv) + g(n1 * n2 + 2) * torch.einsum("iab,abd->id", pu, vv) + under
    d_lse = dz.amax(dim=(1, 2)) + g(n1 * n2 + 5) + g(2) * z_mag.amax(dim=(1, 2)) + under
    bounds = {"out": d_out * inflate, "lse": d_lse * inflate}
    if grad_out is None:
        return bounds
    do = grad_out.detach().to(torch.float64)
    out = torch.einsum("iab,ad,bd->id", p, v1, v2)
    out_u = out.abs() + 2 * d_out
    dp = torch.einsum("id,ad,bd->iab", do, v1, v2)
    dp_err = g(d + 2) * torch.einsum("id,abd->iab", do.abs(), vv) + under
    delta = (do * out).sum(-1)
    delta_err = ((do.abs() * d_out).sum(-1) + g(d) * (do.abs() * out_u).sum(-1) + under)[:, None, None]
    gap = (dp - delta[:, None, None]).abs()
    gap_err = dp_err + delta_err + g(1) * (gap + 2 * (dp_err + delta_err))
    gap_u = gap + 2 * gap_err
    ds_err = dp_abs * gap_u + pu * gap_err + g(2) * pu * gap_u  # dS = P ∘ (dP − δ)
    ds_u = p * gap + 2 * ds_err
    a, b_, c = q.abs(), k1.abs(), k2.abs()
    sums = {
        "dq": (torch.einsum("iab,al,bl->il", ds_err, b_, c), torch.einsum("iab,al,bl->il", ds_u, b_, c), abs(s)),
        "dk1": (torch.einsum("iab,il,bl->al", ds_err, a, c), torch.einsum("iab,il,bl->al", ds_u, a, c), abs(s)),
        "dk2": (torch.einsum("iab,il,al->bl", ds_err, a, b_), torch.einsum("iab,il,al->bl", ds_u, a, b_), abs(s)),
        "dv1": (torch.einsum("iab,il,bl->al", dp_abs, do.abs(), v2.abs()),
                torch.einsum("iab,il,bl->al", pu, do.abs(), v2.abs()), 1.0),
        "dv2": (torch.einsum("iab,il,al->bl", dp_abs, do.abs(), v1.abs()),
                torch.einsum("iab,il,al->bl", pu, do.abs(), v1.abs()), 1.0),
    }
    for name, (err, mag, sc) in sums.items():
        bounds[name] = (sc * (err + g(k_long) * mag) + under) * inflate
    return bounds
