"""Fast tensor attention and its training gradient through polynomial features (SPEC A1, A2, L8).

Neither path forms an n × n² object (P37). A1 (full or causal mask) is a chunked feature scan holding
O(C·r·d + r·d) numbers for C rows per step (r = C(g+d, d)), with a written backward; the normaliser is T4, the
numerator T3 (the causal mask is a product mask, so both become prefix sums). A2 holds O(n·r + r·d²) numbers and
uses T6/T12/T11. Coefficients are the shifted a_t of
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

from torch.autograd.function import once_differentiable

from .features import (
    DEFAULT_MEMORY_LIMIT_BYTES, check_feature_memory, check_scan_memory, exact_coefficients, feature_maps, feature_rank,
    monomials, query_weights,
)
from .gradient import factor_gradients
from .masks import Window, check_window
from .products import face_split
from .reference import resolve_scale
from .validation import check_attention_inputs, check_finite, check_positive_int

__all__ = [
    "SCAN_STEP_BYTES", "normalised_coefficients", "normaliser", "scan_chunk_size", "scan_row_bytes", "feature_scan",
    "fast_tensor_attention",
    "FastGradient", "fast_objective_gradient",
]

FAST_DTYPES = (torch.float32, torch.float64)
#: bytes the default chunk lets one scan step hold in its C × r × (d+1) tensors
SCAN_STEP_BYTES = 32 << 20


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


def scan_chunk_size(n: int, row_bytes: int, chunk_size: int | None = None) -> int:
    """Rows per scan step: ``chunk_size``, else as many as fit :data:`SCAN_STEP_BYTES` at ``row_bytes`` per row (the
    step's C × r × (d+1) tensors over the batch) but at least ⌈√n⌉, so the ⌈n/C⌉ carries the backward keeps never
    outnumber the rows of one step (memory O(C·r·d), never O(n·r·d)); at most n."""
    if chunk_size is not None:
        return min(n, check_positive_int("chunk_size", chunk_size))
    return max(1, min(n, max(SCAN_STEP_BYTES // max(row_bytes, 1), math.isqrt(max(n - 1, 0)) + 1)))


def scan_row_bytes(q: torch.Tensor, g: int) -> int:
    """Bytes one row adds to a scan step: six r × (d+1) tensors per batch element (:func:`scan_chunk_size`)."""
    return 6 * math.prod(q.shape[:-2]) * feature_rank(g, q.shape[-1]) * (q.shape[-1] + 1) * q.element_size()


def _augment(v: torch.Tensor) -> torch.Tensor:
    """[v, 1]: the ones column turns the numerator's sums into the normaliser's (T4 as the last column of T3)."""
    return torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)


def _spans(n: int, chunk: int) -> list[tuple[int, int]]:
    return [(lo, min(n, lo + chunk)) for lo in range(0, n, chunk)]


def _key_sums(k: torch.Tensor, v: torch.Tensor, g: int) -> torch.Tensor:
    """Per-row r × (d+1) outer products V_a ⊗ [v_a, 1] of one chunk: ``(..., C, r, d+1)``."""
    return monomials(k, g).unsqueeze(-1) * _augment(v).unsqueeze(-2)


def _prefix_sums(carry, terms: torch.Tensor) -> torch.Tensor:
    """carry + Σ_{a' ≤ a} terms[a'] within the chunk (rows: dimension -3): P_a for every row a of the chunk."""
    return carry + torch.cumsum(terms, dim=-3)


def _suffix_sums(carry, terms: torch.Tensor) -> torch.Tensor:
    """carry + Σ_{i ≥ a} terms[i] within the chunk (rows: dimension -3): the reverse scan's S_a."""
    return carry + torch.flip(torch.cumsum(torch.flip(terms, (-3,)), dim=-3), (-3,))


def _normalise(nd: torch.Tensor) -> torch.Tensor:
    """D̃⁻¹N from the scan's ``(..., n_q, d+1)`` (autograd gives the normaliser's gradient −⟨dO, Att̃⟩/D̃)."""
    return nd[..., :-1] / nd[..., -1:]


def _feature_vjp(outputs, inputs, grads):
    """Gradients of the feature maps of one chunk (autograd through :func:`monomials` only: O(C·r) memory)."""
    return torch.autograd.grad(outputs, inputs, grads)


class _FeatureScan(torch.autograd.Function):
    """N'_i = Σ_α U_iα P1_i[α] ∘ P2_i[α] with P1_i = Σ_{a∈Ω_i} V_a ⊗ [v1_a, 1], P2_i likewise (A1, T3/T4, L8).

    Ω_i = all rows, or a ≤ i (causal: prefix sums carried from chunk to chunk). Returns ``(..., n_q, d+1)``: the
    numerator N_i and, in the last column, the normaliser D̃_i. The backward is written out (a reverse scan that
    recomputes each chunk's features and prefix sums): autograd over the forward would keep every chunk's
    C × r × (d+1) prefix sums, O(n·r·d). Saved for backward: the five inputs only. Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, q, k1, k2, v1, v2, weights, g, causal, chunk):  # type: ignore[override]
        ctx.save_for_backward(q, k1, k2, v1, v2, weights)
        ctx.g, ctx.causal, ctx.chunk = g, causal, chunk
        if not causal:
            T = _total(k1, v1, g, chunk) * _total(k2, v2, g, chunk)
            return torch.cat([(monomials(q[..., lo:hi, :], g) * weights) @ T for lo, hi in _spans(q.shape[-2], chunk)],
                             dim=-2)
        out = []
        carry1 = carry2 = 0
        for lo, hi in _spans(q.shape[-2], chunk):
            P1 = _prefix_sums(carry1, _key_sums(k1[..., lo:hi, :], v1[..., lo:hi, :], g))
            P2 = _prefix_sums(carry2, _key_sums(k2[..., lo:hi, :], v2[..., lo:hi, :], g))
            out.append(torch.einsum("...ia,...iac,...iac->...ic", monomials(q[..., lo:hi, :], g) * weights, P1, P2))
            carry1, carry2 = P1[..., -1:, :, :], P2[..., -1:, :, :]  # (..., 1, r, d+1)
        return torch.cat(out, dim=-2)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        *x, weights = ctx.saved_tensors
        backward = _causal_backward if ctx.causal else _full_backward
        return (*backward(grad, *x, weights, ctx.g, ctx.chunk), None, None, None, None)


def _total(k: torch.Tensor, v: torch.Tensor, g: int, chunk: int) -> torch.Tensor:
    """Σ_a V_a ⊗ [v_a, 1] over all rows, chunk by chunk: ``(..., r, d+1)``."""
    total = 0
    for lo, hi in _spans(k.shape[-2], chunk):
        total = total + monomials(k[..., lo:hi, :], g).transpose(-1, -2) @ _augment(v[..., lo:hi, :])
    return total


def _leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().requires_grad_()


def _full_backward(grad, q, k1, k2, v1, v2, weights, g, chunk):
    """Backward of the unmasked scan: dU = G(T1∘T2)^T, dT1 = (U^T G)∘T2, dV_a = dT1 [v1_a, 1], dv1_a = V_a dT1."""
    d = q.shape[-1]
    T1, T2 = _total(k1, v1, g, chunk), _total(k2, v2, g, chunk)
    T = T1 * T2
    dq, UtG = [], 0
    for lo, hi in _spans(q.shape[-2], chunk):
        with torch.enable_grad():
            qc = _leaf(q[..., lo:hi, :])
            U = monomials(qc, g) * weights
        G = grad[..., lo:hi, :]
        dq.append(_feature_vjp(U, qc, G @ T.transpose(-1, -2))[0])
        UtG = UtG + U.detach().transpose(-1, -2) @ G
    grads = [torch.cat(dq, dim=-2)]
    for k, v, dT in ((k1, v1, UtG * T2), (k2, v2, UtG * T1)):
        dk, dv = [], []
        for lo, hi in _spans(k.shape[-2], chunk):
            with torch.enable_grad():
                kc = _leaf(k[..., lo:hi, :])
                V = monomials(kc, g)
            dk.append(_feature_vjp(V, kc, _augment(v[..., lo:hi, :]) @ dT.transpose(-1, -2))[0])
            dv.append((V.detach() @ dT)[..., :d])
        grads += [torch.cat(dk, dim=-2), torch.cat(dv, dim=-2)]
    dq, dk1, dv1, dk2, dv2 = grads
    return dq, dk1, dk2, dv1, dv2


def _causal_backward(grad, q, k1, k2, v1, v2, weights, g, chunk):
    """Reverse scan of the causal forward (A1 with prefix sums).

    Pass 1 recomputes the carries P1, P2 at each chunk start (⌈n/C⌉ of them, at most C by :func:`scan_chunk_size`).
    Pass 2 walks the chunks backwards with suffix sums S_a = Σ_{i≥a} dP_i, dP1_i = (G_i ⊗ U_i) ∘ P2_i:
    dU_i = Σ_c G_ic P1_i ∘ P2_i, dV_a = S1_a [v1_a, 1], dv1_a = V_a S1_a, and the feature VJPs give dq, dk1, dk2.
    """
    d, n = q.shape[-1], q.shape[-2]
    spans = _spans(n, chunk)
    carries = []
    carry1 = carry2 = 0
    for lo, hi in spans:
        carries.append((carry1, carry2))
        carry1 = carry1 + _key_sums(k1[..., lo:hi, :], v1[..., lo:hi, :], g).sum(-3, keepdim=True)
        carry2 = carry2 + _key_sums(k2[..., lo:hi, :], v2[..., lo:hi, :], g).sum(-3, keepdim=True)
    out = {name: [None] * len(spans) for name in ("dq", "dk1", "dk2", "dv1", "dv2")}
    S1 = S2 = 0
    for j in range(len(spans) - 1, -1, -1):
        lo, hi = spans[j]
        with torch.enable_grad():
            qc, k1c, k2c = (_leaf(x[..., lo:hi, :]) for x in (q, k1, k2))
            U, V, W = monomials(qc, g) * weights, monomials(k1c, g), monomials(k2c, g)
        e1, e2 = _augment(v1[..., lo:hi, :]), _augment(v2[..., lo:hi, :])
        P1 = _prefix_sums(carries[j][0], V.detach().unsqueeze(-1) * e1.unsqueeze(-2))
        P2 = _prefix_sums(carries[j][1], W.detach().unsqueeze(-1) * e2.unsqueeze(-2))
        G = grad[..., lo:hi, :].unsqueeze(-2)  # (..., C, 1, d+1)
        GU = G * U.detach().unsqueeze(-1)  # (..., C, r, d+1)
        dP1, dP2 = GU * P2, GU * P1
        suffix1, suffix2 = _suffix_sums(S1, dP1), _suffix_sums(S2, dP2)
        S1, S2 = suffix1[..., :1, :, :], suffix2[..., :1, :, :]
        dU = (G * P1 * P2).sum(-1)
        dV = (suffix1 * e1.unsqueeze(-2)).sum(-1)
        dW = (suffix2 * e2.unsqueeze(-2)).sum(-1)
        dq, dk1, dk2 = _feature_vjp((U, V, W), (qc, k1c, k2c), (dU, dV, dW))
        out["dq"][j], out["dk1"][j], out["dk2"][j] = dq, dk1, dk2
        out["dv1"][j] = (suffix1 * V.detach().unsqueeze(-1)).sum(-2)[..., :d]
        out["dv2"][j] = (suffix2 * W.detach().unsqueeze(-1)).sum(-2)[..., :d]
    return tuple(torch.cat(out[name], dim=-2) for name in ("dq", "dk1", "dk2", "dv1", "dv2"))


def feature_scan(
    q: torch.Tensor,
    k1: torch.Tensor,
    k2: torch.Tensor,
    v1: torch.Tensor,
    v2: torch.Tensor,
    coefficients: Sequence[Real],
    *,
    scale: float,
    causal: bool = False,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """``(..., n_q, d+1)``: the A1 numerator N and, last column, the normaliser D̃ (no input checks; see
    :func:`fast_tensor_attention`). Coefficients are normalised by max|a_t| (L6: the scale cancels in D̃⁻¹N)."""
    a = normalised_coefficients(coefficients)
    weights = query_weights(a, scale, q.shape[-1], q.dtype, q.device)
    g = len(a) - 1
    return _FeatureScan.apply(q, k1, k2, v1, v2, weights, g, causal,
                              scan_chunk_size(q.shape[-2], scan_row_bytes(q, g), chunk_size))


def fast_tensor_attention(
    q: torch.Tensor,
    k1: torch.Tensor,
    k2: torch.Tensor,
    v1: torch.Tensor,
    v2: torch.Tensor,
    coefficients: Sequence[Real],
    *,
    scale: float | None = None,
    causal: bool = False,
    window: Window | None = None,
    chunk_size: int | None = None,
    memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT_BYTES,
) -> torch.Tensor:
    """A1: Att̃ = D̃⁻¹N with D̃ = U((V^T 1)∘(W^T 1)) (T4) and N = U((V^T V1)∘(W^T V2)) (T3); shapes ``(..., n, d)``.

    Causal (a ≤ i and b ≤ i, a product mask): the sums over a and b become prefix sums, carried chunk to chunk
    (:class:`_FeatureScan`). O(n·r·d) time and O(C·r·d + r·d) memory for C rows per step (``chunk_size``, default
    :func:`scan_chunk_size`), never an n × n² object nor n × r × d. Differentiable through a written reverse scan
    (gradients in Q, K1, K2, V1, V2; once). Grouped-query heads: the key heads are repeated to the query heads.
    ``ValueError`` for bad shapes, dtypes other than float32/float64, non-finite values, a sliding ``window``
    (prefix-sum differences would cancel: not supported with a proved bound), or scan memory over
    ``memory_limit_bytes``.
    """
    group = check_attention_inputs(q, k1, k2, v1, v2, causal=causal, window=window)
    if check_window(window, causal) is not None:
        raise ValueError(
            f"window={tuple(window)!r}: the polynomial path supports full and causal masks only (a window's prefix-sum "
            f"differences cancel, and no bound is proved for them); use the exact path for sliding windows")
    _check_dtype("q", q)
    s = resolve_scale(scale, q.shape[-1])
    a = normalised_coefficients(coefficients)
    chunk = scan_chunk_size(q.shape[-2], scan_row_bytes(q, len(a) - 1), chunk_size)
    if group > 1:
        k1, k2, v1, v2 = (x.repeat_interleave(group, dim=-3) for x in (k1, k2, v1, v2))
    check_scan_memory(q.shape[-2], max(k1.shape[-2], k2.shape[-2]), len(a) - 1, q.shape[-1], chunk, q.element_size(),
                      math.prod(q.shape[:-2]), memory_limit_bytes)
    return _normalise(feature_scan(q, k1, k2, v1, v2, a, scale=s, causal=causal, chunk_size=chunk))


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
