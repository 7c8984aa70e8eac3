"""Properties of the polynomial-method certificates (SPEC L5, L6, L7, L9, L10, L11, P31, P32, P41; docs/certificate.md).

Includes the Hypothesis fuzzing of ``--verify``: no malformed certificate may crash the checker, and no edited
claim may pass it.
"""

from __future__ import annotations

import copy
import json
import math
from fractions import Fraction

import mpmath
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from verified_ta.certificate import (
    CertifyInputs,
    build_certificate,
    certify_polynomial,
    degree_lower_bound,
    fast_path_costs,
    minimal_degree,
    poisson_tail,
    rank_exponent,
    score_interval,
    taylor_degree,
    verify_certificate,
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
    M, a, b = score_interval(CertifyInputs(B=B, n=8, d=d, eps=0.5))
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


# --- the proved degree lower bound (docs/certificate.md §2) ------------------------------------------------------


def _check_lower_bound(length: Fraction, eps: Fraction) -> None:
    """No polynomial of degree lower − 1 reaches ε, so the best one we can build (relative minimax) must not either:
    its certified upper bound (within 1% of the truth) exceeds ε."""
    lower = degree_lower_bound(length, eps)
    if lower >= 1:
        best = certify_polynomial(build_polynomial("minimax", lower - 1, (0, length)))
        assert best.upper > eps, (length, eps, lower, float(best.upper))


@spec("L7", "P32")
@settings(max_examples=12, deadline=None)
@given(length=st.sampled_from([Fraction(1, 4), Fraction(1, 2), Fraction(2), Fraction(6), Fraction(16)]),
       exponent=st.integers(2, 12))
@example(length=Fraction(2), exponent=3)  # the bound is attained here: 4 = minimax's least degree
@example(length=Fraction(1, 2), exponent=9)
def test_degree_lower_bound_is_never_beaten(length, exponent):
    """L7: the proved lower bound (divided differences; Chebyshev growth) is never beaten by the minimax polynomial."""
    _check_lower_bound(length, Fraction(1, 10**exponent))


@spec("L7")
def test_lower_bound_check_catches_an_off_by_one(monkeypatch):
    """Planted bug: a lower bound one degree too strong claims degree 4 impossible at [0, 2], ε = 1e-3; the check fails."""
    import verified_ta.certificate.degrees as degrees

    honest = degrees._impossible
    monkeypatch.setattr(degrees, "_impossible", lambda g, L, e: honest(g, L, e) or honest(g - 1, L, e) if g else honest(g, L, e))
    with pytest.raises(AssertionError):
        _check_lower_bound(Fraction(2), Fraction(1, 1000))


# --- verdicts never overclaim (SPEC L9, L10) --------------------------------------------------------------------


@spec("L9", "L10", "L11")
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(B=st.sampled_from([0.5, 1.0, 1.25]), n=st.sampled_from([2, 100, 4096, 10**6]), d=st.integers(1, 3),
       eps=st.sampled_from([1e-2, 1e-4, 1e-6, 0.5]), target=st.sampled_from(["forward", "gradient"]))
def test_certified_means_a_proved_total_within_eps(B, n, d, eps, target):
    """Whatever the inputs: "certified" only with a proved total <= ε, so a gradient target (derived bounds) never is."""
    cert = build_certificate(CertifyInputs(B=B, n=n, d=d, eps=eps, target=target))
    if cert.verdict == "certified":
        assert target == "forward" and cert.bounds["tag"] == "proved"
        assert Fraction(cert.bounds["total"]) <= Fraction(eps)
    assert cert.exit_code in (0, 1, 3, 4)


# --- fuzzing --verify -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate_json():
    return build_certificate(CertifyInputs(B=1.0, n=16, d=2, eps=1e-3, family="taylor")).to_json()


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**30) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12) | st.sampled_from(["0/1", "1/3", "1e-7", "-1", "1e400", "taylor", "1/d"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=8,
)
VOUCHED = ("inputs", "polynomial", "coefficients", "plan", "regime", "bounds", "costs", "verdict", "exit_code", "message",
           "M", "interval", "scale", "cross_checks")


def _paths(node, prefix=()):
    """Every (path, value) inside the vouched part of a certificate."""
    yield prefix, node
    if isinstance(node, dict):
        for key, value in node.items():
            if prefix or key in VOUCHED or key == "approx_error":
                yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, prefix + (i,))


@st.composite
def mutations(draw, original):
    data = copy.deepcopy(original)
    paths = [p for p, _ in _paths(data) if p]
    path = draw(st.sampled_from(paths))
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    action = draw(st.sampled_from(["replace", "delete", "add"]))
    if action == "replace":
        parent[path[-1]] = draw(JSON_VALUES)
    elif action == "delete":
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[draw(st.text(min_size=1, max_size=6))] = draw(JSON_VALUES)
    else:
        parent.insert(path[-1], draw(JSON_VALUES))
    return data


def _assert_handled(result) -> None:
    """What fuzzing demands: a reasoned verdict, never an internal failure."""
    assert result.status in ("valid", "rejected", "inconclusive"), result
    assert result.ok or result.problems


@spec("L7", "L9", "L11")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_verify_survives_malformed_certificates(certificate_json, data):
    """No malformed certificate crashes --verify (every one is answered with reasons), and a certificate that still
    verifies after an edit makes exactly the original claims."""
    mutated = data.draw(mutations(certificate_json))
    result = verify_certificate(json.loads(json.dumps(mutated)), time_limit_s=30)
    _assert_handled(result)
    if result.ok:
        for key in VOUCHED:
            assert mutated.get(key) == certificate_json[key], key


@spec("L7")
@settings(max_examples=40, deadline=None)
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_verify_survives_arbitrary_bytes(raw):
    result = verify_certificate(raw, time_limit_s=30)
    _assert_handled(result)
    assert result.status == "rejected"


@spec("L7")
def test_fuzz_check_catches_an_uncapped_precision(certificate_json, monkeypatch):
    """Planted bug: without the precision cap, precision_bits = 1 reaches flint and the checker fails internally —
    exactly what the fuzzing property forbids."""
    import verified_ta.certificate.document as document

    data = copy.deepcopy(certificate_json)
    data["approx_error"]["precision_bits"] = 1
    assert verify_certificate(data).status == "rejected"
    monkeypatch.setattr(document, "MIN_PRECISION_BITS", 0)
    with pytest.raises(AssertionError):
        _assert_handled(verify_certificate(data))


# --- the plan's δ limit and budget (docs/certificate.md §3) -----------------------------------------------------


def _check_plan(inputs: CertifyInputs) -> None:
    """The δ limit is a failing point of the approximation line (so every usable δ lies below it, and the degree
    lower bound taken there is proved); the budget meets ε with the proxy's floating-point term."""
    from verified_ta.certificate.plan import make_plan
    from verified_ta.certificate.verdict import approximation_bound, floating_point_bound
    from verified_ta.polynomial import build_polynomial as build

    M = score_interval(inputs)[0]
    plan = make_plan(inputs, M)
    eps = Fraction(inputs.eps)
    if plan.delta_limit < 1:
        assert Fraction(approximation_bound(inputs, plan.delta_limit)) > eps
    if plan.budget is not None:
        shifted = build("taylor", plan.proxy_degree, (0, 2 * M)).shifted(M)
        total = Fraction(approximation_bound(inputs, plan.budget)) + Fraction(
            floating_point_bound(inputs, shifted, M, plan.budget))
        assert total <= eps and plan.budget < plan.delta_limit


@spec("L9", "L10", "L7")
@settings(max_examples=10, deadline=None)
@given(B=st.sampled_from([0.5, 1.0, 1.5]), n=st.sampled_from([16, 4096]), d=st.integers(1, 4),
       eps=st.sampled_from([1e-3, 1e-6, 0.9]), target=st.sampled_from(["forward", "gradient"]))
def test_plan_limit_fails_and_budget_fits(B, n, d, eps, target):
    _check_plan(CertifyInputs(B=B, n=n, d=d, eps=eps, target=target))


@spec("L9")
def test_plan_check_catches_a_limit_on_the_passing_side(monkeypatch):
    """Planted bug: a δ limit taken on the passing side of the threshold would make the degree lower bound unsound."""
    import verified_ta.certificate.plan as plan
    import verified_ta.certificate.verdict as verdict

    monkeypatch.setattr(plan, "delta_limit", lambda inputs: verdict._threshold(verdict._fits(inputs, Fraction(0)))[0])
    with pytest.raises(AssertionError):
        _check_plan(CertifyInputs(B=1.0, n=4096, d=4, eps=1e-6))
