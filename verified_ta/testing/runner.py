"""Drive the conformance checks with Hypothesis and report PASS/FAIL/SKIP with shrunk counterexamples.

Each check is a Hypothesis search over :class:`~verified_ta.testing.strategies.ConformCase` (shapes, scale,
pattern, seed) that maximises error / tolerance (``hypothesis.target``) and fails on the first example over the
tolerance; Hypothesis then shrinks it, and the runner reports the minimal example it replays last.
"""

from __future__ import annotations

import contextlib
import math
import time
import traceback
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from hypothesis import HealthCheck, Phase, Verbosity, given, settings, target
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from ..report import CheckRow
from .checks import CHECKS, Check, ConformConfig, Example, Implementation, ImplementationError, Measurement
from .strategies import PATTERNS, ConformCase, conform_cases

__all__ = [
    "ImplInfo",
    "CheckResult",
    "probe",
    "case_strategy",
    "adversarial_cases",
    "run_check",
    "run_conformance",
    "write_junit",
]


@dataclass(frozen=True)
class ImplInfo:
    """What one probe call showed: does the implementation return an LSE?"""

    returns_lse: bool


@dataclass
class CheckResult:
    """The outcome of one check: PASS, FAIL (with the shrunk counterexample) or SKIP (with the reason)."""

    check: Check
    status: str
    measurement: Measurement | None = None
    case: ConformCase | None = None
    examples: int = 0
    seconds: float = 0.0
    reason: str = ""

    @property
    def passed(self) -> bool:
        return self.status != "FAIL"

    def counterexample(self) -> dict[str, Any]:
        """Shapes, seed and the rest of the failing case, with its error and tolerance (FAIL only)."""
        if self.status != "FAIL" or self.case is None or self.measurement is None:
            return {}
        c = self.case
        return {
            "shape (batch, heads, n, d)": list(c.shape), "seed": c.seed, "pattern": c.pattern, "bound": c.bound,
            "scale": c.scale, "causal": c.causal, "max error": self.measurement.error,
            "tolerance": self.measurement.tolerance, "detail": self.measurement.detail, "reproduce": c.reproduce(),
        }

    def describe(self) -> str:
        """One line for people: PASS/FAIL/SKIP, the check, and the counterexample or reason."""
        head = f"{self.status} {self.check.name} [{', '.join(self.check.spec_ids)}]"
        if self.status == "SKIP":
            return f"{head}: {self.reason}"
        if self.status == "PASS":
            m = self.measurement
            worst = f"; worst error/tolerance {m.ratio:.2g}" if m is not None and math.isfinite(m.ratio) else ""
            return f"{head}: {self.examples} examples{worst}"
        cx = self.counterexample()
        return head + "\n" + "\n".join(f"    {k}: {v}" for k, v in cx.items())

    def row(self) -> CheckRow:
        m = self.measurement or Measurement(0.0, 0.0)
        detail = self.reason or m.detail
        return CheckRow(", ".join(self.check.spec_ids), self.check.name, m.error, m.tolerance, self.passed, detail,
                        {"status": self.status, "examples": self.examples, "seconds": round(self.seconds, 3),
                         "counterexample": self.counterexample()})


@dataclass(frozen=True)
class _Space:
    """The case space of one check under a config."""

    n: tuple[int, int]
    d: tuple[int, ...]
    batch: int
    heads: int
    causal: tuple[bool, ...]
    bounds: tuple[float, ...]


def _space(check: Check, config: ConformConfig) -> _Space:
    bounds = [b for b in (1.0, 0.5, 2.0, 4.0) if b <= config.max_bound]
    if config.max_bound not in bounds:
        bounds.append(config.max_bound)
    space = _Space((config.min_n, config.max_n), config.head_dims, config.max_batch, config.max_heads,
                   (False, True) if config.causal else (False,), tuple(bounds))
    if check.cases == "oracle":  # tiny single-head inputs for the mpmath oracle
        return _Space((config.min_n, max(config.min_n, min(3, config.max_n))), (min(config.head_dims),), 1, 1,
                      space.causal, space.bounds)
    if check.cases == "causal":
        return _Space((max(2, config.min_n), max(2, config.min_n, config.max_n)), space.d, space.batch, space.heads,
                      (True,), space.bounds)
    return space


def case_strategy(check: Check, config: ConformConfig) -> st.SearchStrategy[ConformCase]:
    """The cases a check draws under ``config``."""
    sp = _space(check, config)
    return conform_cases(
        n=st.integers(*sp.n), d=st.sampled_from(sp.d), batch=st.integers(1, sp.batch),
        heads=st.integers(1, sp.heads), causal=st.sampled_from(sp.causal), bound=st.sampled_from(sp.bounds),
        patterns=PATTERNS,
    )


def adversarial_cases(check: Check, config: ConformConfig) -> list[ConformCase]:
    """Fixed examples every check runs after a passing search: each adversarial pattern at the largest n, d and bound, scale 1
    (the largest scores, s·d·B³ for all_plus_bound: overflow without the row-max shift)."""
    sp = _space(check, config)
    return [
        ConformCase(1, min(2, sp.heads), sp.n[1], max(sp.d), 1.0, sp.causal[-1], pattern, max(sp.bounds), 0)
        for pattern in PATTERNS[1:]
    ]


@contextlib.contextmanager
def _test_environment(config: ConformConfig) -> Iterator[None]:
    """For the run only: one CPU thread (test inputs are tiny; threads only add overhead, 10× on a loaded
    2-core machine), and no TF32 on CUDA so the float32 baseline is true float32 (TOOLING)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    saved_tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    if config.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved_tf32


def probe(impl: Implementation, config: ConformConfig) -> ImplInfo | str:
    """Call the implementation once on a small input; an error message string if it fails."""
    case = ConformCase(1, 1, config.min_n, min(config.head_dims), 1.0 / min(config.head_dims), False, "uniform", 1.0, 0)
    try:
        with _test_environment(config), torch.no_grad():
            _, lse = impl(*case.inputs(config.dtype, config.device), scale=case.scale, causal=False)
    except Exception as exc:  # the user's code may raise anything
        return f"{type(exc).__name__}: {exc}"
    return ImplInfo(returns_lse=lse is not None)


class _Failed(Exception):
    pass


def run_check(check: Check, impl: Implementation, config: ConformConfig, info: ImplInfo) -> CheckResult:
    """Search for a counterexample to one check; report the shrunk one, or the worst example seen if it passes."""
    if "lse" in check.needs and not info.returns_lse:
        return CheckResult(check, "SKIP", reason="the implementation returns no lse")
    if "backward" in check.needs and not config.backward:
        return CheckResult(check, "SKIP", reason="forward-only run")
    if "causal" in check.needs and not config.causal:
        return CheckResult(check, "SKIP", reason="causal masking not requested (--causal)")
    state: dict[str, Any] = {"examples": 0, "worst": None, "failure": None}

    def evaluate(case: ConformCase) -> Measurement:
        try:
            m = check.measure(Example.of(impl, config, case))
        except ImplementationError as exc:
            m = Measurement(math.inf, 0.0, str(exc))
        except Exception as exc:  # the user's code may raise anything: a failure with its message
            where = traceback.extract_tb(exc.__traceback__)[-1]
            m = Measurement(math.inf, 0.0, f"{type(exc).__name__}: {exc} (at {Path(where.filename).name}:{where.lineno})")
        state["examples"] += 1
        if state["worst"] is None or m.ratio > state["worst"][1].ratio:
            state["worst"] = (case, m)
        if not m.passed:
            state["failure"] = (case, m)
        return m

    def body(case: ConformCase) -> None:
        m = evaluate(case)
        target(min(m.ratio, 1e300), label="error / tolerance")
        if not m.passed:
            raise _Failed(m.detail)

    test = settings(
        max_examples=config.max_examples, deadline=None, database=None, derandomize=config.seed is None,
        suppress_health_check=list(HealthCheck), report_multiple_bugs=False, verbosity=Verbosity.quiet,
        print_blob=False, phases=(Phase.explicit, Phase.generate, Phase.target, Phase.shrink),
    )(given(case_strategy(check, config))(body))
    if config.seed is not None:
        test = hypothesis_seed(config.seed)(test)
    start = time.perf_counter()
    with _test_environment(config):
        try:
            test()
        except Exception:  # _Failed, or Hypothesis' Flaky when a failure does not replay (nondeterminism)
            pass
        if state["failure"] is None:  # the search passed: the fixed adversarial cases (not shrunk) come last
            for case in adversarial_cases(check, config):
                if not evaluate(case).passed:
                    break
    seconds = time.perf_counter() - start
    if state["failure"] is not None:
        case, m = state["failure"]
        return CheckResult(check, "FAIL", m, case, state["examples"], seconds)
    worst = state["worst"][1] if state["worst"] else None
    return CheckResult(check, "PASS", worst, None, state["examples"], seconds)


def run_conformance(
    impl: Implementation,
    config: ConformConfig,
    checks: Sequence[Check] = CHECKS,
    on_result: Callable[[CheckResult], None] | None = None,
) -> list[CheckResult]:
    """Run ``checks`` on ``impl``; if the probe call fails, every check fails with its message."""
    info = probe(impl, config)
    results = []
    for check in checks:
        if isinstance(info, str):
            result = CheckResult(check, "FAIL", Measurement(math.inf, 0.0, f"probe call failed: {info}"))
        else:
            result = run_check(check, impl, config, info)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def write_junit(results: Sequence[CheckResult], path: str | Path, suite: str = "verified-ta conform") -> None:
    """JUnit XML (one testcase per check; failures carry the counterexample) for CI dashboards."""
    root = ET.Element("testsuites")
    ts = ET.SubElement(root, "testsuite", {
        "name": suite, "tests": str(len(results)),
        "failures": str(sum(r.status == "FAIL" for r in results)),
        "skipped": str(sum(r.status == "SKIP" for r in results)), "errors": "0",
        "time": f"{sum(r.seconds for r in results):.3f}",
    })
    for r in results:
        tc = ET.SubElement(ts, "testcase", {
            "classname": "verified_ta.conform", "name": f"{r.check.name} [{', '.join(r.check.spec_ids)}]",
            "time": f"{r.seconds:.3f}",
        })
        if r.status == "FAIL":
            m = r.measurement
            msg = f"max error {m.error:.3e} > tolerance {m.tolerance:.3e}" if m else "failed"
            ET.SubElement(tc, "failure", {"message": msg, "type": "ConformanceFailure"}).text = r.describe()
        elif r.status == "SKIP":
            ET.SubElement(tc, "skipped", {"message": r.reason})
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
