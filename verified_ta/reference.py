"""Exact tensor attention in torch (SPEC §2) with the L4 backward, chunked over queries.

Memory is O(chunk · n1 · n2) for the scores of one query chunk; no n_q × n1 × n2 tensor is held.
This is the CPU fallback behind :func:`verified_ta.tensor_attention` and the same-dtype reference
of the FlashAttention tolerance rule.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch

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


def causal_mask(start: int, stop: int, n1: int, n2: int, device: torch.device) -> torch.Tensor:
    """True where the pair (a, b) is visible to query i: a <= i and b <= i (SPEC §2)."""
    i = torch.arange(start, stop, device=device)[:, None, None]
    a = torch.arange(n1, device=device)[None, :, None]
    b = torch.arange(n2, device=device)[None, None, :]
    return (a <= i) & (b <= i)


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
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact forward: ``(out, lse)`` with out ``(..., n_q, d)`` and natural-log LSE ``(..., n_q)``.

    Row max subtracted before exp (stable); computed in the inputs' dtype.
    """
    check_attention_inputs(q, k1, k2, v1, v2, causal=causal)
    scale = resolve_scale(scale, q.shape[-1])
    n_q, n1, n2 = q.shape[-2], k1.shape[-2], k2.shape[-2]
    out = torch.empty_like(q)
    lse = torch.empty(q.shape[:-1], dtype=q.dtype, device=q.device)
    v2u = v2.unsqueeze(-3)
    for start, stop in _chunks(n_q, n1, n2, chunk_size):
        mask = causal_mask(start, stop, n1, n2, q.device) if causal else None
        s, _ = _chunk_scores(q[..., start:stop, :], k1, k2, scale, mask)
        m = s.amax(dim=(-2, -1), keepdim=True)
        e = torch.exp(s - m)
        total = e.sum(dim=(-2, -1), keepdim=True)
        p = e / total
        out[..., start:stop, :] = ((p @ v2u) * v1.unsqueeze(-3)).sum(-2)
        lse[..., start:stop] = (m + torch.log(total))[..., 0, 0]
    return out, lse


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
    grad_lse: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, ...]:
    """SPEC L4: ``(dQ, dK1, dK2, dV1, dV2)`` from upstream dO (and optionally d lse).

    δ_i = ⟨dO_i, O_i⟩, dP = ⟨dO_i, V1[a]∘V2[b]⟩, dS = P∘(dP − δ + d lse_i); P recomputed from the saved LSE.
    """
    n_q, n1, n2 = q.shape[-2], k1.shape[-2], k2.shape[-2]
    dq = torch.zeros_like(q)
    dk1, dk2, dv1, dv2 = (torch.zeros_like(t) for t in (k1, k2, v1, v2))
    delta = (grad_out * out).sum(-1)
    if grad_lse is not None:
        delta = delta - grad_lse
    v2t = v2.transpose(-1, -2).unsqueeze(-3)
    for start, stop in _chunks(n_q, n1, n2, chunk_size):
        sl = slice(start, stop)
        mask = causal_mask(start, stop, n1, n2, q.device) if causal else None
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
    return dq, dk1, dk2, dv1, dv2


class ReferenceTensorAttention(torch.autograd.Function):
    """Exact tensor attention whose backward is SPEC L4 written out (not autograd through the forward).

    The backward is itself built from differentiable torch ops, so double backward works.
    """

    @staticmethod
    def forward(ctx, q, k1, k2, v1, v2, scale, causal, chunk_size):  # type: ignore[override]
        out, lse = tensor_attention_forward(q, k1, k2, v1, v2, scale=scale, causal=causal, chunk_size=chunk_size)
        ctx.save_for_backward(q, k1, k2, v1, v2, out, lse)
        ctx.scale, ctx.causal, ctx.chunk_size = scale, causal, chunk_size
        return out, lse

    @staticmethod
    def backward(ctx, grad_out, grad_lse):  # type: ignore[override]
        q, k1, k2, v1, v2, out, lse = ctx.saved_tensors
        if grad_out is None:
            grad_out = torch.zeros_like(out)
        grads = tensor_attention_backward(
            grad_out, q, k1, k2, v1, v2, out, lse,
            scale=ctx.scale, causal=ctx.causal, grad_lse=grad_lse, chunk_size=ctx.chunk_size,
        )
        return (*grads, None, None, None)


def tensor_attention_reference(
    q: torch.Tensor,
    k1: torch.Tensor,
    k2: torch.Tensor,
    v1: torch.Tensor,
    v2: torch.Tensor,
    *,
    scale: float | None = None,
    causal: bool = False,
    return_lse: bool = False,
    chunk_size: int | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Differentiable exact tensor attention on any device (SPEC §2, L4). Shapes ``(..., n, d)``."""
    check_attention_inputs(q, k1, k2, v1, v2, causal=causal)
    s = resolve_scale(scale, q.shape[-1])
    out, lse = ReferenceTensorAttention.apply(q, k1, k2, v1, v2, s, causal, chunk_size)
    return (out, lse) if return_lse else out
