"""Context parallelism (verified_ta.distributed) on the CPU with gloo, world sizes 1–4, against the single-process
reference in values and all five gradients (SPEC §2, L4); sharding layouts and their causal load balance.

One ``launch_local`` session (4 spawned processes, a free port, a timeout) runs every case of
tests/distributed_cases.py in process groups of 1, 2, 3 and 4 ranks (``new_group``; a spawn costs seconds per
process); the parent process puts the shards back together and compares.

Tolerance (derived, not chosen): the distributed result and the reference are two float64 evaluations of the same
exact values, and ``attention_rounding_bounds`` bounds |evaluation − exact| for any summation order (Higham §3):
that covers the different blocking of the local runs and the cross-rank sums of the reduce-scatter, so
|distributed − reference| <= 2 · bound. With grouped-query heads (g query heads per key head) a key gradient is one
flat sum over the g heads' terms, of length up to g·K with K = n² + 6 + d (one head's longest sum plus factors);
the per-head bound b_h carries γ_K·Σ|terms_h|, and γ_{gK} = gKu/(1 − gKu) <= g·γ_K/(1 − gKu), so the sum's bound
is at most g/(1 − gKu)·Σ_h b_h; computing that in float64 (g additions, two products) adds a factor 1 + γ_{g+2}.
"""

from __future__ import annotations

import functools
from fractions import Fraction

import pytest
import torch
from torch.multiprocessing import ProcessExitedException

from tests import distributed_cases as cases
from verified_ta import distributed as cp
from verified_ta.fp_bounds import attention_rounding_bounds, gamma, unit_roundoff
from verified_ta.masks import pair_mask
from verified_ta.reference import tensor_attention_forward, tensor_attention_reference
from verified_ta.spec import spec

F64 = torch.float64
WORLD_SIZES = (1, 2, 3, 4)
#: seconds the session may take before it counts as a hang (~15 s alone on 2 cores, ~50 s on a box loaded 5×)
SESSION_TIMEOUT = 240.0


@functools.lru_cache(maxsize=None)
def _launch() -> tuple[dict, ...]:
    return tuple(cp.launch_local(cases.run_cases, max(WORLD_SIZES), timeout=SESSION_TIMEOUT))


def session(world_size: int) -> list[dict]:
    """Every rank's results in the process group of ``world_size`` ranks (one launch per test run)."""
    return [rank_results[world_size] for rank_results in _launch()[:world_size]]


@functools.lru_cache(maxsize=None)
def reference(name: str) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    """The single-process results (out, lse, five gradients) of a case and 2 · their rounding bounds (module doc)."""
    n, hq, hkv, causal, window, _ = cases.CASES[name]
    inputs, grad_out = cases.case_inputs(name)
    xs = [x.clone().requires_grad_(True) for x in inputs]
    out, lse = tensor_attention_reference(*xs, causal=causal, window=window, return_lse=True)
    results = [out.detach(), lse.detach(), *torch.autograd.grad((out * grad_out).sum(), xs)]
    g = hq // hkv
    q, kv = inputs[0], inputs[1:]
    per_head = [[attention_rounding_bounds(q[b, h], *(x[b, h // g] for x in kv), grad_out[b, h], causal=causal,
                                           window=window) for h in range(hq)] for b in range(q.shape[0])]
    tol = {k: 2 * torch.stack([torch.stack([ph[k] for ph in row]) for row in per_head]) for k in ("out", "lse", "dq")}
    widen = g / (1 - g * (n * n + 6 + q.shape[-1]) * unit_roundoff(F64)) * (1 + gamma(g + 2, F64))
    for k in ("dk1", "dk2", "dv1", "dv2"):
        sums = [[sum(row[h][k] for h in range(j * g, (j + 1) * g)) for j in range(hkv)] for row in per_head]
        tol[k] = 2 * widen * torch.stack([torch.stack(row) for row in sums])
    return results, tol


def ratios(name: str, shards_per_rank: list[list[torch.Tensor]]) -> dict[str, float]:
    """Worst |distributed − reference| / tolerance per output, the shards put back together in the case's layout."""
    layout = cases.CASES[name][-1]
    results, tol = reference(name)
    worst = {}
    for i, key in enumerate(cases.NAMES):
        full = cp.unshard_sequence([shards[i] for shards in shards_per_rank], layout=layout,
                                   dim=-1 if key == "lse" else -2)
        worst[key] = float(((full - results[i]).abs() / tol[key]).max())
    return worst


# ---------------------------------------------------------------- values and gradients, world sizes 1–4


@spec("P15", "L4")
@pytest.mark.parametrize("name", sorted(cases.CASES))
@pytest.mark.parametrize("world_size", WORLD_SIZES)
def test_matches_single_process_reference(world_size, name):
    """Out, LSE, dQ, dK1, dK2, dV1, dV2 within 2 · the rounding bound of the reference (causal, windowed, GQA)."""
    worst = ratios(name, [r["cases"][name] for r in session(world_size)])
    assert max(worst.values()) <= 1.0, worst


@spec("P15", "L4")
@pytest.mark.parametrize("bug", sorted(cases.PLANTS))
@pytest.mark.parametrize("world_size", WORLD_SIZES[1:])
def test_planted_bug_is_caught(world_size, bug):
    """The comparison that passes the clean code fails each planted bug (tests/distributed_cases.py)."""
    name = cases.PLANTS[bug]
    assert max(ratios(name, [r["cases"][name] for r in session(world_size)]).values()) <= 1.0
    assert max(ratios(name, [r["plants"][bug] for r in session(world_size)]).values()) > 1.0


@pytest.mark.parametrize("world_size", WORLD_SIZES)
def test_module_with_process_group_is_the_distributed_call(world_size):
    """TensorAttention(process_group=...) equals the functional call on its projections; dropping the window fails."""
    results = session(world_size)
    assert all(r["module"] for r in results)
    if world_size > 1:
        assert not all(r["plants"]["module_drops_window"] for r in results)


EXPECTED_ERRORS = {
    "local_shapes": "rank {last}: k1 head dimension d=3 differs from q's d=4",
    "head_dim": "ranks disagree on q leading dimensions and d",
    "lengths": "layout 'contiguous' gives",
    "causal": "ranks disagree on causal: rank 0 True",
    "layout": "ranks disagree on layout: rank 0 'snake'",
}


@pytest.mark.parametrize("world_size", WORLD_SIZES[1:])
def test_mismatched_inputs_fail_on_every_rank(world_size):
    """One rank's bad or disagreeing inputs: every rank raises the same ValueError (then the group still works)."""
    results = session(world_size)
    for what, fragment in EXPECTED_ERRORS.items():
        messages = {r["mismatches"][what] for r in results}
        assert len(messages) == 1, messages
        assert fragment.format(last=world_size - 1) in messages.pop()


@spec("P15", "L4")
@pytest.mark.slow
def test_triton_local_backend_under_the_interpreter(monkeypatch):
    """backend="triton" (non-causal, float32, 2 ranks) meets the kernels' FlashAttention rule (kernels.accuracy);
    the same run without the reduce-scatter fails it."""
    from verified_ta.kernels import accuracy

    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # read by the spawned ranks when they load the kernels
    per_rank = cp.launch_local(cases.triton_case, 2, timeout=SESSION_TIMEOUT)
    *_, n, _ = cases.TRITON_SHAPE
    inputs, dout = accuracy.make_inputs(cases.TRITON_SHAPE, n, n, dtype=torch.float32, seed=3)
    exact = accuracy.reference_result(inputs, dout, scale=None, causal=False, dtype=F64)
    same = accuracy.same_dtype_results(inputs, dout, scale=None, causal=False, dtype=torch.float32)
    floors = accuracy.rounding_floors(inputs, dout, exact, scale=None, causal=False, dtype=torch.float32)
    passed = {}
    for run in ("clean", "no_reduce_scatter"):
        full = [cp.unshard_sequence([r[run][i] for r in per_rank], dim=-1 if i == 1 else -2) for i in range(7)]
        candidate = accuracy.AttentionResult(full[0], full[1], tuple(full[2:]))
        rows = accuracy.flash_rule_rows(candidate, same, exact, floors, torch.float32, f"context parallel {run}")
        passed[run] = {row.name: row.passed for row in rows}
    assert all(passed["clean"].values()), passed["clean"]
    assert not all(passed["no_reduce_scatter"].values())


# ---------------------------------------------------------------- the launcher: crashes and hangs fail, fast


def test_launcher_reports_a_gloo_abort():
    """Ranks that disagree on a raw all_gather size: gloo aborts (SIGABRT), and launch_local raises, not hangs."""
    with pytest.raises(ProcessExitedException, match="SIGABRT"):
        cp.launch_local(cases.unequal_all_gather, 2, timeout=SESSION_TIMEOUT)


def test_launcher_times_out_a_hang():
    with pytest.raises(TimeoutError, match="still running after 2.0 s"):
        cp.launch_local(cases.sleep_forever, 1, timeout=2.0)


def test_launcher_rejects_bad_arguments():
    with pytest.raises(ValueError, match="world_size must be an integer >= 1; got 0"):
        cp.launch_local(cases.sleep_forever, 0)
    with pytest.raises(ValueError, match="timeout must be > 0 seconds; got 0"):
        cp.launch_local(cases.sleep_forever, 1, timeout=0)


# ---------------------------------------------------------------- layouts (no processes)


def test_layouts_on_small_sequences():
    """Hand-written owners: contiguous blocks as tensor_split, zigzag blocks r and 2P − 1 − r, snake 0…P−1, P−1…0."""
    assert cp.shard_owners(7, 3, "contiguous").tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert cp.shard_owners(8, 2, "zigzag").tolist() == [0, 0, 1, 1, 1, 1, 0, 0]
    assert cp.shard_owners(13, 4, "zigzag").tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 3, 3, 2, 1, 0]
    assert cp.shard_owners(10, 3, "snake").tolist() == [0, 1, 2, 2, 1, 0, 0, 1, 2, 2]
    assert cp.shard_sizes(10, 3, "snake") == [3, 3, 4]
    assert cp.shard_positions(10, 3, 1, "snake").tolist() == [1, 4, 7]
    assert cp.DEFAULT_LAYOUT == "snake"


@pytest.mark.parametrize("layout", cp.LAYOUTS)
def test_shard_then_unshard_is_the_identity(layout):
    for n in (1, 2, 5, 8, 13):
        for p in range(1, 6):
            x = torch.arange(2 * n * 3).reshape(2, n, 3)
            shards = [cp.shard_sequence(x, r, p, layout=layout) for r in range(p)]
            assert sorted(torch.cat([s[0, :, 0] for s in shards]).tolist()) == x[0, :, 0].tolist()
            assert torch.equal(cp.unshard_sequence(shards, layout=layout), x)
            assert torch.equal(cp.unshard_sequence([s.transpose(0, 1) for s in shards], layout=layout, dim=0),
                               x.transpose(0, 1))


def test_bad_layout_arguments():
    with pytest.raises(ValueError, match="layout must be one of"):
        cp.shard_owners(4, 2, "striped")
    with pytest.raises(ValueError, match=r"rank must lie in \[0, world_size = 2\); got 2"):
        cp.shard_positions(4, 2, 2)
    with pytest.raises(ValueError, match=r"shards have lengths \[3, 1\]; layout 'snake' gives \[2, 2\]"):
        cp.unshard_sequence([torch.zeros(3, 1), torch.zeros(1, 1)])


@pytest.mark.parametrize("window", [None, (3, 5), (None, 2)], ids=str)
@pytest.mark.parametrize("layout", cp.LAYOUTS)
def test_causal_work_counts_the_visible_pairs(layout, window):
    """causal_work (row ranges) equals the pairs that the mask the reference uses leaves visible, per rank."""
    n, p = 17, 3
    visible = pair_mask(0, n, n, n, "cpu", window).sum(dim=(1, 2))
    owners = cp.shard_owners(n, p, layout)
    assert cp.causal_work(n, p, layout, window) == [int(visible[owners == r].sum()) for r in range(p)]
    assert sum(cp.causal_work(n, 1, layout)) == n * (n + 1) * (2 * n + 1) // 6  # Σ (i + 1)²


@pytest.mark.parametrize("world_size", [2, 4, 8, 16])
def test_snake_balances_the_causal_work(world_size):
    """n = 4096, a multiple of 2P: snake's worst share is exactly 1/P + 2(2P − 1)(P − 1)/(P(n + 1)(2n + 1)) (derived
    in verified_ta.distributed); contiguous and zigzag (balanced for matrix attention, cost ∝ i) are far off for
    tensor attention (cost ∝ i²)."""
    n, p = 4096, world_size
    share = {layout: Fraction(max(w), sum(w)) for layout in cp.LAYOUTS for w in [cp.causal_work(n, p, layout)]}
    assert share["snake"] == Fraction(1, p) + Fraction(2 * (2 * p - 1) * (p - 1), p * (n + 1) * (2 * n + 1))
    assert share["zigzag"] * p >= Fraction(118, 100) and share["contiguous"] * p >= Fraction(17, 10)


# ---------------------------------------------------------------- the local routine: queries at positions


@spec("P15")
@pytest.mark.parametrize("window", [None, (2, 3)], ids=str)
def test_reference_at_query_positions_equals_those_rows(window):
    """A shard of queries at positions pos under the causal mask gives rows pos of the full result (within 2·bound)."""
    g = torch.Generator().manual_seed(3)
    q, k1, k2, v1, v2 = (torch.rand(9, 2, generator=g, dtype=F64) * 2 - 1 for _ in range(5))
    pos = torch.tensor([1, 4, 5, 8])
    out, lse = tensor_attention_forward(q[pos], k1, k2, v1, v2, causal=True, window=window, query_positions=pos)
    full, full_lse = tensor_attention_forward(q, k1, k2, v1, v2, causal=True, window=window)
    b = attention_rounding_bounds(q, k1, k2, v1, v2, causal=True, window=window)
    assert bool(((out - full[pos]).abs() <= 2 * b["out"][pos]).all())
    assert bool(((lse - full_lse[pos]).abs() <= 2 * b["lse"][pos]).all())
    shifted, _ = tensor_attention_forward(q[pos], k1, k2, v1, v2, causal=True, window=window,
                                          query_positions=pos - 1)  # a wrong offset must not pass
    assert not bool(((shifted - full[pos]).abs() <= 2 * b["out"][pos]).all())


def test_query_positions_are_validated():
    q, k = torch.zeros(2, 2, dtype=F64), torch.zeros(4, 2, dtype=F64)
    with pytest.raises(ValueError, match="it needs causal=True"):
        tensor_attention_forward(q, k, k, k, k, query_positions=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="1-D int64 tensor"):
        tensor_attention_forward(q, k, k, k, k, causal=True, query_positions=torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="needs q's length 2"):
        tensor_attention_forward(q, k, k, k, k, causal=True, query_positions=torch.tensor([0]))
    with pytest.raises(ValueError, match=r"must lie in \[0, min\(n1, n2\) = 4\); got \[0, 4\]"):
        tensor_attention_forward(q, k, k, k, k, causal=True, query_positions=torch.tensor([0, 4]))
