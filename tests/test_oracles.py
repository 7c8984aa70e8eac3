"""Oracles (issue #2): exact conversion, explicit precision, Arb enclosures, and bad input."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch

from verified_ta.oracles import (
    arb_attention,
    einsum_loss,
    mp_attention,
    mp_attention_vjp,
    mp_finite_difference_gradient,
    mp_gradient,
    mp_loss,
    to_mp,
)
from verified_ta.spec import spec


def _x(n=3, d=2, seed=0, batch=()):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.rand(*batch, n, d, generator=g, dtype=torch.float64) * 4 - 2 for _ in range(5))


def test_to_mp_is_exact_for_every_float_format():
    for dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
        t = torch.tensor([0.1, -1 / 3, 2.0**-20, 1e4], dtype=torch.float64).to(dtype)
        m = to_mp(t)
        # exact: the mpf holds the binary value, which survives the round trip through float64 untouched
        assert all(mpmath.mpf(float(v)) == w for v, w in zip(t.to(torch.float64).tolist(), m))
    assert to_mp(torch.tensor([0.1]))[0] != mpmath.mpf("0.1")  # no decimal round trip


@spec("P15")
def test_mp_attention_hand_computed_uniform_case():
    # all scores equal (k1 = 0): uniform softmax over n² pairs, out = mean(v1) ∘ mean(v2), lse = 2 ln n
    n, d = 3, 2
    q = torch.ones(n, d, dtype=torch.float64)
    k1 = torch.zeros(n, d, dtype=torch.float64)
    v1 = torch.arange(n * d, dtype=torch.float64).reshape(n, d)
    v2 = torch.arange(n * d, dtype=torch.float64).reshape(n, d).flip(0) - 2
    out, lse = mp_attention(q, k1, k1, v1, v2, dps=30)
    expected = (v1.mean(0) * v2.mean(0)).tolist()
    with mpmath.workdps(30):
        for i in range(n):
            assert abs(lse[i] - 2 * mpmath.log(n)) < mpmath.mpf(10) ** -28
            for j in range(d):
                assert abs(out[i, j] - expected[j]) < mpmath.mpf(10) ** -28


@spec("P15")
def test_mp_attention_batched_and_causal_first_row():
    x = _x(batch=(2,))
    out, lse = mp_attention(*x, causal=True)
    assert out.shape == (2, 3, 2) and lse.shape == (2, 3)
    # causal row 0 sees only the pair (0, 0): out = v1[0] ∘ v2[0], lse = s·⟨q0, k1_0 ∘ k2_0⟩
    q, k1, k2, v1, v2 = (to_mp(t[1]) for t in x)
    with mpmath.workdps(50):
        tol = mpmath.mpf(10) ** -45  # both sides exact up to a few roundings at 50 digits of magnitude-≤-16 values
        assert max(abs(a - b) for a, b in zip(out[1, 0], v1[0] * v2[0])) <= tol
        assert abs(lse[1, 0] - (q[0] * k1[0] * k2[0]).sum() / 2) <= tol


@spec("P15")
def test_arb_enclosure_contains_the_mpmath_value_and_excludes_a_neighbour():
    x = _x()
    out, lse = mp_attention(*x, dps=60)
    eo, el = arb_attention(*x, prec=200)
    with mpmath.workdps(60):
        assert all(abs(m - mid) <= rad for m, mid, rad in zip(out.ravel(), eo.mid.ravel(), eo.rad.ravel()))
        assert all(abs(m - mid) <= rad for m, mid, rad in zip(lse.ravel(), el.mid.ravel(), el.rad.ravel()))
    # the balls are tight (radius = Arb's radius + one ulp of the float midpoint), so containment says something
    assert eo.rad.max() < 4 * np.spacing(np.abs(eo.mid).max()) and el.rad.max() < 4 * np.spacing(np.abs(el.mid).max())


@spec("L1", "P24")
def test_mp_gradient_agrees_with_finite_differences_and_loss_is_positive():
    g = torch.Generator().manual_seed(3)
    n, d = 2, 2
    args = [torch.rand(n, d, generator=g, dtype=torch.float64) for _ in range(6)]
    args += [torch.rand(d, d * d, generator=g, dtype=torch.float64), torch.rand(d * d, d, generator=g, dtype=torch.float64)]
    G = mp_gradient(*args, dps=40)
    F = mp_finite_difference_gradient(*args, dps=40)
    with mpmath.workdps(40):
        assert max(abs(a - b) for a, b in zip(G.ravel(), F.ravel())) < mpmath.mpf(10) ** -30
    assert mp_loss(*args) > 0


@spec("L4")
def test_mp_attention_vjp_of_values_is_hand_checkable():
    # with all scores equal, dV1[a] = Σ_i dO_i ∘ mean(v2) / n
    n, d = 2, 2
    q, k = torch.ones(n, d, dtype=torch.float64), torch.zeros(n, d, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    v1, v2, do = (torch.rand(n, d, generator=g, dtype=torch.float64) for _ in range(3))
    grads = mp_attention_vjp(q, k, k, v1, v2, do, dps=30)
    with mpmath.workdps(30):
        expected = to_mp(do).sum(axis=0) * to_mp(v2).sum(axis=0) / (n * n)
        for a in range(n):
            assert max(abs(x - y) for x, y in zip(grads[3][a], expected)) < mpmath.mpf(10) ** -25


@pytest.mark.parametrize("kw", [{"dps": 0}, {"dps": -5}, {"dps": 2.5}])
def test_bad_precision_is_rejected(kw):
    with pytest.raises(ValueError, match="dps must be a positive integer"):
        mp_attention(*_x(), **kw)


def test_bad_arb_precision_is_rejected():
    with pytest.raises(ValueError, match="prec must be a positive integer"):
        arb_attention(*_x(), prec=0)


def test_non_finite_and_mismatched_inputs_are_rejected():
    x = list(_x())
    x[2] = x[2].clone()
    x[2][0, 0] = math.nan
    with pytest.raises(ValueError, match="k2 must be finite"):
        mp_attention(*x)
    with pytest.raises(ValueError, match="head dimension"):
        mp_attention(*_x()[:4], torch.zeros(3, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="causal=True needs"):
        mp_attention(*_x()[:1], *_x(n=4)[1:], causal=True)
    with pytest.raises(ValueError, match="real numeric"):
        to_mp(np.array(["a"]))


@spec("P24", "L1")
def test_the_gradient_oracles_share_no_code_with_what_they_check():
    """verified_ta.oracles imports neither verified_ta.gradient nor the products (issue #10): a bug there cannot
    reach the oracle."""
    import ast
    import inspect

    from verified_ta import oracles

    imported = set()
    for node in ast.walk(ast.parse(inspect.getsource(oracles))):
        if isinstance(node, ast.ImportFrom):
            imported |= {f"{node.module or ''}.{a.name}" for a in node.names} | {node.module or ""}
        elif isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
    assert not {m for m in imported if "gradient" in m or "products" in m}, imported


@spec("L1", "P24")
def test_einsum_loss_and_mp_loss_agree_within_the_rounding_bound():
    from verified_ta.fp_bounds import objective_rounding_bounds

    g = torch.Generator().manual_seed(5)
    n, d = 3, 2
    args = [torch.rand(n, d, generator=g, dtype=torch.float64) * 2 - 1 for _ in range(6)]
    args += [torch.rand(s, generator=g, dtype=torch.float64) for s in ((d, d * d), (d * d, d))]
    exact = mp_loss(*args, dps=40)
    bound = float(objective_rounding_bounds(*args)["loss"])
    assert abs(float(einsum_loss(*args)) - float(exact)) <= bound
    # and with a scale of the caller's choice, in the caller's precision (dps=None, as inside mpmath.diff)
    with mpmath.workdps(60):
        at_60 = mp_loss(*args, scale=1 / 3, dps=None)  # the float 1/3, exactly
    bound = float(objective_rounding_bounds(*args, scale=1 / 3)["loss"])
    assert abs(float(einsum_loss(*args, scale=1 / 3)) - float(at_60)) <= bound


def test_objective_oracles_reject_bad_shapes():
    args = [torch.zeros(2, 2, dtype=torch.float64) for _ in range(6)] + [torch.zeros(2, 4), torch.zeros(4, 2)]
    args[6] = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="X must have shape"):
        mp_gradient(*args)
