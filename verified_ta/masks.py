"""Which (a, b) pairs a query sees: full, causal, or the sliding window of 2-simplicial Transformers (SPEC §2).

- full: every pair.
- causal: a <= i and b <= i (needs n_q = n1 = n2).
- causal with ``window=(w1, w2)``: i − w1 < a <= i and i − w2 < b <= i; a side given as None is unbounded below,
  so ``window=(None, None)`` is the plain causal mask. The pair (i, i) is always visible, so no row is empty.

This module is the one definition the reference, the kernels' launchers, the baselines and the rounding
bounds share; the mpmath/Arb oracles write the same condition out independently from the SPEC.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

__all__ = ["Window", "check_window", "pair_mask", "query_pair_mask", "row_ranges"]

#: (w1, w2): query i sees k1 rows a with i − w1 < a <= i and k2 rows b with i − w2 < b <= i (None: unbounded)
Window = Tuple[Optional[int], Optional[int]]


def check_window(window: object, causal: bool) -> Window | None:
    """Validate ``window``; returns ``(w1, w2)`` or None when no window restricts the causal mask.

    ValueError unless window is None or a pair of (None or int >= 1), and unless causal=True when it is given.
    """
    if window is None:
        return None
    if not isinstance(window, (tuple, list)) or len(window) != 2:
        raise ValueError(f"window must be None or a pair (w1, w2) of positive ints or None; got {window!r}")
    for name, w in zip(("w1", "w2"), window):
        if w is not None and (isinstance(w, bool) or not isinstance(w, int) or w < 1):
            raise ValueError(f"window {name} must be None (unbounded) or an integer >= 1; got {w!r}")
    if not causal:
        raise ValueError(f"window={tuple(window)!r} is a causal sliding window: it needs causal=True")
    w1, w2 = window
    return None if w1 is None and w2 is None else (w1, w2)


def pair_mask(start: int, stop: int, n1: int, n2: int, device: torch.device | str,
              window: Window | None = None) -> torch.Tensor:
    """Boolean ``(stop − start, n1, n2)``: True where pair (a, b) is visible to query i (causal, optionally windowed)."""
    return query_pair_mask(torch.arange(start, stop, device=device), n1, n2, window)


def query_pair_mask(positions: torch.Tensor, n1: int, n2: int, window: Window | None = None) -> torch.Tensor:
    """Boolean ``(len(positions), n1, n2)``: the pairs visible to the queries at these sequence positions.

    The mask of a shard of queries (context parallelism, :mod:`verified_ta.distributed`): row j is query
    ``positions[j]`` of the keys' sequence, not query j.
    """
    device = positions.device
    i = positions[:, None, None]
    a = torch.arange(n1, device=device)[None, :, None]
    b = torch.arange(n2, device=device)[None, None, :]
    visible = (a <= i) & (b <= i)
    if window is not None:
        w1, w2 = window
        if w1 is not None:
            visible = visible & (a > i - w1)
        if w2 is not None:
            visible = visible & (b > i - w2)
    return visible


def row_ranges(first: int, last: int, n: int, w: int | None) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of one key side that some query in ``first … last`` can see under the causal window w.

    Loop bounds for blocked implementations: only these rows are visited (window ∞: ``[0, last + 1)``).
    """
    lo = 0 if w is None else max(0, first - w + 1)
    return lo, min(n, last + 1)
