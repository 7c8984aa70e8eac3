"""Implementations for ``verified-ta conform`` tests: correct ones that must pass and planted bugs that must fail.

Every function has the conformance signature ``fn(q, k1, k2, v1, v2, *, scale, causal)`` on ``(batch, heads, n, d)``
tensors. The bugs are the ones found in public 2-simplicial / trilinear kernels (LSE in log2 units, LSE and δ
rounded to bf16, causal mask off by one, softmax scale applied twice in dQ, a backward grid that misses rows) and
a few more; each is built from the package reference so that exactly the planted defect differs.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
import time
from typing import Callable

import torch

from verified_ta.reference import tensor_attention_backward, tensor_attention_forward, tensor_attention_reference

LOG2E = 1.0 / math.log(2.0)

Grads = tuple[torch.Tensor, ...]


def _bf16(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.bfloat16).to(x.dtype)


def _reference_backward(do, q, k1, k2, v1, v2, out, lse, *, scale, causal) -> Grads:
    return tensor_attention_backward(do, q, k1, k2, v1, v2, out, lse, scale=scale, causal=causal)


class _Planted(torch.autograd.Function):
    """The reference forward and L4 backward with hooks: what the forward returns and saves, and the backward."""

    @staticmethod
    def forward(ctx, q, k1, k2, v1, v2, scale, causal, returned_lse, saved_lse, backward):  # type: ignore[override]
        out, lse = tensor_attention_forward(q, k1, k2, v1, v2, scale=scale, causal=causal)
        ctx.save_for_backward(q, k1, k2, v1, v2, out, saved_lse(lse))
        ctx.scale, ctx.causal, ctx.backward = scale, causal, backward
        return out, returned_lse(lse)

    @staticmethod
    def backward(ctx, dout, _dlse):  # type: ignore[override]
        q, k1, k2, v1, v2, out, lse = ctx.saved_tensors
        grads = ctx.backward(dout, q, k1, k2, v1, v2, out, lse, scale=ctx.scale, causal=ctx.causal)
        return (*grads, None, None, None, None, None)


def _planted(
    *,
    returned_lse: Callable[[torch.Tensor], torch.Tensor] = lambda lse: lse,
    saved_lse: Callable[[torch.Tensor], torch.Tensor] = lambda lse: lse,
    backward: Callable[..., Grads] = _reference_backward,
    return_lse: bool = True,
) -> Callable[..., object]:
    def fn(q, k1, k2, v1, v2, *, scale, causal):
        out, lse = _Planted.apply(q, k1, k2, v1, v2, scale, causal, returned_lse, saved_lse, backward)
        return (out, lse) if return_lse else out

    return fn


# --- correct implementations -------------------------------------------------------------------------------


def reference(q, k1, k2, v1, v2, *, scale, causal, window=None):
    """The package's exact reference, returning (out, lse) (sliding windows and grouped-query heads included)."""
    return tensor_attention_reference(q, k1, k2, v1, v2, scale=scale, causal=causal, window=window, return_lse=True)


def reference_out_only(q, k1, k2, v1, v2, *, scale, causal):
    """The package's exact reference, returning out only (the lse check is skipped)."""
    return tensor_attention_reference(q, k1, k2, v1, v2, scale=scale, causal=causal)


def _mask_future(z: torch.Tensor, mask_offset: int = 0) -> torch.Tensor:
    """Scores z[..., i, a, b] with pairs a > i + offset or b > i + offset set to -inf (written out, not the package's)."""
    i = torch.arange(z.shape[-3], device=z.device)[:, None, None] + mask_offset
    a = torch.arange(z.shape[-2], device=z.device)[None, :, None]
    b = torch.arange(z.shape[-1], device=z.device)[None, None, :]
    return z.masked_fill(~((a <= i) & (b <= i)), float("-inf"))


def _einsum_attention(q, k1, k2, v1, v2, *, scale, causal, mask_offset=0, normalise_over_pairs=True, cap=None):
    """Materialised scores, torch.softmax and autograd: an implementation independent of the package reference."""
    z = torch.einsum("...il,...al,...bl->...iab", q, k1, k2) * scale
    if cap is not None:
        z = z.clamp(-cap, cap)
    if causal:
        z = _mask_future(z, mask_offset)
    if normalise_over_pairs:
        p = torch.softmax(z.flatten(-2), -1).reshape(z.shape)
    else:
        p = torch.softmax(z, -1)  # per (i, a) over b only
    out = torch.einsum("...iab,...al,...bl->...il", p, v1, v2)
    return out, torch.logsumexp(z.flatten(-2), -1)


def einsum_autograd(q, k1, k2, v1, v2, *, scale, causal):
    """Correct: an independent float path (n × n² scores, torch.softmax, autograd backward)."""
    return _einsum_attention(q, k1, k2, v1, v2, scale=scale, causal=causal)


def float32_then_round(q, k1, k2, v1, v2, *, scale, causal):
    """Correct low-precision kernel model: compute in float32, round the outputs once to the input dtype."""
    out, lse = tensor_attention_reference(
        *(t.float() for t in (q, k1, k2, v1, v2)), scale=scale, causal=causal, return_lse=True
    )
    return out.to(q.dtype), lse


# --- planted bugs ------------------------------------------------------------------------------------------

#: LSE stored in log2 units (for exp2) and read back by the backward as natural log
lse_log2 = _planted(returned_lse=lambda lse: lse * LOG2E, saved_lse=lambda lse: lse * LOG2E)


def _delta_bf16_backward(do, q, k1, k2, v1, v2, out, lse, *, scale, causal) -> Grads:
    delta = (do * out).sum(-1)
    # tensor_attention_backward uses δ − grad_lse: passing δ − bf16(δ) makes it use bf16(δ)
    return tensor_attention_backward(
        do, q, k1, k2, v1, v2, out, lse, scale=scale, causal=causal, grad_lse=delta - _bf16(delta)
    )


#: LSE and δ kept in bf16 between forward and backward (forward output exact, returns out only)
lse_delta_bf16 = _planted(saved_lse=_bf16, backward=_delta_bf16_backward, return_lse=False)


def causal_off_by_one(q, k1, k2, v1, v2, *, scale, causal):
    """Causal mask a <= i + 1, b <= i + 1: each query sees one step into the future."""
    return _einsum_attention(q, k1, k2, v1, v2, scale=scale, causal=causal, mask_offset=1)


def _scale_twice_backward(do, q, k1, k2, v1, v2, out, lse, *, scale, causal) -> Grads:
    dq, *rest = _reference_backward(do, q, k1, k2, v1, v2, out, lse, scale=scale, causal=causal)
    return (dq * scale, *rest)


#: the softmax scale applied a second time in dQ (custom autograd Function)
scale_twice_in_dq = _planted(backward=_scale_twice_backward)


def _late_rows_backward(do, q, k1, k2, v1, v2, out, lse, *, scale, causal) -> Grads:
    covered = (q.shape[-2] + 1) // 2  # a grid of cdiv(n, 2·BLOCK) programs of BLOCK rows
    do = do.clone()
    do[..., covered:, :] = 0
    dq, *rest = _reference_backward(do, q, k1, k2, v1, v2, out, lse, scale=scale, causal=causal)
    return (dq, *rest)


#: a backward launch grid that covers only the first half of the query rows
late_rows_backward = _planted(backward=_late_rows_backward)


def _nondeterministic_backward(do, q, k1, k2, v1, v2, out, lse, *, scale, causal) -> Grads:
    """Per-query contributions accumulated in a random order (atomic adds)."""
    total: list[torch.Tensor] | None = None
    for i in torch.randperm(q.shape[-2]).tolist():
        row = torch.zeros_like(do)
        row[..., i, :] = do[..., i, :]
        part = _reference_backward(row, q, k1, k2, v1, v2, out, lse, scale=scale, causal=causal)
        total = list(part) if total is None else [t + p for t, p in zip(total, part)]
    return tuple(total)


#: correct to rounding, but not bitwise reproducible
nondeterministic_backward = _planted(backward=_nondeterministic_backward)


def _swapped_dk_backward(do, q, k1, k2, v1, v2, out, lse, *, scale, causal) -> Grads:
    dq, dk1, dk2, dv1, dv2 = _reference_backward(do, q, k1, k2, v1, v2, out, lse, scale=scale, causal=causal)
    return dq, dk2, dk1, dv1, dv2


#: dK1 and dK2 written to each other's outputs
swapped_dk1_dk2 = _planted(backward=_swapped_dk_backward)


def swapped_kv_order(q, k1, k2, v1, v2, *, scale, causal):
    """⊘ order differs between K and V: pair (a, b) of the scores weights v1[b] ∘ v2[a]."""
    return tensor_attention_reference(q, k1, k2, v2, v1, scale=scale, causal=causal, return_lse=True)


def scale_ignored(q, k1, k2, v1, v2, *, scale, causal):
    """The scale argument is ignored (always 1/d)."""
    return tensor_attention_reference(q, k1, k2, v1, v2, causal=causal, return_lse=True)


def softmax_per_key(q, k1, k2, v1, v2, *, scale, causal):
    """Normalised over b for each (i, a) instead of over all pairs: weights sum to n1."""
    return _einsum_attention(q, k1, k2, v1, v2, scale=scale, causal=causal, normalise_over_pairs=False)


def scores_clamped(q, k1, k2, v1, v2, *, scale, causal):
    """Scores clamped to [-3, 3] (a stray logit cap): wrong once |s·⟨q, k1∘k2⟩| > 3, and not shift invariant."""
    return _einsum_attention(q, k1, k2, v1, v2, scale=scale, causal=causal, cap=3.0)


def heads_mixed(q, k1, k2, v1, v2, *, scale, causal):
    """k1 read from the neighbouring head (a wrong head stride)."""
    return tensor_attention_reference(q, k1.roll(1, dims=1), k2, v1, v2, scale=scale, causal=causal, return_lse=True)


def no_max_subtraction(q, k1, k2, v1, v2, *, scale, causal):
    """exp of the raw scores (no row max): overflows once s·⟨q, k1∘k2⟩ passes the dtype's exp range."""
    z = torch.einsum("...il,...al,...bl->...iab", q, k1, k2) * scale
    if causal:
        z = _mask_future(z)
    e = torch.exp(z)
    total = e.sum((-2, -1))
    return torch.einsum("...iab,...al,...bl->...il", e, v1, v2) / total[..., None], torch.log(total)


def wrong_shape(q, k1, k2, v1, v2, *, scale, causal):
    """Breaks the calling convention: returns out transposed."""
    return tensor_attention_reference(q, k1, k2, v1, v2, scale=scale, causal=causal).transpose(-1, -2)


def triton_kernels(q, k1, k2, v1, v2, *, scale, causal):
    """The package's fused Triton kernels (CUDA, or CPU under TRITON_INTERPRET=1; d in 16, 32, 64, 128)."""
    from verified_ta.interface import tensor_attention

    return tensor_attention(q, k1, k2, v1, v2, scale=scale, causal=causal, return_lse=True, backend="triton")


# --- bugs that kernels have at realistic shapes (issue 11: caught at conform's defaults) ----------------------


def k2_second_tile_misread(q, k1, k2, v1, v2, *, scale, causal):
    """A blocked kernel (16-row K2 tiles) that does not advance the K2 pointer: rows >= 16 are read from the first
    tile again (row r as row r − 16)."""
    n2 = k2.shape[-2]
    if n2 > 16:
        k2 = torch.cat([k2[..., :16, :], k2[..., : n2 - 16, :]], dim=-2)
    return tensor_attention_reference(q, k1, k2, v1, v2, scale=scale, causal=causal, return_lse=True)


def scale_rounded_for_large_heads(q, k1, k2, v1, v2, *, scale, causal):
    """The d >= 16 code path passes the softmax scale as a float32 kernel argument (rounded); d < 16 is exact."""
    if q.shape[-1] >= 16:
        scale = float(torch.tensor(scale, dtype=torch.float32))
    return tensor_attention_reference(q, k1, k2, v1, v2, scale=scale, causal=causal, return_lse=True)


def lse_without_max(q, k1, k2, v1, v2, *, scale, causal):
    """out computed stably, but lse = log Σ exp(scores) without the row max: overflows for large logits."""
    out = tensor_attention_reference(q, k1, k2, v1, v2, scale=scale, causal=causal)
    z = torch.einsum("...il,...al,...bl->...iab", q, k1, k2) * scale
    if causal:
        z = _mask_future(z)
    return out, torch.log(torch.exp(z).sum((-2, -1)))


# --- implementations that break the program around the math (issue 11 §1: contained, reported, never a pass) ---


def exits_zero(q, k1, k2, v1, v2, *, scale, causal):
    """Calls sys.exit(0) (a "pass" exit code from inside the implementation)."""
    sys.exit(0)


def os_exit_zero(q, k1, k2, v1, v2, *, scale, causal):
    """Ends the process with os._exit(0): no exception to catch."""
    os._exit(0)


def hangs(q, k1, k2, v1, v2, *, scale, causal):
    """Never returns."""
    while True:
        time.sleep(1)


def hangs_for_large_n(q, k1, k2, v1, v2, *, scale, causal):
    """Correct for n <= 8; never returns beyond (a deadlock in a multi-tile code path)."""
    while q.shape[-2] > 8:
        time.sleep(1)
    return reference(q, k1, k2, v1, v2, scale=scale, causal=causal)


def segfaults_for_large_n(q, k1, k2, v1, v2, *, scale, causal):
    """Correct for n <= 8; reads address 0 beyond (an out-of-bounds load in native code)."""
    if q.shape[-2] > 8:
        ctypes.string_at(0)
    return reference(q, k1, k2, v1, v2, scale=scale, causal=causal)


def prints_to_stdout(q, k1, k2, v1, v2, *, scale, causal):
    """Correct, but prints on every call (debug output left in)."""
    print("debug: shapes", tuple(q.shape))
    return reference(q, k1, k2, v1, v2, scale=scale, causal=causal)


def raises_inside(q, k1, k2, v1, v2, *, scale, causal):
    """Raises from a helper of the user's own code."""
    return _user_helper(q)


def _user_helper(q):
    raise RuntimeError("CUDA error: an illegal memory access was encountered")


def returns_numpy(q, k1, k2, v1, v2, *, scale, causal):
    """Returns numpy arrays."""
    return reference(q, k1, k2, v1, v2, scale=scale, causal=causal)[0].numpy()


def returns_none(q, k1, k2, v1, v2, *, scale, causal):
    """Forgets to return."""
    reference(q, k1, k2, v1, v2, scale=scale, causal=causal)


def returns_three(q, k1, k2, v1, v2, *, scale, causal):
    """Returns (out, lse, probabilities)."""
    out, lse = reference(q, k1, k2, v1, v2, scale=scale, causal=causal)
    return out, lse, lse


def returns_float32(q, k1, k2, v1, v2, *, scale, causal):
    """Computes and returns float32 whatever the inputs' dtype."""
    out, lse = reference(*(t.float() for t in (q, k1, k2, v1, v2)), scale=scale, causal=causal)
    return out, lse


def returns_nan(q, k1, k2, v1, v2, *, scale, causal):
    """Returns NaN everywhere (an uninitialised output buffer)."""
    out, lse = reference(q, k1, k2, v1, v2, scale=scale, causal=causal)
    return torch.full_like(out, math.nan), lse


# --- windows and grouped-query heads (issue 11 §3) -------------------------------------------------------------


def window_ignored(q, k1, k2, v1, v2, *, scale, causal, window=None):
    """Accepts window= but applies the plain causal mask."""
    return tensor_attention_reference(q, k1, k2, v1, v2, scale=scale, causal=causal, return_lse=True)


def window_sides_swapped(q, k1, k2, v1, v2, *, scale, causal, window=None):
    """Applies w1 to the k2 side and w2 to the k1 side."""
    window = None if window is None else (window[1], window[0])
    return tensor_attention_reference(q, k1, k2, v1, v2, scale=scale, causal=causal, window=window, return_lse=True)


def kv_heads_modulo(q, k1, k2, v1, v2, *, scale, causal):
    """Grouped-query heads mapped h -> h mod H_kv instead of h // g (repeat instead of repeat_interleave)."""
    g = q.shape[-3] // k1.shape[-3]
    k1, k2, v1, v2 = (x.repeat(1, g, 1, 1) for x in (k1, k2, v1, v2))
    return tensor_attention_reference(q, k1, k2, v1, v2, scale=scale, causal=causal, return_lse=True)
