"""Properties of the polynomial-method certificates (SPEC L5, L6, L7, L11, P31, P32, P41; docs/certificate.md)."""

from __future__ import annotations

import math
from fractions import Fraction

import mpmath
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verified_ta.certificate import (
    certify_polynomial,
    fast_path_costs,
    minimal_degree,
    poisson_tail,
    rank_exponent,
    score_interval,
    taylor_degree,
)
from verified_ta.features import multi_indices
from verified_ta.polynomial import build_polynomial
from verified_ta.spec import spec

pytest.importorskip("flint")

CHEAP_FAMILIES = st.sampled_from(["taylor", "taylor-mid", "chebyshev"])
LENGTHS = st.sampled_from([Fraction(1, 2), Fraction(2), Fraction(5), Fraction(16)])


def _mp(x: Fraction) -> mpmath.mpf:
    return mpmath.mpf(x.numerator) / x.denominator


def _sampled_sup(poly, points: int = 400) -> mpmath.mpf:
    """max |P(x)e^{-x} − 1| over a uniform grid (mpmath, 150 digits): a lower estimate of the true sup."""
    a, b = poly.interval
    with mpmath.workdps(150):
        lo, width = _mp(a), _mp(b - a)
        xs = [lo + width * i / points for i in range(points + 1)]
        return max(abs(poly(x) * mpmath.exp(-x) - 1) for x in xs)


@spec("P32", "L7")
@settings(max_examples=15)
@given(family=CHEAP_FAMILIES, length=LENGTHS, degree=st.integers(0, 30))
def test_enclosure_contains_sampled_error(family, length, degree):
    """P32: lower <= sup <= upper, the witness attains lower, and the enclosure is tight (upper <= (1+gap)·lower)."""
    poly = build_polynomial(family, degree, (0, length))
    bound = certify_polynomial(poly)
    with mpmath.workdps(150):
        assert _sampled_sup(poly) <= _mp(bound.upper)
        w = _mp(bound.witness)
        assert abs(poly(w) * mpmath.exp(-w) - 1) >= _mp(bound.lower)
    assert bound.status == "tight" and bound.upper <= Fraction(101, 100) * bound.lower


@spec("P32", "L7")
@settings(max_examples=10)
@given(family=st.sampled_from(["taylor", "minimax"]), length=st.sampled_from([Fraction(1, 2), Fraction(2), Fraction(5)]),
       degree=st.integers(0, 10))
def test_certified_error_monotone_in_degree(family, length, degree):
    """P32: one more degree never certifies a larger error, lower(g+1) <= upper(g), for the families where the true
    error falls with g (Taylor at 0: a Poisson tail; relative minimax: best approximation). Chebyshev interpolation and
    Taylor at the midpoint are not monotone in the relative norm at low degree (e.g. Chebyshev g = 0 → 1 on [0, 5])."""
    low = certify_polynomial(build_polynomial(family, degree + 1, (0, length))).lower
    high = certify_polynomial(build_polynomial(family, degree, (0, length))).upper
    assert low <= high


@spec("L7", "P32")
@settings(max_examples=15)
@given(length=LENGTHS, degree=st.integers(0, 40))
def test_taylor_matches_poisson_tail_and_factorial_bound(length, degree):
    """L7: for Taylor at 0 the certified enclosure holds the exact P[Poisson(L) > g] and lies under L^{g+1}/(g+1)!."""
    bound = certify_polynomial(build_polynomial("taylor", degree, (0, length)))
    lo, hi = poisson_tail(length, degree)
    assert bound.lower <= hi and lo <= bound.upper
    assert bound.lower <= length ** (degree + 1) / math.factorial(degree + 1)


@spec("L7", "P32")
@settings(max_examples=8)
@given(length=st.sampled_from([Fraction(2), Fraction(8)]), exponent=st.integers(3, 9))
def test_minimal_degree_is_certified_and_minimal(length, exponent):
    """L7: the least certified degree reaches ε, the degree below is refuted; Taylor's equals the Poisson degree."""
    eps = Fraction(1, 10**exponent)
    for family in ("taylor", "chebyshev"):
        res = minimal_degree(family, (0, length), eps)
        assert res.bound.upper <= eps and res.minimal
    assert minimal_degree("taylor", (0, length), eps).degree == taylor_degree(length, eps)


@spec("L7")
def test_minimax_needs_about_half_the_taylor_degree():
    """L7: relative minimax on [0, 16] at ε = 1e-6 needs 19 against Taylor's 38 (both certified and minimal)."""
    eps = Fraction(1, 10**6)
    mm = minimal_degree("minimax", (0, 16), eps)
    assert mm.minimal and mm.bound.upper <= eps
    assert taylor_degree(Fraction(16), eps) == 38
    assert mm.degree <= 20


@spec("L5")
@settings(max_examples=30)
@given(data=st.data(), d=st.integers(1, 4), B=st.sampled_from([0.3, 1.0, 1.7, 2.0]))
def test_scores_lie_in_the_certified_range(data, d, B):
    """L5: every score s⟨q, k1∘k2⟩ (s = 1/d), computed exactly, lies in [−M, M] with the certificate's M."""
    M, a, b = score_interval(B, d)
    assert (a, b) == (0, 2 * M)
    entry = st.floats(-B, B, allow_nan=False)
    q, k1, k2 = (data.draw(st.lists(entry, min_size=d, max_size=d)) for _ in range(3))
    score = Fraction(1, d) * sum(Fraction(x) * Fraction(y) * Fraction(z) for x, y, z in zip(q, k1, k2))
    assert -M <= score <= M


@spec("L6")
@settings(max_examples=20)
@given(family=CHEAP_FAMILIES, degree=st.integers(0, 20), M=st.sampled_from([Fraction(1, 4), Fraction(1), Fraction(8)]),
       z=st.fractions(-8, 8))
def test_shift_is_exact_and_keeps_the_relative_error(family, degree, M, z):
    """L6: P(z+M) = Σ a_t z^t exactly, and e^{-M}·P(z+M) approximates e^z with the certified relative error."""
    z = max(-M, min(M, z))
    poly = build_polynomial(family, degree, (0, 2 * M))
    a = poly.shifted(M)
    assert sum(c * z**t for t, c in enumerate(a)) == poly(z + M)
    bound = certify_polynomial(poly)
    with mpmath.workdps(150):
        zz, mm = _mp(z), _mp(M)
        assert abs(mpmath.exp(-mm) * poly(zz + mm) / mpmath.exp(zz) - 1) <= _mp(bound.upper)


@spec("P31")
@settings(max_examples=30)
@given(g=st.integers(0, 8), d=st.integers(1, 5), n=st.integers(1, 4096))
def test_rank_in_the_certificate(g, d, n):
    """P31: the certificate's rank is C(g+d, d) = #{α : |α| <= g} <= C(3(g+d), 3g) (the papers' count)."""
    r = fast_path_costs(n, d, g, 8)["rank"]
    assert r == math.comb(g + d, d) == multi_indices(g, d).rank
    assert r <= math.comb(3 * (g + d), 3 * g)


@spec("P41", "L11")
@settings(max_examples=6)
@given(c=st.sampled_from([0.25, 0.5, 1.0, 2.0]))
def test_rank_exponent_trend(c):
    """P41/L11 with d = log2(n)/8, ε = 1/n: log r/log n falls when B³ = c√ln n (= o(log n)) and does not when B³ = c·ln n."""
    ns = [2**256, 2**1024, 2**4096]

    def exponents(b_cubed):
        return [rank_exponent(n, b_cubed(math.log(n)) ** (1 / 3), round(math.log2(n) / 8)) for n in ns]

    sub = exponents(lambda ln: c * math.sqrt(ln))
    assert sub[0] > sub[1] > sub[2]
    crit = exponents(lambda ln: c * ln)
    assert crit[2] >= crit[0]
