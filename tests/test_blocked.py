"""Unit tests of the blocked CPU path ``verified_ta.blocked``: a realistic size against the rigorous bound, grouped
heads and the LSE gradient against the mpmath oracle, float32/bfloat16 under the FlashAttention rule, double
backward, determinism, memory, bad input, the API dispatch, queries at sequence positions (shards of context
parallelism), and planted bugs that the checks of properties/test_blocked.py (run here unchanged) must catch while
the clean code passes them."""

from __future__ import annotations

import math
from bisect import bisect_right

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from properties.test_blocked import (
    Config,
    check_against_oracle,
    check_against_reference,
    check_plan,
    error_bounds,
    evaluate,
    full_sequence,
    pinned_config,
    plan_work,
    ratio,
    shard_rows,
    work_budget,
)
from verified_ta import blocked
from verified_ta.distributed import LAYOUTS, shard_positions
from verified_ta.fp_bounds import attention_rounding_bounds, gamma
from verified_ta.interface import tensor_attention
from verified_ta.kernels import accuracy
from verified_ta.reference import tensor_attention_reference
from verified_ta.spec import spec

F64 = torch.float64


def random_config(n=(7, 7, 7), d=3, batch=(), causal=False, window=None, block=None, seed=0, scale=None,
                  positions=None, lse_gradient=False) -> Config:
    """Entries in [-1, 1]; with ``positions`` (causal) q holds the queries at those positions of the n1 keys; with
    ``lse_gradient`` the upstream gradient is d lse alone (dO = 0)."""
    g = torch.Generator().manual_seed(seed)
    n_q, n1, n2 = n if positions is None else (len(positions), n[1], n[2])
    inputs = tuple(torch.rand(*batch, m, d, generator=g, dtype=F64) * 2 - 1 for m in (n_q, n1, n2, n1, n2))
    grad_out = torch.rand(*batch, n_q, d, generator=g, dtype=F64) * 2 - 1
    grad_lse = torch.rand(*batch, n_q, generator=g, dtype=F64) * 2 - 1 if lse_gradient else None
    return Config(inputs, torch.zeros_like(grad_out) if lse_gradient else grad_out, grad_lse, scale, causal, window,
                  block, positions)


def _fails(cfg: Config) -> bool:
    r, tol = check_against_reference(cfg)
    return not r <= tol


# ---------------------------------------------------------------- realistic sizes, grouped heads, the LSE gradient


@spec("P15", "L4")
@pytest.mark.parametrize("causal, window, positions", [
    (False, None, None), (True, None, None), (True, (33, 17), None),
    (True, None, shard_positions(100, 3, 0, "snake")), (True, (33, 17), shard_positions(100, 4, 3, "zigzag")),
], ids=["full", "causal", "win", "causal-snake-shard", "win-zigzag-shard"])
def test_realistic_size_within_the_rigorous_bound(causal, window, positions):
    """n = 100, d = 16 (tails: 100 = 2·37 + 26 k1 rows in blocks of 37, 3·32 + 4 with the causal default of 32,
    5·17 + 15 with the windowed default of 17; tiles of up to 5,120 pair keys, so the kernel runs several key blocks
    of 512 per tile): values and gradients within twice the rigorous bound of the chunked reference; the shards
    (34 queries of snake's rank 0 of 3, 25 of zigzag's rank 3 of 4) against the rows at their positions."""
    cfg = random_config(n=(100, 100, 100), d=16, causal=causal, window=window, seed=1, block=None if causal else 37,
                        positions=positions)
    r, tol = check_against_reference(cfg)
    assert r <= tol, r


@spec("P15", "L4")
@pytest.mark.parametrize("causal, window, positions", [
    (False, None, None), (True, None, None), (True, (2, 3), None),
    (True, None, torch.tensor([1, 2, 4])), (True, (2, 3), torch.tensor([0, 3, 4])),
], ids=["full", "causal", "win", "causal-shard", "win-shard"])
def test_grouped_heads_match_the_reference_and_the_oracle(causal, window, positions):
    """6 query heads over 2 key heads (g = 3), block 2, against the chunked reference's grouped heads (itself
    checked against the oracle in tests/test_reference.py); a shard of queries against the rows at its positions
    of the whole sequence's result (upstream gradients zero at the other rows: properties/test_blocked.full_sequence).
    Per query head, out, lse and dQ: within twice its
    rigorous bound; out and lse also within one bound of the mpmath oracle. The key gradients: the reference sums
    three per-head sums (error ≤ Σ_h bound_h + γ_2·Σ_h|term_h|); the kernel forms one flat sum over the group's
    3·n stacked queries, bounded by γ_{3k} ≤ 3·γ_k·(1 + γ_{3k}) times its magnitude (k the longest per-head
    sum), so by 3·(1 + γ_{3k})·Σ_h bound_h."""
    from verified_ta.oracles import mp_attention

    g = torch.Generator().manual_seed(14)
    n, d = 5, 2
    q = torch.rand(1, 6, n, d, generator=g, dtype=F64) * 2 - 1
    kv = [torch.rand(1, 2, n, d, generator=g, dtype=F64) * 2 - 1 for _ in range(4)]
    do = torch.rand(1, 6, n, d, generator=g, dtype=F64) - 0.5
    rows = slice(None) if positions is None else positions
    cfg = Config((q[..., rows, :], *kv), do[..., rows, :], None, None, causal, window, 2, positions)
    full = full_sequence(cfg)
    got = evaluate(lambda *x, **kw: blocked.blocked_tensor_attention(*x, block=2, **kw), cfg)
    want = shard_rows(evaluate(tensor_attention_reference, full), positions)
    mo, ml = mp_attention(full.inputs[0], *kv, causal=causal, window=window, dps=30)
    bounds = [attention_rounding_bounds(full.inputs[0][0, h], *(x[0, h // 3] for x in kv), full.grad_out[0, h],
                                        causal=causal, window=window) for h in range(6)]
    for h, b in enumerate(bounds):
        b_out, b_lse, b_dq = shard_rows([b["out"], b["lse"], b["dq"]], positions)
        for i, bound in enumerate((b_out, b_lse, b_dq)):
            assert ratio(got[i][0, h], want[i][0, h], 2 * bound) <= 1, (h, i)
        assert ratio(got[0][0, h], torch.tensor(mo[0, h].astype(float))[rows], b_out) <= 1
        assert ratio(got[1][0, h], torch.tensor(ml[0, h].astype(float))[rows], b_lse) <= 1
    three = 3 * (1 + gamma(3 * (3 * n * n + 6), F64))
    for name, mine, theirs in zip(("dk1", "dk2", "dv1", "dv2"), got[3:], want[3:]):
        for k in range(2):
            per_head = sum(bounds[h][name] for h in range(3 * k, 3 * k + 3))
            bound = three * per_head + per_head + gamma(2, F64) * _group_term_magnitude(full, k, name)
            assert ratio(mine[0, k], theirs[0, k], bound) <= 1, (name, k)


def _group_term_magnitude(cfg: Config, k: int, name: str) -> torch.Tensor:
    """Σ_h |term_h| over key head k's three query heads: the per-head key gradients, K/V repeated per query head."""
    q, *kv = cfg.inputs
    rep = [x[:, k:k + 1].repeat(1, 3, 1, 1).requires_grad_(True) for x in kv]
    out = tensor_attention_reference(q[:, 3 * k:3 * k + 3], *rep, causal=cfg.causal, window=cfg.window)
    grads = torch.autograd.grad(out, rep, cfg.grad_out[:, 3 * k:3 * k + 3])
    return grads[("dk1", "dk2", "dv1", "dv2").index(name)][0].abs().sum(0)


@spec("L4")
@pytest.mark.parametrize("window", ["causal", (2, 1)], ids=str)
def test_lse_gradient_matches_the_oracle(window):
    """d lse alone (dO = 0): the gradient is the auxiliary attention of properties/test_blocked.error_bounds
    (values k1, k2; upstream s·dlse·q), here computed by the mpmath oracle; within that bound."""
    from verified_ta.oracles import mp_attention, mp_attention_vjp

    cfg = pinned_config(window, n=4, d=2, block=2, lse_gradient=True, seed=3)
    q, k1, k2, _, _ = cfg.inputs
    _, _, dq, dk1, dk2, dv1, dv2 = evaluate(lambda *x, **kw: blocked.blocked_tensor_attention(*x, block=2, **kw), cfg)
    aux_out, _ = mp_attention(q, k1, k2, k1, k2, causal=cfg.causal, window=cfg.window, dps=30)
    s = 1.0 / q.shape[-1]
    aux = mp_attention_vjp(q, k1, k2, k1, k2, s * cfg.grad_lse[:, None] * q, causal=cfg.causal, window=cfg.window,
                           dps=30)
    b = error_bounds(cfg)
    assert ratio(dq, s * cfg.grad_lse[:, None] * torch.tensor(aux_out.astype(float)), b[2]) <= 1
    assert ratio(dk1, torch.tensor(aux[3].astype(float)), b[3]) <= 1
    assert ratio(dk2, torch.tensor(aux[4].astype(float)), b[4]) <= 1
    assert torch.equal(dv1, torch.zeros_like(dv1)) and torch.equal(dv2, torch.zeros_like(dv2))


# ---------------------------------------------------------------- float32 / bfloat16: the FlashAttention rule


@spec("P15", "L4")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_low_precision_meets_the_flash_attention_rule(dtype, causal):
    """Out, LSE and the five gradients against the float64 reference: at most 2 × the worse same-dtype torch
    evaluation's error + the rounding floor (verified_ta.kernels.accuracy), shape (1, 2, 33, 16)."""
    inputs, dout = accuracy.make_inputs((1, 2, 33, 16), 33, 33, dtype=dtype, seed=5)
    exact = accuracy.reference_result(inputs, dout, scale=None, causal=causal, dtype=F64)
    same = accuracy.same_dtype_results(inputs, dout, scale=None, causal=causal, dtype=dtype)
    got = accuracy.autograd_result(lambda *x: blocked.blocked_tensor_attention(*x, causal=causal, return_lse=True),
                                   inputs, dout)
    floors = accuracy.rounding_floors(inputs, dout, exact, scale=None, causal=causal, dtype=dtype)
    rows = accuracy.flash_rule_rows(got, same, exact, floors, dtype, "blocked")
    assert all(r.passed for r in rows), [(r.name, r.error, r.tolerance) for r in rows if not r.passed]


# ---------------------------------------------------------------- autograd, determinism, memory, input errors


@spec("L4")
def test_double_backward_matches_gradgradcheck():
    """create_graph=True runs the reference's differentiable L4 on the blocked forward's out and lse."""
    g = torch.Generator().manual_seed(7)
    xs = [(torch.rand(1, 4, 2, generator=g, dtype=F64) * 2 - 1).requires_grad_(True) for _ in range(5)]
    fn = lambda *x: blocked.blocked_tensor_attention(*x, causal=True, block=2, return_lse=True)  # noqa: E731
    assert torch.autograd.gradgradcheck(fn, xs, fast_mode=True)


@spec("L4")
def test_deterministic_with_two_threads(monkeypatch):
    """Every tile on the multi-threaded kernel: two runs give bitwise equal values and gradients."""
    monkeypatch.setattr(blocked, "PARALLEL_MIN_WORK", 0)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cfg = random_config(n=(40, 40, 40), d=8, batch=(3,), causal=True, seed=8, block=6)
        runs = [evaluate(lambda *x, **kw: blocked.blocked_tensor_attention(*x, block=6, **kw), cfg) for _ in range(2)]
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(*runs))


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor (bytes) any torch op returns while active, autograd's backward included."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.bytes = max(self.bytes, t.numel() * t.element_size())
        return out


def test_memory_holds_one_tile_not_all_pairs():
    """n = 128, d = 16, float64, causal, block 8: no tensor of forward+backward exceeds one tile's pair keys
    (2·block·n·d numbers), far below the n²·d pair keys and the n³ scores; SDPA over the expanded keys forms them
    (control: the instrument sees them). The kernel's internal workspace (threads × 32 × 512) is not a torch op."""
    from verified_ta.kernels.baselines import expanded_sdpa

    n, d, block = 128, 16, 8
    xs = [torch.rand(1, 1, n, d, dtype=F64).requires_grad_(True) for _ in range(5)]
    sizes = {}
    for name, fn in (("blocked", lambda *x, **kw: blocked.blocked_tensor_attention(*x, block=block, **kw)),
                     ("expanded", expanded_sdpa)):
        with LargestTensor() as seen:
            fn(*xs, causal=True).sum().backward()
        sizes[name] = seen.bytes
    assert 0 < sizes["blocked"] <= 2 * block * n * d * 8 < n * n * d * 8 <= sizes["expanded"], sizes


def test_bad_input_rejected():
    xs = list(random_config().inputs)
    with pytest.raises(ValueError, match="block must be an integer >= 1; got 0"):
        blocked.blocked_tensor_attention(*xs, block=0)
    with pytest.raises(ValueError, match="runs on CPU tensors; got device meta"):
        blocked.blocked_forward(*(torch.empty(3, 2, device="meta") for _ in range(5)))
    xs[2] = xs[2].clone()
    xs[2][0, 0] = math.nan
    with pytest.raises(ValueError, match="k2 must be finite"):
        blocked.blocked_tensor_attention(*xs)
    with pytest.raises(ValueError, match="window.*needs causal=True"):
        blocked.blocked_tensor_attention(*random_config().inputs, window=(2, 2))


@spec("P15")
def test_cpu_dispatch_is_the_blocked_path_and_reference_backend_the_reference():
    cfg = random_config(n=(6, 6, 6), batch=(2, 3), causal=True, seed=9, scale=0.3)
    auto = evaluate(tensor_attention, cfg)
    assert all(torch.equal(a, b) for a, b in zip(auto, evaluate(blocked.blocked_tensor_attention, cfg)))
    ref = evaluate(lambda *x, **kw: tensor_attention(*x, backend="reference", **kw), cfg)
    assert all(torch.equal(a, b) for a, b in zip(ref, evaluate(tensor_attention_reference, cfg)))


@spec("P15")
def test_causal_costs_about_a_third():
    """The causal plan at n = 1024 computes at most a third of the pairs plus the masked diagonal band."""
    n, block = 1024, blocked.default_block(1024, 1024, 1024, True, None)
    work = plan_work(blocked.plan_tiles(n, n, n, causal=True))
    assert work <= work_budget(n, True, None, block) and work / n**3 <= 1 / 3 + 3 * block / n


# ---------------------------------------------------------------- queries at sequence positions (shards)


@spec("P15", "L4")
@pytest.mark.parametrize("layout, window", [("contiguous", None), ("zigzag", (5, 9)), ("snake", (None, 3))], ids=str)
def test_every_shard_matches_the_whole_sequence(layout, window):
    """n = 23 (uneven for 3 and 4 ranks), d = 4, batch 2, block 4 (several blocks of t, partial last ones): each of
    3 ranks' shards, out, lse and the five gradients within twice the rigorous bound of the whole sequence's
    reference at its rows; then d lse alone (dO = 0) on the last rank's shard of 4."""
    for rank in range(3):
        cfg = random_config(n=(23, 23, 23), d=4, batch=(2,), causal=True, window=window, block=4, seed=rank,
                            positions=shard_positions(23, 3, rank, layout))
        r, tol = check_against_reference(cfg)
        assert r <= tol, (rank, r)
    cfg = random_config(n=(23, 23, 23), d=4, batch=(2,), causal=True, window=window, block=4, seed=5,
                        positions=shard_positions(23, 4, 3, layout), lse_gradient=True)
    r, tol = check_against_reference(cfg)
    assert r <= tol, r


@spec("P15")
@pytest.mark.parametrize("window, block", [(None, 3), (None, None), ((3, 5), 2), ((None, 2), 4)], ids=str)
def test_positions_zero_to_n_are_the_plain_path_bit_for_bit(window, block):
    """query_positions = 0 … n − 1 gives the plan and, bit for bit, the values and gradients of query_positions=None
    (grouped heads, d lse included). (Before this option existed, the None path was checked bit for bit against the
    previous module: same plans for n < 60, equal values and gradients in float64, float32 and bfloat16.)"""
    g = torch.Generator().manual_seed(30)
    n, d = 19, 3
    q = torch.rand(2, 4, n, d, generator=g, dtype=F64) * 2 - 1
    kv = [torch.rand(2, 2, n, d, generator=g, dtype=F64) * 2 - 1 for _ in range(4)]
    do, dlse = torch.rand(2, 4, n, d, generator=g, dtype=F64), torch.rand(2, 4, n, generator=g, dtype=F64)
    runs = []
    for positions in (None, torch.arange(n)):
        assert (blocked.plan_tiles(n, n, n, causal=True, window=window, block=block, query_positions=positions)
                == blocked.plan_tiles(n, n, n, causal=True, window=window, block=block))
        xs = [x.clone().requires_grad_(True) for x in (q, *kv)]
        out, lse = blocked.blocked_tensor_attention(*xs, causal=True, window=window, block=block, return_lse=True,
                                                    query_positions=positions)
        runs.append([out, lse, *torch.autograd.grad((out * do).sum() + (lse * dlse).sum(), xs)])
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_bad_query_positions_rejected():
    q, k = torch.zeros(3, 2, dtype=F64), torch.zeros(6, 2, dtype=F64)
    attention = blocked.blocked_tensor_attention
    with pytest.raises(ValueError, match=r"strictly increasing \(sorted, no repeats\); got 4 then 1 at rows 1, 2"):
        attention(q, k, k, k, k, causal=True, query_positions=torch.tensor([0, 4, 1]))
    with pytest.raises(ValueError, match="strictly increasing"):
        attention(q, k, k, k, k, causal=True, query_positions=torch.tensor([0, 2, 2]))
    with pytest.raises(ValueError, match="it needs causal=True"):
        attention(q, k, k, k, k, query_positions=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="needs q's length 3"):
        attention(q, k, k, k, k, causal=True, query_positions=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"must lie in \[0, min\(n1, n2\) = 6\); got \[0, 6\]"):
        attention(q, k, k, k, k, causal=True, query_positions=torch.tensor([0, 1, 6]))
    with pytest.raises(ValueError, match="1-D int64 tensor"):
        blocked.plan_tiles(3, 6, 6, causal=True, query_positions=torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="causal=True needs n_q = n1 = n2"):
        attention(q, k, k, k, k, causal=True)


# ---------------------------------------------------------------- planted bugs


def _max_not_logaddexp(acc, lse, out, out_lse):
    """Merge bug: the larger of the two LSEs instead of log(e^lse + e^out_lse)."""
    merged = torch.maximum(lse, out_lse)
    acc.mul_(torch.exp(lse - merged).unsqueeze(-1)).add_(out * torch.exp(out_lse - merged).unsqueeze(-1))
    lse.copy_(merged)


def _no_rescale(acc, lse, out, out_lse):
    """Merge bug: the running output is not rescaled by e^{lse − merged}."""
    merged = torch.logaddexp(lse, out_lse)
    acc.add_(out * torch.exp(out_lse - merged).unsqueeze(-1))
    lse.copy_(merged)


CONFIGS = {
    "full": random_config(n=(5, 6, 7), block=2, seed=20),
    "causal": random_config(n=(9, 9, 9), causal=True, block=3, seed=21),
    "window": random_config(n=(9, 9, 9), causal=True, window=(3, 2), block=2, seed=22),
    # shards of 13 positions on 3 ranks: snake's rank 0 [0, 5, 6, 11, 12], zigzag's rank 0 [0, 1, 2, 10, 11, 12]
    "causal_shard": random_config(n=(13, 13, 13), causal=True, block=3, seed=23,
                                  positions=shard_positions(13, 3, 0, "snake")),
    "window_shard": random_config(n=(13, 13, 13), causal=True, window=(3, 2), block=2, seed=24,
                                  positions=shard_positions(13, 3, 0, "zigzag")),
}
SHARDS = ["causal_shard", "window_shard"]


def _plan_check(cfg: Config) -> str | None:
    """check_plan of the plan blocked.plan_tiles (possibly patched) makes for a config."""
    n_q, n1, n2 = cfg.inputs[0].shape[-2], cfg.inputs[1].shape[-2], cfg.inputs[2].shape[-2]
    tiles = blocked.plan_tiles(n_q, n1, n2, causal=cfg.causal, window=cfg.window, block=cfg.block,
                               query_positions=cfg.positions)
    return check_plan(tiles, n_q, n1, n2, cfg.causal, cfg.window, cfg.positions)


@spec("P15")
@pytest.mark.parametrize("name", list(CONFIGS))
def test_clean_code_passes_the_checks_the_mutants_fail(name):
    cfg = CONFIGS[name]
    assert not _fails(cfg)
    assert _plan_check(cfg) is None


@spec("P15")
@pytest.mark.parametrize("merge", [_max_not_logaddexp, _no_rescale], ids=lambda f: f.__name__)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_wrong_merge_of_tile_lses_is_caught(monkeypatch, merge, name):
    monkeypatch.setattr(blocked, "_merge", merge)
    assert _fails(CONFIGS[name])


@spec("P15")
def test_skipped_diagonal_tiles_are_caught(monkeypatch):
    """A plan without the masked (diagonal) tiles: queries t0 … t1 − 2 of each causal block lose their newest
    pairs."""
    clean = blocked.plan_tiles

    def no_diagonal(*args, **kw):
        return [t for t in clean(*args, **kw) if not t.masked]

    monkeypatch.setattr(blocked, "plan_tiles", no_diagonal)
    assert "covered 0 times, visible=True" in check_plan(blocked.plan_tiles(9, 9, 9, causal=True, block=3),
                                                         9, 9, 9, True, None)
    assert _fails(CONFIGS["causal"])


@spec("P15")
def test_unmasked_tile_one_row_early_is_caught(monkeypatch):
    """A causal block's unmasked tile starting at query t1 − 2: that query sees pairs with max(a, b) = t1 − 1."""
    clean = blocked.plan_tiles

    def early(*args, **kw):
        return [blocked.Tile((max(0, t.rows[0] - 1), t.rows[1]), t.rects, t.masked) if not t.masked and t.rows[0] else t
                for t in clean(*args, **kw)]

    monkeypatch.setattr(blocked, "plan_tiles", early)
    assert "unmasked but holds a hidden pair" in check_plan(blocked.plan_tiles(9, 9, 9, causal=True, block=3),
                                                            9, 9, 9, True, None)
    assert _fails(CONFIGS["causal"])


@spec("P15")
def test_window_block_range_off_by_one_is_caught(monkeypatch):
    """row_ranges one row short at the old end: the oldest visible k1 (and k2) row of each query block is never
    visited."""
    from verified_ta import masks

    monkeypatch.setattr(blocked, "row_ranges", lambda first, last, n, w: (
        min(masks.row_ranges(first, last, n, w)[0] + (w is not None), last), masks.row_ranges(first, last, n, w)[1]))
    cfg = CONFIGS["window"]
    assert "covered 0 times, visible=True" in check_plan(blocked.plan_tiles(9, 9, 9, causal=True, window=(3, 2),
                                                                            block=2), 9, 9, 9, True, (3, 2))
    assert _fails(cfg)


@spec("P15")
def test_window_wider_by_one_in_the_mask_is_caught(monkeypatch):
    """The tile mask built with w1 + 1: masked tiles let one more k1 row through."""
    from verified_ta import masks

    clean = masks.query_pair_mask
    monkeypatch.setattr(blocked, "query_pair_mask", lambda pos, n1, n2, w=None: clean(
        pos, n1, n2, (None if w[0] is None else w[0] + 1, w[1])))
    assert _fails(CONFIGS["window"])


@spec("P15")
def test_dropped_tail_tile_is_caught_at_a_realistic_size(monkeypatch):
    """The last, partial block of k1 rows dropped (range(0, n1 − block + 1, block)): invisible in the small
    properties whenever n1 is a multiple of the block, caught at n = 100 with blocks of 37 rows."""
    clean = blocked.plan_tiles

    def no_tail(n_q, n1, n2, *, causal=False, window=None, block=None, query_positions=None):
        tiles = clean(n_q, n1, n2, causal=causal, window=window, block=block, query_positions=query_positions)
        return [t for t in tiles if causal or t.rects[0][1] - t.rects[0][0] == tiles[0].rects[0][1]]

    cfg = random_config(n=(100, 100, 100), d=16, seed=1, block=37)
    assert not _fails(cfg)
    monkeypatch.setattr(blocked, "plan_tiles", no_tail)
    assert _fails(cfg)


@spec("L4")
def test_swapped_factor_in_the_product_rule_is_caught(monkeypatch):
    """dK2_b += Σ_a dK_ab ∘ k2_b (its own factor instead of k1_a)."""

    def swapped(grad_pairs, x1, x2, g1, g2, rect):
        a0, a1, b0, b1 = rect
        g1[:, a0:a1] += (grad_pairs * x2[:, None, b0:b1]).sum(2)
        g2[:, b0:b1] += (grad_pairs * x2[:, None, b0:b1]).sum(1)

    monkeypatch.setattr(blocked, "_product_rule", swapped)
    assert _fails(CONFIGS["causal"])


@spec("L4")
def test_lse_gradient_with_the_wrong_sign_is_caught(monkeypatch):
    """δ + dlse instead of δ − dlse in the extra coordinate (and the clean code passes the same check)."""
    cfg = pinned_config("causal", n=6, d=2, block=2, lse_gradient=True, seed=4)
    assert not _fails(cfg)
    clean = blocked._lse_coordinate
    monkeypatch.setattr(blocked, "_lse_coordinate", lambda xs, do, out, g: clean(xs, do, out, -g))
    assert _fails(cfg)


@spec("P15")
@pytest.mark.parametrize("name", SHARDS)
def test_query_positions_ignored_by_the_plan_are_caught(monkeypatch, name):
    """The plan built for rows 0 … m − 1 instead of the shard's positions: the pairs beyond m − 1, and the rows'
    own newest pairs, are never visited."""
    monkeypatch.setattr(blocked, "_plan_positions", lambda n_q, n1, n2, causal, positions: range(n_q))
    assert _plan_check(CONFIGS[name]) is not None
    assert _fails(CONFIGS[name])


@spec("P15")
@pytest.mark.parametrize("name", SHARDS)
def test_tile_masks_at_local_rows_are_caught(monkeypatch, name):
    """The right plan, but the masked tiles' masks built for rows 0 … m − 1 instead of the shard's positions."""
    clean = blocked._tile_operands
    monkeypatch.setattr(blocked, "_tile_operands",
                        lambda tiles, q4, kv, window, positions: clean(tiles, q4, kv, window, None))
    assert _plan_check(CONFIGS[name]) is None
    assert _fails(CONFIGS[name])


@spec("P15")
@pytest.mark.parametrize("name", ["causal", "window", *SHARDS])
def test_row_boundary_off_by_one_is_caught(monkeypatch, name):
    """The rows of a block found with bisect_right instead of bisect_left: a row whose position equals a block's
    first t (causal) or first k1 row (window) is skipped as if it saw none of the block."""
    monkeypatch.setattr(blocked, "bisect_left", bisect_right)
    assert _plan_check(CONFIGS[name]) is not None
    assert _fails(CONFIGS[name])


@spec("P15")
def test_oracle_check_catches_a_wrong_merge(monkeypatch):
    """The mpmath-oracle check of properties/test_blocked.py fails on the merge bug the clean code passes."""
    cfg = CONFIGS["causal"]
    r, tol = check_against_oracle(cfg)
    assert r <= tol
    monkeypatch.setattr(blocked, "_merge", _max_not_logaddexp)
    r, tol = check_against_oracle(cfg)
    assert not r <= tol
