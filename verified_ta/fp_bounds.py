"""Floating-point error terms used as test tolerances (Higham, *Accuracy and Stability*, §3).

A sum of m products of p factors, evaluated in any order in a format with unit roundoff u, has
error at most γ_k · Σ|terms| with k = m + p − 2 and γ_k = k·u/(1 − k·u). Tests bound the distance
between two evaluations of an identity by the sum of both sides' γ-terms, never by a free rtol.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["unit_roundoff", "gamma", "rounding_bound"]

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
