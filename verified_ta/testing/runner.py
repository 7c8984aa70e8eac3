"""Drive the conformance checks with Hypothesis and report PASS/FAIL/ERROR/TIMEOUT/SKIP with shrunk counterexamples.

Each check is a Hypothesis search over :class:`~verified_ta.testing.strategies.ConformCase` (shapes, scale,
pattern, seed) that maximises error / tolerance (``hypothesis.target``) and fails on the first example over the
tolerance; Hypothesis then shrinks it, and the runner reports the minimal example it replays last. A passing search
is followed by a few fixed adversarial cases at tile-edge shapes. FAIL is a wrong number; ERROR is the
implementation raising or breaking the calling convention (with a short traceback of its own frames); TIMEOUT is a
call that ran past ``--timeout`` (only in a worker process, :mod:`verified_ta.testing.worker`).

Hypothesis runs with the seed ``--seed`` (0 by default), never from the clock or the process, so the same
configuration draws the same examples in any process or worker. With a ``database`` directory the run is a campaign
instead (Hypothesis disables the database under a fixed seed): fresh random examples each run, failing ones saved
there and replayed first (Hypothesis' reuse phase) on the next run on any machine that mounts it.
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
from .checks import CHECKS, PROBE, Check, ConformConfig, Example, Implementation, ImplementationError, Measurement
from .database import example_database
from .strategies import MAX_WORK, PATTERNS, ConformCase, conform_cases, sequence_lengths

__all__ = [
    "STATUSES",
    "ImplInfo",
    "CheckResult",
    "user_traceback",
    "exception_measurement",
    "probe",
    "case_strategy",
    "fixed_cases",
    "run_check",
    "run_conformance",
    "write_junit",
]

#: outcomes of a check; every one but PASS and SKIP fails the run
STATUSES = ("PASS", "FAIL", "ERROR", "TIMEOUT", "SKIP")
_PACKAGE = str(Path(__file__).resolve().parents[1])
_TORCH = str(Path(torch.__file__).resolve().parent)


@dataclass(frozen=True)
class ImplInfo:
    """What one probe call showed: does the implementation return an LSE?"""

    returns_lse: bool


def user_traceback(exc: BaseException, limit: int = 6) -> str:
    """The exception with the frames of the user's code only (not verified-ta's or torch's), last ``limit`` of them."""
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if not f.filename.startswith((_PACKAGE, _TORCH))]
    lines = traceback.format_list(own[-limit:]) if own else ["  (no frame of the implementation's own code)\n"]
    return "".join(lines) + "".join(traceback.format_exception_only(type(exc), exc)).rstrip()


def exception_measurement(exc: BaseException) -> Measurement:
    """An example on which the implementation raised: infinitely wrong, with the message and a short traceback."""
    if isinstance(exc, ImplementationError):
        return Measurement(math.inf, 0.0, str(exc), raised=str(exc))
    return Measurement(math.inf, 0.0, f"{type(exc).__name__}: {exc}", raised=user_traceback(exc))


@dataclass
class CheckResult:
    """The outcome of one check: PASS, FAIL (with the shrunk counterexample), ERROR (the implementation raised),
    TIMEOUT (a call ran past the timeout) or SKIP (with the reason).

    ``examples`` counts Hypothesis' examples up to the first failure (at most max_examples), ``shrinks`` the calls
    spent shrinking after it, ``fixed`` the fixed adversarial cases run after a passing search.
    """

    check: Check
    status: str
    measurement: Measurement | None = None
    case: ConformCase | None = None
    examples: int = 0
    seconds: float = 0.0
    reason: str = ""
    shrinks: int = 0
    fixed: int = 0

    @property
    def passed(self) -> bool:
        return self.status in ("PASS", "SKIP")

    @property
    def head(self) -> str:
        ids = f" [{', '.join(self.check.spec_ids)}]" if self.check.spec_ids else ""
        return f"{self.status} {self.check.name}{ids}"

    def budget(self) -> str:
        """How many examples ran, and why more than max_examples when so."""
        text = f"{self.examples} example{'s' * (self.examples != 1)}"
        if self.fixed:
            text += f" + {self.fixed} fixed adversarial cases"
        if self.shrinks:
            text += f", then {self.shrinks} shrinking calls"
        return text

    def counterexample(self) -> dict[str, Any]:
        """Shapes, seed and the rest of the failing case, with its error and tolerance (not PASS or SKIP)."""
        if self.passed or self.case is None:
            return {}
        c = self.case
        cx: dict[str, Any] = {
            "shape (batch, heads, n, d)": list(c.shape), "seed": c.seed, "pattern": c.pattern, "bound": c.bound,
            "scale": c.scale, "causal": c.causal,
        }
        if c.window is not None:
            cx["window"] = list(c.window)
        if c.kv_heads is not None:
            cx["kv_heads"] = c.kv_heads
        if self.measurement is not None and self.status == "FAIL":
            cx.update({"max error": self.measurement.error, "tolerance": self.measurement.tolerance,
                       "detail": self.measurement.detail})
        cx["reproduce"] = c.reproduce()
        return cx

    def describe(self, verbose: bool = False) -> str:
        """One line for people (PASS, SKIP), or the line and the indented counterexample / traceback."""
        m = self.measurement
        if self.status == "SKIP":
            return f"{self.head}: {self.reason}"
        if self.status == "PASS":
            worst = f"; worst error/tolerance {m.ratio:.2g}" if m is not None and math.isfinite(m.ratio) else ""
            line = f"{self.head}: {self.budget()}{worst}"
            return line + (f" ({self.seconds:.1f} s)" if verbose else "")
        if self.status == "FAIL":
            line = f"{self.head}: max error {m.error:.3g} > tolerance {m.tolerance:.3g}; {self.budget()}"
        elif self.status == "TIMEOUT":
            line = f"{self.head}: {self.reason}"
        else:
            line = f"{self.head}: {m.detail if m is not None else self.reason}"
        lines = [line]
        if self.status == "ERROR" and m is not None and m.raised and m.raised != m.detail:
            lines += ["    " + t for t in m.raised.splitlines()]
        lines += [f"    {k}: {v}" for k, v in self.counterexample().items()]
        return "\n".join(lines)

    def row(self) -> CheckRow:
        m = self.measurement or Measurement(0.0, 0.0)
        detail = self.reason or m.detail
        return CheckRow(", ".join(self.check.spec_ids), self.check.name, m.error, m.tolerance, self.passed, detail,
                        {"status": self.status, "examples": self.examples, "fixed_cases": self.fixed,
                         "shrinks": self.shrinks, "seconds": round(self.seconds, 3),
                         "counterexample": self.counterexample(),
                         **({"traceback": m.raised} if m.raised else {})})


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
    """The cases a check draws under ``config``: small n or a tile edge (n³·d within MAX_WORK), any head dim."""
    sp = _space(check, config)
    return conform_cases(
        n=lambda d: sequence_lengths(*sp.n, d=d), d=st.sampled_from(sp.d), batch=st.integers(1, sp.batch),
        heads=st.integers(1, sp.heads) if config.kv_heads is None else None, causal=st.sampled_from(sp.causal),
        bound=st.sampled_from(sp.bounds), patterns=PATTERNS, window=config.window, kv_heads=config.kv_heads,
        max_work=MAX_WORK,
    )


def fixed_cases(check: Check, config: ConformConfig) -> list[ConformCase]:
    """Fixed examples every check runs after a passing search (not shrunk): each adversarial pattern at scale 1 (the
    largest scores, s·d·B³ for all_plus_bound) and n = 17 (a second 16-row tile) with the largest head dim <= 16,
    and uniform inputs at the largest head dim with the non-dyadic scale 1/3 (a rounded scale shows)."""
    sp = _space(check, config)
    n = min(max(17, sp.n[0]), sp.n[1])
    small = [d for d in sp.d if d <= 16]
    d = max(small) if small else min(sp.d)
    heads = min(2, sp.heads) if config.kv_heads is None else 2 * config.kv_heads
    causal = sp.causal[-1]
    window = config.window if causal else None

    def case(pattern: str, d_: int, scale: float) -> ConformCase:
        return ConformCase(1, heads, n, d_, scale, causal, pattern, max(sp.bounds), 0, window, config.kv_heads)

    cases = [case(pattern, d, 1.0) for pattern in PATTERNS[1:]]
    if max(sp.d) != d:
        cases.append(case("uniform", max(sp.d), 1 / 3))
    return cases


@contextlib.contextmanager
def _test_environment(config: ConformConfig) -> Iterator[None]:
    """For the run only: one CPU thread (test inputs are small; threads only add overhead, 10× on a loaded
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


def probe(impl: Implementation, config: ConformConfig) -> ImplInfo | CheckResult:
    """Call the implementation once on a small benign input; an ERROR result (one for the whole run) naming the
    mistake and showing the user's frames if the call raises, breaks the convention or returns non-finite values."""
    d = min(config.head_dims)
    kv = config.kv_heads
    n = next((m for m in range(config.min_n, config.max_n + 1) if m != d), config.min_n)  # n != d shows a transpose
    case = ConformCase(1, 1 if kv is None else kv, n, d, 1.0 / d, False, "uniform", 1.0, 0, None, kv)
    kw: dict[str, Any] = {"scale": case.scale, "causal": False}
    if config.window is not None:
        kw["window"] = None
    start = time.perf_counter()
    try:
        with _test_environment(config), torch.no_grad():
            out, lse = impl(*case.inputs(config.dtype, config.device), **kw)
        bad = [name for name, t in (("out", out), ("lse", lse)) if t is not None and not bool(torch.isfinite(t).all())]
        if bad:
            raise ImplementationError(
                f"{impl.name} returned non-finite {' and '.join(bad)} (NaN or Inf) on a benign input "
                f"(entries in [-1, 1], shape {list(case.shape)}, scale 1/d)")
    except Exception as exc:  # the user's code may raise anything
        return CheckResult(PROBE, "ERROR", exception_measurement(exc), case, 1, time.perf_counter() - start)
    return ImplInfo(returns_lse=lse is not None)


class _Failed(Exception):
    pass


def _skip_reason(check: Check, config: ConformConfig, info: ImplInfo) -> str | None:
    if "lse" in check.needs and not info.returns_lse:
        return "the implementation returns no lse"
    if "backward" in check.needs and not config.backward:
        return "forward-only run"
    if "causal" in check.needs and not config.causal:
        return "causal masking not requested (--causal)"
    return None


def run_check(
    check: Check, impl: Implementation, config: ConformConfig, info: ImplInfo,
    on_case: Callable[[ConformCase], None] | None = None,
) -> CheckResult:
    """Search for a counterexample to one check; report the shrunk one, or the worst example seen if it passes.

    ``on_case`` is told each case before it is evaluated (a worker process forwards it, so a timeout names it).
    """
    reason = _skip_reason(check, config, info)
    if reason is not None:
        return CheckResult(check, "SKIP", reason=reason)
    state: dict[str, Any] = {"calls": 0, "examples": 0, "worst": None, "failure": None}

    def evaluate(case: ConformCase) -> Measurement:
        if on_case is not None:
            on_case(case)
        try:
            m = check.measure(Example.of(impl, config, case))
        except Exception as exc:  # the user's code may raise anything: an ERROR with its traceback
            m = exception_measurement(exc)
        state["calls"] += 1
        if state["failure"] is None:
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

    # one database key per check and case space, the same on every machine (Hypothesis hashes body's source too)
    body._hypothesis_internal_add_digest = repr(  # type: ignore[attr-defined]
        (check.name, str(config.dtype), config.causal, config.window, config.kv_heads, config.head_dims,
         config.min_n, config.max_n, config.max_bound)).encode()
    database = example_database(config.database) if config.database else None
    phases = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)
    test = settings(
        max_examples=config.max_examples, deadline=None, database=database, derandomize=False,
        suppress_health_check=list(HealthCheck), report_multiple_bugs=False, verbosity=Verbosity.quiet,
        print_blob=False, phases=phases if database is not None else phases[:1] + phases[2:],
    )(given(case_strategy(check, config))(body))
    if database is None:  # Hypothesis ignores the database under a fixed seed: a campaign draws afresh instead
        test = hypothesis_seed(config.seed or 0)(test)
    start = time.perf_counter()
    fixed = 0
    with _test_environment(config):
        try:
            test()
        except Exception:  # _Failed, or Hypothesis' Flaky when a failure does not replay (nondeterminism)
            pass
        if state["failure"] is None:  # the search passed: the fixed adversarial cases (not shrunk) come last
            for case in fixed_cases(check, config):
                fixed += 1
                if not evaluate(case).passed:
                    break
    seconds = time.perf_counter() - start
    examples, shrinks = min(state["examples"], config.max_examples), state["calls"] - state["examples"]
    if state["failure"] is not None:
        case, m = state["failure"]
        status = "ERROR" if m.raised else "FAIL"
        return CheckResult(check, status, m, case, examples, seconds, shrinks=shrinks, fixed=fixed)
    worst = state["worst"][1] if state["worst"] else None
    return CheckResult(check, "PASS", worst, None, examples, seconds, fixed=fixed)


def run_conformance(
    impl: Implementation,
    config: ConformConfig,
    checks: Sequence[Check] = CHECKS,
    on_result: Callable[[CheckResult], None] | None = None,
    *,
    isolate: bool = False,
    timeout: float | None = None,
    workers: int = 1,
    search_path: str | Path | None = None,
) -> list[CheckResult]:
    """Run ``checks`` on ``impl``; a failed probe call is the one result (an ERROR).

    With ``isolate`` (the command line's way), the checks run in ``workers`` worker processes that re-import
    ``impl.target``: a call that raises, calls ``sys.exit``, hangs past ``timeout`` seconds or kills its process
    (segfault) is reported, and this process carries on (:mod:`verified_ta.testing.worker`).
    """
    if isolate:
        from .worker import run_isolated

        if impl.target is None:
            raise ValueError(f"isolate=True needs an implementation loaded by MODULE:CALLABLE; got {impl.name!r}")
        return run_isolated(impl.target, config, checks, timeout=timeout, workers=workers,
                            search_path=search_path, on_result=on_result)
    info = probe(impl, config)
    if isinstance(info, CheckResult):
        if on_result is not None:
            on_result(info)
        return [info]
    results = []
    for check in checks:
        result = run_check(check, impl, config, info)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def write_junit(results: Sequence[CheckResult], path: str | Path, suite: str = "verified-ta conform") -> None:
    """JUnit XML (one testcase per check; failures carry the counterexample, errors the traceback) for CI."""
    root = ET.Element("testsuites")
    ts = ET.SubElement(root, "testsuite", {
        "name": suite, "tests": str(len(results)),
        "failures": str(sum(r.status == "FAIL" for r in results)),
        "skipped": str(sum(r.status == "SKIP" for r in results)),
        "errors": str(sum(r.status in ("ERROR", "TIMEOUT") for r in results)),
        "time": f"{sum(r.seconds for r in results):.3f}",
    })
    for r in results:
        ids = f" [{', '.join(r.check.spec_ids)}]" if r.check.spec_ids else ""
        tc = ET.SubElement(ts, "testcase", {
            "classname": "verified_ta.conform", "name": f"{r.check.name}{ids}", "time": f"{r.seconds:.3f}",
        })
        if r.status == "FAIL":
            m = r.measurement
            msg = f"max error {m.error:.3e} > tolerance {m.tolerance:.3e}" if m else "failed"
            ET.SubElement(tc, "failure", {"message": msg, "type": "ConformanceFailure"}).text = r.describe()
        elif r.status in ("ERROR", "TIMEOUT"):
            msg = r.describe().splitlines()[0]
            ET.SubElement(tc, "error", {"message": msg, "type": r.status}).text = r.describe()
        elif r.status == "SKIP":
            ET.SubElement(tc, "skipped", {"message": r.reason})
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
