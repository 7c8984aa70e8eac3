"""Input checks shared by every public entry point: a ``ValueError`` naming the argument and the allowed range.

torch is imported by the tensor checks only, so the scalar checks serve torch-free code (the certificate's bounds).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = [
    "FLOAT_DTYPES", "check_attention_inputs", "check_objective_inputs", "check_finite", "check_positive_int",
    "check_open_unit", "check_query_positions",
]


def _float_dtypes() -> tuple[torch.dtype, ...]:
    import torch

    return (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def __getattr__(name: str) -> Any:
    """``FLOAT_DTYPES`` (the floating torch dtypes every entry point accepts), built on first use (PEP 562)."""
    if name == "FLOAT_DTYPES":
        return _float_dtypes()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_finite(name: str, x: torch.Tensor) -> None:
    """Reject NaN and ±Inf entries."""
    import torch

    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite (no NaN or Inf entries)")


def check_positive_int(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return value


def check_open_unit(name: str, value: float) -> float:
    """Reject values outside the open interval (0, 1) (e.g. ε)."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 < value < 1.0):
        raise ValueError(f"{name} must lie in the open interval (0, 1); got {value!r}")
    return float(value)


def check_attention_inputs(
    q: torch.Tensor,
    k1: torch.Tensor,
    k2: torch.Tensor,
    v1: torch.Tensor,
    v2: torch.Tensor,
    *,
    causal: bool = False,
    window: object = None,
    check_values: bool = True,
    query_positions: torch.Tensor | None = None,
) -> int:
    """Validate tensor-attention inputs of shape ``(..., n, d)`` (SPEC §2); returns the query-head group size.

    q is ``(..., n_q, d)``; k1, v1 are ``(..., n1, d)``; k2, v2 are ``(..., n2, d)``; all share dtype and device,
    and k1, k2, v1, v2 share their leading dimensions. q shares them too, or (grouped-query heads) differs only in
    the head dimension -3, which must be a multiple g of the keys' (query head h reads key head h // g, as torch
    SDPA's ``enable_gqa``); g is returned (1 without grouping). Causal masking needs n_q = n1 = n2; a window
    (:func:`verified_ta.masks.check_window`) needs causal=True. ``query_positions`` (causal only) places q's rows at
    those positions of the keys' sequence (a shard of queries): then n_q = n1 = n2 becomes positions in
    [0, min(n1, n2)).
    """
    import torch

    from .masks import check_window

    if not isinstance(causal, bool):
        raise ValueError(f"causal must be a bool; got {causal!r}")
    check_window(window, causal)
    named = {"q": q, "k1": k1, "k2": k2, "v1": v1, "v2": v2}
    for name, t in named.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor; got {type(t).__name__}")
        if t.dim() < 2:
            raise ValueError(f"{name} must have shape (..., n, d) with at least 2 dimensions; got {tuple(t.shape)}")
        if t.dtype not in _float_dtypes():
            raise ValueError(f"{name} dtype must be one of float16, bfloat16, float32, float64; got {t.dtype}")
        if t.shape[-2] < 1 or t.shape[-1] < 1:
            raise ValueError(f"{name} needs n >= 1 and d >= 1; got shape {tuple(t.shape)}")
    dtypes = {t.dtype for t in named.values()}
    if len(dtypes) != 1:
        raise ValueError(f"q, k1, k2, v1, v2 must share one dtype; got {[str(t.dtype) for t in named.values()]}")
    devices = {t.device for t in named.values()}
    if len(devices) != 1:
        raise ValueError(f"q, k1, k2, v1, v2 must be on one device; got {[str(t.device) for t in named.values()]}")
    kv_batch = k1.shape[:-2]
    for name in ("k2", "v1", "v2"):
        if named[name].shape[:-2] != kv_batch:
            raise ValueError(f"{name} leading dimensions {tuple(named[name].shape[:-2])} differ from k1's {tuple(kv_batch)}")
    group = _query_group(tuple(q.shape[:-2]), tuple(kv_batch))
    for name, t in named.items():
        if t.shape[-1] != q.shape[-1]:
            raise ValueError(f"{name} head dimension d={t.shape[-1]} differs from q's d={q.shape[-1]}")
    if k1.shape[-2] != v1.shape[-2]:
        raise ValueError(f"k1 and v1 need the same length n1; got {k1.shape[-2]} and {v1.shape[-2]}")
    if k2.shape[-2] != v2.shape[-2]:
        raise ValueError(f"k2 and v2 need the same length n2; got {k2.shape[-2]} and {v2.shape[-2]}")
    if query_positions is not None:
        check_query_positions(query_positions, q.shape[-2], min(k1.shape[-2], k2.shape[-2]), causal, q.device)
    elif causal and not (q.shape[-2] == k1.shape[-2] == k2.shape[-2]):
        raise ValueError(
            f"causal=True needs n_q = n1 = n2; got {q.shape[-2]}, {k1.shape[-2]}, {k2.shape[-2]}"
        )
    if check_values:
        for name, t in named.items():
            check_finite(name, t)
    return group


def check_query_positions(positions: object, n_q: int, n_keys: int, causal: bool,
                          device: torch.device | str = "cpu", *, increasing: bool = False) -> None:
    """Sequence positions of ``n_q`` query rows (a shard of queries): a 1-D int64 tensor on ``device`` in
    [0, n_keys), under the causal mask only; ``increasing`` also asks for strictly increasing positions."""
    import torch

    if not causal:
        raise ValueError("query_positions places a shard of queries under the causal mask: it needs causal=True")
    if not isinstance(positions, torch.Tensor) or positions.dtype != torch.int64 or positions.dim() != 1:
        raise ValueError(f"query_positions must be a 1-D int64 tensor; got {positions!r}")
    if positions.shape[0] != n_q or positions.device != torch.device(device):
        raise ValueError(f"query_positions needs q's length {n_q} and device {device}; "
                         f"got length {positions.shape[0]} on {positions.device}")
    if positions.numel() and not (0 <= int(positions.min()) and int(positions.max()) < n_keys):
        raise ValueError(f"query_positions must lie in [0, min(n1, n2) = {n_keys}); "
                         f"got [{int(positions.min())}, {int(positions.max())}]")
    if increasing and not bool((positions[1:] > positions[:-1]).all()):
        j = int(torch.nonzero(positions[1:] <= positions[:-1])[0])
        raise ValueError(f"query_positions must be strictly increasing (sorted, no repeats); got "
                         f"{int(positions[j])} then {int(positions[j + 1])} at rows {j}, {j + 1}")


def _query_group(q_batch: tuple[int, ...], kv_batch: tuple[int, ...]) -> int:
    """Query heads per key head: 1 when q's leading dimensions equal the keys', else q_heads / kv_heads."""
    if q_batch == kv_batch:
        return 1
    grouped = (len(q_batch) == len(kv_batch) >= 1 and q_batch[:-1] == kv_batch[:-1] and kv_batch[-1] >= 1
               and q_batch[-1] % kv_batch[-1] == 0)
    if not grouped:
        raise ValueError(
            f"q leading dimensions {q_batch} must equal the keys' {kv_batch}, or differ only in the head dimension "
            f"(-3) by an integer factor (grouped-query heads: q heads a multiple of kv heads)")
    return q_batch[-1] // kv_batch[-1]


def check_objective_inputs(A1, A2, A3, A4, A5, E, X, Y) -> tuple[int, int]:
    """Shapes of the SPEC §3 objective: A1..A5, E are n×d, X is d×d², Y is d²×d; returns (n, d).

    Torch tensors must also be floating and finite; numpy object arrays (mpmath, z3) are checked for shape only.
    """
    import torch

    named = {"A1": A1, "A2": A2, "A3": A3, "A4": A4, "A5": A5, "E": E, "X": X, "Y": Y}
    for name, t in named.items():
        shape = tuple(getattr(t, "shape", ()))
        if len(shape) != 2:
            raise ValueError(f"{name} must be a 2-D matrix; got shape {shape}")
    n, d = A1.shape
    if n < 1 or d < 1:
        raise ValueError(f"A1 needs n >= 1 and d >= 1; got shape {tuple(A1.shape)}")
    expected = {**{k: (n, d) for k in ("A1", "A2", "A3", "A4", "A5", "E")}, "X": (d, d * d), "Y": (d * d, d)}
    for name, t in named.items():
        if tuple(t.shape) != expected[name]:
            raise ValueError(f"{name} must have shape {expected[name]} (n={n}, d={d}); got {tuple(t.shape)}")
        if isinstance(t, torch.Tensor):
            if t.dtype not in _float_dtypes():
                raise ValueError(f"{name} dtype must be one of float16, bfloat16, float32, float64; got {t.dtype}")
            check_finite(name, t)
    return n, d
