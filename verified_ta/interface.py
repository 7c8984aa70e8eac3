"""The PyTorch API: :func:`tensor_attention` (fused Triton kernels on CUDA, exact reference elsewhere) and
:class:`TensorAttention` (projections, heads, output projection). SPEC §2 forward, L4 backward.

Layout as torch SDPA: ``(batch, heads, n, d)`` (any leading dimensions); default scale 1/d (SPEC §2).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from . import kernels, poly_attention
from .blocked import BlockedTensorAttention
from .masks import Window, check_window
from .reference import ReferenceTensorAttention, resolve_scale
from .validation import check_attention_inputs, check_positive_int

__all__ = ["BACKENDS", "tensor_attention", "TensorAttention"]

Backend = Literal["auto", "triton", "reference"]
Method = poly_attention.Method
BACKENDS = ("auto", "triton", "reference")


class _TritonTensorAttention(torch.autograd.Function):
    """Fused forward and L4 backward (``verified_ta.kernels.triton_kernels``); returns ``(out, lse)``.

    The backward kernels are not differentiable: with ``create_graph=True`` the backward raises instead of returning
    gradients without a graph (a double backward would silently drop the kernel's second-order terms).
    """

    @staticmethod
    def forward(ctx, q, k1, k2, v1, v2, scale, causal, window, deterministic):  # type: ignore[override]
        out, lse = kernels.load().forward(q, k1, k2, v1, v2, scale, causal, window=window)
        ctx.save_for_backward(q, k1, k2, v1, v2, out, lse)
        ctx.scale, ctx.causal, ctx.window, ctx.deterministic = scale, causal, window, deterministic
        return out, lse

    @staticmethod
    def backward(ctx, grad_out, grad_lse):  # type: ignore[override]
        q, k1, k2, v1, v2, out, lse = ctx.saved_tensors
        if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k1, k2, v1, v2)):
            raise RuntimeError("backend='triton' has no double backward (create_graph=True): use backend='reference'")
        if grad_out is None:
            grad_out = torch.zeros_like(out)
        grads = kernels.load().backward(grad_out, q, k1, k2, v1, v2, out, lse, ctx.scale, ctx.causal, grad_lse,
                                        window=ctx.window, deterministic=ctx.deterministic)
        return (*grads, None, None, None, None)


def _use_triton(q: torch.Tensor, backend: str) -> bool:
    """True for the kernels, False for the reference; ValueError if ``backend="triton"`` cannot run (STYLE §1)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
    if backend == "reference":
        return False
    reason = kernels.unsupported_reason(q, interpreter_ok=backend == "triton")
    if reason is not None and backend == "triton":
        raise ValueError(f"backend='triton': {reason}")
    return reason is None


def tensor_attention(
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
    backend: Backend = "auto",
    deterministic: bool = True,
    check_inputs: bool | None = None,
    method: Method = "exact",
    eps: float = 1e-3,
    bound: float | None = None,
    return_certificate: bool = False,
    return_bound: bool = False,
) -> torch.Tensor | tuple:
    """Exact tensor attention Att[i] = Σ_{a,b} softmax_i(s·⟨q_i, k1_a∘k2_b⟩)·(v1_a∘v2_b) (SPEC §2), differentiable (L4).

    Args:
        q: ``(..., H, n_q, d)``; k1, v1: ``(..., H_kv, n1, d)``; k2, v2: ``(..., H_kv, n2, d)``. One dtype, one
            device. H may be a multiple g of H_kv (grouped-query heads: query head h reads key head h // g; K/V are
            not copied).
        scale: s in softmax(s·⟨q_i, k1_a∘k2_b⟩); None means 1/d.
        causal: keep pairs with a ≤ i and b ≤ i (needs n_q = n1 = n2).
        window: ``(w1, w2)`` with causal: keep i − w1 < a ≤ i and i − w2 < b ≤ i (the 2-simplicial Transformer's
            sliding window; a side None is unbounded). None: plain causal.
        return_lse: also return the natural-log LSE ``(..., H, n_q)`` (float32 from the kernels).
        backend: ``"auto"`` runs the fused Triton kernels for CUDA tensors of dtype float16/bfloat16/float32 with
            d in {16, 32, 64, 128} and batch·heads ≤ 65535, the blocked exact path (``verified_ta.blocked``) for
            CPU tensors, and the exact reference otherwise; ``"triton"`` insists on the kernels (on a CPU under
            ``TRITON_INTERPRET=1``); ``"reference"`` always uses the reference.
        deterministic: kernel backward without atomics (bitwise reproducible; 11 n³d-sized products per tile, 12 at
            d = 128); False accumulates dQ atomically (8, 9 at d = 128).
        check_inputs: reject NaN/Inf entries. None (default) checks on the CPU only: on CUDA the check would cost a
            host-device synchronisation per call, so the hot path skips it (as SDPA does).
        method: ``"exact"``, or ``"poly"``: the certified polynomial method
            (:func:`verified_ta.poly_attention.poly_tensor_attention`; plain torch, full or causal mask);
            ``eps``, ``bound``, ``return_certificate`` and ``return_bound`` apply only there.
    Returns:
        out ``(..., H, n_q, d)``, or ``(out, lse)``; with ``method="poly"`` out, then the certificate and the
        forward bound when asked for.
    Raises:
        ValueError: bad shapes, dtype, device, scale, window or backend; non-finite inputs when checked;
            ``backend="triton"`` outside the kernels' support.

    The kernel path supports one backward (no double backward); the reference and the blocked CPU path are twice
    differentiable. The kernels are verified under the CPU interpreter and compiled for sm_90 by the offline gate;
    GPU runs: docs/kernels.md.
    """
    if method != "exact" or return_certificate or return_bound:
        return poly_attention.dispatch(method, q, k1, k2, v1, v2, scale=scale, causal=causal, window=window,
                                       return_lse=return_lse, backend=backend, eps=eps, bound=bound,
                                       return_certificate=return_certificate, return_bound=return_bound)
    check_values = (q.device.type == "cpu") if check_inputs is None else bool(check_inputs)
    check_attention_inputs(q, k1, k2, v1, v2, causal=causal, window=window, check_values=check_values)
    window = check_window(window, causal)
    s = resolve_scale(scale, q.shape[-1])
    if _use_triton(q, backend):
        out, lse = _TritonTensorAttention.apply(q, k1, k2, v1, v2, s, causal, window, bool(deterministic))
        return (out, lse) if return_lse else out
    attention = BlockedTensorAttention if backend == "auto" and q.device.type == "cpu" else ReferenceTensorAttention
    out, lse = attention.apply(q, k1, k2, v1, v2, s, causal, window, None)
    return (out, lse) if return_lse else out


class TensorAttention(nn.Module):
    """Multi-head tensor attention layer: five input projections, :func:`tensor_attention` per head, output projection.

    ``forward(x, context1=None, context2=None)`` takes ``(batch, n, embed_dim)`` tensors: queries from ``x``,
    (K1, V1) from ``context1`` and (K2, V2) from ``context2`` (both default to ``x``: self-attention).
    ``num_kv_heads`` (a divisor of ``num_heads``) gives K1, K2, V1, V2 fewer heads (grouped-query heads);
    ``window=(w1, w2)`` with ``causal=True`` is the sliding-window 2-simplicial operator.
    ``process_group`` (a ``torch.distributed`` group) makes the layer context-parallel: each rank passes its shard
    of the sequence (:func:`verified_ta.distributed.shard_sequence`, default layout) and gets its shard of the
    output (:func:`verified_ta.distributed.context_parallel_tensor_attention`); each rank's parameter gradients
    cover its own tokens (sum them over the group, as DDP does).
    ``method="poly"`` (with ``eps``, ``bound``; without ``process_group``) runs the certified polynomial method; the
    attribute can be switched per layer.
    """

    def __init__(self, embed_dim: int, num_heads: int, *, head_dim: int | None = None, num_kv_heads: int | None = None,
                 bias: bool = True, causal: bool = False, window: Window | None = None, scale: float | None = None,
                 backend: Backend = "auto", method: Method = "exact", eps: float = 1e-3, bound: float | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                 process_group: Any = None) -> None:
        super().__init__()
        check_positive_int("embed_dim", embed_dim)
        check_positive_int("num_heads", num_heads)
        if head_dim is None:
            if embed_dim % num_heads:
                raise ValueError(
                    f"embed_dim must be divisible by num_heads when head_dim is None; got {embed_dim} and {num_heads}")
            head_dim = embed_dim // num_heads
        check_positive_int("head_dim", head_dim)
        num_kv_heads = num_heads if num_kv_heads is None else check_positive_int("num_kv_heads", num_kv_heads)
        if num_heads % num_kv_heads:
            raise ValueError(f"num_kv_heads must divide num_heads={num_heads}; got {num_kv_heads}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
        if not isinstance(causal, bool):
            raise ValueError(f"causal must be a bool; got {causal!r}")
        resolve_scale(scale, head_dim)
        poly_attention.check_method_options(method, eps, bound)
        if method == "poly" and process_group is not None:
            raise ValueError("method='poly' does not run context-parallel: use process_group=None or method='exact'")
        self.method, self.eps, self.bound = method, eps, bound
        self.embed_dim, self.num_heads, self.num_kv_heads, self.head_dim = embed_dim, num_heads, num_kv_heads, head_dim
        self.causal, self.window, self.scale, self.backend = causal, check_window(window, causal), scale, backend
        self.process_group = process_group
        kw = dict(bias=bias, device=device, dtype=dtype)
        self.q_proj = nn.Linear(embed_dim, num_heads * head_dim, **kw)
        self.k1_proj, self.k2_proj, self.v1_proj, self.v2_proj = (
            nn.Linear(embed_dim, num_kv_heads * head_dim, **kw) for _ in range(4))
        self.out_proj = nn.Linear(num_heads * head_dim, embed_dim, **kw)

    def _heads(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        b, n, _ = x.shape
        return x.reshape(b, n, heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, context1: torch.Tensor | None = None,
                context2: torch.Tensor | None = None) -> torch.Tensor:
        c1 = x if context1 is None else context1
        c2 = x if context2 is None else context2
        for name, t in (("x", x), ("context1", c1), ("context2", c2)):
            if t.dim() != 3 or t.shape[-1] != self.embed_dim:
                raise ValueError(f"{name} must have shape (batch, n, {self.embed_dim}); got {tuple(t.shape)}")
        q = self._heads(self.q_proj(x), self.num_heads)
        h = self.num_kv_heads
        k1, v1 = self._heads(self.k1_proj(c1), h), self._heads(self.v1_proj(c1), h)
        k2, v2 = self._heads(self.k2_proj(c2), h), self._heads(self.v2_proj(c2), h)
        if self.process_group is not None:
            from .distributed import context_parallel_tensor_attention

            att = context_parallel_tensor_attention(q, k1, k2, v1, v2, group=self.process_group, scale=self.scale,
                                                    causal=self.causal, window=self.window, backend=self.backend)
        else:
            att = tensor_attention(q, k1, k2, v1, v2, scale=self.scale, causal=self.causal, window=self.window,
                                   backend=self.backend, method=self.method, eps=self.eps, bound=self.bound)
        b, _, n, _ = att.shape
        return self.out_proj(att.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim))
