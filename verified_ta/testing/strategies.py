"""Hypothesis strategies for tensor attention inputs (composable, valid by construction).

Values are drawn in [-1, 1] and scaled by a bound B (scale, don't filter), never subnormal, so the
same strategies feed float64 properties, low-precision kernels and ``verified-ta conform``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

__all__ = [
    "dims",
    "unit_entries",
    "matrices",
    "attention_inputs",
    "AttentionInputs",
    "PATTERNS",
    "dtypes",
    "pattern_inputs",
    "ConformCase",
    "TILE_EDGES",
    "MAX_WORK",
    "sequence_lengths",
    "conform_cases",
]


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


# --- conformance cases: shapes, scale, pattern and seed; tensors are generated from the seed -----------------

#: input patterns of :func:`pattern_inputs`; "uniform" first so Hypothesis shrinks towards it
PATTERNS = ("uniform", "all_plus_bound", "alternating_signs", "identical_rows", "dominant_pair")


def dtypes(choices: Sequence[torch.dtype] = (torch.float64, torch.float32, torch.bfloat16, torch.float16)) -> st.SearchStrategy[torch.dtype]:
    """A floating dtype (float64 first, so failures shrink towards it)."""
    return st.sampled_from(tuple(choices))


def pattern_inputs(pattern: str, shape: Sequence[int], bound: float, seed: int) -> AttentionInputs:
    """Five float64 CPU tensors of ``shape`` (``(..., n, d)``) with entries in [-B, B], reproducible from ``seed``.

    Adversarial patterns: ``all_plus_bound`` (every entry +B: all scores equal the L5 maximum s·d·B³, so an
    implementation without the row-max shift overflows), ``alternating_signs`` (±, alternating along rows and
    columns, magnitudes in [B/2, B]), ``identical_rows`` (every row of a tensor equal: ties everywhere),
    ``dominant_pair`` (q = +B and one pair (a*, b*) with k1[a*] = k2[b*] = +B, other keys in [-B/4, B/4]).
    """
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {PATTERNS}; got {pattern!r}")
    gen = torch.Generator().manual_seed(seed)
    shape = tuple(shape)

    def uniform(lo: float = -1.0, hi: float = 1.0, size: Sequence[int] = shape) -> torch.Tensor:
        return (torch.rand(tuple(size), generator=gen, dtype=torch.float64) * (hi - lo) + lo) * bound

    if pattern == "uniform":
        ts = [uniform() for _ in range(5)]
    elif pattern == "all_plus_bound":
        ts = [torch.full(shape, float(bound), dtype=torch.float64) for _ in range(5)]
    elif pattern == "alternating_signs":
        r = torch.arange(shape[-2])[:, None]
        c = torch.arange(shape[-1])[None, :]
        sign = 1.0 - 2.0 * ((r + c) % 2).to(torch.float64)
        ts = [uniform(0.5, 1.0) * sign for _ in range(5)]
    elif pattern == "identical_rows":
        ts = [uniform(size=(*shape[:-2], 1, shape[-1])).expand(shape).clone() for _ in range(5)]
    else:  # dominant_pair
        n = shape[-2]
        a, b = (int(torch.randint(n, (1,), generator=gen)) for _ in range(2))
        q = torch.full(shape, float(bound), dtype=torch.float64)
        k1, k2 = uniform(-0.25, 0.25), uniform(-0.25, 0.25)
        k1[..., a, :] = bound
        k2[..., b, :] = bound
        ts = [q, k1, k2, uniform(), uniform()]
    return AttentionInputs(ts)


@dataclass(frozen=True)
class ConformCase:
    """One conformance example, small enough to print: shapes ``(batch, heads, n, d)``, scale, pattern, bound, seed.

    ``window`` is the causal sliding window ``(w1, w2)`` of :mod:`verified_ta.masks` (None: plain causal or full);
    ``kv_heads`` the heads of k1, k2, v1, v2 when they differ from q's (grouped-query heads: ``heads`` is a multiple).
    """

    batch: int
    heads: int
    n: int
    d: int
    scale: float
    causal: bool
    pattern: str
    bound: float
    seed: int
    window: tuple[int | None, int | None] | None = None
    kv_heads: int | None = None

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.heads, self.n, self.d)

    @property
    def work(self) -> int:
        """Scalar multiply-adds of one score tensor, batch·heads·n³·d: what a float64 reference evaluation costs."""
        return self.batch * self.heads * self.n**3 * self.d

    def inputs(self, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> AttentionInputs:
        """``(q, k1, k2, v1, v2)``: q of shape ``(batch, heads, n, d)``, the others with ``kv_heads`` heads."""
        ts = pattern_inputs(self.pattern, self.shape, self.bound, self.seed)
        if self.kv_heads is not None:
            ts = AttentionInputs([ts[0], *(t[:, : self.kv_heads].contiguous() for t in ts[1:])])
        return AttentionInputs(t.to(dtype=dtype, device=device) for t in ts)

    def upstream(self, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> torch.Tensor:
        """A random upstream gradient dO in [-1, 1] (SPEC L4), from the seed's second stream."""
        gen = torch.Generator().manual_seed(self.seed + 1)
        return (torch.rand(self.shape, generator=gen, dtype=torch.float64) * 2 - 1).to(dtype=dtype, device=device)

    def reproduce(self) -> str:
        """A Python line that rebuilds this example's inputs."""
        return f"verified_ta.testing.strategies.{self!r}.inputs(dtype, device)"


#: sequence lengths on both sides of the tile sizes fused kernels use (16, 32, 64 rows; 2·64 + 1 crosses two)
TILE_EDGES = (15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129)
#: largest batch·heads·n³·d of a drawn case: n = 129 at d <= 4, n = 65 at d <= 32, n = 33 at d = 128. The float64
#: reference, its rounding bounds and the L4 backward cost a few seconds there on one CPU core.
MAX_WORK = 9_000_000


def sequence_lengths(min_n: int, max_n: int, *, d: int = 1, max_work: int = MAX_WORK) -> st.SearchStrategy[int]:
    """n in [min_n, max_n]: small lengths (up to 8) or a tile edge (:data:`TILE_EDGES`) with n³·d <= max_work.

    Small lengths come first, so failures shrink towards them; the edges are where blocked kernels go wrong.
    """
    small = st.integers(min_n, max(min_n, min(max_n, 8)))
    edges = [n for n in TILE_EDGES if min_n <= n <= max_n and n**3 * d <= max_work and n > 8]
    if max_n > 8 and max_n**3 * d <= max_work and max_n not in edges:
        edges.append(max_n)
    return st.one_of(small, st.sampled_from(edges)) if edges else small


@st.composite
def conform_cases(
    draw,
    *,
    n: st.SearchStrategy[int] | None = None,
    d: st.SearchStrategy[int] | None = None,
    batch: st.SearchStrategy[int] | None = None,
    heads: st.SearchStrategy[int] | None = None,
    causal: st.SearchStrategy[bool] | None = None,
    bound: st.SearchStrategy[float] | None = None,
    patterns: Sequence[str] = PATTERNS,
    window: tuple[int | None, int | None] | None = None,
    kv_heads: int | None = None,
    max_work: int | None = None,
) -> ConformCase:
    """A :class:`ConformCase`; scale is 1/d, 1/√d or a float in [0.05, 1] (practitioners use all three).

    ``n`` may be a function of d returning a strategy (so long sequences go with small heads). With ``kv_heads``,
    q has ``kv_heads × g`` heads, g drawn by ``heads`` (default 1 or 2). With ``max_work``, batch and heads are capped so that
    batch·heads·n³·d stays within it. ``window`` is passed on to causal cases.
    """
    for p in patterns:
        if p not in PATTERNS:
            raise ValueError(f"patterns must be drawn from {PATTERNS}; got {p!r}")
    d_ = draw(d if d is not None else dims(1, 4))
    n_strategy = n(d_) if callable(n) else n
    n_ = draw(n_strategy if n_strategy is not None else dims(1, 5))
    scale = draw(st.one_of(st.just(1.0 / d_), st.just(d_**-0.5), st.floats(0.05, 1.0)))
    budget = max(1, max_work // (n_**3 * d_)) if max_work is not None else None
    batch_ = draw(batch if batch is not None else st.integers(1, 2))
    if kv_heads is None:
        heads_ = draw(heads if heads is not None else st.integers(1, 2))
    else:
        heads_ = kv_heads * draw(heads if heads is not None else st.integers(1, 2))
    if budget is not None:
        batch_ = min(batch_, max(1, budget // heads_))
    causal_ = draw(causal if causal is not None else st.booleans())
    return ConformCase(
        batch=batch_,
        heads=heads_,
        n=n_,
        d=d_,
        scale=scale,
        causal=causal_,
        pattern=draw(st.sampled_from(tuple(patterns))),
        bound=draw(bound if bound is not None else st.sampled_from((1.0, 0.5, 2.0))),
        seed=draw(st.integers(0, 2**31 - 1)),
        window=window if causal_ else None,
        kv_heads=kv_heads,
    )
