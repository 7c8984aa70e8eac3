"""Unit tests of the exact reference (SPEC §2): shapes, batching, dtypes, bad input, chunk memory, and planted bugs
that the forward properties of properties/test_forward.py must catch (their check functions run on mutants)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from properties.test_forward import (
    Case,
    bounds,
    check_chunking,
    check_p15_definition,
    check_p16,
    check_p17,
    check_p18,
    check_p19,
    check_p20,
    check_p21,
    check_p22,
    check_p23,
    pinned,
    pinned_shifts,
    ratio,
)
from verified_ta import reference
from verified_ta.fp_bounds import attention_rounding_bounds, gamma
from verified_ta.reference import tensor_attention_forward, tensor_attention_reference
from verified_ta.spec import spec

F64 = torch.float64


def random_case(batch=(), n=(3, 3, 3), d=2, causal=False, seed=0, dtype=F64) -> Case:
    g = torch.Generator().manual_seed(seed)
    n_q, n1, n2 = n
    ts = [torch.rand((*batch, m, d), generator=g, dtype=F64).mul(2).sub(1).to(dtype) for m in (n_q, n1, n2, n1, n2)]
    return Case(*ts, causal=causal)


# ---------------------------------------------------------------- shapes, batching, dtypes


@spec("P15")
@pytest.mark.parametrize("causal", [False, True])
def test_shapes_and_dtypes(causal):
    n = (4, 4, 4) if causal else (4, 2, 5)
    case = random_case(batch=(2, 3), n=n, d=3, causal=causal)
    out, lse = tensor_attention_forward(*case.inputs, causal=causal)
    assert out.shape == (2, 3, 4, 3) and lse.shape == (2, 3, 4)
    assert out.dtype == lse.dtype == F64
    also = tensor_attention_reference(*case.inputs, causal=causal, return_lse=True)
    assert torch.equal(also[0], out) and torch.equal(also[1], lse)
    assert torch.equal(tensor_attention_reference(*case.inputs, causal=causal), out)


@spec("P15")
@pytest.mark.parametrize("causal", [False, True])
def test_batched_equals_per_head(causal):
    case = random_case(batch=(2, 3), n=(3, 3, 3), d=2, causal=causal)
    out, lse = tensor_attention_forward(*case.inputs, causal=causal)
    b_out, b_lse = bounds(*case.inputs, scale=case.s, causal=causal)
    for idx in np.ndindex(2, 3):
        o, l = tensor_attention_forward(*(t[idx] for t in case.inputs), causal=causal)
        assert ratio(o - out[idx], 2 * b_out[idx]) <= 1 and ratio(l - lse[idx], 2 * b_lse[idx]) <= 1


@spec("P15")
def test_float32_agrees_with_float64_within_both_bounds():
    """Inputs representable in float32 are the exact values of both evaluations: |out32 − out64| <= b32 + b64."""
    case32 = random_case(n=(4, 3, 5), d=3, dtype=torch.float32)
    x64 = [t.to(F64) for t in case32.inputs]
    out32, lse32 = tensor_attention_forward(*case32.inputs)
    out64, lse64 = tensor_attention_forward(*x64)
    assert out32.dtype == torch.float32
    b32 = attention_rounding_bounds(*x64, scale=1 / 3, dtype=torch.float32)
    b64 = attention_rounding_bounds(*x64, scale=1 / 3)
    assert ratio(out32.to(F64) - out64, b32["out"] + b64["out"]) <= 1
    assert ratio(lse32.to(F64) - lse64, b32["lse"] + b64["lse"]) <= 1


def test_numpy_inputs_rejected():
    a = np.ones((2, 2))
    with pytest.raises(ValueError, match="q must be a torch.Tensor"):
        tensor_attention_forward(a, a, a, a, a)


# ---------------------------------------------------------------- bad input


def _inputs(n=(3, 3, 3), d=2, **over):
    t = {name: torch.ones(m, d, dtype=F64) for name, m in zip(("q", "k1", "k2", "v1", "v2"), (n[0], n[1], n[2], n[1], n[2]))}
    t.update(over)
    return t


BAD = [
    ("d mismatch", _inputs(k2=torch.ones(3, 4, dtype=F64)), {}, "k2 head dimension d=4 differs from q's d=2"),
    ("batch mismatch", _inputs(v1=torch.ones(2, 3, 2, dtype=F64)), {}, "v1 leading dimensions"),
    ("q heads not a multiple", _inputs(q=torch.ones(3, 3, 2, dtype=F64), **{k: torch.ones(2, 3, 2, dtype=F64)
                                       for k in ("k1", "k2", "v1", "v2")}), {}, "differ only in the head dimension"),
    ("window without causal", _inputs(), {"window": (2, 2)}, "needs causal=True"),
    ("window w1 = 0", _inputs(), {"causal": True, "window": (0, 2)}, "window w1 must be None .* integer >= 1"),
    ("window not a pair", _inputs(), {"causal": True, "window": 3}, "window must be None or a pair"),
    ("k1/v1 lengths", _inputs(v1=torch.ones(4, 2, dtype=F64)), {}, "k1 and v1 need the same length n1"),
    ("k2/v2 lengths", _inputs(v2=torch.ones(2, 2, dtype=F64)), {}, "k2 and v2 need the same length n2"),
    ("n = 0", _inputs(q=torch.ones(0, 2, dtype=F64)), {}, "q needs n >= 1 and d >= 1"),
    ("d = 0", _inputs(d=0), {}, "q needs n >= 1 and d >= 1"),
    ("1-D", _inputs(q=torch.ones(2, dtype=F64)), {}, "q must have shape \\(..., n, d\\)"),
    ("NaN", _inputs(k1=torch.full((3, 2), math.nan, dtype=F64)), {}, "k1 must be finite"),
    ("Inf", _inputs(v2=torch.full((3, 2), math.inf, dtype=F64)), {}, "v2 must be finite"),
    ("int dtype", _inputs(q=torch.ones(3, 2, dtype=torch.int64)), {}, "q dtype must be one of float16, bfloat16"),
    ("mixed dtypes", _inputs(v1=torch.ones(3, 2, dtype=torch.float32)), {}, "must share one dtype"),
    ("mixed devices", _inputs(v1=torch.ones(3, 2, dtype=F64, device="meta")), {}, "must be on one device"),
    ("causal n_q != n1", _inputs(n=(2, 3, 3)), {"causal": True}, "causal=True needs n_q = n1 = n2"),
    ("causal n1 != n2", _inputs(n=(3, 3, 2)), {"causal": True}, "causal=True needs n_q = n1 = n2"),
    ("chunk_size = 0", _inputs(), {"chunk_size": 0}, "chunk_size must be an integer >= 1"),
]


@pytest.mark.parametrize("label, tensors, kw, match", BAD, ids=[b[0] for b in BAD])
def test_bad_input_raises_value_error(label, tensors, kw, match):
    for fn in (tensor_attention_forward, tensor_attention_reference):
        with pytest.raises(ValueError, match=match):
            fn(*tensors.values(), **kw)


# ---------------------------------------------------------------- chunking: no n³ intermediate


@spec("P15")
def test_chunk_plan_for_4096_tokens_never_holds_n_cubed():
    """A 4096-token self-attention call is planned in query chunks of at most CHUNK_ELEMENTS scores
    (one query when n1·n2 alone exceeds it): at most 4096² scores live at once, never 4096³."""
    n = 4096
    chunks = list(reference._chunks(n, n, n, None))
    assert chunks[0][0] == 0 and chunks[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))  # a partition of the queries
    biggest = max(stop - start for start, stop in chunks) * n * n
    assert biggest <= max(reference.CHUNK_ELEMENTS, n * n) < n**3


@spec("P15")
def test_chunked_call_respects_the_score_budget(monkeypatch):
    """A real 4096-query call (n1 = n2 = 16, d = 1) with the budget lowered to 2^12 scores: every score block
    built by forward and backward has <= 2^12 entries (the whole would be 2^20), and the result equals the
    one-chunk evaluation within twice the rounding bound."""
    budget = 1 << 12
    sizes: list[int] = []
    inner = reference._chunk_scores

    def recording(*args, **kw):
        s, qk1 = inner(*args, **kw)
        sizes.append(s.numel())
        return s, qk1

    case = random_case(n=(4096, 16, 16), d=1)
    whole = tensor_attention_forward(*case.inputs, chunk_size=4096)
    monkeypatch.setattr(reference, "CHUNK_ELEMENTS", budget)
    monkeypatch.setattr(reference, "_chunk_scores", recording)
    out, lse = tensor_attention_forward(*case.inputs)
    grads = reference.tensor_attention_backward(torch.ones_like(out), *case.inputs, out, lse, scale=case.s)
    assert len(sizes) == 2 * (4096 // 16) and max(sizes) <= budget
    assert all(g.shape == t.shape for g, t in zip(grads, case.inputs))
    b_out, b_lse = bounds(*case.inputs, scale=case.s, causal=False)
    assert ratio(out - whole[0], 2 * b_out) <= 1 and ratio(lse - whole[1], 2 * b_lse) <= 1


@spec("P15")
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 2, 5])
def test_explicit_chunk_sizes_agree(causal, chunk_size):
    case = random_case(batch=(2,), n=(5, 5, 5), d=2, causal=causal)
    r, tol = check_chunking(tensor_attention_forward, case, chunk_size)
    assert r <= tol


# ---------------------------------------------------------------- planted bugs: the properties must fail


def swapped_keys(q, k1, k2, v1, v2, **kw):
    """Mutant: K1 ↔ K2 but not V1 ↔ V2 (the scores' ⊘ order differs from the values')."""
    return tensor_attention_forward(q, k2, k1, v1, v2, **kw)


def planted(bug: str):
    """A forward with one planted bug: ``ignores_scale`` (always s = 1), ``no_max_shift`` (exp of raw scores),
    ``per_a_normaliser`` (softmax over b for each a instead of over all pairs)."""

    def impl(q, k1, k2, v1, v2, *, scale, causal=False):
        s = 1.0 if bug == "ignores_scale" else scale
        S = s * torch.einsum("...il,...al,...bl->...iab", q, k1, k2)
        if causal:
            i, a, b = (torch.arange(t.shape[-2]) for t in (q, k1, k2))
            S = S.masked_fill(~((a[None, :, None] <= i[:, None, None]) & (b[None, None, :] <= i[:, None, None])), -math.inf)
        m = torch.zeros_like(S) if bug == "no_max_shift" else S.amax((-2, -1), keepdim=True)
        e = torch.exp(S - m)
        total = e.sum(-1, keepdim=True) if bug == "per_a_normaliser" else e.sum((-2, -1), keepdim=True)
        lse = (m + torch.log(e.sum((-2, -1), keepdim=True)))[..., 0, 0]
        return torch.einsum("...iab,...al,...bl->...il", e / total, v1, v2), lse

    return impl


def _fails(check, impl, *args) -> bool:
    r, tol = check(impl, *args)
    return not r <= tol


@spec("P15", "P16", "P17", "P22", "P23")
def test_swapped_pair_order_between_keys_and_values_is_caught():
    case = random_case(n=(3, 3, 3), d=2, seed=1)
    perm1, perm2 = torch.tensor([1, 2, 0]), torch.tensor([0, 1, 2])
    for check, args in (
        (check_p15_definition, ()),
        (check_p16, (perm1, perm2)),
        (check_p17, ()),
        (check_p23, ()),
        (check_p22, ()),
    ):
        assert not _fails(check, tensor_attention_forward, case, *args), check.__name__  # control
    assert _fails(check_p15_definition, swapped_keys, case)
    assert _fails(check_p16, swapped_keys, case, perm1, perm2)
    assert _fails(check_p17, swapped_keys, case)
    assert _fails(check_p23, swapped_keys, case)
    # P22 cannot see this bug: swapping both pairs commutes with swapping the keys alone
    assert not _fails(check_p22, swapped_keys, case)


@spec("P15", "P17")
def test_transposed_pair_index_in_scores_is_caught(monkeypatch):
    inner = reference._chunk_scores

    def transposed(*args, **kw):
        s, qk1 = inner(*args, **kw)
        return s.transpose(-1, -2), qk1  # S[i, b, a] where S[i, a, b] belongs

    case = random_case(batch=(2,), n=(3, 3, 3), d=2, seed=2)
    monkeypatch.setattr(reference, "_chunk_scores", transposed)
    assert _fails(check_p15_definition, tensor_attention_forward, case)
    assert _fails(check_p17, tensor_attention_forward, case)


@spec("P22")
def test_one_sided_causal_mask_is_caught(monkeypatch):
    case = random_case(n=(4, 4, 4), d=2, causal=True, seed=3)
    assert not _fails(check_p22, tensor_attention_forward, case)
    monkeypatch.setattr(
        reference, "causal_mask", lambda start, stop, n1, n2, device, window=None: (
            torch.arange(n1)[None, :, None] <= torch.arange(start, stop)[:, None, None]
        ).expand(stop - start, n1, n2)
    )
    assert _fails(check_p22, tensor_attention_forward, case)


@spec("P18", "P19", "P20", "P21")
def test_softmax_bugs_are_caught():
    plus = pinned("all_plus_bound")
    causal = random_case(n=(3, 3, 3), d=2, causal=True, seed=4)
    for case in (plus, causal):
        assert not _fails(check_p18, planted("none"), case)
        assert not _fails(check_p19, planted("none"), case)
        assert not _fails(check_p21, planted("none"), case, pinned_shifts(case))
    assert _fails(check_p18, planted("per_a_normaliser"), plus)
    assert _fails(check_p19, planted("per_a_normaliser"), plus)
    assert not _fails(check_p20, planted("none"), plus)
    assert _fails(check_p20, planted("ignores_scale"), plus)
    assert _fails(check_p21, planted("no_max_shift"), plus, pinned_shifts(plus))
    assert _fails(check_p21, planted("no_max_shift"), causal, pinned_shifts(causal))


# ---------------------------------------------------------------- sliding window and grouped-query heads


def _oracle_check(out, lse, inputs, *, causal, window, grads=None, grad_out=None) -> bool:
    """True iff out, lse (and the five gradients) lie within the rigorous float64 bound of the mpmath oracle (P15, L4)."""
    from verified_ta.oracles import mp_attention, mp_attention_vjp

    mo, ml = mp_attention(*inputs, causal=causal, window=window, dps=30)
    b = attention_rounding_bounds(*inputs, grad_out, causal=causal, window=window)
    ok = bool((out - torch.tensor(mo.astype(float))).abs().le(b["out"]).all())
    ok &= bool((lse - torch.tensor(ml.astype(float))).abs().le(b["lse"]).all())
    if grads is not None:
        exact = mp_attention_vjp(*inputs, grad_out, causal=causal, window=window, dps=30)
        for name, g, e in zip(("dq", "dk1", "dk2", "dv1", "dv2"), grads, exact):
            ok &= bool((g - torch.tensor(e.astype(float))).abs().le(b[name]).all())
    return ok


WINDOWS = [(1, 1), (2, 3), (3, None), (None, 2), (5, 5)]


@spec("P15", "L4")
@pytest.mark.parametrize("window", WINDOWS, ids=str)
def test_window_matches_the_oracle_in_value_and_gradients(window):
    case = random_case(n=(5, 5, 5), d=2, causal=True, seed=11)
    xs = [x.clone().requires_grad_(True) for x in case.inputs]
    out, lse = tensor_attention_reference(*xs, causal=True, window=window, return_lse=True, chunk_size=2)
    grad_out = torch.rand(5, 2, dtype=F64, generator=torch.Generator().manual_seed(1)) - 0.5
    grads = torch.autograd.grad(out, xs, grad_out)
    assert _oracle_check(out.detach(), lse.detach(), case.inputs, causal=True, window=window, grads=grads,
                         grad_out=grad_out)


@spec("P15")
def test_window_off_by_one_is_caught(monkeypatch):
    """A window that keeps a >= i − w1 (one row too many) must fail the oracle check the clean mask passes."""
    from verified_ta import masks

    case = random_case(n=(5, 5, 5), d=2, causal=True, seed=12)
    out, lse = tensor_attention_forward(*case.inputs, causal=True, window=(2, 2))
    assert _oracle_check(out, lse, case.inputs, causal=True, window=(2, 2))
    clean = masks.pair_mask
    monkeypatch.setattr(reference, "pair_mask", lambda s, e, n1, n2, dev, w=None: clean(s, e, n1, n2, dev, (3, 2)))
    out, lse = tensor_attention_forward(*case.inputs, causal=True, window=(2, 2))
    assert not _oracle_check(out, lse, case.inputs, causal=True, window=(2, 2))


@spec("P15")
@pytest.mark.parametrize("window", [None, (None, None), (7, 7), (100, None)], ids=str)
def test_unbounded_window_is_plain_causal(window):
    """causal=True with window ∞ (None, None, or w >= n) is exactly today's causal attention."""
    case = random_case(batch=(2,), n=(7, 7, 7), d=3, causal=True, seed=13)
    plain = tensor_attention_forward(*case.inputs, causal=True)
    windowed = tensor_attention_forward(*case.inputs, causal=True, window=window)
    assert all(torch.equal(a, b) for a, b in zip(plain, windowed))


@spec("P15", "L4")
@pytest.mark.parametrize("causal, window", [(False, None), (True, None), (True, (2, 3))], ids=["full", "causal", "win"])
def test_grouped_heads_equal_repeated_keys_and_the_oracle(causal, window):
    """q with 6 heads over keys with 2 heads (g = 3): equal to K/V repeated per group, and to the oracle's GQA."""
    g = torch.Generator().manual_seed(14)
    q = torch.rand(1, 6, 4, 2, generator=g, dtype=F64) * 2 - 1
    kv = [torch.rand(1, 2, 4, 2, generator=g, dtype=F64) * 2 - 1 for _ in range(4)]
    xs = [x.clone().requires_grad_(True) for x in (q, *kv)]
    out, lse = tensor_attention_reference(*xs, causal=causal, window=window, return_lse=True)
    rep = [x.detach().repeat_interleave(3, dim=1).requires_grad_(True) for x in kv]
    q2 = q.clone().requires_grad_(True)
    out2, lse2 = tensor_attention_reference(q2, *rep, causal=causal, window=window, return_lse=True)
    grad_out = torch.rand_like(out)
    grads = torch.autograd.grad(out, xs, grad_out)
    grads2 = torch.autograd.grad(out2, [q2, *rep], grad_out)
    for h in range(6):  # per head: within the rounding bound of the oracle (L4 for the grouped view)
        inputs = [q[0, h], *(x[0, h // 3] for x in kv)]
        assert _oracle_check(out.detach()[0, h], lse.detach()[0, h], inputs, causal=causal, window=window)
    # key gradients are the sums over each group's three query heads: both evaluations lie within the sum of the
    # per-head rounding bounds of that exact sum, plus γ_2·Σ|terms| for adding three heads (Higham §3)
    per_head = [attention_rounding_bounds(q[0, h], *(x[0, h // 3] for x in kv), grad_out[0, h], causal=causal,
                                          window=window) for h in range(6)]
    assert bool((grads[0] - grads2[0]).abs()[0].le(torch.stack([2 * b["dq"] for b in per_head])).all())
    for name, gk, gr in zip(("dk1", "dk2", "dv1", "dv2"), grads[1:], grads2[1:]):
        assert gk.shape == (1, 2, 4, 2)
        terms = gr.unflatten(1, (2, 3))[0]  # (2 groups, 3 heads, n, d)
        bound = torch.stack([sum(2 * per_head[3 * k + j][name] for j in range(3)) for k in range(2)])
        bound = bound + gamma(2, F64) * terms.abs().sum(1)
        assert bool((gk[0] - terms.sum(1)).abs().le(bound).all()), name
