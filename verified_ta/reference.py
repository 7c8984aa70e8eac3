"""Exact tensor attention in torch (SPEC §2) with the L4 backward, chunked over queries.

Memory is O(chunk · n1 · n2) for the scores of one query chunk; no n_q × n1 × n2 tensor is held.
This is the readable definition the faster paths are tested against, and the same-dtype reference
of the FlashAttention tolerance rule. Masks (causal, sliding window) come from :mod:`verified_ta.masks`;
grouped-query heads (q heads a multiple g of the keys') run as broadcast views, never copies of K/V.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch

from .masks import Window, check_window, pair_mask, query_pair_mask
from .validation import check_attention_inputs, check_positive_int

__all__ = [
    "default_scale",
    "resolve_scale",
    "causal_mask",
    "tensor_attention_forward",
    "tensor_attention_backward",
    "tensor_attention_reference",
    "ReferenceTensorAttention",
]

#: score elements per query chunk (4 Mi: 32 MiB of float64 scores, a few times that in temporaries)
CHUNK_ELEMENTS = 1 << 22


def default_scale(d: int) -> float:
    """The papers' softmax scale s = 1/d (SPEC §2)."""
    return 1.0 / d


def resolve_scale(scale: float | None, d: int) -> float:
    """``scale`` as a finite float, defaulting to 1/d."""
    if scale is None:
        return default_scale(d)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"scale must be a finite real number (or None for 1/d); got {scale!r}")
    return float(scale)


def _chunks(n_q: int, n1: int, n2: int, chunk_size: int | None) -> Iterator[tuple[int, int]]:
    c = check_positive_int("chunk_size", chunk_size) if chunk_size is not None else max(1, CHUNK_ELEMENTS // (n1 * n2))
    for start in range(0, n_q, c):
        yield start, min(n_q, start + c)


def causal_mask(start: int, stop: int, n1: int, n2: int, device: torch.device,
                window: Window | None = None) -> torch.Tensor:
    """True where the pair (a, b) is visible to query i: a <= i and b <= i, within ``window`` (SPEC §2)."""
    return pair_mask(start, stop, n1, n2, device, window)


def _chunk_mask(start: int, stop: int, n1: int, n2: int, device: torch.device, causal: bool, window: Window | None,
                query_positions: torch.Tensor | None) -> torch.Tensor | None:
    """The mask of query rows start … stop − 1: at those positions, or at ``query_positions[start:stop]``."""
    if not causal:
        return None
    if query_positions is None:
        return causal_mask(start, stop, n1, n2, device, window)
    return query_pair_mask(query_positions[start:stop], n1, n2, window)


def _grouped(q: torch.Tensor, group: int) -> torch.Tensor:
    """q ``(..., H, n, d)`` as ``(..., H/g, g, n, d)``, so keys ``(..., H/g, 1, n, d)`` broadcast over the group."""
    return q if group == 1 else q.unflatten(-3, (q.shape[-3] // group, group))


def _kv_view(x: torch.Tensor, group: int) -> torch.Tensor:
    return x if group == 1 else x.unsqueeze(-3)


def _group_sum(g: torch.Tensor, group: int) -> torch.Tensor:
    """A key gradient summed over the query heads of its group (the adjoint of the broadcast)."""
    return g if group == 1 else g.sum(-3)


def _chunk_scores(
    qc: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor, scale: float, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores S[i,a,b] = s·⟨q_i ∘ k1_a, k2_b⟩ for a query chunk (T10), and the Hadamard q_i ∘ k1_a."""
    qk1 = qc[..., :, None, :] * k1[..., None, :, :]  # (..., c, n1, d)
    s = (qk1 @ k2.transpose(-1, -2).unsqueeze(-3)) * scale  # (..., c, n1, n2)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return s, qk1


def tensor_attention_forward(
    q: torch.Tensor,
    k1: torch.Tensor,
    k2: torch.Tensor,
    v1: torch.Tensor,
    v2: torch.Tensor,
    *,
    scale: float | None = None,
    causal: bool = False,
    window: Window | None = None,
    chunk_size: int | None = None,
    query_positions: torch.Tensor | None = None,
    check_values: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact forward: ``(out, lse)`` with out ``(..., n_q, d)`` and natural-log LSE ``(..., n_q)``.

    Row max subtracted before exp (stable); computed in the inputs' dtype. ``query_positions`` (causal): the
    sequence positions of q's rows when q is a shard of the queries (default 0 … n_q − 1). ``check_values=False``
    skips the NaN/Inf scan (callers that already validated, or CUDA callers avoiding a host-device synchronisation).
    """
    group = check_attention_inputs(q, k1, k2, v1, v2, causal=causal, window=window, query_positions=query_positions,
                                   check_values=check_values)
    window = check_window(window, causal)
    scale = resolve_scale(scale, q.shape[-1])
    q_shape = q.shape
    q = _grouped(q, group)
    k1, k2, v1, v2 = (_kv_view(x, group) for x in (k1, k2, v1, v2))
    n_q, n1, n2 = q.shape[-2], k1.shape[-2], k2.shape[-2]
    out = torch.empty_like(q)
    lse = torch.empty(q.shape[:-1], dtype=q.dtype, device=q.device)
    v2u = v2.unsqueeze(-3)
    for start, stop in _chunks(n_q, n1, n2, chunk_size):
        mask = _chunk_mask(start, stop, n1, n2, q.device, causal, window, query_positions)
        s, _ = _chunk_scores(q[..., start:stop, :], k1, k2, scale, mask)
        m = s.amax(dim=(-2, -1), keepdim=True)
        e = torch.exp(s - m)
        total = e.sum(dim=(-2, -1), keepdim=True)
        p = e / total
        out[..., start:stop, :] = ((p @ v2u) * v1.unsqueeze(-3)).sum(-2)
        lse[..., start:stop] = (m + torch.log(total))[..., 0, 0]
    return out.reshape(q_shape), lse.reshape(q_shape[:-1])


def tensor_attention_backward(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k1: torch.Tensor,
    k2: torch.Tensor,
    v1: torch.Tensor,
    v2: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    *,
    scale: float,
    causal: bool = False,
    window: Window | None = None,
    grad_lse: torch.Tensor | None = None,
    chunk_size: int | None = None,
    query_positions: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    """SPEC L4: ``(dQ, dK1, dK2, dV1, dV2)`` from upstream dO (and optionally d lse).

    δ_i = ⟨dO_i, O_i⟩, dP = ⟨dO_i, V1[a]∘V2[b]⟩, dS = P∘(dP − δ + d lse_i); P recomputed from the saved LSE.
    With grouped-query heads the key gradients sum over the query heads of each group. ``query_positions``: as
    in :func:`tensor_attention_forward`; the key gradients are then the partial sums over this shard of queries.
    """
    group = check_attention_inputs(q, k1, k2, v1, v2, causal=causal, window=window, check_values=False,
                                   query_positions=query_positions)
    window = check_window(window, causal)
    q_shape = q.shape
    q, grad_out, out = (_grouped(x, group) for x in (q, grad_out, out))
    lse = lse if group == 1 else lse.unflatten(-2, (lse.shape[-2] // group, group))
    if grad_lse is not None and group > 1:
        grad_lse = grad_lse.unflatten(-2, (grad_lse.shape[-2] // group, group))
    k1, k2, v1, v2 = (_kv_view(x, group) for x in (k1, k2, v1, v2))
    n_q, n1, n2 = q.shape[-2], k1.shape[-2], k2.shape[-2]
    dq = torch.zeros_like(q)
    dk1, dk2, dv1, dv2 = (torch.zeros_like(t) for t in (k1, k2, v1, v2))
    delta = (grad_out * out).sum(-1)
    if grad_lse is not None:
        delta = delta - grad_lse
    v2t = v2.transpose(-1, -2).unsqueeze(-3)
    for start, stop in _chunks(n_q, n1, n2, chunk_size):
        sl = slice(start, stop)
        mask = _chunk_mask(start, stop, n1, n2, q.device, causal, window, query_positions)
        qc, doc = q[..., sl, :], grad_out[..., sl, :]
        s, qk1 = _chunk_scores(qc, k1, k2, scale, mask)
        p = torch.exp(s - lse[..., sl, None, None])
        dov1 = doc[..., :, None, :] * v1[..., None, :, :]  # (..., c, n1, d)
        dp = dov1 @ v2t
        ds = p * (dp - delta[..., sl, None, None])
        ds_k2 = ds @ k2.unsqueeze(-3)  # (..., c, n1, d)
        dq[..., sl, :] = scale * (ds_k2 * k1.unsqueeze(-3)).sum(-2)
        dk1 = dk1 + scale * (ds_k2 * qc[..., :, None, :]).sum(-3)
        dk2 = dk2 + scale * (ds.transpose(-1, -2) @ qk1).sum(-3)
        dv1 = dv1 + ((p @ v2.unsqueeze(-3)) * doc[..., :, None, :]).sum(-3)
        dv2 = dv2 + (p.transpose(-1, -2) @ dov1).sum(-3)
    return (dq.reshape(q_shape), *(_group_sum(g, group) for g in (dk1, dk2, dv1, dv2)))


class ReferenceTensorAttention(torch.autograd.Function):
    """Exact tensor attention whose backward is SPEC L4 written out (not autograd through the forward).

    The backward is itself built from differentiable torch ops, so double backward works. Values are not scanned
    for NaN/Inf here: :func:`tensor_attention_reference` and :func:`verified_ta.tensor_attention` validate first.
    """

    @staticmethod
    def forward(ctx, q, k1, k2, v1, v2, scale, causal, window, chunk_size,  # type: ignore[override]
                query_positions=None):
        out, lse = tensor_attention_forward(q, k1, k2, v1, v2, scale=scale, causal=causal, window=window,
                                            chunk_size=chunk_size, query_positions=query_positions, check_values=False)
        ctx.save_for_backward(q, k1, k2, v1, v2, out, lse)
        ctx.scale, ctx.causal, ctx.window, ctx.chunk_size = scale, causal, window, chunk_size
        ctx.query_positions = query_positions
        return out, lse

    @staticmethod
    def backward(ctx, grad_out, grad_lse):  # type: ignore[override]
        q, k1, k2, v1, v2, out, lse = ctx.saved_tensors
        if grad_out is None:
            grad_out = torch.zeros_like(out)
        grads = tensor_attention_backward(
            grad_out, q, k1, k2, v1, v2, out, lse,
            scale=ctx.scale, causal=ctx.causal, window=ctx.window, grad_lse=grad_lse, chunk_size=ctx.chunk_size,
            query_positions=ctx.query_positions,
        )
        return (*grads, None, None, None, None, None)


def tensor_attention_reference(
    q: torch.Tensor,
    k1: torch.Tensor,
    k2: torch.Tensor,
    v1: torch.Tensor,
    v2: torch.Tensor,
    *,
    scale: float | None = None,
    causal: bool = False,
    window: Window | None = None,
    return_lse: bool = False,
    chunk_size: int | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Differentiable exact tensor attention on any device (SPEC §2, L4). Shapes ``(..., n, d)``.

    ``window=(w1, w2)`` (with causal=True) is the sliding window of :mod:`verified_ta.masks`; q may have a
    multiple of the keys' heads (grouped-query heads, dimension -3).
    """
    check_attention_inputs(q, k1, k2, v1, v2, causal=causal, window=window)
    s = resolve_scale(scale, q.shape[-1])
    out, lse = ReferenceTensorAttention.apply(q, k1, k2, v1, v2, s, causal, check_window(window, causal), chunk_size)
    return (out, lse) if return_lse else out
