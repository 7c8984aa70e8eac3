"""Fused exact tensor-attention kernels (SPEC §2 forward, L4 backward) in Triton.

Triton is imported lazily: this package imports without it, and :func:`load` brings in the kernels
(:mod:`verified_ta.kernels.triton_kernels`) on first use. The interpreter (``TRITON_INTERPRET=1``) is
read by Triton when the kernels module is first imported, so set it before calling :func:`load`.
"""

from __future__ import annotations

import importlib.util
import os
from types import ModuleType

import torch

__all__ = [
    "SUPPORTED_HEAD_DIMS",
    "KERNEL_DTYPES",
    "MAX_BATCH_HEADS",
    "check_head_dim",
    "check_kernel_dtype",
    "check_batch_heads",
    "triton_available",
    "interpreter_enabled",
    "unsupported_reason",
    "load",
]

#: head dimensions the kernels are compiled for (tl.dot needs power-of-two tiles >= 16)
SUPPORTED_HEAD_DIMS = (16, 32, 64, 128)
#: operand dtypes; softmax statistics, LSE, δ and accumulators are always float32
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
#: batch·heads is grid axis 1 of every launch, which CUDA caps at 65535 programs
MAX_BATCH_HEADS = 65535


def check_head_dim(d: int) -> int:
    """ValueError unless the head dimension is one the kernels support."""
    if d not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"head dimension d must be one of {SUPPORTED_HEAD_DIMS} for the Triton kernels; got d={d}")
    return d


def check_kernel_dtype(dtype: torch.dtype) -> torch.dtype:
    """ValueError unless the dtype is one the kernels support."""
    if dtype not in KERNEL_DTYPES:
        raise ValueError(f"dtype must be one of float16, bfloat16, float32 for the Triton kernels; got {dtype}")
    return dtype


def check_batch_heads(batch_heads: int) -> int:
    """ValueError unless batch·heads (the product of q's leading dimensions) fits CUDA's grid axis 1."""
    if not 0 <= batch_heads <= MAX_BATCH_HEADS:
        raise ValueError(
            f"batch·heads (the product of q's leading dimensions) must lie in [0, {MAX_BATCH_HEADS}] for the Triton "
            f"kernels; got {batch_heads}")
    return batch_heads


def triton_available() -> bool:
    """True when the ``triton`` package is importable (it is not imported here)."""
    return importlib.util.find_spec("triton") is not None


def interpreter_enabled() -> bool:
    """True when Triton's CPU interpreter is requested (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def unsupported_reason(q: torch.Tensor, *, interpreter_ok: bool) -> str | None:
    """Why the kernels cannot take q (triton missing, device, dtype, d, batch·heads), else None.

    The one place that knows what the kernels support: the interface asks it for ``backend="auto"`` (fall back to
    the reference) and ``backend="triton"`` (raise with this reason). Windows and grouped-query heads are supported.
    """
    for check, value in ((check_kernel_dtype, q.dtype), (check_head_dim, q.shape[-1]),
                         (check_batch_heads, q.shape[:-2].numel())):
        try:
            check(value)
        except ValueError as exc:
            return str(exc)
    if not triton_available():
        return "triton is not installed (pip install 'verified-ta[triton]')"
    if not (q.is_cuda or (interpreter_ok and q.device.type == "cpu" and interpreter_enabled())):
        return f"needs CUDA tensors, or CPU tensors with TRITON_INTERPRET=1; got device {q.device}"
    return None


def load() -> ModuleType:
    """Import and return the Triton kernels module (raises ImportError naming the extra if triton is missing)."""
    if not triton_available():
        raise ImportError("the Triton kernels need triton: pip install 'verified-ta[triton]'")
    from . import triton_kernels

    return triton_kernels
