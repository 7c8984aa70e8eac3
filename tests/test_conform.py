"""``verified-ta conform``: correct implementations pass; each planted bug is rejected by the right check.

The implementations live in tests/conform_impls.py. Runs are seeded (seed 0 unless given), so every failure set
below is reproducible. The planted-bug matrix runs on small shapes (SMALL: n <= 6, d <= 4, 12 examples per check);
the bugs that only show at realistic shapes are run at conform's defaults, on the check that must catch them.
Worker processes (sys.exit, hangs, segfaults, --workers, the example database) are tested at the end.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from verified_ta.cli import app
from verified_ta.cli.conform import JSON_SCHEMA as CONFORM_SCHEMA
from verified_ta.spec import spec
from verified_ta.testing.checks import (
    CHECKS,
    ConformConfig,
    Example,
    Implementation,
    ImplementationError,
    check_by_name,
    load_impl,
    make_config,
)
from verified_ta.testing.runner import fixed_cases, run_conformance, write_junit
from verified_ta.testing.strategies import PATTERNS, ConformCase, conform_cases, pattern_inputs, sequence_lengths  # noqa: F401 (ConformCase: eval of "reproduce")

pytest_plugins = ["pytester"]

IMPLS = "tests.conform_impls"
EXAMPLES = 12
GRADS = {"grad_q", "grad_k1", "grad_k2", "grad_v1", "grad_v2"}
#: small shapes for the planted-bug matrix (the defaults reach n = 129, d = 128: a minute per implementation)
SMALL = {"max_examples": EXAMPLES, "max_n": 6, "head_dims": (1, 2, 3, 4)}


def conform(name: str, checks=CHECKS, **kw) -> dict[str, object]:
    """Run ``checks`` on ``conform_impls.<name>`` (SMALL unless overridden); the map check name -> result."""
    kw = {**SMALL, **kw}
    results = run_conformance(load_impl(f"{IMPLS}:{name}"), ConformConfig(**kw), checks)
    return {r.check.name: r for r in results}


def at_defaults(name: str, *check_names: str, **kw) -> dict[str, object]:
    """``check_names`` on ``conform_impls.<name>`` with conform's default shapes, bounds and example budget."""
    results = run_conformance(load_impl(f"{IMPLS}:{name}"), ConformConfig(**kw), [check_by_name(c) for c in check_names])
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
    ("lse_log2", {}, {"lse", "forward_mpmath", "large_logits", *GRADS}),  # forward_mpmath, large_logits: lse too
    ("lse_delta_bf16", {}, GRADS),
    ("lse_delta_bf16", {"dtype": torch.float32}, GRADS),
    ("causal_off_by_one", {"causal": True},
     {"causal_mask", "forward", "forward_mpmath", "lse", "matrix_reduction", "large_logits", *GRADS}),
    ("scale_twice_in_dq", {}, {"grad_q"}),
    ("scale_twice_in_dq", {"dtype": torch.bfloat16}, {"grad_q"}),
    ("late_rows_backward", {"causal": True}, GRADS),
    ("nondeterministic_backward", {}, {"determinism"}),
    ("swapped_dk1_dk2", {}, {"grad_k1", "grad_k2"}),
    ("swapped_kv_order", {}, {"forward", "forward_mpmath", "matrix_reduction", "large_logits", *GRADS}),
    ("scale_ignored", {}, {"forward", "forward_mpmath", "lse", "matrix_reduction", "large_logits", *GRADS}),
    ("softmax_per_key", {}, {"pair_softmax_normalisation", "forward", "forward_mpmath", "swap_symmetry",
                             "matrix_reduction", "large_logits", *GRADS}),
    ("scores_clamped", {}, {"shift_invariance", "forward", "forward_mpmath", "lse", "matrix_reduction",
                            "large_logits", *GRADS}),
    ("heads_mixed", {}, {"forward", "lse", "swap_symmetry", "matrix_reduction", "large_logits", *GRADS}),
    # float32 without the row max: overflow (inf) at large scores, and log(exp(z)) / exp(z)·v/exp(z) lose the
    # exactness the same-dtype baselines keep at n = 1 (forward_mpmath's lse, matrix_reduction)
    ("no_max_subtraction", {"dtype": torch.float32, "max_bound": 4.0},
     {"forward", "forward_mpmath", "lse", "pair_softmax_normalisation", "shift_invariance", "swap_symmetry",
      "matrix_reduction", "large_logits", *GRADS}),
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
    """all_plus_bound puts every score at the L5 maximum s·d·B³ = 256: float32 exp overflows without the row max."""
    config = ConformConfig(**{**SMALL, "dtype": torch.float32, "max_bound": 4.0})
    (case,) = [c for c in fixed_cases(check_by_name("forward"), config) if c.pattern == "all_plus_bound"]
    assert case.scale * case.d * case.bound**3 == 256
    m = check_by_name("forward").measure(Example.of(load_impl(f"{IMPLS}:no_max_subtraction"), config, case))
    assert m.error == math.inf and not m.passed
    assert check_by_name("forward").measure(Example.of(load_impl(f"{IMPLS}:reference"), config, case)).passed


# --- bugs that only show at realistic shapes or large logits: caught at conform's defaults (issue 11 §2) -------


@spec("P15", "P21")
@pytest.mark.parametrize(
    "name, check, where",
    [
        ("k2_second_tile_misread", "forward", lambda case: case.n >= 17),  # a second 16-row K2 tile
        ("scale_rounded_for_large_heads", "forward", lambda case: case.d >= 16),  # the d >= 16 code path
        ("no_max_subtraction", "large_logits", lambda case: True),  # float64: exp(1000) overflows
        ("lse_without_max", "large_logits", lambda case: True),  # out stable, LSE overflows
    ],
    ids=["k2_tile", "scale_d16", "no_max", "lse_no_max"],
)
def test_defaults_find_the_bugs_kernels_have(name, check, where):
    r = at_defaults(name, check)[check]
    assert r.status == "FAIL" and where(r.case), r.describe()


@spec("P15", "P21")
def test_defaults_pass_an_independent_correct_implementation():
    """The control for the large-logit check above: the materialised-score einsum implementation passes it."""
    results = at_defaults("einsum_autograd", "large_logits")
    assert all(r.status == "PASS" for r in results.values()), report(results)
    assert all(r.examples == ConformConfig().max_examples and r.fixed > 0 for r in results.values())


def test_default_cases_cross_tile_edges_and_specialised_head_dims():
    """What the default strategy draws: tile edges up to 2·64 + 1, head dims 16–128, within the cost cap."""
    from hypothesis import find

    from verified_ta.testing.runner import case_strategy
    from verified_ta.testing.strategies import MAX_WORK

    assert find(sequence_lengths(1, 129, d=4), lambda n: n == 129) == 129  # 2·64 + 1
    assert find(sequence_lengths(1, 129, d=32), lambda n: n > 33) == 63  # 65³·32 <= MAX_WORK < 127³·32
    case = find(case_strategy(check_by_name("forward"), ConformConfig()), lambda c: c.d == 128 and c.n > 8)
    assert case.n == 15 and case.work <= MAX_WORK
    fixed = fixed_cases(check_by_name("forward"), ConformConfig())
    assert {c.n for c in fixed} == {17} and {c.d for c in fixed} == {16, 128} and len(fixed) == 5


def test_max_examples_is_reported_with_the_fixed_cases_on_top():
    (r,) = run_conformance(load_impl(f"{IMPLS}:reference"), ConformConfig(**{**SMALL, "max_examples": 7}),
                           [check_by_name("forward")])
    assert r.examples == 7 and r.fixed == len(fixed_cases(r.check, ConformConfig(**SMALL)))
    assert f"7 examples + {r.fixed} fixed adversarial cases" in r.describe()


# --- windows and grouped-query heads (issue 11 §3) --------------------------------------------------------------


@spec("P15", "P17", "P18", "P21", "P22", "L4")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_windowed_and_grouped_reference_passes(dtype):
    results = conform("reference", causal=True, window=(2, 3), kv_heads=2, dtype=dtype, max_examples=6)
    assert all(r.status == "PASS" for r in results.values()), report(results)


@spec("P15", "P22")
@pytest.mark.parametrize(
    "name, options, must_fail",
    [
        ("window_ignored", {"window": (2, 3)}, {"forward", "lse", "matrix_reduction"}),
        ("window_sides_swapped", {"window": (1, 3)}, {"forward", "lse", "matrix_reduction"}),
        ("kv_heads_modulo", {"kv_heads": 2}, {"forward", "lse", "matrix_reduction"}),
    ],
)
def test_window_and_head_bugs_are_rejected(name, options, must_fail):
    results = conform(name, causal=True, max_examples=6, **options)
    assert must_fail <= failures(results), report(results)


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
        ({"min_n": 4, "max_n": 3}, "max_n must be an integer >= 4"),
        ({"window": "4"}, "window must be W1,W2"),
        ({"window": "0,4", "causal": True}, "window w1 must be None"),
        ({"window": "4,4"}, "needs causal=True"),
        ({"kv_heads": 0}, "kv_heads must be an integer >= 1"),
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
    with pytest.raises(ImplementationError, match=r"return out or \(out, lse\)"):
        bad_return(x, x, x, x, x, scale=1.0, causal=False)
    bad_lse = Implementation(lambda *a, **k: (x, x), "lse_shape")
    with pytest.raises(ImplementationError, match="lse of shape"):
        bad_lse(x, x, x, x, x, scale=1.0, causal=False)
    frozen = Implementation(lambda q, *a, **k: q.detach(), "no_grad")
    r = {res.check.name: res for res in run_conformance(frozen, ConformConfig(**{**SMALL, "max_examples": 2}))}
    assert r["grad_q"].status == "ERROR" and "--forward-only" in r["grad_q"].measurement.detail
    forward_only = {res.check.name: res for res in run_conformance(
        frozen, ConformConfig(**{**SMALL, "max_examples": 2}, backward=False))}
    assert forward_only["grad_q"].status == "SKIP" and forward_only["forward"].status == "FAIL"


def test_probe_failure_is_one_error_not_one_per_check():
    def broken(*a, **k):
        raise RuntimeError("kernel launch failed")

    results = run_conformance(Implementation(broken, "broken"), ConformConfig(max_examples=2))
    assert [(r.check.name, r.status) for r in results] == [("probe", "ERROR")]
    assert "kernel launch failed" in results[0].measurement.detail


def test_junit_xml_lists_every_check_with_failures(tmp_path):
    results = run_conformance(load_impl(f"{IMPLS}:scale_twice_in_dq"), ConformConfig(**SMALL))
    path = tmp_path / "conform.xml"
    write_junit(results, path)
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite.get("tests") == str(len(CHECKS)) and suite.get("failures") == "1" and suite.get("skipped") == "1"
    failed = [tc.get("name") for tc in suite.iter("testcase") if tc.find("failure") is not None]
    assert failed == ["grad_q [L4, P29]"]
    assert "seed: " in suite.find("testcase/failure").text


def test_cli_exit_codes_table_and_outputs(tmp_path):
    runner = CliRunner()
    small = ["--max-n", "6", "--head-dims", "1,2,3,4"]
    ok = runner.invoke(app, ["conform", f"{IMPLS}:reference", "--max-examples", "3", "--causal", *small, "-v"],
                       env={"COLUMNS": "80"})
    assert ok.exit_code == 0, ok.output
    assert "PASS causal_mask" in ok.output and f"{len(CHECKS)} passed, 0 failed, 0 skipped" in ok.output
    lines = ok.output.strip().splitlines()  # -v: a line per check with its time, then the table; nothing wrapped
    assert all(line.startswith("PASS ") and line.endswith(" s)") for line in lines[:len(CHECKS)]), ok.output
    assert len(lines) == 2 * len(CHECKS) + 3 and any(len(line) > 80 for line in lines)
    junit, js = tmp_path / "c.xml", tmp_path / "c.json"
    bad = runner.invoke(app, ["conform", f"{IMPLS}:scale_twice_in_dq", "--max-examples", "6", *small,
                              "--junit", str(junit), "--json", str(js)])
    assert bad.exit_code == 1, bad.output
    assert "FAIL grad_q [L4, P29]" in bad.output and "shape (batch, heads, n, d)" in bad.output
    assert junit.exists() and json.loads(js.read_text())["passed"] is False
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
    small = ("--verified-ta-max-n=6", "--verified-ta-head-dims=1,2,3,4")
    good = pytester.runpytest_inprocess(*_plugin_args(), "-p", "no:cacheprovider", *small,
                                        f"--verified-ta-impl={IMPLS}:reference", "--verified-ta-max-examples=3")
    good.assert_outcomes(passed=len(CHECKS), skipped=1)  # the user's test + every check but causal_mask
    bad = pytester.runpytest_inprocess(*_plugin_args(), "-p", "no:cacheprovider", "-k", "grad", *small,
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
@spec("P15")
def test_device_cuda_builds_the_float64_reference_on_the_gpu():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    config = make_config(device="cuda", dtype="float32")
    ex = Example.of(load_impl(f"{IMPLS}:reference"), config, ConformCase(1, 2, 33, 16, 0.25, True, "uniform", 1.0, 0))
    out, _ = ex.reference
    assert out.device.type == "cuda" and out.dtype == torch.float64
    assert check_by_name("forward").measure(ex).passed


@pytest.mark.gpu
@spec("P15", "P17", "P18", "P21", "P22", "L4", "P29")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_package_triton_kernels_pass_on_cuda(dtype):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    results = conform("triton_kernels", device="cuda", dtype=dtype, causal=True, head_dims=(16, 64), max_n=40)
    assert not failures(results), report(results)


# --- contained runs: the implementation cannot make conform pass, hang or die (issue 11 §1) --------------------


def isolated(name: str, check_names=("forward",), **kw):
    """``check_names`` on ``conform_impls.<name>`` in worker processes (the command line's way), SMALL shapes."""
    from verified_ta.testing.worker import run_isolated

    timeout = kw.pop("timeout", 60.0)
    workers = kw.pop("workers", 1)
    config = ConformConfig(**{**SMALL, **kw})
    return run_isolated(f"{IMPLS}:{name}", config, [check_by_name(c) for c in check_names], timeout=timeout,
                        workers=workers, search_path=Path(__file__).resolve().parents[1])


def test_sys_exit_zero_fails_the_run_and_writes_both_reports(tmp_path):
    """sys.exit(0) inside the implementation used to exit 0 with no output and no report: a false pass in CI."""
    js, junit = tmp_path / "c.json", tmp_path / "c.xml"
    result = CliRunner().invoke(app, ["conform", f"{IMPLS}:exits_zero", "--json", str(js), "--junit", str(junit)])
    assert result.exit_code == 1, result.output
    assert "ERROR probe" in result.output and "called sys.exit(0)" in result.output
    assert "0 passed, 0 failed, 0 skipped, 1 error" in result.output
    payload = json.loads(js.read_text(), parse_constant=_reject_constant)
    jsonschema.validate(payload, CONFORM_SCHEMA)
    assert payload["passed"] is False and payload["counts"]["ERROR"] == 1 and len(payload["checks"]) == 1
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("errors") == "1" and suite.find("testcase/error") is not None


def test_json_to_stdout_stays_clean_when_the_implementation_prints():
    """``--json -``: the document alone on stdout (the workers' prints go to stderr); -q: just the summary."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", "from verified_ta.cli import app; app()", "conform", f"{IMPLS}:prints_to_stdout",
         "--max-n", "3", "--head-dims", "1,2", "--max-examples", "2", "--forward-only", "--json", "-", "-q"],
        cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout, parse_constant=_reject_constant)
    jsonschema.validate(payload, CONFORM_SCHEMA)
    assert payload["command"] == "conform" and payload["passed"] is True
    assert all(isinstance(c["spec_ids"], list) for c in payload["checks"])
    assert "debug: shapes" in done.stderr
    assert [line for line in done.stderr.splitlines() if not line.startswith("debug")] == [
        f"{len(CHECKS) - 6} passed, 0 failed, 6 skipped"]  # 5 gradients (--forward-only), causal_mask


def test_os_exit_in_the_implementation_is_one_error():
    (r,) = isolated("os_exit_zero")
    assert r.status == "ERROR" and "exited with code 0" in r.measurement.detail


def test_a_hang_is_a_timeout_and_the_next_check_gets_a_fresh_worker():
    """A call that never returns is stopped after --timeout; the case it hung on is reported; later checks run."""
    timeout = 3.0
    hang, oracle = isolated("hangs_for_large_n", ("forward", "forward_mpmath"), max_n=12, timeout=timeout)
    assert hang.status == "TIMEOUT" and f"--timeout {timeout:g} s" in hang.reason, hang.describe()
    assert hang.case is not None and hang.case.n > 8  # the case it hung on (correct for n <= 8)
    assert oracle.status == "PASS", oracle.describe()  # n <= 3: a fresh worker after the kill


def test_a_hang_in_the_probe_is_one_timeout():
    (r,) = isolated("hangs", timeout=2.0)
    assert r.check.name == "probe" and r.status == "TIMEOUT"


def test_a_segfault_is_an_error_naming_the_signal_and_the_run_goes_on():
    crash, oracle = isolated("segfaults_for_large_n", ("forward", "forward_mpmath"), max_n=12)
    assert crash.status == "ERROR" and "SIGSEGV" in crash.measurement.detail, crash.describe()
    assert crash.case is not None and crash.case.n > 8
    assert oracle.status == "PASS", oracle.describe()


@pytest.mark.parametrize(
    "name, message",
    [
        ("returns_numpy", "returned numpy.ndarray"),
        ("returns_none", "returned None (a missing return statement?)"),
        ("returns_three", "returned a tuple (torch.Tensor, torch.Tensor, torch.Tensor)"),
        ("returns_float32", "returned out in torch.float32 for torch.float64 inputs"),
        ("returns_nan", "returned non-finite out"),
        ("wrong_shape", "(transposed?); expected q's shape"),
        ("exits_zero", "called sys.exit(0)"),
    ],
)
def test_common_mistakes_are_one_error_that_names_them(name, message):
    results = run_conformance(load_impl(f"{IMPLS}:{name}"), ConformConfig(**SMALL))
    assert len(results) == 1 and results[0].status == "ERROR", [r.describe() for r in results]
    assert message in results[0].measurement.detail, results[0].describe()


def test_an_exception_shows_a_short_traceback_of_the_users_code():
    (r,) = run_conformance(load_impl(f"{IMPLS}:raises_inside"), ConformConfig(**SMALL))
    text = r.describe()
    assert r.status == "ERROR" and "RuntimeError: CUDA error: an illegal memory access" in text
    assert "_user_helper" in text and "conform_impls.py" in text
    assert "verified_ta/testing" not in text and len(text.splitlines()) < 20, text


def test_workers_report_what_one_worker_reports():
    """--workers 2 deals the checks out to two processes; every result equals the serial run's."""
    names = ("forward", "grad_q", "determinism")
    one = isolated("scale_twice_in_dq", names, max_examples=5)
    two = isolated("scale_twice_in_dq", names, max_examples=5, workers=2)
    key = lambda r: (r.check.name, r.status, r.examples, r.shrinks, r.fixed, r.case, r.measurement)  # noqa: E731
    assert [key(r) for r in one] == [key(r) for r in two]
    assert {r.check.name for r in one if r.status == "FAIL"} == {"grad_q"}


def test_a_failure_saved_in_the_database_replays_first_in_a_fresh_process(tmp_path):
    """The k2-tile bug needs n >= 17. A database run (random examples) finds it and saves it; in a fresh process,
    one example replays it before anything else. The control, one seeded example without the database, misses it
    (a fixed adversarial case after the search finds it: fixed > 0)."""
    db = tmp_path / "db"
    found = at_defaults("k2_second_tile_misread", "forward", seed=None, database=str(db))["forward"]
    assert found.status == "FAIL" and found.fixed == 0 and any(db.rglob("*")), found.describe()
    code = (
        "import sys; from verified_ta.testing.checks import ConformConfig, check_by_name, load_impl; "
        "from verified_ta.testing.runner import run_conformance; "
        "db = sys.argv[1] or None; cfg = ConformConfig(max_examples=1, seed=None if db else 7, database=db); "
        f"(r,) = run_conformance(load_impl('{IMPLS}:k2_second_tile_misread'), cfg, [check_by_name('forward')]); "
        "print(r.status, r.examples, r.fixed, r.case.n if r.case else None)"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    runs = {which: subprocess.run([sys.executable, "-c", code, arg], cwd=root, env=env, capture_output=True,
                                  text=True, timeout=600)
            for which, arg in (("with", str(db)), ("without", ""))}
    assert runs["with"].stdout.split() == ["FAIL", "1", "0", str(found.case.n)], runs["with"].stdout + runs["with"].stderr
    status, _, fixed, _ = runs["without"].stdout.split()
    assert status == "FAIL" and int(fixed) > 0, runs["without"].stdout + runs["without"].stderr


def test_suite_database_env_replays_a_planted_failure_in_a_fresh_process(pytester, tmp_path, monkeypatch):
    """VERIFIED_TA_HYPOTHESIS_DB: a failure found once replays first in the next process; a read-only shared copy
    (VERIFIED_TA_HYPOTHESIS_DB_SHARED) replays it too and is never written to."""
    pytester.makepyfile(test_planted="""
import os
from hypothesis import given, settings, strategies as st
from verified_ta.testing.database import database_from_env

@settings(database=database_from_env(), max_examples=int(os.environ["EXAMPLES"]), deadline=None)
@given(st.integers(0, 10**6))
def test_planted(x):
    assert x < 10**5  # the planted bug: one example (Hypothesis starts at 0) misses it, 200 find it
""")
    local, other, empty = tmp_path / "local", tmp_path / "other", tmp_path / "empty"

    def run(examples: int, **env: Path):
        for key in ("VERIFIED_TA_HYPOTHESIS_DB", "VERIFIED_TA_HYPOTHESIS_DB_SHARED"):
            monkeypatch.delenv(key, raising=False)
        for key, value in {**env, "EXAMPLES": examples}.items():
            monkeypatch.setenv(key, str(value))
        return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")

    run(200, VERIFIED_TA_HYPOTHESIS_DB=local).assert_outcomes(failed=1)  # found and saved
    run(1, VERIFIED_TA_HYPOTHESIS_DB=local).assert_outcomes(failed=1)  # replayed in a fresh process
    run(1, VERIFIED_TA_HYPOTHESIS_DB=empty).assert_outcomes(passed=1)  # control: one example misses it
    saved = sorted(p.relative_to(local) for p in local.rglob("*"))
    run(1, VERIFIED_TA_HYPOTHESIS_DB=other, VERIFIED_TA_HYPOTHESIS_DB_SHARED=local).assert_outcomes(failed=1)
    assert sorted(p.relative_to(local) for p in local.rglob("*")) == saved  # the shared copy is read-only


def test_seed_and_database_exclude_each_other(tmp_path):
    with pytest.raises(ValueError, match="seed and database exclude each other"):
        ConformConfig(seed=1, database=str(tmp_path))


def _reject_constant(name: str):
    raise ValueError(f"non-strict JSON constant {name}")


@spec("P15")
def test_flash_rule_measures_against_flash_attentions_own_reference(monkeypatch):
    """A correct materialising implementation (FlashAttention's attention_ref formulation) meets the rule because that
    formulation is one of its baselines; without it the same implementation fails on this case (float32, scores near
    50: 10× the chunked reference's error), while a planted bug fails either way."""
    import verified_ta.kernels.accuracy as accuracy
    from verified_ta.testing import checks

    case = ConformCase(1, 2, 6, 4, 1.0, True, "alternating_signs", 4.0, 0)
    config = make_config(dtype="float32", causal=True)

    def forward(name):
        return check_by_name("forward").measure(Example.of(load_impl(f"{IMPLS}:{name}"), config, case))

    assert forward("einsum_autograd").passed and not forward("scale_ignored").passed
    monkeypatch.setattr(accuracy, "MATERIALISED_MAX_SCORES", 0)  # the two baselines the rule had before
    checks._example.cache_clear()  # examples (and their baselines) are shared between checks: none may leak out
    try:
        assert not forward("einsum_autograd").passed and not forward("scale_ignored").passed
    finally:
        checks._example.cache_clear()
