"""Hypothesis strategies for tensor attention inputs (composable, valid by construction).

Values are drawn in [-1, 1] and scaled by a bound B (scale, don't filter), never subnormal, so the
same strategies feed float64 properties, low-precision kernels and ``verified-ta conform``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

__all__ = ["dims", "unit_entries", "matrices", "attention_inputs", "AttentionInputs"]


def dims(min_value: int = 1, max_value: int = 4) -> st.SearchStrategy[int]:
    """A dimension (n or d); includes 1 and odd sizes."""
    return st.integers(min_value=min_value, max_value=max_value)


def unit_entries() -> st.SearchStrategy[float]:
    """Floats in [-1, 1], no NaN/Inf/subnormals; ±1 and 0 are reachable."""
    return st.floats(min_value=-1.0, max_value=1.0, allow_nan=False, allow_infinity=False, allow_subnormal=False)


def matrices(rows: int, cols: int, bound: float = 1.0) -> st.SearchStrategy[np.ndarray]:
    """A float64 ``rows × cols`` numpy array with entries in [-bound, bound]."""
    return hnp.arrays(np.float64, (rows, cols), elements=unit_entries()).map(lambda a: a * bound)


class AttentionInputs(tuple):
    """``(q, k1, k2, v1, v2)`` torch tensors of shape ``(*batch, n, d)``."""

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self[0].shape)


@st.composite
def attention_inputs(
    draw,
    *,
    n: st.SearchStrategy[int] | None = None,
    d: st.SearchStrategy[int] | None = None,
    batch: Sequence[int] = (),
    bound: float | st.SearchStrategy[float] = 1.0,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> AttentionInputs:
    """Five tensors with entries in [-B, B] (B = ``bound``), cast once to ``dtype`` on ``device``."""
    n_ = draw(n if n is not None else dims(1, 5))
    d_ = draw(d if d is not None else dims(1, 4))
    b = draw(bound) if isinstance(bound, st.SearchStrategy) else bound
    shape = (*batch, n_, d_)
    arrs = [
        draw(hnp.arrays(np.float64, shape, elements=unit_entries())) * b for _ in range(5)
    ]
    return AttentionInputs(torch.from_numpy(a).to(dtype=dtype, device=device) for a in arrs)
