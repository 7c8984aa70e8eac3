"""`verified-ta certify` and `--verify` (SPEC L5–L10; issue 4): outputs, exit codes, tampering, bad input."""

from __future__ import annotations

import json
from decimal import Decimal
from fractions import Fraction

import mpmath
import pytest
from typer.testing import CliRunner

from verified_ta.cli import app
from verified_ta.polynomial import Polynomial
from verified_ta.spec import spec

pytest.importorskip("flint")

runner = CliRunner()
SMALL = ["certify", "--B", "1", "--n", "64", "--d", "2", "--eps", "1e-6"]


@pytest.fixture(scope="module")
def cert_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cert") / "cert.json"
    result = runner.invoke(app, SMALL + ["--json", str(path), "--empirical", "2"])
    assert result.exit_code == 0, result.output
    return path


def _mp(x: Fraction) -> mpmath.mpf:
    return mpmath.mpf(x.numerator) / x.denominator


@spec("L7", "L5", "L6")
def test_json_is_independently_checkable(cert_file):
    """The JSON alone gives [a, b], exact coefficients and [lower, upper]: an independent mpmath look agrees."""
    data = json.loads(cert_file.read_text())
    a, b = (Fraction(x) for x in data["interval"])
    assert a == 0 and b == 2  # M = B³ = 1 (L5), [0, 2M] (L6)
    coeffs = [Fraction(c) for c in data["coefficients"]]
    lower, upper = Fraction(data["approx_error"]["lower"]), Fraction(data["approx_error"]["upper"])
    assert lower <= upper <= Fraction(1, 10**6)
    with mpmath.workdps(60):
        xs = [_mp(b) * i / 2000 for i in range(2001)]
        sampled = max(abs(mpmath.polyval([_mp(c) for c in reversed(coeffs)], x) * mpmath.exp(-x) - 1) for x in xs)
        assert _mp(lower) * (1 - mpmath.mpf(10) ** -3) <= sampled <= _mp(upper)
    assert data["polynomial"]["sha256"] == Polynomial(data["polynomial"]["family"], (a, b), tuple(coeffs)).sha256()
    assert data["empirical"]["worst_ratio"] <= 1
    tags = {line["tag"] for line in data["bounds"]["lines"]}
    assert tags <= {"proved", "derived"} and "proved" in tags


@spec("L7")
def test_output_lists_the_required_sections():
    result = runner.invoke(app, SMALL)
    assert result.exit_code == 0, result.output
    for needle in ("score bound", "regime", "minimal certified degree", "SHA-256", "certified approximation error",
                   "cross-check poisson-tail", "floating-point term", "forward", "gradient", "crossover n", "CERTIFIED"):
        assert needle in result.output, needle


@spec("L7", "L9")
def test_verify_accepts_the_untouched_certificate(cert_file):
    result = runner.invoke(app, ["certify", "--verify", str(cert_file)])
    assert result.exit_code == 0, result.output
    assert "VALID" in result.output


def _rehash(data):
    poly = data["polynomial"]
    interval = tuple(Fraction(x) for x in data["interval"])
    poly["sha256"] = Polynomial(poly["family"], interval, tuple(Fraction(c) for c in data["coefficients"])).sha256()


def _scale_coefficient(data, factor, rehash):
    c = Fraction(data["coefficients"][0]) * factor
    data["coefficients"][0] = data["polynomial"]["coefficients"][0] = f"{c.numerator}/{c.denominator}"
    if rehash:
        _rehash(data)


def _set(path, value):
    def edit(data):
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value(node[path[-1]]) if callable(value) else value
    return edit


TAMPERS = {
    "coefficient, hash kept": lambda d: _scale_coefficient(d, 1 + Fraction(1, 10**9), rehash=False),
    "coefficient up, re-hashed": lambda d: _scale_coefficient(d, 1 + Fraction(1, 10**6), rehash=True),
    "coefficient down, re-hashed": lambda d: _scale_coefficient(d, 1 - Fraction(1, 10**6), rehash=True),
    "upper lowered": _set(("approx_error", "upper"), lambda s: str(Fraction(s) * Fraction(9, 10))),
    "upper raised": _set(("approx_error", "upper"), lambda s: str(Fraction(s) * 2)),
    "lower raised": _set(("approx_error", "lower"), lambda s: str(Fraction(s) * Fraction(11, 10))),
    "piece bound lowered": lambda d: d["approx_error"]["pieces"][3].__setitem__(3, "1e-30"),
    "piece dropped": lambda d: d["approx_error"]["pieces"].pop(5),
    "interval widened": lambda d: d["interval"].__setitem__(1, "3/1"),
    "B changed": _set(("inputs", "B"), 1.5),
    "rho changed": _set(("bounds", "rho"), "1e-20"),
    "forward line changed": lambda d: d["bounds"]["lines"][0].__setitem__("value", 1e-12),
    "verdict changed": _set(("exit_code",), 1),
}


@spec("L7", "L9", "L10")
@pytest.mark.parametrize("name", sorted(TAMPERS))
def test_verify_rejects_tampering(cert_file, tmp_path, name):
    data = json.loads(cert_file.read_text())
    TAMPERS[name](data)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    result = runner.invoke(app, ["certify", "--verify", str(bad)])
    assert result.exit_code == 1, result.output
    assert "REJECTED" in result.output


@spec("L9")
def test_float32_misses_a_small_target_and_says_why():
    """float32 at n = 65536 cannot reach ε = 1e-6: exit 1 with the plain reason (alternating sum, amplification e^{2M})."""
    result = runner.invoke(app, ["certify", "--B", "1", "--n", "65536", "--d", "2", "--dtype", "float32"])
    assert result.exit_code == 1, result.output
    assert "float32 cannot reach ε" in result.output


@spec("L5")
@pytest.mark.parametrize(
    "args, needle",
    [
        (["--B", "0", "--n", "8", "--d", "2"], "B must be a finite number > 0"),
        (["--B", "-1", "--n", "8", "--d", "2"], "B must be a finite number > 0"),
        (["--B", "1", "--n", "8", "--d", "2", "--eps", "0"], "eps must lie in the open interval (0, 1)"),
        (["--B", "1", "--n", "8", "--d", "2", "--eps", "1"], "eps must lie in the open interval (0, 1)"),
        (["--B", "1", "--n", "8", "--d", "2", "--eps", "1.5"], "eps must lie in the open interval (0, 1)"),
        (["--B", "1", "--n", "0", "--d", "2"], "n must be an integer >= 1"),
        (["--B", "1", "--n", "8", "--d", "0"], "d must be an integer >= 1"),
        (["--B", "1", "--n", "8", "--d", "2", "--target", "loss"], "target must be one of"),
        (["--B", "1", "--n", "8", "--d", "2", "--dtype", "float16"], "dtype must be one of"),
        (["--B", "1", "--n", "8", "--d", "2", "--family", "pade"], "family must be one of"),
        (["--n", "8", "--d", "2"], "--B required"),
        (["--B", "1", "--n", "100000", "--d", "64"], "memory_limit_bytes"),
    ],
)
def test_bad_input_names_the_limit(args, needle):
    result = runner.invoke(app, ["certify", *args])
    assert result.exit_code == 3, result.output
    assert needle in result.output


@spec("L5")
def test_verify_missing_file_is_bad_input(tmp_path):
    result = runner.invoke(app, ["certify", "--verify", str(tmp_path / "nope.json")])
    assert result.exit_code == 3
    assert "cannot read" in result.output


@spec("L7")
def test_recheck_rejects_a_negative_truncation_order():
    """Order K = −1 would drop the "− 1" of f = Pe^{-x} − 1: P ≈ 0 (true error ≈ 1) must not pass as 1e-7."""
    from verified_ta.certificate import Piece, recheck_pieces

    interval = (Fraction(0), Fraction(2))
    problems = recheck_pieces([Fraction(1, 10**30)], interval, [Piece(*interval, -1, Fraction(1, 10**7))], 128)
    assert any("order must be >= 0" in p for p in problems), problems


@spec("L7")
def test_verify_rejects_lower_above_upper(cert_file):
    """A certificate whose enclosure is inconsistent (lower > upper) is rejected even if every piece re-checks."""
    from verified_ta.certificate import verify_certificate

    data = json.loads(cert_file.read_text())
    data["approx_error"]["lower"] = str(Decimal(data["approx_error"]["upper"]) * 2)
    result = verify_certificate(data)
    assert not result.ok and any("exceeds upper" in p for p in result.problems), result.problems


@spec("L7")
def test_minimal_degree_rejects_an_unknown_family():
    from verified_ta.certificate import minimal_degree

    with pytest.raises(ValueError, match="family must be one of"):
        minimal_degree("pade", (0, 2), 1e-3)


@spec("L7")
@pytest.mark.parametrize("value", [mpmath.mpf("inf"), mpmath.mpf("-inf"), mpmath.mpf("nan")])
def test_as_fraction_rejects_non_finite_mpf(value):
    """mpf infinities and NaN have man_exp (0, 0)-like fields: they must not read as the rational 0."""
    from verified_ta.polynomial import as_fraction

    with pytest.raises(ValueError, match="finite"):
        as_fraction(value)
