"""Exact tensor attention on the CPU: pair-key tiles through torch's fused SDPA kernel (SPEC §2, T10, L4).

A *tile* is a range of query rows and one or two rectangles of pairs (a, b). Its pair keys fl(k1_a ∘ k2_b) and
pair values v1_a ∘ v2_b (T10: the rows of K1⊘K2 and V1⊘V2) are formed, the tile's queries attend to them with
``aten._scaled_dot_product_flash_attention_for_cpu`` (which also returns the tile's natural-log LSE), and the
tiles' ``(out, lse)`` are merged by the exact online-softmax identity

    lse = log(e^{lse₁} + e^{lse₂}),   out = e^{lse₁ − lse}·out₁ + e^{lse₂ − lse}·out₂.

Memory: one tile's pair keys and values (O(block·n·d)) plus O(n·d) accumulators; never the n_q·n1·n2 scores,
never all n1·n2 pair keys at once.

Tiles (:func:`plan_tiles`); every row of a tile sees at least one pair of it, so no tile adds an empty softmax:

- full: blocks of ``block`` k1 rows against all k2 rows, all queries, no mask;
- causal: the pairs with t = max(a, b) in a block [t0, t1) (an L-shaped region of about 2·t·block pairs). The
  queries i >= t1 − 1 see all of it (no mask); only the queries t0 <= i < t1 − 1 need a mask; the queries
  i < t0 see none of it and are skipped. About n³/3 pair scores instead of n³;
- causal with a window (:mod:`verified_ta.masks`): blocks of ``block`` queries; for each, only the k1 and k2
  rows some query of the block sees (``masks.row_ranges``), in blocks of ``block`` k1 rows, masked unless every
  row sees every pair.

Query positions (``query_positions``, causal only: a shard of the queries in context parallelism,
:mod:`verified_ta.distributed`): q's rows are the queries at the strictly increasing sequence positions p of the
keys, and the masks are :func:`verified_ta.masks.query_pair_mask`'s at p. The causal blocks of t run over
[0, p[-1] + 1), and the rows that see all, part or none of a block are the rows with p_i >= t1 − 1,
t0 <= p_i < t1 − 1 and p_i < t0: contiguous ranges, found by bisection since p is sorted. Windowed query blocks
hold the rows whose positions lie in a span of ``block`` positions, so a block's pair rectangles stay within the
window plus ``block`` however sparse the shard. Without positions, p = 0 … n_q − 1: the same plan, bit for bit.

Backward (L4): per tile, the fused kernel's backward given the tile's rows of the *merged* out and lse. It
recomputes P = exp(s − lse) (the global softmax) and δ = ⟨dO, O⟩, so its dQ, dK, dV are the tile's exact share
of the gradient; dK, dV of the pair keys reach k1, k2, v1, v2 by the product rule (dK1_a = Σ_b dK_ab ∘ k2_b, …).
A gradient of the LSE (``return_lse``) is the term P·dlse in dS = P∘(dP − δ + dlse): it enters through one
extra coordinate, zero in q, k1, k2, v1, v2, one in dO and −dlse in O, so the kernel's δ becomes δ − dlse and
nothing else changes. With ``create_graph=True`` the backward is the reference's differentiable L4
(:func:`verified_ta.reference.tensor_attention_backward`), so double backward works.

Deterministic: the kernel parallelises its forward over (batch·heads, query blocks) and its backward over
batch·heads, each output summed in a fixed order; tiles are visited in a fixed order.
Grouped-query heads: the kernel sees batch·key heads as its batch and the g query heads of a key head as its heads,
with the pair keys and values expanded over them by a zero stride: K and V are never repeated, and each query head
computes exactly what it would with its own copy of the keys.
Precision: float64 and float32 run in their own dtype (the kernel's accumulation type); float16/bfloat16
tiles run in the dtype with the kernel's float32 softmax, and the merge and gradients accumulate in float32.
Each score is rounded d + 2 times (the product k1∘k2, d products with q and their sum, the scale), as the
reference's; the merges add a few roundings per tile to each probability (the rigorous bound
:func:`verified_ta.fp_bounds.attention_rounding_bounds`, for any summation order, is what the tests check).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from .masks import Window, check_window, query_pair_mask, row_ranges
from .reference import resolve_scale, tensor_attention_backward
from .validation import check_attention_inputs, check_finite, check_positive_int, check_query_positions

__all__ = [
    "Tile",
    "default_block",
    "plan_tiles",
    "blocked_forward",
    "blocked_backward",
    "BlockedTensorAttention",
    "blocked_tensor_attention",
]

_FLASH = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
_FLASH_BACKWARD = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward

#: a kernel call with fewer multiply-adds (queries · pairs · d) runs on one thread; the element-wise work around the
#: calls (pairs, masks, merges, product rule: O(pairs · d) per tile) always does, so that a tile costs at most one
#: OpenMP fork/join. Measured on the 2-core box shared with other processes (``bench_cpu.py --tune``,
#: one kernel call, 1 vs 2 threads): at load ≈ 10, 6.7e7: 24 vs 32 ms, 2.7e8: 81 vs 70 ms, 1.1e9: 358 vs 192 ms
#: (an OpenMP fork/join costing 12–16 ms; microseconds on an idle machine); at load ≈ 3 a second thread never
#: helped (1.1e9: 109 vs 116 ms). The threshold is the middle of the first crossover, [6.7e7, 2.7e8].
PARALLEL_MIN_WORK = 1 << 27

#: (a0, a1, b0, b1): the pairs with k1 row a in [a0, a1) and k2 row b in [b0, b1)
Rect = tuple[int, int, int, int]


@dataclass(frozen=True)
class Tile:
    """Query rows ``[rows[0], rows[1])`` (rows of q, at their sequence positions) against the pairs of ``rects``;
    ``masked`` unless every row sees every pair."""

    rows: tuple[int, int]
    rects: tuple[Rect, ...]
    masked: bool

    @property
    def pairs(self) -> int:
        return sum((a1 - a0) * (b1 - b0) for a0, a1, b0, b1 in self.rects)


def default_block(n_q: int, n1: int, n2: int, causal: bool, window: Window | None) -> int:
    """The block sizes measured on the 2-core box (``bench_cpu.py --tune``, benchmarks/RESULTS.md, n = 512): full,
    about 16,384 pair keys per tile (one thread: within 10 % from 2,048 to 32,768); causal, blocks of 32 of
    t = max(a, b); windowed, blocks of 32 queries and k1 rows, at most the narrower window side (a query block
    then holds at most 4× the visible pairs)."""
    if not causal:
        return max(1, min(n1, -(-16384 // n2)))
    if window is None:
        return 32
    return max(1, min([32] + [w for w in window if w is not None]))


def _fully_visible(first: int, last: int, rect: Rect, window: Window | None) -> bool:
    """Every query at a position in ``first … last`` sees every pair of ``rect`` under the causal (windowed) mask."""
    a0, a1, b0, b1 = rect
    w1, w2 = window or (None, None)
    return (a1 - 1 <= first and b1 - 1 <= first and (w1 is None or a0 > last - w1)
            and (w2 is None or b0 > last - w2))


def _tile(rows: tuple[int, int], rects: tuple[Rect, ...], causal: bool, window: Window | None,
          positions: Sequence[int]) -> Tile:
    first, last = positions[rows[0]], positions[rows[1] - 1]
    masked = causal and not all(_fully_visible(first, last, r, window) for r in rects)
    return Tile(rows, rects, masked)


def _plan_positions(n_q: int, n1: int, n2: int, causal: bool,
                    query_positions: torch.Tensor | None) -> Sequence[int]:
    """The sequence positions of q's rows: ``query_positions`` (validated, strictly increasing) or 0 … n_q − 1."""
    if query_positions is None:
        return range(n_q)
    check_query_positions(query_positions, n_q, min(n1, n2), causal, increasing=True)
    return query_positions.tolist()


def plan_tiles(n_q: int, n1: int, n2: int, *, causal: bool = False, window: Window | None = None,
               block: int | None = None, query_positions: torch.Tensor | None = None) -> list[Tile]:
    """The tiles that cover every visible (query, pair) exactly once and nothing invisible except under a mask.

    ``query_positions`` (causal): q's rows are the queries at these strictly increasing positions (module docstring).
    """
    window = check_window(window, causal)
    block = default_block(n_q, n1, n2, causal, window) if block is None else check_positive_int("block", block)
    pos = _plan_positions(n_q, n1, n2, causal, query_positions)
    if not causal:
        return [Tile((0, n_q), ((a0, min(n1, a0 + block), 0, n2),), False) for a0 in range(0, n1, block)]
    tiles = []
    if window is None:
        n = pos[-1] + 1
        for t0 in range(0, n, block):
            t1 = min(n, t0 + block)
            rects = ((t0, t1, 0, t1),) + (((0, t0, t0, t1),) if t0 else ())
            sees_part, sees_all = bisect_left(pos, t0), bisect_left(pos, t1 - 1)  # first rows at p >= t0, t1 − 1
            if sees_all > sees_part:
                tiles.append(_tile((sees_part, sees_all), rects, causal, window, pos))
            if sees_all < n_q:
                tiles.append(Tile((sees_all, n_q), rects, False))
        return tiles
    w1, w2 = window
    i0 = 0
    while i0 < n_q:
        i1 = bisect_left(pos, pos[i0] + block, i0)  # the rows at positions pos[i0] … pos[i0] + block − 1
        a_lo, a_hi = row_ranges(pos[i0], pos[i1 - 1], n1, w1)
        for a0 in range(a_lo, a_hi, block):
            a1 = min(a_hi, a0 + block)
            # the rows that see some a in [a0, a1): positions in [a0, a1 − 1 + w1)
            r0 = bisect_left(pos, a0, i0, i1)
            r1 = i1 if w1 is None else bisect_left(pos, a1 - 1 + w1, i0, i1)
            if r0 < r1:
                b0, b1 = row_ranges(pos[r0], pos[r1 - 1], n2, w2)
                tiles.append(_tile((r0, r1), ((a0, a1, b0, b1),), causal, window, pos))
        i0 = i1
    return tiles


def _tile_mask(tile: Tile, window: Window | None, dtype: torch.dtype, positions: torch.Tensor) -> torch.Tensor:
    """Additive mask (m, pairs): 0 where the pair is visible to the query at its sequence position (``positions``
    of q's rows, masks.query_pair_mask), −inf elsewhere."""
    r0, r1 = tile.rows
    w1, w2 = window or (None, None)
    mask = torch.empty(r1 - r0, tile.pairs, dtype=dtype)
    start = 0
    for a0, a1, b0, b1 in tile.rects:
        # the causal (windowed) condition is a conjunction of one condition on a and one on b: −inf + 0 = −inf
        sees_a = query_pair_mask(positions[r0:r1], a1, 1, (w1, None))[:, a0:, 0]
        sees_b = query_pair_mask(positions[r0:r1], 1, b1, (None, w2))[:, 0, b0:]
        add_a, add_b = (torch.zeros(x.shape, dtype=dtype).masked_fill_(~x, -math.inf) for x in (sees_a, sees_b))
        size = (a1 - a0) * (b1 - b0)
        torch.add(add_a[:, :, None], add_b[:, None, :],
                  out=mask[:, start:start + size].unflatten(1, (a1 - a0, b1 - b0)))
        start += size
    return mask


def _pairs(x1: torch.Tensor, x2: torch.Tensor, rects: tuple[Rect, ...], out: torch.Tensor) -> torch.Tensor:
    """The rows fl(x1_a ∘ x2_b) of X1⊘X2 for the pairs of ``rects``, a-major (T10 order), written into ``out``
    ``(H, >= pairs, d)``; returns its first ``pairs`` rows."""
    start = 0
    for a0, a1, b0, b1 in rects:
        size = (a1 - a0) * (b1 - b0)
        torch.mul(x1[:, a0:a1, None], x2[:, None, b0:b1],
                  out=out[:, start:start + size].unflatten(1, (a1 - a0, b1 - b0)))
        start += size
    return out[:, :start]


@contextmanager
def _num_threads(threads: int) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` (a process-wide setting), restored after."""
    before = torch.get_num_threads()
    if threads == before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _kernel_threads(work: int, threads: int) -> int:
    """The caller's ``threads`` for a kernel call of at least ``PARALLEL_MIN_WORK`` multiply-adds, else one."""
    return threads if work >= PARALLEL_MIN_WORK else 1


def _accumulator_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _layout(q: torch.Tensor, kv: list[torch.Tensor], group: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """q as ``(H, g, n_q, d)`` and keys/values as ``(H, n, d)``, H = batch·key heads, g query heads per key head.

    The kernel sees H as its batch and g as its heads; pair keys and values enter expanded over g with stride 0, so
    K and V are never repeated and each query head's computation is the one of the ungrouped case.
    """
    return q.contiguous().reshape(-1, group, *q.shape[-2:]), [x.contiguous().reshape(-1, *x.shape[-2:]) for x in kv]


def _work(tile: Tile, q4: torch.Tensor) -> int:
    """A tile's multiply-adds: queries · pairs · d over all heads."""
    return q4.shape[0] * q4.shape[1] * (tile.rows[1] - tile.rows[0]) * tile.pairs * q4.shape[-1]


def _tile_operands(tiles: list[Tile], q4: torch.Tensor, kv: list[torch.Tensor], window: Window | None,
                   query_positions: torch.Tensor | None
                   ) -> Iterator[tuple[Tile, torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """Each tile with its pair keys and values ``(H, g, pairs, d)`` (stride 0 over g) and additive mask (or None,
    built at ``query_positions``, default 0 … n_q − 1).

    The pairs go into two buffers reused across tiles and are formed again only when the rectangles change (a
    causal block's masked and unmasked tiles share them).
    """
    k1, k2, v1, v2 = kv
    heads, group, d = q4.shape[0], q4.shape[1], q4.shape[-1]
    positions = torch.arange(q4.shape[-2]) if query_positions is None else query_positions
    buffers = [torch.empty(heads, max(t.pairs for t in tiles), d, dtype=k1.dtype) for _ in range(2)]
    rects = None
    for tile in tiles:
        if tile.rects != rects:
            rects = tile.rects
            keys, values = (_pairs(x1, x2, rects, buf)[:, None].expand(heads, group, tile.pairs, d)
                            for x1, x2, buf in ((k1, k2, buffers[0]), (v1, v2, buffers[1])))
        yield tile, keys, values, _tile_mask(tile, window, q4.dtype, positions) if tile.masked else None


def _merge(acc: torch.Tensor, lse: torch.Tensor, out: torch.Tensor, out_lse: torch.Tensor) -> None:
    """In place: (acc, lse) ← the softmax over both pair sets, lse = log(e^lse + e^out_lse) (online softmax)."""
    merged = torch.logaddexp(lse, out_lse)
    acc.mul_(torch.exp(lse - merged).unsqueeze(-1)).add_(out * torch.exp(out_lse - merged).unsqueeze(-1))
    lse.copy_(merged)


def blocked_forward(q: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor, v1: torch.Tensor, v2: torch.Tensor, *,
                    scale: float | None = None, causal: bool = False, window: Window | None = None,
                    block: int | None = None, query_positions: torch.Tensor | None = None,
                    check_values: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact forward on CPU tensors: ``(out, lse)``, out ``(..., n_q, d)`` in q's dtype and the natural-log LSE
    ``(..., n_q)`` in the accumulation dtype (float32 for float16/bfloat16, else q's dtype). ``query_positions``
    (causal): the strictly increasing sequence positions of q's rows, a shard of the queries (default
    0 … n_q − 1). ``check_values=False`` skips the NaN/Inf scan (callers that already validated)."""
    group = check_attention_inputs(q, k1, k2, v1, v2, causal=causal, window=window, check_values=False,
                                   query_positions=query_positions)
    window = check_window(window, causal)
    if q.device.type != "cpu":
        raise ValueError(f"blocked tensor attention runs on CPU tensors; got device {q.device}")
    if check_values:
        for name, x in zip(("q", "k1", "k2", "v1", "v2"), (q, k1, k2, v1, v2)):
            check_finite(name, x)
    s = resolve_scale(scale, q.shape[-1])
    tiles = plan_tiles(q.shape[-2], k1.shape[-2], k2.shape[-2], causal=causal, window=window, block=block,
                       query_positions=query_positions)
    q4, kv = _layout(q, [k1, k2, v1, v2], group)
    acc_dtype = _accumulator_dtype(q.dtype)
    acc = torch.zeros(q4.shape, dtype=acc_dtype)
    lse = torch.full(q4.shape[:-1], -math.inf, dtype=acc_dtype)
    threads = torch.get_num_threads()
    with _num_threads(1):
        for tile, keys, values, mask in _tile_operands(tiles, q4, kv, window, query_positions):
            r0, r1 = tile.rows
            with _num_threads(_kernel_threads(_work(tile, q4), threads)):
                o, o_lse = _FLASH(q4[:, :, r0:r1], keys, values, attn_mask=mask, scale=s)
            _merge(acc[:, :, r0:r1], lse[:, :, r0:r1], o, o_lse)
    return acc.to(q.dtype).reshape(q.shape), lse.reshape(q.shape[:-1])


def _lse_coordinate(xs: list[torch.Tensor], grad_out: torch.Tensor, out: torch.Tensor,
                    grad_lse: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """One extra coordinate, 0 in q, k1, k2, v1, v2, 1 in dO and −dlse in O: the kernel's δ = ⟨dO, O⟩ becomes
    δ − dlse (so dS = P∘(dP − δ + dlse)); scores, dP and the first d gradient columns are unchanged."""
    padded = [torch.nn.functional.pad(x, (0, 1)) for x in xs]
    grad_out = torch.cat([grad_out, torch.ones_like(grad_out[..., :1])], -1)
    return padded, grad_out, torch.cat([out, -grad_lse.to(out.dtype)[..., None]], -1)


def _product_rule(grad_pairs: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor, g1: torch.Tensor, g2: torch.Tensor,
                  rect: Rect) -> None:
    """Pair gradients G ``(H, A, B, d)`` of x1_a ∘ x2_b to the factors: g1_a += Σ_b G_ab ∘ x2_b and
    g2_b += Σ_a G_ab ∘ x1_a."""
    a0, a1, b0, b1 = rect
    g1[:, a0:a1] += (grad_pairs * x2[:, None, b0:b1]).sum(2)
    g2[:, b0:b1] += (grad_pairs * x1[:, a0:a1, None]).sum(1)


def _to_factors(rects: tuple[Rect, ...], grad_keys: torch.Tensor, grad_values: torch.Tensor, kv: list[torch.Tensor],
                grads: list[torch.Tensor]) -> None:
    """Add the pair gradients dK, dV ``(H, pairs, d)`` of ``rects`` to dK1, dK2, dV1, dV2 (``grads[1:]``)."""
    start = 0
    for rect in rects:
        a0, a1, b0, b1 = rect
        size = (a1 - a0, b1 - b0)
        g_k, g_v = (g[:, start:start + size[0] * size[1]].unflatten(1, size) for g in (grad_keys, grad_values))
        start += size[0] * size[1]
        _product_rule(g_k, kv[0], kv[1], grads[1], grads[2], rect)
        _product_rule(g_v, kv[2], kv[3], grads[3], grads[4], rect)


def blocked_backward(grad_out: torch.Tensor, q: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor,
                     v1: torch.Tensor, v2: torch.Tensor, out: torch.Tensor, lse: torch.Tensor, *,
                     scale: float | None = None, causal: bool = False, window: Window | None = None,
                     grad_lse: torch.Tensor | None = None, block: int | None = None,
                     query_positions: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """SPEC L4 ``(dQ, dK1, dK2, dV1, dV2)`` for upstream dO (and d lse) from :func:`blocked_forward`'s out, lse.

    With grouped-query heads the kernel returns one dK, dV per query head of a group (K, V enter expanded over the
    group); they are summed over the group before the product rule. With ``query_positions`` (as in
    :func:`blocked_forward`) the key gradients are the partial sums over this shard of queries.
    """
    group = check_attention_inputs(q, k1, k2, v1, v2, causal=causal, window=window, check_values=False,
                                   query_positions=query_positions)
    window = check_window(window, causal)
    d = q.shape[-1]
    scale = resolve_scale(scale, d)
    tiles = plan_tiles(q.shape[-2], k1.shape[-2], k2.shape[-2], causal=causal, window=window, block=block,
                       query_positions=query_positions)
    acc_dtype = _accumulator_dtype(q.dtype)
    xs = [q, k1, k2, v1, v2]
    if grad_lse is not None:
        xs, grad_out, out = _lse_coordinate(xs, grad_out, out, grad_lse)
    q4, kv = _layout(xs[0], xs[1:], group)
    do4, out4 = (x.contiguous().reshape(q4.shape) for x in (grad_out, out))
    lse4 = lse.to(acc_dtype).contiguous().reshape(q4.shape[:-1])
    grads = [torch.zeros(x.shape, dtype=acc_dtype) for x in (q4, *kv)]
    pending = None  # (rects, dK, dV) of the pair keys and values, summed over the group and the tiles sharing them
    threads = torch.get_num_threads()
    with _num_threads(1):
        for tile, keys, values, mask in _tile_operands(tiles, q4, kv, window, query_positions):
            r0, r1 = tile.rows
            with _num_threads(_kernel_threads(_work(tile, q4), threads)):
                gq, gk, gv = _FLASH_BACKWARD(do4[:, :, r0:r1], q4[:, :, r0:r1], keys, values, out4[:, :, r0:r1],
                                             lse4[:, :, r0:r1], 0.0, False, attn_mask=mask, scale=scale)
            grads[0][:, :, r0:r1] += gq
            gk, gv = (g.sum(1, dtype=acc_dtype) for g in (gk, gv))
            if pending is not None and pending[0] == tile.rects:  # a causal block's second tile: same pairs
                pending[1].add_(gk)
                pending[2].add_(gv)
                continue
            if pending is not None:
                _to_factors(*pending, kv, grads)
            pending = (tile.rects, gk, gv)
        _to_factors(*pending, kv, grads)
    return tuple(g[..., :d].to(x.dtype).reshape(x.shape[:-1] + (d,)) for g, x in zip(grads, xs))


class BlockedTensorAttention(torch.autograd.Function):
    """Blocked forward and backward (module docstring); returns ``(out, lse)``, lse in q's dtype. Values are not
    scanned for NaN/Inf here: :func:`blocked_tensor_attention` and :func:`verified_ta.tensor_attention` validate."""

    @staticmethod
    def forward(ctx, q, k1, k2, v1, v2, scale, causal, window, block,  # type: ignore[override]
                query_positions=None):
        out, lse_acc = blocked_forward(q, k1, k2, v1, v2, scale=scale, causal=causal, window=window, block=block,
                                       query_positions=query_positions, check_values=False)
        lse = lse_acc.to(q.dtype)
        ctx.save_for_backward(q, k1, k2, v1, v2, out, lse, lse_acc)
        ctx.scale, ctx.causal, ctx.window, ctx.block = scale, causal, window, block
        ctx.query_positions = query_positions
        ctx.set_materialize_grads(False)
        return out, lse

    @staticmethod
    def backward(ctx, grad_out, grad_lse):  # type: ignore[override]
        q, k1, k2, v1, v2, out, lse, lse_acc = ctx.saved_tensors
        if grad_out is None:
            grad_out = torch.zeros_like(out)
        if torch.is_grad_enabled():  # create_graph=True: the reference's L4, built from differentiable ops
            grads = tensor_attention_backward(grad_out, q, k1, k2, v1, v2, out, lse, scale=ctx.scale,
                                              causal=ctx.causal, window=ctx.window, grad_lse=grad_lse,
                                              query_positions=ctx.query_positions)
        else:
            grads = blocked_backward(grad_out, q, k1, k2, v1, v2, out, lse_acc, scale=ctx.scale, causal=ctx.causal,
                                     window=ctx.window, grad_lse=grad_lse, block=ctx.block,
                                     query_positions=ctx.query_positions)
        return (*grads, None, None, None, None, None)


def blocked_tensor_attention(
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
    block: int | None = None,
    query_positions: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Differentiable exact tensor attention on CPU tensors (SPEC §2, L4), the fast path of ``tensor_attention``.

    Args:
        q: (..., n_q, d); k1, v1: (..., n1, d); k2, v2: (..., n2, d); one dtype (float16, bfloat16, float32,
            float64), CPU, finite. q may have a multiple g of the keys' heads in dimension -3 (grouped-query heads).
        scale: s in softmax_i(s·⟨q_i, k1_a∘k2_b⟩); None means 1/d.
        causal: keep pairs with a <= i and b <= i; needs n_q = n1 = n2 (or ``query_positions``).
        window: (w1, w2) with causal: i − w1 < a <= i and i − w2 < b <= i (None: unbounded).
        block: tile size (k1 rows per tile; causal: the width of a block of t = max(a, b) or of queries);
            None means :func:`default_block`.
        query_positions: with causal, q's rows are the queries at these positions of the keys' sequence (a shard
            of the queries, as in context parallelism): a strictly increasing 1-D int64 CPU tensor of length n_q
            with values in [0, min(n1, n2)). None: 0 … n_q − 1.
    Returns:
        out (..., n_q, d), or (out, lse) with the natural-log lse (..., n_q), both in q's dtype.
    Raises:
        ValueError: bad shapes, dtype, device, scale, window, block or query positions; non-finite inputs.
    """
    check_attention_inputs(q, k1, k2, v1, v2, causal=causal, window=window, query_positions=query_positions)
    s = resolve_scale(scale, q.shape[-1])
    if block is not None:
        check_positive_int("block", block)
    out, lse = BlockedTensorAttention.apply(q, k1, k2, v1, v2, s, causal, check_window(window, causal), block,
                                            query_positions)
    return (out, lse) if return_lse else out
