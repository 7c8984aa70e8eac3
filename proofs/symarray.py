"""An object array the shipped numpy *and* torch code runs on unchanged, with z3 terms (or duals, or a replay's
exact numbers) as entries.

:class:`SymArray` is a numpy ``ndarray`` subclass of dtype object, so indexing, reshape, ``@``, ``+ - *`` and
reductions are numpy's own. It overrides what has no polynomial meaning, through numpy's override protocols
(NEP 13 ``__array_ufunc__``) and torch's (``__torch_function__``), and hands it to :class:`proofs.engine.Ops`:

- ``np.exp`` → the uninterpreted E (L6 shift instances added automatically);
- division → a fresh unknown w with w·den = num (division by definition);
- ``.max(axis=..., keepdims=...)`` → one fresh shift M per reduced slice (see :class:`~proofs.engine.Ops`);
- ``torch.einsum``, ``torch.zeros_like``, ``.new_zeros`` (what ``closed_form_gradient(chunk_size=...)`` calls)
  → numpy's ``einsum`` / zeros on the object entries.

Anything else that compares values (``np.maximum``, ``>``, sorting) raises ``TypeError``: the proofs never
silently pick a branch.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from .engine import Ops

__all__ = ["SymArray", "sym"]

_COMPARISONS = {np.maximum, np.minimum, np.greater, np.greater_equal, np.less, np.less_equal, np.fmax, np.fmin,
                np.sign, np.absolute}


class SymArray(np.ndarray):
    """A numpy object array carrying the :class:`~proofs.engine.Ops` its non-polynomial operations go to."""

    ops: Ops

    def __new__(cls, values: Any, ops: Ops) -> "SymArray":
        obj = np.asarray(values, dtype=object).view(cls)
        obj.ops = ops
        return obj

    def __array_finalize__(self, obj: Any) -> None:
        self.ops = getattr(obj, "ops", None)  # type: ignore[assignment]

    def _wrap(self, result: Any) -> Any:
        return SymArray(result, self.ops) if isinstance(result, np.ndarray) else result

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        plain = [x.view(np.ndarray) if isinstance(x, SymArray) else x for x in inputs]
        if kwargs.get("out") is not None:
            raise TypeError("SymArray does not support out=")
        if ufunc in _COMPARISONS:
            raise TypeError(f"{ufunc.__name__} compares symbolic values; the proofs never pick a branch")
        if method == "__call__" and ufunc is np.exp:
            return self._wrap(_elementwise(self.ops.exp_any, np.asarray(plain[0], dtype=object)))
        if method == "__call__" and ufunc in (np.true_divide, np.divide):
            num, den = np.broadcast_arrays(np.asarray(plain[0], dtype=object), np.asarray(plain[1], dtype=object))
            out = np.empty(num.shape, dtype=object)
            for idx in np.ndindex(num.shape):
                out[idx] = self.ops.divide(num[idx], den[idx])
            return self._wrap(out)
        return self._wrap(getattr(ufunc, method)(*plain, **kwargs))

    def max(self, axis: Any = None, keepdims: bool = False, **kwargs: Any) -> Any:  # type: ignore[override]
        """One shift per reduced slice (the row max of the code becomes a symbol: L6)."""
        if kwargs:
            raise TypeError(f"SymArray.max does not model {sorted(kwargs)}")
        base = self.view(np.ndarray)
        axes = tuple(range(base.ndim)) if axis is None else (axis,) if isinstance(axis, int) else tuple(axis)
        axes = tuple(a % base.ndim for a in axes)
        kept = [a for a in range(base.ndim) if a not in axes]
        moved = np.moveaxis(base, kept + list(axes), range(base.ndim))
        lead = moved.shape[: len(kept)]
        flat = moved.reshape(*lead, -1)
        out = np.empty(lead, dtype=object)
        for idx in np.ndindex(lead):
            out[idx] = self.ops.maximum(list(flat[idx]))
        if keepdims:
            out = out.reshape([1 if a in axes else base.shape[a] for a in range(base.ndim)])
        return self._wrap(out) if out.ndim else out[()]

    def new_zeros(self, shape: Any) -> "SymArray":
        return SymArray(np.zeros(shape, dtype=int).astype(object), self.ops)

    @classmethod
    def __torch_function__(cls, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        ops = next(a.ops for a in (*args, *kwargs.values()) if isinstance(a, SymArray))
        if func is torch.einsum:
            eq, *operands = args
            return SymArray(np.einsum(eq, *(np.asarray(o, dtype=object) for o in operands)), ops)
        if func is torch.zeros_like:
            return SymArray(np.zeros(args[0].shape, dtype=int).astype(object), ops)
        raise TypeError(f"SymArray does not model {getattr(func, '__name__', func)}")


def _elementwise(fn: Callable[[Any], Any], a: np.ndarray) -> np.ndarray:
    out = np.empty(a.shape, dtype=object)
    for idx in np.ndindex(a.shape):
        out[idx] = fn(a[idx])
    return out


def sym(values: dict[str, np.ndarray], ops: Ops) -> dict[str, SymArray]:
    """Every array of ``values`` as a :class:`SymArray` on ``ops``."""
    return {k: SymArray(v, ops) for k, v in values.items()}
