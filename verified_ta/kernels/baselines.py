"""What users run today for exact tensor attention: the baselines of the benchmark and second same-dtype reference.

- :func:`expanded_sdpa`: torch SDPA over the Kronecker-expanded keys K1⊘K2 and values V1⊘V2 (n² rows,
  O(n²·d) memory; SPEC §2 with T10);
- :func:`expanded_lse`: the LSE of the same expanded scores, torch.logsumexp over query chunks;
- :func:`naive_attention`: the materialised n_q × n1 × n2 score tensor (einsum, then softmax).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..products import khatri_rao
from ..masks import Window, check_window
from ..reference import causal_mask, resolve_scale

__all__ = ["kronecker_mask", "expanded_sdpa", "expanded_lse", "naive_attention"]


def kronecker_mask(n_q: int, n1: int, n2: int, start: int = 0, device: torch.device | str = "cpu",
                   window: Window | None = None) -> torch.Tensor:
    """Boolean (n_q, n1·n2) mask, True where pair (a, b) = column a·n2 + b is visible to query i: a ≤ i and b ≤ i.

    The reference's causal (optionally windowed) mask (SPEC §2) of queries ``start … start + n_q − 1``, flattened
    over pairs (T10).
    """
    return causal_mask(start, start + n_q, n1, n2, torch.device(device), window).reshape(n_q, n1 * n2)


def _expand_heads(q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Keys of grouped-query heads repeated to q's heads (a baseline may copy; the kernels do not)."""
    if x.dim() < 3 or x.shape[-3] == q.shape[-3]:
        return x
    return x.repeat_interleave(q.shape[-3] // x.shape[-3], dim=-3)


def expanded_sdpa(q: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor, v1: torch.Tensor, v2: torch.Tensor, *,
                  scale: float | None = None, causal: bool = False, window: Window | None = None) -> torch.Tensor:
    """SDPA(Q, K1⊘K2, V1⊘V2) in the inputs' dtype (differentiable)."""
    s = resolve_scale(scale, q.shape[-1])
    window = check_window(window, causal)
    mask = kronecker_mask(q.shape[-2], k1.shape[-2], k2.shape[-2], device=q.device, window=window) if causal else None
    kk, vv = (_expand_heads(q, khatri_rao(a, b)) for a, b in ((k1, k2), (v1, v2)))
    return F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask, scale=s)


def expanded_lse(q: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor, *, scale: float | None = None,
                 causal: bool = False, window: Window | None = None, chunk_elements: int = 1 << 26) -> torch.Tensor:
    """logsumexp of the expanded scores s·Q(K1⊘K2)^T in the inputs' dtype, ``chunk_elements`` scores at a time."""
    s = resolve_scale(scale, q.shape[-1])
    window = check_window(window, causal)
    kk = _expand_heads(q, khatri_rao(k1, k2))
    n_q, m = q.shape[-2], kk.shape[-2]
    step = max(1, chunk_elements // m)
    parts = []
    for start in range(0, n_q, step):
        sc = (q[..., start:start + step, :] @ kk.transpose(-1, -2)) * s
        if causal:
            mask = kronecker_mask(sc.shape[-2], k1.shape[-2], k2.shape[-2], start, q.device, window)
            sc = sc.masked_fill(~mask, float("-inf"))
        parts.append(torch.logsumexp(sc, dim=-1))
    return torch.cat(parts, dim=-1)


def naive_attention(q: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor, v1: torch.Tensor, v2: torch.Tensor, *,
                    scale: float | None = None, causal: bool = False, window: Window | None = None) -> torch.Tensor:
    """The materialised n_q × n1 × n2 scores (three-way einsum), softmax over (a, b), then Σ P·(v1_a ∘ v2_b)."""
    s = resolve_scale(scale, q.shape[-1])
    k1, k2, v1, v2 = (_expand_heads(q, x) for x in (k1, k2, v1, v2))
    sc = torch.einsum("...il,...al,...bl->...iab", q, k1, k2) * s
    n_q, n1, n2 = sc.shape[-3:]
    if causal:
        sc = sc.masked_fill(~causal_mask(0, n_q, n1, n2, q.device, check_window(window, causal)), float("-inf"))
    p = torch.softmax(sc.reshape(*sc.shape[:-2], n1 * n2), dim=-1).reshape(sc.shape)
    return torch.einsum("...iab,...ad,...bd->...id", p, v1, v2)
