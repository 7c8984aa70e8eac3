"""Oracles: mpmath at a stated precision, rigorous Arb enclosures (python-flint), and an einsum loss for autograd.

Float inputs convert exactly (binary floats to mpf/arb, no decimal round trip). Precision is explicit:
every function takes ``dps`` (decimal digits, mpmath) or ``prec`` (bits, Arb) and restores the
global context afterwards. SPEC §2 (forward, LSE), §3 (loss, L1 gradient, finite differences). Every oracle is
written here from the SPEC formulas (index loops, ``einsum``) and shares no code with what it checks.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import mpmath
import numpy as np
import torch

__all__ = [
    "to_mp",
    "mp_attention",
    "mp_loss",
    "mp_gradient",
    "mp_finite_difference_gradient",
    "einsum_loss",
    "mp_attention_vjp",
    "ArbEnclosure",
    "arb_attention",
]


def _check_precision(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return value


def _as_float64(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        if not x.dtype.is_floating_point:
            raise ValueError(f"{name} must be a floating tensor; got {x.dtype}")
        arr = x.detach().to("cpu", torch.float64).numpy()  # every torch float format embeds exactly in float64
    else:
        arr = np.asarray(x)
        if arr.dtype.kind not in "fiu":
            raise ValueError(f"{name} must be a real numeric array; got dtype {arr.dtype}")
        arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite (no NaN or Inf entries)")
    return arr


def to_mp(x: Any, name: str = "x") -> np.ndarray:
    """An exact copy of a float array/tensor as a numpy object array of mpf (binary value kept exactly).

    An object array (of mpf or ints) is copied entry by entry at its full value.
    """
    if isinstance(x, np.ndarray) and x.dtype == object:
        return np.vectorize(mpmath.mpf, otypes=[object])(x) if x.size else x.copy()
    arr = _as_float64(x, name)
    out = np.empty(arr.shape, dtype=object)
    for idx in np.ndindex(arr.shape):
        out[idx] = mpmath.mpf(float(arr[idx]))
    return out


def _scale_mp(scale: Any, d: int) -> mpmath.mpf:
    return mpmath.mpf(1) / d if scale is None else mpmath.mpf(scale)


def _visible_pairs(i: int, n1: int, n2: int, causal: bool, window) -> list[tuple[int, int]]:
    """SPEC §2 written out: every pair; causal a <= i and b <= i; window (w1, w2): also a > i − w1, b > i − w2."""
    w1, w2 = window if window is not None else (None, None)
    return [(a, b) for a in range(n1) for b in range(n2)
            if not causal or (a <= i and b <= i and (w1 is None or a > i - w1) and (w2 is None or b > i - w2))]


def _check_window(window, causal: bool) -> None:
    if window is None:
        return
    if not causal or len(window) != 2 or any(w is not None and (not isinstance(w, int) or w < 1) for w in window):
        raise ValueError(f"window must be a pair of (None or int >= 1) and needs causal=True; got {window!r}")


def _key_index(idx: tuple, q_batch: tuple, kv_batch: tuple) -> tuple:
    """The keys' batch index of query batch index ``idx``: head h reads key head h // g (grouped-query heads)."""
    if q_batch == kv_batch:
        return idx
    if len(q_batch) != len(kv_batch) or q_batch[:-1] != kv_batch[:-1] or q_batch[-1] % kv_batch[-1]:
        raise ValueError(f"q batch {q_batch} and key batch {kv_batch} must be equal or differ by a head-group factor")
    return (*idx[:-1], idx[-1] // (q_batch[-1] // kv_batch[-1]))


def _attention_head(q, k1, k2, v1, v2, s, causal, window=None):
    n_q, n1, n2 = q.shape[0], k1.shape[0], k2.shape[0]
    out = np.empty((n_q, q.shape[1]), dtype=object)
    lse = np.empty(n_q, dtype=object)
    for i in range(n_q):
        qk1 = q[i][None, :] * k1  # (n1, d)
        scores = (qk1 @ k2.T) * s  # (n1, n2), T10
        pairs = _visible_pairs(i, n1, n2, causal, window)
        m = max(scores[a, b] for a, b in pairs)
        total = mpmath.fsum(mpmath.exp(scores[a, b] - m) for a, b in pairs)
        lse[i] = m + mpmath.log(total)
        acc = np.zeros(q.shape[1], dtype=object)
        for a, b in pairs:
            acc = acc + mpmath.exp(scores[a, b] - lse[i]) * (v1[a] * v2[b])
        out[i] = acc
    return out, lse


def mp_attention(q, k1, k2, v1, v2, *, scale: float | None = None, causal: bool = False, window=None,
                 dps: int = 50):
    """Tensor attention (SPEC §2) at ``dps`` digits: ``(out, lse)`` as object arrays of mpf, shapes ``(..., n, d)``, ``(..., n)``.

    ``window=(w1, w2)`` with causal: pairs i − w1 < a <= i, i − w2 < b <= i. q may have a multiple of the keys'
    heads in dimension -3 (grouped-query heads: head h reads key head h // g).
    """
    _check_precision("dps", dps)
    _check_window(window, causal)
    arrs = [to_mp(x, name) for x, name in zip((q, k1, k2, v1, v2), ("q", "k1", "k2", "v1", "v2"))]
    if any(a.ndim < 2 for a in arrs) or len({a.shape[:-2] for a in arrs[1:]}) != 1:
        raise ValueError("q, k1, k2, v1, v2 must have shape (..., n, d); k1, k2, v1, v2 equal batch dimensions")
    if len({a.shape[-1] for a in arrs}) != 1:
        raise ValueError("q, k1, k2, v1, v2 must share the head dimension d")
    if causal and not (arrs[0].shape[-2] == arrs[1].shape[-2] == arrs[2].shape[-2]):
        raise ValueError("causal=True needs n_q = n1 = n2")
    batch, kv_batch = arrs[0].shape[:-2], arrs[1].shape[:-2]
    out = np.empty(arrs[0].shape, dtype=object)
    lse = np.empty(arrs[0].shape[:-1], dtype=object)
    with mpmath.workdps(dps):
        s = _scale_mp(scale, arrs[0].shape[-1])
        for idx in np.ndindex(batch):
            kdx = _key_index(idx, batch, kv_batch)
            out[idx], lse[idx] = _attention_head(arrs[0][idx], *(a[kdx] for a in arrs[1:]), s, causal, window)
    return out, lse


def mp_attention_vjp(
    q, k1, k2, v1, v2, grad_out, *, scale: float | None = None, causal: bool = False, window=None, dps: int = 50
) -> tuple[np.ndarray, ...]:
    """``(dQ, dK1, dK2, dV1, dV2)`` of ⟨dO, Att⟩ by ``mpmath.diff`` per input coordinate (single head; checks L4)."""
    _check_precision("dps", dps)
    _check_window(window, causal)
    arrs = [to_mp(x, nm) for x, nm in zip((q, k1, k2, v1, v2), ("q", "k1", "k2", "v1", "v2"))]
    dout = to_mp(grad_out, "grad_out")
    if any(a.ndim != 2 for a in arrs) or dout.shape != arrs[0].shape:
        raise ValueError("mp_attention_vjp takes single-head (n, d) inputs and grad_out shaped like q")
    grads = []
    with mpmath.workdps(dps):
        s = _scale_mp(scale, arrs[0].shape[1])
        for j, x in enumerate(arrs):
            g = np.empty(x.shape, dtype=object)
            for idx in np.ndindex(x.shape):

                def pairing(t, j=j, idx=idx):
                    moved = [a.copy() for a in arrs]
                    moved[j][idx] = t
                    return (_attention_head(*moved, s, causal, window)[0] * dout).sum()

                g[idx] = mpmath.diff(pairing, x[idx])
            grads.append(g)
    return tuple(grads)


def _objective_mp(A1, A2, A3, A4, A5, E, X, Y):
    names = ("A1", "A2", "A3", "A4", "A5", "E", "X", "Y")
    args = [to_mp(x, nm) for x, nm in zip((A1, A2, A3, A4, A5, E, X, Y), names)]
    n, d = args[0].shape
    expected = {**{k: (n, d) for k in names[:6]}, "X": (d, d * d), "Y": (d * d, d)}
    for nm, a in zip(names, args):
        if a.shape != expected[nm]:
            raise ValueError(f"{nm} must have shape {expected[nm]} (n={n}, d={d}); got {a.shape}")
    return args


def _spec_objective(A1, A2, A3, A4, A5, E, X, Y, s):
    """SPEC §3 by index loops (independent of ``verified_ta.gradient``): the softmax f[j][a][b] of
    S[j,(a,b)] = s·Σ_{l,m,o} A1[j,l] X[l, m·d+o] A2[a,m] A3[b,o], the values h[a][b][o] =
    Σ_{l,m} A4[a,l] A5[b,m] Y[l·d+m, o] and the residual c[j][o] = Σ_{a,b} f[j][a][b] h[a][b][o] − E[j,o]."""
    n, d = A1.shape
    fsum = mpmath.fsum
    ax = [[[fsum(A1[j, l] * X[l, m * d + o] for l in range(d)) for o in range(d)] for m in range(d)] for j in range(n)]
    f = []
    for j in range(n):
        scores = [[s * fsum(ax[j][m][o] * A2[a, m] * A3[b, o] for m in range(d) for o in range(d)) for b in range(n)]
                  for a in range(n)]
        top = max(max(row) for row in scores)
        u = [[mpmath.exp(z - top) for z in row] for row in scores]
        total = fsum(x for row in u for x in row)
        f.append([[x / total for x in row] for row in u])
    h = [[[fsum(A4[a, l] * A5[b, m] * Y[l * d + m, o] for l in range(d) for m in range(d)) for o in range(d)]
          for b in range(n)] for a in range(n)]
    c = [[fsum(f[j][a][b] * h[a][b][o] for a in range(n) for b in range(n)) - E[j, o] for o in range(d)]
         for j in range(n)]
    return f, h, c


def mp_loss(A1, A2, A3, A4, A5, E, X, Y, *, scale: Any = None, dps: int | None = 50) -> mpmath.mpf:
    """Loss(X) = ½‖f h − E‖² of SPEC §3 at ``dps`` digits, by index loops (shares no code with ``gradient``).

    ``dps=None`` keeps the caller's working precision (e.g. inside ``mpmath.diff``, which raises it)."""
    args = _objective_mp(A1, A2, A3, A4, A5, E, X, Y)
    with mpmath.workdps(_check_precision("dps", dps)) if dps is not None else contextlib.nullcontext():
        _, _, c = _spec_objective(*args, _scale_mp(scale, args[0].shape[1]))
        return mpmath.fsum(x * x for row in c for x in row) / 2


def mp_gradient(A1, A2, A3, A4, A5, E, X, Y, *, scale: float | None = None, dps: int = 50) -> np.ndarray:
    """dLoss/dX (d × d² object array) at ``dps`` digits from the SPEC §3 table by index loops, sharing no code with
    ``verified_ta.gradient``: q[j,a,b] = Σ_o c[j,o] h[a,b,o], r[j] = Σ_{a,b} f q, p = f∘(q − r) and
    G[l, m·d+o] = s·Σ_{j,a,b} A1[j,l] p[j,a,b] A2[a,m] A3[b,o] (L1)."""
    _check_precision("dps", dps)
    args = _objective_mp(A1, A2, A3, A4, A5, E, X, Y)
    A1m, A2m, A3m = args[:3]
    n, d = A1m.shape
    fsum = mpmath.fsum
    with mpmath.workdps(dps):
        s = _scale_mp(scale, d)
        f, h, c = _spec_objective(*args, s)
        p = []
        for j in range(n):
            q = [[fsum(c[j][o] * h[a][b][o] for o in range(d)) for b in range(n)] for a in range(n)]
            r = fsum(f[j][a][b] * q[a][b] for a in range(n) for b in range(n))
            p.append([[f[j][a][b] * (q[a][b] - r) for b in range(n)] for a in range(n)])
        grad = np.empty((d, d * d), dtype=object)
        for l, m, o in np.ndindex(d, d, d):
            grad[l, m * d + o] = s * fsum(A1m[j, l] * p[j][a][b] * A2m[a, m] * A3m[b, o]
                                          for j in range(n) for a in range(n) for b in range(n))
        return grad


def mp_finite_difference_gradient(
    A1, A2, A3, A4, A5, E, X, Y, *, scale: float | None = None, dps: int = 50
) -> np.ndarray:
    """dLoss/dX by ``mpmath.diff`` of the loss written by index loops (:func:`mp_loss`'s), one coordinate at a time."""
    _check_precision("dps", dps)
    args = _objective_mp(A1, A2, A3, A4, A5, E, X, Y)
    Xmp = args[6]
    grad = np.empty(Xmp.shape, dtype=object)
    with mpmath.workdps(dps):
        s = _scale_mp(scale, args[0].shape[1])
        for idx in np.ndindex(Xmp.shape):

            def loss_at(t, idx=idx):
                Xt = Xmp.copy()
                Xt[idx] = t
                _, _, c = _spec_objective(*args[:6], Xt, args[7], s)
                return mpmath.fsum(x * x for row in c for x in row) / 2

            grad[idx] = mpmath.diff(loss_at, Xmp[idx])
    return grad


def einsum_loss(A1, A2, A3, A4, A5, E, X, Y, *, scale: float | None = None) -> torch.Tensor:
    """Loss(X) of SPEC §3 in torch by ``einsum`` (differentiable; for autograd checks), sharing no code with
    ``verified_ta.gradient``: S[j,a,b] = s·Σ A1[j,l] X[l,(m,o)] A2[a,m] A3[b,o], f = softmax over (a, b),
    h[a,b,o] = Σ A4[a,l] A5[b,m] Y[(l,m),o], c = Σ_{a,b} f h − E."""
    n, d = A1.shape
    s = 1.0 / d if scale is None else scale
    scores = torch.einsum("jl,lmo,am,bo->jab", A1, X.reshape(d, d, d), A2, A3) * s
    f = torch.softmax(scores.reshape(n, n * n), dim=-1).reshape(n, n, n)
    h = torch.einsum("al,bm,lmo->abo", A4, A5, Y.reshape(d, d, d))
    c = torch.einsum("jab,abo->jo", f, h) - E
    return 0.5 * (c * c).sum()


@dataclass
class ArbEnclosure:
    """Rigorous balls: every true value lies in ``[mid − rad, mid + rad]`` (rad rounded up to float)."""

    mid: np.ndarray
    rad: np.ndarray
    balls: np.ndarray  # object array of flint.arb


def _enclosure(balls: np.ndarray) -> ArbEnclosure:
    mid = np.vectorize(lambda b: float(b.mid()), otypes=[np.float64])(balls)
    # float(mid) may be off by half an ulp of the midpoint: widen the radius to cover it, rounding up.
    rad = np.vectorize(
        lambda b: math.nextafter(float(b.rad()) + math.ulp(float(b.mid())), math.inf), otypes=[np.float64]
    )(balls)
    return ArbEnclosure(mid=mid, rad=rad, balls=balls)


def arb_attention(
    q, k1, k2, v1, v2, *, scale: float | None = None, causal: bool = False, window=None, prec: int = 128
) -> tuple[ArbEnclosure, ArbEnclosure]:
    """Rigorous enclosures of tensor attention's output and natural-log LSE (SPEC §2), single head ``(n, d)``."""
    import flint

    _check_precision("prec", prec)
    _check_window(window, causal)
    arrs = [_as_float64(x, nm) for x, nm in zip((q, k1, k2, v1, v2), ("q", "k1", "k2", "v1", "v2"))]
    if any(a.ndim != 2 for a in arrs) or len({a.shape[1] for a in arrs}) != 1:
        raise ValueError("arb_attention takes single-head (n, d) inputs sharing d")
    if causal and not (arrs[0].shape[0] == arrs[1].shape[0] == arrs[2].shape[0]):
        raise ValueError("causal=True needs n_q = n1 = n2")
    with flint.ctx.workprec(prec):
        q_, k1_, k2_, v1_, v2_ = (np.vectorize(flint.arb, otypes=[object])(a) for a in arrs)
        s = flint.arb(1) / q_.shape[1] if scale is None else flint.arb(float(scale))
        n_q, n1, n2 = q_.shape[0], k1_.shape[0], k2_.shape[0]
        out = np.empty(q_.shape, dtype=object)
        lse = np.empty(n_q, dtype=object)
        for i in range(n_q):
            pairs = _visible_pairs(i, n1, n2, causal, window)
            scores = {ab: sum((q_[i] * k1_[ab[0]] * k2_[ab[1]]).tolist(), flint.arb(0)) * s for ab in pairs}
            weights = {ab: z.exp() for ab, z in scores.items()}
            total = sum(weights.values(), flint.arb(0))
            lse[i] = total.log()
            out[i] = sum(((weights[ab] / total) * (v1_[ab[0]] * v2_[ab[1]]) for ab in pairs), np.zeros(q_.shape[1], dtype=object) + flint.arb(0))
        return _enclosure(out), _enclosure(lse)
