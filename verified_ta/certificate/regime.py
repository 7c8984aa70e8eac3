"""Regime and cost model of the fast path (SPEC L11, P31, P41; docs/certificate.md §4).

``regime`` places the score bound M = s·d·B³ against ln n: L11 is an asymptotic statement (B³ = o(log n) versus
B = Θ(∛log n)), so at one finite n it is a *heuristic label*, never a proof. ``fast_path_costs`` is an
operation-count model of A1/A2 against the exact Θ(n³d) path, with the memory the fast path's features need.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, Callable

from ..polynomial import as_fraction
from .degrees import taylor_degree
from .limits import MAX_DEGREE

__all__ = ["REGIME_LABEL", "regime", "rank_exponent", "fast_path_costs", "largest_degree"]

REGIME_LABEL = "finite-n heuristic for an asymptotic statement (L11: almost-linear iff B³ = o(log n))"


def _rank(g: int, d: int) -> int:
    """P31: r = C(g+d, d)."""
    from ..features import feature_rank

    return feature_rank(g, d)


def regime(M: Fraction | float, n: int) -> dict[str, Any]:
    """Where the score bound M (= B³ at s = 1/d) sits against ln n (L11), labelled as the heuristic it is."""
    m = float(M)
    if n < 2:
        return {"score_bound_M": m, "ln_n": 0.0, "M_over_ln_n": None, "label": REGIME_LABEL,
                "verdict": "n = 1: no asymptotic regime"}
    ln_n = math.log(n)
    ratio = m / ln_n
    verdict = (
        "M well below ln n: the almost-linear side (B³ = o(log n))" if ratio < 0.25
        else "M comparable to ln n: near the threshold B = Θ(∛log n), where the rank grows like n^Θ(1) (SETH-hard side)"
        if ratio <= 4 else "M above ln n: beyond the almost-linear regime"
    )
    return {"score_bound_M": m, "ln_n": ln_n, "M_over_ln_n": ratio, "label": REGIME_LABEL, "verdict": verdict}


def rank_exponent(n: int, B: float, d: int, eps: Fraction | float | None = None) -> float:
    """log r / log n with r = C(g+d, d) and g the least Taylor degree reaching ε (default ε = 1/n) on [0, 2B³] (P41)."""
    if n < 2:
        raise ValueError(f"n must be >= 2 for log r / log n; got {n}")
    eps = Fraction(1, n) if eps is None else as_fraction(eps)
    g = taylor_degree(2 * as_fraction(B) ** 3, eps)
    return math.log(_rank(g, d)) / math.log(n)


def _fast_flops(m: int, r: int, d: int, target: str) -> int:
    f = 3 * m * r + 6 * m * r * d + 4 * m * r
    return f if target == "forward" else 2 * f + 6 * m * r * d * d + 4 * d**3 * r


def _exact_flops(m: int, d: int, target: str) -> int:
    f = 4 * m**3 * d + 3 * m**3
    return f if target == "forward" else 3 * f


def _memory(n: int, g: int, d: int, itemsize: int) -> int:
    from ..features import feature_memory_bytes

    return feature_memory_bytes(n, n, n, g, d, itemsize)


def largest_degree(ok: Callable[[int], bool], cap: int = MAX_DEGREE) -> int:
    """The largest g in [0, cap] with ok(g), for a predicate that holds on an initial segment; −1 if ok(0) fails."""
    if not ok(0):
        return -1
    lo, hi = 0, cap + 1  # ok(lo); hi fails or is past the cap
    if ok(cap):
        return cap
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def fast_path_costs(
    n: int, d: int, g: int, itemsize: int, target: str = "forward", memory_limit_bytes: int | None = None
) -> dict[str, Any]:
    """Operation-count model of the fast path (A1/A2, O(n·r·d) / O(n·r·d²)) against the exact Θ(n³d) path.

    Counts multiply-adds of the dominant products in ``verified_ta.fast`` (forward: features 3nr, V^T V1 and
    W^T V2 2·2nrd, U·(…) 2nrd and the normaliser 4nr; gradient adds the three d²×n×r contractions 6nrd² and
    the two d³r einsums) against the exact path (forward 2n³d scores + 3n³ softmax + 2n³d values; the
    gradient about three times that), the crossover n, the features' memory (``features.feature_memory_bytes``)
    and, given a limit, the largest degrees that still fit and still pay. A model, not a measurement:
    benchmarks/bench_fast.py measures.
    """
    r = _rank(g, d)
    lo, hi = 1, 2
    while _fast_flops(hi, r, d, target) >= _exact_flops(hi, d, target):
        hi *= 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if _fast_flops(mid, r, d, target) < _exact_flops(mid, d, target) else (mid, hi)
    crossover = 1 if _fast_flops(1, r, d, target) < _exact_flops(1, d, target) else hi
    fast, exact = _fast_flops(n, r, d, target), _exact_flops(n, d, target)
    costs: dict[str, Any] = {
        "degree": g,
        "rank": r,
        "fast_flops": fast,
        "exact_flops": exact,
        "speedup": exact / fast,
        "fast_memory_bytes": _memory(n, g, d, itemsize),
        "exact_memory_bytes_materialised": n**3 * itemsize,
        "exact_memory_bytes_streaming": 6 * n * d * itemsize,
        "crossover_n": crossover,
        "fast_pays": n >= crossover,
        "max_degree_paying": largest_degree(lambda k: _fast_flops(n, _rank(k, d), d, target) < exact),
    }
    if memory_limit_bytes is not None:
        costs["memory_limit_bytes"] = memory_limit_bytes
        costs["fits_memory"] = costs["fast_memory_bytes"] <= memory_limit_bytes
        costs["max_degree_fitting"] = largest_degree(lambda k: _memory(n, k, d, itemsize) <= memory_limit_bytes)
    return costs
