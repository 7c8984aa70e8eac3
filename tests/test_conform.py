"""``verified-ta conform``: correct implementations pass; each planted bug is rejected by the right check.

The implementations live in tests/conform_impls.py. Runs are derandomized (no seed), so every failure set below
is reproducible; 12 Hypothesis examples per check keep the whole file near a minute on 2 cores.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from verified_ta.cli import app
from verified_ta.spec import spec
from verified_ta.testing.checks import (
    CHECKS,
    ConformConfig,
    Example,
    Implementation,
    ImplementationError,
    load_impl,
    make_config,
)
from verified_ta.testing.runner import run_conformance, write_junit
from verified_ta.testing.strategies import PATTERNS, ConformCase, conform_cases, pattern_inputs  # noqa: F401 (ConformCase: eval of "reproduce")

pytest_plugins = ["pytester"]

IMPLS = "tests.conform_impls"
EXAMPLES = 12
GRADS = {"grad_q", "grad_k1", "grad_k2", "grad_v1", "grad_v2"}


def conform(name: str, **kw) -> dict[str, object]:
    """Run every check on ``conform_impls.<name>``; the map check name -> result."""
    kw.setdefault("max_examples", EXAMPLES)
    results = run_conformance(load_impl(f"{IMPLS}:{name}"), ConformConfig(**kw))
    return {r.check.name: r for r in results}


def failures(results: dict) -> set[str]:
    return {name for name, r in results.items() if r.status == "FAIL"}


def report(results: dict) -> str:
    return "\n".join(r.describe() for r in results.values())


@spec("P15", "P17", "P18", "P21", "P22", "L4", "P29")
@pytest.mark.parametrize(
    "name, dtype",
    [
        ("reference", torch.float64),
        ("einsum_autograd", torch.float64),  # an independent float path: the float64 bounds are not vacuous
        ("reference", torch.float32),
        ("einsum_autograd", torch.float32),
        ("float32_then_round", torch.bfloat16),  # a kernel accumulating in float32 meets the FlashAttention rule
    ],
)
def test_correct_implementations_pass_every_check(name, dtype):
    results = conform(name, dtype=dtype, causal=True)
    assert not failures(results), report(results)
    assert all(r.status == "PASS" for r in results.values()), report(results)


@spec("P15")
def test_lse_check_is_skipped_when_no_lse_is_returned():
    results = conform("reference_out_only", max_examples=4)
    assert results["lse"].status == "SKIP" and "no lse" in results["lse"].reason
    assert not failures(results), report(results)


ALL = {c.name for c in CHECKS}

#: (implementation, run options, the exact set of checks that must fail)
BUGS = [
    ("lse_log2", {}, {"lse", "forward_mpmath", *GRADS}),  # forward_mpmath compares the lse too
    ("lse_delta_bf16", {}, GRADS),
    ("lse_delta_bf16", {"dtype": torch.float32}, GRADS),
    ("causal_off_by_one", {"causal": True},
     {"causal_mask", "forward", "forward_mpmath", "lse", "matrix_reduction", *GRADS}),
    ("scale_twice_in_dq", {}, {"grad_q"}),
    ("scale_twice_in_dq", {"dtype": torch.bfloat16}, {"grad_q"}),
    ("late_rows_backward", {"causal": True}, GRADS),
    ("nondeterministic_backward", {}, {"determinism"}),
    ("swapped_dk1_dk2", {}, {"grad_k1", "grad_k2"}),
    ("swapped_kv_order", {}, {"forward", "forward_mpmath", "matrix_reduction", *GRADS}),
    ("scale_ignored", {}, {"forward", "forward_mpmath", "lse", "matrix_reduction", *GRADS}),
    ("softmax_per_key", {},
     {"pair_softmax_normalisation", "forward", "forward_mpmath", "swap_symmetry", "matrix_reduction", *GRADS}),
    ("scores_clamped", {}, {"shift_invariance", "forward", "forward_mpmath", "lse", "matrix_reduction", *GRADS}),
    ("heads_mixed", {}, {"forward", "lse", "swap_symmetry", "matrix_reduction", *GRADS}),
    ("no_max_subtraction", {"dtype": torch.float32, "max_bound": 4.0},
     {"forward", "lse", "pair_softmax_normalisation", "shift_invariance", "swap_symmetry", *GRADS}),
    ("wrong_shape", {}, ALL - {"lse", "causal_mask"}),  # skipped: it returns a bare tensor; causal not requested
]


@spec("P15", "P17", "P18", "P21", "P22", "L4", "P29")
@pytest.mark.parametrize("name, options, expected", BUGS, ids=[f"{b[0]}-{b[1].get('dtype', torch.float64)}" for b in BUGS])
def test_planted_bug_is_rejected_by_the_right_check(name, options, expected):
    results = conform(name, **options)
    assert failures(results) == expected, report(results)


@spec("L4")
def test_counterexample_is_shrunk_and_replays():
    """The reported case is minimal-ish (Hypothesis shrinks n, d, batch, heads) and fails again when rebuilt."""
    results = conform("scale_twice_in_dq")
    r = results["grad_q"]
    case = r.case
    assert case.n == 2 and case.d == 2 and case.batch == case.heads == 1, r.describe()  # n = 1 has dQ = 0; d = 1 has s = 1
    again = r.check.measure(Example.of(load_impl(f"{IMPLS}:scale_twice_in_dq"), ConformConfig(), case))
    assert not again.passed and again.error == r.measurement.error
    cx = r.counterexample()
    assert cx["shape (batch, heads, n, d)"] == [1, 1, 2, 2] and cx["max error"] > cx["tolerance"]
    assert eval(cx["reproduce"].replace("verified_ta.testing.strategies.", "").replace("(dtype, device)", "()"))[0].shape == (1, 1, 2, 2)


@spec("P15")
def test_adversarial_pattern_is_the_counterexample_for_overflow():
    r = conform("no_max_subtraction", dtype=torch.float32, max_bound=4.0)["forward"]
    assert r.case.pattern == "all_plus_bound" and r.measurement.error == math.inf, r.describe()


@spec("P20")
@given(case=conform_cases(bound=st.sampled_from((0.5, 1.0, 2.0, 4.0))))  # powers of two (exact B³)
def test_patterns_respect_the_bound_and_reach_the_l5_score_range(case):
    """Entries lie in [-B, B]; scores in [-s d B³, s d B³] (L5), attained exactly by all_plus_bound."""
    q, k1, k2, v1, v2 = case.inputs()
    assert all(t.abs().max() <= case.bound for t in (q, k1, k2, v1, v2))
    scores = torch.einsum("...il,...al,...bl->...iab", q, k1, k2) * case.scale
    top = case.scale * case.d * case.bound**3
    # no rounding slack: B is a power of two, so on entries ±B every product and partial sum is exact and
    # fl(s·d·B³) = fl(s·d)·B³ = top; round-to-nearest is monotone, so entries within [-B, B] give |score| <= top
    assert scores.abs().max() <= top
    if case.pattern == "all_plus_bound":
        assert torch.all(scores == top)
    if case.pattern == "identical_rows":
        assert all(torch.equal(t, t[..., :1, :].expand_as(t)) for t in (q, k1, k2, v1, v2))
    if case.pattern == "dominant_pair":
        assert float(scores.amax()) == top


def test_pattern_inputs_rejects_unknown_pattern():
    with pytest.raises(ValueError, match="pattern must be one of"):
        pattern_inputs("gaussian", (2, 2), 1.0, 0)
    assert len(PATTERNS) == 5


@pytest.mark.parametrize(
    "target, message",
    [
        ("no_colon", "MODULE:CALLABLE"),
        (":fn", "MODULE:CALLABLE"),
        ("no_such_module_xyz:fn", "cannot be imported"),
        (f"{IMPLS}:missing", "has no attribute"),
        (f"{IMPLS}:LOG2E", "must name a callable"),
    ],
)
def test_load_impl_rejects_bad_targets(target, message):
    with pytest.raises(ValueError, match=message):
        load_impl(target)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"dtype": "float8"}, "dtype must be one of"),
        ({"head_dims": "16,x"}, "head_dims must be comma-separated"),
        ({"head_dims": "0"}, "head_dims must be a non-empty tuple"),
        ({"min_n": 0}, "min_n must be an integer >= 1"),
        ({"min_n": 4, "max_n": 3}, "max_n must be an integer >= min_n"),
        ({"max_examples": 0}, "max_examples must be an integer >= 1"),
        ({"max_bound": 0.0}, r"max_bound must lie in \(0, 16\]"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"device": "tpu"}, "device must be 'cpu' or 'cuda"),
    ],
)
def test_make_config_rejects_bad_options(kw, message):
    with pytest.raises(ValueError, match=message):
        make_config(**kw)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_make_config_rejects_cuda_without_a_device():
    with pytest.raises(ValueError, match="no CUDA device"):
        make_config(device="cuda")


def test_calling_convention_errors_name_the_problem():
    x = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    bad_return = Implementation(lambda *a, **k: (x, x, x), "three")
    with pytest.raises(ImplementationError, match="must return out or"):
        bad_return(x, x, x, x, x, scale=1.0, causal=False)
    bad_lse = Implementation(lambda *a, **k: (x, x), "lse_shape")
    with pytest.raises(ImplementationError, match="lse of shape"):
        bad_lse(x, x, x, x, x, scale=1.0, causal=False)
    frozen = Implementation(lambda q, *a, **k: q.detach(), "no_grad")
    r = {res.check.name: res for res in run_conformance(frozen, ConformConfig(max_examples=2))}
    assert r["grad_q"].status == "FAIL" and "--forward-only" in r["grad_q"].measurement.detail
    forward_only = {res.check.name: res for res in run_conformance(frozen, ConformConfig(max_examples=2, backward=False))}
    assert forward_only["grad_q"].status == "SKIP" and forward_only["forward"].status == "FAIL"


def test_probe_failure_fails_every_check():
    def broken(*a, **k):
        raise RuntimeError("kernel launch failed")

    results = run_conformance(Implementation(broken, "broken"), ConformConfig(max_examples=2))
    assert all(r.status == "FAIL" and "kernel launch failed" in r.measurement.detail for r in results)


def test_junit_xml_lists_every_check_with_failures(tmp_path):
    results = run_conformance(load_impl(f"{IMPLS}:scale_twice_in_dq"), ConformConfig(max_examples=EXAMPLES))
    path = tmp_path / "conform.xml"
    write_junit(results, path)
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite.get("tests") == str(len(CHECKS)) and suite.get("failures") == "1" and suite.get("skipped") == "1"
    failed = [tc.get("name") for tc in suite.iter("testcase") if tc.find("failure") is not None]
    assert failed == ["grad_q [L4, P29]"]
    assert "seed: " in suite.find("testcase/failure").text


def test_cli_exit_codes_table_and_outputs(tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["conform", f"{IMPLS}:reference", "--max-examples", "3", "--causal"])
    assert ok.exit_code == 0, ok.output
    assert "PASS causal_mask" in ok.output and "14 passed, 0 failed, 0 skipped" in ok.output
    junit, js = tmp_path / "c.xml", tmp_path / "c.json"
    bad = runner.invoke(app, ["conform", f"{IMPLS}:scale_twice_in_dq", "--max-examples", str(EXAMPLES),
                              "--junit", str(junit), "--json", str(js)])
    assert bad.exit_code == 1, bad.output
    assert "FAIL grad_q [L4, P29]" in bad.output and "shape (batch, heads, n, d)" in bad.output
    assert junit.exists() and '"passed": false' in js.read_text()
    usage = runner.invoke(app, ["conform", "no_colon"])
    assert usage.exit_code == 2 and "MODULE:CALLABLE" in usage.output


def _plugin_args() -> list[str]:
    """``-p`` the plugin unless its pytest11 entry point is installed (it then loads by itself)."""
    installed = any(ep.value == "verified_ta.testing.pytest_plugin"
                    for ep in importlib.metadata.entry_points(group="pytest11"))
    return [] if installed else ["-p", "verified_ta.testing.pytest_plugin"]


def test_pytest_plugin_adds_the_checks_as_items(pytester):
    pytester.makepyfile(test_user="def test_users_own():\n    assert True\n")
    plain = pytester.runpytest_inprocess(*_plugin_args(), "-p", "no:cacheprovider")
    plain.assert_outcomes(passed=1)  # without --verified-ta-impl the plugin adds nothing
    good = pytester.runpytest_inprocess(*_plugin_args(), "-p", "no:cacheprovider",
                                        f"--verified-ta-impl={IMPLS}:reference", "--verified-ta-max-examples=3")
    good.assert_outcomes(passed=len(CHECKS), skipped=1)  # the user's test + every check but causal_mask
    bad = pytester.runpytest_inprocess(*_plugin_args(), "-p", "no:cacheprovider", "-k", "grad",
                                       f"--verified-ta-impl={IMPLS}:scale_twice_in_dq",
                                       f"--verified-ta-max-examples={EXAMPLES}")
    bad.assert_outcomes(passed=4, failed=1, deselected=len(CHECKS) - 4)
    bad.stdout.fnmatch_lines(["*FAIL grad_q [[]L4, P29[]]*", "*seed: *"])


def test_pytest_plugin_usage_error(pytester):
    result = pytester.runpytest_inprocess(*_plugin_args(), "--verified-ta-impl=nomodule_xyz:fn")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--verified-ta-impl*cannot be imported*"])


@pytest.mark.slow
@spec("P15", "P17", "P18", "P21", "P22", "L4", "P29")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
def test_correct_implementations_pass_thorough(dtype):
    for name in ("reference", "einsum_autograd", "float32_then_round"):
        if name == "float32_then_round" and dtype == torch.float64:
            continue
        results = conform(name, dtype=dtype, causal=True, max_examples=150, max_bound=4.0)
        assert not failures(results), report(results)


@pytest.mark.slow
@spec("P15", "P17", "P18", "P21", "P22", "L4", "P29")
def test_package_triton_kernels_pass_under_the_interpreter(tmp_path):
    """The package's fused kernels (TRITON_INTERPRET=1 on CPU, float32, d = 16): ~20 s for 3 examples per check."""
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    junit = tmp_path / "triton.xml"
    done = subprocess.run(
        [sys.executable, "-c", "from verified_ta.cli import app; app()", "conform", f"{IMPLS}:triton_kernels", "--dtype", "float32",
         "--head-dims", "16", "--max-n", "3", "--max-examples", "3", "--causal", "--junit", str(junit)],
        cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert ET.parse(junit).getroot().find("testsuite").get("failures") == "0"


@pytest.mark.gpu
@spec("P15", "P17", "P18", "P21", "P22", "L4", "P29")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_package_triton_kernels_pass_on_cuda(dtype):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    results = conform("triton_kernels", device="cuda", dtype=dtype, causal=True, head_dims=(16, 64), max_n=40)
    assert not failures(results), report(results)
