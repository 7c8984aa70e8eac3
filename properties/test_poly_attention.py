"""Properties of the polynomial path as a training path: causal forward and the five gradients (SPEC A1, L4, L9).

The oracle is :func:`mp_attention_l4`: SPEC §2 and L4 written out at 60 digits with the softmax's weight function
as a parameter (exp for the exact path, the shifted polynomial P and P' for the polynomial path). It shares no code
with ``verified_ta.fast``. δ and δ' are the instance's own max |P(x)e^{−x} − 1| and |P'(x)e^{−x} − 1| over the
visible pairs' shifted scores (the hypotheses of docs/bounds.md), rounded up. Each property checks
  lemma: oracle(P) against oracle(exp) within the proved bound (pure mathematics at 60 digits);
  implementation: the float run against oracle(P) within its rounding term;
  end to end: the float run against oracle(exp) within the sum.
``target`` pushes every observed/bound ratio up (``--hypothesis-show-statistics`` prints the worst).
The check functions are reused by ``tests/test_poly_attention.py`` to show each check failing on a planted bug.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import mpmath
import numpy as np
import torch
from hypothesis import assume, given, target
from hypothesis import strategies as st

from verified_ta.error_bounds import (
    attention_gradient_error_bounds,
    attention_marginal_bounds,
    forward_error_bound,
    forward_rounding_term,
)
from verified_ta.fast import fast_tensor_attention
from verified_ta.oracles import mp_attention
from verified_ta.poly_attention import gradient_bounds_for, gradient_rounding_bounds
from verified_ta.polynomial import FAMILIES, build_polynomial
from verified_ta.spec import spec
from verified_ta.testing.strategies import attention_inputs, dims

DPS = 60  # the oracle's digits: float64 inputs, sums of ≤ 64 terms of ≤ 12 factors, far from 60-digit rounding
MP_FLOOR = 1e-50  # the oracle's own rounding, as an absolute floor
BOUNDS = (0.5, 0.75, 1.0)  # dyadic entry bounds B (M = B³ at s = 1/d)
GRAD_NAMES = ("dq", "dk1", "dk2", "dv1", "dv2")


@lru_cache(maxsize=None)
def shifted(family: str, degree: int, B: float) -> tuple[Fraction, ...]:
    """a_t of z ↦ P(z + M), P ≈ eˣ on [0, 2M], M = B³ (L5, L6 at s = 1/d)."""
    M = Fraction(B) ** 3
    return build_polynomial(family, degree, [0, 2 * M]).shifted(M)


def _mpf(c: Fraction) -> mpmath.mpf:
    return mpmath.mpf(c.numerator) / c.denominator


def _horner(coeffs, x):
    acc = mpmath.mpf(0)
    for c in reversed(coeffs):
        acc = acc * x + c
    return acc


def mp_scores(q, k1, k2, s, causal: bool) -> dict[tuple[int, int, int], mpmath.mpf]:
    """S_iab = s·Σ_l q_il k1_al k2_bl for the visible triples (all, or a ≤ i and b ≤ i). Inputs: lists of mpf rows."""
    n_q, n1, n2, d = len(q), len(k1), len(k2), len(q[0])
    return {(i, a, b): s * mpmath.fsum(q[i][l] * k1[a][l] * k2[b][l] for l in range(d))
            for i in range(n_q) for a in range(n1) for b in range(n2) if not causal or (a <= i and b <= i)}


def mp_attention_l4(S, q, k1, k2, v1, v2, dout, s, weight, dweight) -> dict[str, list]:
    """SPEC §2 forward and L4 gradients of ⟨dO, out⟩ with softmax weights ``weight(S)`` (derivative ``dweight``).

    f_iab = w(S_iab)/Σ_{Ω_i} w, f'_iab = w'(S_iab)/Σ_{Ω_i} w, out_i = Σ f_iab (v1_a∘v2_b), δ_i = ⟨dO_i, out_i⟩,
    dS_iab = f'_iab(⟨dO_i, v1_a∘v2_b⟩ − δ_i); dq_i = sΣ dS (k1_a∘k2_b), dk1_a = sΣ dS (q_i∘k2_b),
    dk2_b = sΣ dS (q_i∘k1_a), dv1_a = Σ f (dO_i∘v2_b), dv2_b = Σ f (dO_i∘v1_a). ``S`` from :func:`mp_scores`
    (its keys are the visible triples); inputs are lists of rows of mpf; results are lists of rows.
    """
    d = len(q[0])
    zero = lambda rows: [[mpmath.mpf(0)] * d for _ in range(rows)]  # noqa: E731
    res = {"out": zero(len(q)), "dq": zero(len(q)), "dk1": zero(len(k1)), "dk2": zero(len(k2)),
           "dv1": zero(len(k1)), "dv2": zero(len(k2))}
    rows: dict[int, list[tuple[int, int]]] = {}
    for i, a, b in S:
        rows.setdefault(i, []).append((a, b))
    for i, pairs in rows.items():
        w = {p: weight(S[(i, *p)]) for p in pairs}
        total = mpmath.fsum(w.values())
        f = {p: w[p] / total for p in pairs}
        out = [mpmath.fsum(f[(a, b)] * v1[a][c] * v2[b][c] for a, b in pairs) for c in range(d)]
        res["out"][i] = out
        delta = mpmath.fsum(dout[i][c] * out[c] for c in range(d))
        for a, b in pairs:
            dp = mpmath.fsum(dout[i][c] * v1[a][c] * v2[b][c] for c in range(d))
            ds = s * dweight(S[(i, a, b)]) / total * (dp - delta)
            for c in range(d):
                res["dq"][i][c] += ds * k1[a][c] * k2[b][c]
                res["dk1"][a][c] += ds * q[i][c] * k2[b][c]
                res["dk2"][b][c] += ds * q[i][c] * k1[a][c]
                res["dv1"][a][c] += f[(a, b)] * dout[i][c] * v2[b][c]
                res["dv2"][b][c] += f[(a, b)] * dout[i][c] * v1[a][c]
    return res


def _float_above(x) -> float:
    """The smallest float ≥ x (directed rounding of a 60-digit value)."""
    v = float(x)
    return v if mpmath.mpf(v) >= x else math.nextafter(v, math.inf)


def ratio(x, y, bound) -> float:
    """max over entries of (|x − y| − MP_FLOOR)⁺ / bound: x, y arrays of floats or mpf rows, bound a float or an
    entrywise array; > 1 means the check fails (0/0 counts as 0, a positive gap over a zero bound as ∞)."""
    xs = np.asarray(x, dtype=object).ravel()
    ys = np.asarray(y, dtype=object).ravel()
    bs = np.broadcast_to(np.asarray(bound, dtype=np.float64), np.asarray(x, dtype=object).shape).ravel()
    worst = 0.0
    with mpmath.workdps(DPS):
        for a, c, b in zip(xs, ys, bs):
            gap = abs(mpmath.mpf(a) - c) - MP_FLOOR
            if gap > 0:
                worst = max(worst, _float_above(gap / b) if b > 0 else math.inf)
    return worst


@dataclass(frozen=True)
class PolyCase:
    """One instance: inputs (n, d) float64, upstream dO, the polynomial, the mask and the scan's chunk size."""

    x: tuple[torch.Tensor, ...]
    dout: torch.Tensor
    family: str
    degree: int
    B: float
    causal: bool
    chunk: int

    @property
    def coefficients(self) -> tuple[Fraction, ...]:
        return shifted(self.family, self.degree, self.B)


@dataclass
class Oracle:
    """The 60-digit exact (exp) and polynomial (P) paths of one case, and the instance's δ, δ' (rounded up)."""

    exact: dict[str, np.ndarray]
    poly: dict[str, np.ndarray]
    delta: float
    delta_derivative: float


def _rows(t: torch.Tensor) -> list[list[mpmath.mpf]]:
    return [[mpmath.mpf(v) for v in row] for row in t.detach().to(torch.float64).tolist()]


def oracle(case: PolyCase) -> Oracle:
    d = case.x[0].shape[-1]
    with mpmath.workdps(DPS):
        ma = [_mpf(c) for c in case.coefficients]
        mda = [t * c for t, c in enumerate(ma)][1:] or [mpmath.mpf(0)]
        mM = _mpf(Fraction(case.B) ** 3)
        xs = [_rows(t) for t in case.x]
        s = mpmath.mpf(1) / d
        S = mp_scores(*xs[:3], s, case.causal)
        exact = mp_attention_l4(S, *xs, _rows(case.dout), s, mpmath.exp, mpmath.exp)
        poly = mp_attention_l4(S, *xs, _rows(case.dout), s, lambda z: _horner(ma, z), lambda z: _horner(mda, z))
        e = {key: mpmath.exp(z + mM) for key, z in S.items()}
        rel = max(abs(_horner(ma, z) / e[key] - 1) for key, z in S.items())
        rel_d = max(abs(_horner(mda, z) / e[key] - 1) for key, z in S.items())
        return Oracle(exact, poly, _float_above(rel), _float_above(rel_d))


# ---------------------------------------------------------------------------------------------- checks


def check_causal_forward(case: PolyCase) -> dict[str, float] | None:
    """observed/bound for the forward: lemma (L9 per row, 60 digits), implementation (A1 fp term), end to end;
    None when the instance's δ ≥ ½ (outside the lemma's hypothesis δ < 1 with room for the rounding term)."""
    orc = oracle(case)
    if orc.delta >= 0.5:
        return None
    n, d = case.x[0].shape
    out = fast_tensor_attention(*case.x, case.coefficients, causal=case.causal, chunk_size=case.chunk)
    vnorm = float(case.x[3].abs().max()) * float(case.x[4].abs().max())
    lemma = forward_error_bound(orc.delta, vnorm)
    fp = forward_rounding_term(case.coefficients, Fraction(case.B) ** 3, d, n, n, torch.float64, orc.delta, vnorm)
    got = out.detach().numpy()
    return {
        "lemma": ratio(orc.poly["out"], orc.exact["out"], lemma),
        "implementation": ratio(got, orc.poly["out"], fp),
        "end to end": ratio(got, orc.exact["out"], lemma + fp),
    }


def check_gradients(case: PolyCase) -> dict[str, dict[str, float]] | None:
    """observed/bound per gradient name for the lemma (60 digits), the implementation (fp term) and end to end;
    None when the instance's δ ≥ ½."""
    orc = oracle(case)
    if orc.delta >= 0.5:
        return None
    x = [t.clone().requires_grad_() for t in case.x]
    out = fast_tensor_attention(*x, case.coefficients, causal=case.causal, chunk_size=case.chunk)
    grads = dict(zip(GRAD_NAMES, torch.autograd.grad((out * case.dout).sum(), x)))
    n, d = case.x[0].shape
    dO = case.dout.abs()
    F = attention_marginal_bounds(Fraction(case.B) ** 3, torch.arange(1, n + 1) if case.causal else torch.full((n,), n))
    mass = float((dO * F[:, None]).sum()) * (1 + 1e-12)
    col = float((dO * F[:, None]).sum(0).max()) * (1 + 1e-12)
    lemma = attention_gradient_error_bounds(orc.delta, orc.delta_derivative, [float(t.abs().max()) for t in case.x],
                                            float(dO.sum(-1).max()) * (1 + 1e-12), (mass, mass), (col, col), d)
    fp = gradient_rounding_bounds(*case.x, case.dout, case.coefficients, causal=case.causal, chunk_size=case.chunk)
    total = gradient_bounds_for(*case.x, case.dout, case.coefficients, orc.delta, orc.delta_derivative,
                                causal=case.causal, chunk_size=case.chunk)
    result = {}
    for name in GRAD_NAMES:
        g = grads[name].numpy()
        result[name] = {
            "lemma": ratio(orc.poly[name], orc.exact[name], getattr(lemma, name)),
            "implementation": ratio(g, orc.poly[name], fp[name].numpy()),
            "end to end": ratio(g, orc.exact[name], total[name].numpy()),
        }
    return result


# ---------------------------------------------------------------------------------------------- strategies


def _grid(t: torch.Tensor) -> torch.Tensor:
    """Entries on the 2⁻¹⁰ grid: no product of ≤ 40 of them underflows (the gradient rounding term assumes none)."""
    return torch.round(t * 1024) / 1024


@st.composite
def poly_cases(draw, max_n: int = 4, max_d: int = 3, grid: bool = False) -> PolyCase:
    family = draw(st.sampled_from(FAMILIES))
    degree = draw(st.integers(2, 7))
    B = draw(st.sampled_from(BOUNDS))
    n, d = draw(dims(1, max_n)), draw(dims(1, max_d))
    if draw(st.booleans()):  # adversarial: entries ±B, the largest score ranges L5 allows
        signs = draw(st.lists(st.sampled_from([-1.0, 1.0]), min_size=5 * n * d, max_size=5 * n * d))
        x = tuple(torch.tensor(signs, dtype=torch.float64).reshape(5, n, d) * B)
    else:
        x = tuple(draw(attention_inputs(n=st.just(n), d=st.just(d), bound=B)))
    dout = next(iter(draw(attention_inputs(n=st.just(n), d=st.just(d), bound=1.0))))
    if grid:
        x, dout = tuple(_grid(t) for t in x), _grid(dout)
    causal = draw(st.booleans())
    return PolyCase(x, dout, family, degree, B, causal, draw(st.integers(1, max(1, n))))


# ---------------------------------------------------------------------------------------------- properties


@spec("A1", "L9", "P33", "L8")
@given(case=poly_cases())
def test_causal_forward_within_L9_per_row(case):
    """Causal and full masks: the scan's forward against the 60-digit oracle (the project's mp_attention agrees)."""
    result = check_causal_forward(case)
    assume(result is not None)
    for label, r in result.items():
        target(r, label=f"forward {label} observed/bound")
        assert r <= 1, (label, r)


@spec("A1", "L9")
@given(case=poly_cases(max_n=3, max_d=2))
def test_l4_oracle_with_exp_is_mp_attention(case):
    """The oracle's exp path is SPEC §2: it equals ``verified_ta.oracles.mp_attention`` (independent code)."""
    truth, _ = mp_attention(*case.x, causal=case.causal, dps=DPS)
    assert ratio(oracle(case).exact["out"], truth, 1e-45) <= 1


@spec("A1", "L4", "L9", "L5")
@given(case=poly_cases(max_n=3, grid=True))
def test_poly_gradients_within_proved_bounds(case):
    """dQ, dK1, dK2, dV1, dV2 of the polynomial path: lemma, implementation and end-to-end ratios all ≤ 1."""
    result = check_gradients(case)
    assume(result is not None)
    for name, ratios in result.items():
        for label, ratio in ratios.items():
            target(ratio, label=f"{name} {label} observed/bound")
            assert ratio <= 1, (name, label, ratio)
