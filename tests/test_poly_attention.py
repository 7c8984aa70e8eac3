"""``method="poly"``: the certified polynomial path from the API and the module (SPEC A1, L4, L5, L9), deterministic.

Tolerances: the call's own a-posteriori bound (L9 with the certified δ plus A1's rounding term) plus the float64
reference's rounding term (``fp_bounds.attention_rounding_bounds``); gradients: ``poly_attention.gradient_bounds``
plus the reference's backward rounding term. Planted bugs (monkeypatched helpers of ``verified_ta.fast``) make the
property checks of ``properties/test_poly_attention.py`` fail on fixed inputs that pass without them.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

import verified_ta as vta
from properties import test_poly_attention as props
from verified_ta import fast
from verified_ta.certificate import certify_polynomial, verify_certificate
from verified_ta.error_bounds import forward_rounding_term
from verified_ta.fp_bounds import attention_rounding_bounds
from verified_ta.poly_attention import (
    B_GRID,
    PolyCertificate,
    certify_poly,
    gradient_bounds,
    grid_bound,
    poly_tensor_attention,
    score_range,
)
from verified_ta.polynomial import build_polynomial
from verified_ta.reference import tensor_attention_reference
from verified_ta.spec import spec

NAMES = ("dq", "dk1", "dk2", "dv1", "dv2")


def _inputs(*shape, dtype=torch.float64, seed=0, bound=1.0):
    g = torch.Generator().manual_seed(seed)
    return [((torch.rand(*shape, generator=g, dtype=torch.float64) * 2 - 1) * bound).to(dtype) for _ in range(5)]


def _reference_rounding(x, causal, grad_out=None):
    """Per-head ``attention_rounding_bounds`` of the float64 reference, stacked to the batch shape."""
    flat = [t.detach().reshape(-1, *t.shape[-2:]) for t in x]
    go = None if grad_out is None else grad_out.reshape(-1, *grad_out.shape[-2:])
    heads = [attention_rounding_bounds(*(t[h] for t in flat), None if go is None else go[h], causal=causal)
             for h in range(flat[0].shape[0])]
    return {k: torch.stack([b[k] for b in heads]).reshape(*x[0].shape[:-2], *heads[0][k].shape) for k in heads[0]}


@spec("A1", "L9", "L5")
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_api_matches_exact_within_its_own_bound(causal, dtype):
    """Batched heads (2, 3, n = 13, d = 4): |poly − exact| ≤ the call's bound + the reference's rounding."""
    x = _inputs(2, 3, 13, 4, dtype=dtype, seed=1)
    out, cert, bound = vta.tensor_attention(*x, causal=causal, method="poly", return_certificate=True,
                                            return_bound=True)
    assert out.dtype == dtype and out.shape == (2, 3, 13, 4)
    assert isinstance(cert, PolyCertificate) and cert.delta <= Fraction(cert.eps)
    x64 = [t.double() for t in x]
    ref = tensor_attention_reference(*x64, causal=causal)
    assert bool(((out.double() - ref).abs() <= bound + _reference_rounding(x64, causal)["out"]).all())


@spec("A1", "L5")
def test_certificate_grid_cache_and_json():
    """B_grid is the least grid point with B_grid³ ≥ M; equal grid points share one cached certificate, which
    ``verify_certificate`` re-checks from its JSON alone."""
    x = _inputs(2, 9, 4, seed=2, bound=0.9)
    M = score_range(*x[:3], 1 / 4)
    B = grid_bound(M)
    assert B**3 >= M > (B - Fraction(1, B_GRID)) ** 3 and (B * B_GRID).denominator == 1
    _, cert = poly_tensor_attention(*x, return_certificate=True)
    _, again = poly_tensor_attention(*[t * 0.999 for t in x], return_certificate=True)
    assert cert.B == B and (again is cert or grid_bound(score_range(*[t * 0.999 for t in x[:3]], 1 / 4)) != B)
    assert certify_poly(B, 9, 4, 1e-3, torch.float64) is cert
    assert verify_certificate(cert.certificate.to_json()).ok


@spec("A1", "L5")
def test_bound_argument_fixes_the_certificate_and_scale_enters_M():
    x = _inputs(9, 4, seed=3, bound=0.5)
    _, c1 = poly_tensor_attention(*x, bound=1.0, return_certificate=True)
    assert c1.B == 1  # |s|·d·B³ = 1 at s = 1/d: B_grid = 1
    _, c2 = poly_tensor_attention(*x, bound=1.0, scale=2 / 4, return_certificate=True)
    assert c2.B**3 >= 2 > (c2.B - Fraction(1, B_GRID)) ** 3  # s = 2/d doubles M
    with pytest.raises(ValueError, match=r"bound = 0.25 is below max\|q\|"):
        poly_tensor_attention(*x, bound=0.25)


@spec("A1")
@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(method="fast"), "method must be one of"),
        (dict(method="poly", eps=0.0), "eps must lie in the open interval"),
        (dict(method="poly", bound=-1.0), "bound must be None or a finite number > 0"),
        (dict(return_certificate=True), "need method='poly'"),
        (dict(method="poly", return_lse=True), "return_lse is not available"),
        (dict(method="poly", backend="triton"), "plain torch"),
        (dict(method="poly", window=(3, None)), "window=.* not supported by method='poly'"),
    ],
)
def test_api_rejects_bad_method_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        vta.tensor_attention(*_inputs(6, 2), causal=True, **kwargs)


@spec("A1", "L7")
def test_unreachable_eps_says_what_would():
    """float32's rounding term alone (~2e-3 at B = 1, n = 64) exceeds ε = 1e-6: refused, naming the ways out."""
    x = _inputs(64, 4, dtype=torch.float32, seed=4)
    with pytest.raises(ValueError, match="no certified polynomial reaches eps = 1e-06.*float32 cannot be certified") as err:
        vta.tensor_attention(*x, method="poly", eps=1e-6)
    for hint in ("smaller entry bound", "larger eps", "float64", "method='exact'"):
        assert hint in str(err.value)


@spec("A1")
def test_float16_refused():
    with pytest.raises(ValueError, match="float32 and float64 only"):
        vta.tensor_attention(*_inputs(6, 2, dtype=torch.float16), method="poly")


@spec("A1", "L4")
def test_grouped_query_heads_equal_repeated_keys():
    q = _inputs(1, 4, 7, 2, seed=5)[0]
    k1, k2, v1, v2 = _inputs(1, 2, 7, 2, seed=6)[:4]
    out, bound = vta.tensor_attention(q, k1, k2, v1, v2, causal=True, method="poly", return_bound=True)
    rep = [t.repeat_interleave(2, dim=-3) for t in (k1, k2, v1, v2)]
    ref = tensor_attention_reference(q, *rep, causal=True)
    assert bool(((out - ref).abs() <= bound + _reference_rounding([q, *rep], True)["out"]).all())


@spec("A1", "L4", "L9")
@pytest.mark.parametrize("causal", [False, True])
def test_gradient_bounds_hold_against_the_reference(causal):
    """The certified per-call gradient bounds (δ, δ' from the certificate) hold for every input on a batched call."""
    x = [t.requires_grad_() for t in _inputs(2, 11, 3, seed=7)]
    out, cert = vta.tensor_attention(*x, causal=causal, method="poly", return_certificate=True)
    dout = torch.randn(2, 11, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    poly = torch.autograd.grad((out * dout).sum(), x)
    exact = torch.autograd.grad((tensor_attention_reference(*x, causal=causal) * dout).sum(), x)
    bounds = gradient_bounds(*x, dout, cert, causal=causal)
    ref_fp = _reference_rounding(x, causal, dout)
    for name, p, e in zip(NAMES, poly, exact):
        assert bool(((p - e).abs() <= bounds[name] + ref_fp[name]).all()), name


@spec("A1")
def test_gradient_bounds_refuse_inputs_outside_the_certificate():
    x = _inputs(5, 2, seed=9)
    _, cert = poly_tensor_attention(*x, return_certificate=True)
    with pytest.raises(ValueError, match="exceeds the certificate's M"):
        gradient_bounds(*[t * 2 for t in x], torch.ones(5, 2, dtype=torch.float64), cert)


@spec("A1", "L4")
def test_module_switches_method_per_layer_and_trains():
    torch.manual_seed(0)
    layer = vta.TensorAttention(8, 2, causal=True, dtype=torch.float64)
    x = torch.rand(3, 6, 8, dtype=torch.float64) * 0.5
    assert layer.method == "exact"
    layer.method, layer.bound = "poly", 1.0
    poly = layer(x)
    heads = [proj(x).reshape(3, 6, 2, 4).transpose(1, 2) for proj in
             (layer.q_proj, layer.k1_proj, layer.k2_proj, layer.v1_proj, layer.v2_proj)]
    att = poly_tensor_attention(*heads, causal=True, bound=1.0)
    assert torch.equal(poly, layer.out_proj(att.transpose(1, 2).reshape(3, 6, 8)))  # the same call, the same floats
    poly.square().sum().backward()
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in layer.parameters())
    with pytest.raises(ValueError, match="method must be one of"):
        vta.TensorAttention(8, 2, method="approx")


@spec("A1")
def test_double_backward_refused():
    x = [t.requires_grad_() for t in _inputs(4, 2, seed=10)]
    out = poly_tensor_attention(*x, causal=True)
    (g,) = torch.autograd.grad(out.sum(), x[0], create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|twice"):
        g.sum().backward()


@spec("A1", "L4")
def test_chunk_size_changes_nothing_beyond_rounding():
    """Forward and gradients with chunks of 1, 3 and n rows agree within twice the rounding terms."""
    x = [t.requires_grad_() for t in _inputs(10, 3, seed=11)]
    a = props.shifted("minimax", 5, 1.0)
    dout = torch.rand(10, 3, dtype=torch.float64)
    runs = []
    for chunk in (1, 3, 10):
        out = fast.fast_tensor_attention(*x, a, causal=True, chunk_size=chunk)
        runs.append((out, torch.autograd.grad((out * dout).sum(), x)))
    fp = props.gradient_rounding_bounds(*x, dout, a, causal=True)
    poly = build_polynomial("minimax", 5, [0, 2])
    delta = certify_polynomial(poly).upper
    assert poly.shifted(1) == a
    vnorm = float(x[3].detach().abs().max() * x[4].detach().abs().max())
    fwd = forward_rounding_term(a, 1, 3, 10, 10, torch.float64, delta, vnorm)
    for out, grads in runs[1:]:
        assert float((out - runs[0][0]).detach().abs().max()) <= 2 * fwd
        for name, g, g0 in zip(NAMES, grads, runs[0][1]):
            assert bool(((g - g0).abs() <= 2 * fp[name]).all()), name


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@spec("A1")
def test_cuda_matches_cpu():
    x = _inputs(2, 64, 4, seed=12)
    out_cpu, bound = poly_tensor_attention(*x, causal=True, return_bound=True)
    out_gpu = poly_tensor_attention(*[t.cuda() for t in x], causal=True)
    assert float((out_gpu.cpu() - out_cpu).abs().max()) <= 2 * bound


# ------------------------------------------------------------------------------------------ planted bugs


def _case(n=4, d=2, causal=True, chunk=2, seed=13):
    g = torch.Generator().manual_seed(seed)
    x = tuple(props._grid(torch.rand(n, d, generator=g, dtype=torch.float64) * 2 - 1) for _ in range(5))
    dout = props._grid(torch.rand(n, d, generator=g, dtype=torch.float64) * 2 - 1)
    return props.PolyCase(x, dout, "minimax", 4, 1.0, causal, chunk)


def _failing(result) -> set[str]:
    return {name for name, r in result.items() if r["end to end"] > 1 or r["implementation"] > 1}


def test_clean_cases_pass():
    for case in (_case(), _case(n=3, chunk=3), _case(causal=False)):
        assert not _failing(props.check_gradients(case))
        assert all(r <= 1 for r in props.check_causal_forward(case).values())


@spec("A1", "L4")
def test_planted_dropped_carry_fails_only_across_chunks(monkeypatch):
    """Bug: the prefix sums forget the carry of earlier chunks. One chunk (n ≤ C) cannot see it; n > C must."""
    monkeypatch.setattr(fast, "_prefix_sums", lambda carry, terms: torch.cumsum(terms, dim=-3))
    single = _case(n=3, chunk=3)
    assert not _failing(props.check_gradients(single))
    assert props.check_causal_forward(single)["end to end"] <= 1
    across = _case(n=4, chunk=2)
    assert props.check_causal_forward(across)["end to end"] > 1
    assert _failing(props.check_gradients(across)) == set(NAMES)


@spec("A1", "L4")
def test_planted_exclusive_suffix_fails_key_and_value_gradients(monkeypatch):
    """Bug: the reverse scan sums over i > a instead of i ≥ a (an off-by-one in the causal backward)."""
    def exclusive(carry, terms):
        inclusive = carry + torch.flip(torch.cumsum(torch.flip(terms, (-3,)), dim=-3), (-3,))
        return inclusive - terms

    monkeypatch.setattr(fast, "_suffix_sums", exclusive)
    assert {"dk1", "dk2", "dv1", "dv2"} <= _failing(props.check_gradients(_case()))


@spec("A1", "L4")
def test_planted_detached_normaliser_fails_score_gradients(monkeypatch):
    """Bug: D̃ treated as a constant in the backward (the −⟨dO, Att̃⟩/D̃ term of dS dropped)."""
    monkeypatch.setattr(fast, "_normalise", lambda nd: nd[..., :-1] / nd[..., -1:].detach())
    for case in (_case(), _case(causal=False)):
        assert {"dq", "dk1", "dk2"} <= _failing(props.check_gradients(case))
