"""pytest plugin: ``pytest --verified-ta-impl MODULE:CALLABLE`` adds one test item per conformance check.

Without ``--verified-ta-impl`` it does nothing and imports nothing beyond pytest and the torch-free defaults (it
loads in every session of every project that installs verified-ta). The items run the same checks as
``verified-ta conform``, in pytest's own process (pytest-timeout guards against hangs there).
"""

from __future__ import annotations

from typing import Any

import pytest

from .defaults import CONFORM_DEFAULTS as D

_OPTIONS = (
    # (option, dest, default, type, help)
    ("--verified-ta-device", "verified_ta_device", D["device"], str, "cpu or cuda[:N]"),
    ("--verified-ta-dtype", "verified_ta_dtype", D["dtype"], str, "float64, float32, bfloat16 or float16"),
    ("--verified-ta-max-examples", "verified_ta_max_examples", D["max_examples"], int, "Hypothesis examples per check"),
    ("--verified-ta-seed", "verified_ta_seed", D["seed"], int, "Hypothesis seed (default 0)"),
    ("--verified-ta-min-n", "verified_ta_min_n", D["min_n"], int, "smallest sequence length"),
    ("--verified-ta-max-n", "verified_ta_max_n", D["max_n"], int, "largest sequence length"),
    ("--verified-ta-head-dims", "verified_ta_head_dims", D["head_dims"], str, "comma-separated head dimensions"),
    ("--verified-ta-max-bound", "verified_ta_max_bound", D["max_bound"], float, "largest entry bound B"),
    ("--verified-ta-window", "verified_ta_window", None, str, "causal sliding window W1,W2 (needs --verified-ta-causal)"),
    ("--verified-ta-kv-heads", "verified_ta_kv_heads", None, int, "grouped-query heads: key/value heads"),
    ("--verified-ta-database", "verified_ta_database", None, str, "Hypothesis example database directory"),
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("verified-ta", "tensor-attention conformance checks (verified-ta conform)")
    group.addoption("--verified-ta-impl", dest="verified_ta_impl", default=None, metavar="MODULE:CALLABLE",
                    help="check fn(q, k1, k2, v1, v2, *, scale, causal) -> out or (out, lse)")
    for flag, dest, default, kind, text in _OPTIONS:
        group.addoption(flag, dest=dest, default=default, type=kind, help=f"{text} (default: {default})")
    group.addoption("--verified-ta-causal", dest="verified_ta_causal", action="store_true",
                    help="the implementation supports causal=True: test it too")
    group.addoption("--verified-ta-forward-only", dest="verified_ta_forward_only", action="store_true",
                    help="skip the gradient checks")


class ConformanceFailure(Exception):
    """A check found a counterexample (the message is the report)."""


class ConformItem(pytest.Item):
    """One conformance check as a pytest item."""

    def __init__(self, *, check: Any, impl: Any, conform_config: Any, info: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.check, self.impl, self.conform_config, self.info = check, impl, conform_config, info

    def runtest(self) -> None:
        from .runner import run_check

        result = run_check(self.check, self.impl, self.conform_config, self.info)
        if result.status == "SKIP":
            pytest.skip(result.reason)
        if not result.passed:
            raise ConformanceFailure(result.describe())

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:  # type: ignore[override]
        if isinstance(excinfo.value, ConformanceFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, f"verified-ta conform {self.impl.name}: {self.check.name}"


class ConformCollector(pytest.Collector):
    """The conformance items of one implementation."""

    def __init__(self, *, impl: Any, conform_config: Any, info: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.impl, self.conform_config, self.info = impl, conform_config, info

    def collect(self) -> list[pytest.Item]:
        from .checks import CHECKS

        return [
            ConformItem.from_parent(self, name=check.name, check=check, impl=self.impl,
                                    conform_config=self.conform_config, info=self.info)
            for check in CHECKS
        ]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Append the conformance items (before -k/-m deselection runs, so both apply to them)."""
    target = config.getoption("verified_ta_impl", None)
    if not target:
        return
    from .checks import load_impl, make_config
    from .runner import ImplInfo, probe

    try:
        conform_config = make_config(
            device=config.getoption("verified_ta_device"), dtype=config.getoption("verified_ta_dtype"),
            causal=config.getoption("verified_ta_causal"), forward_only=config.getoption("verified_ta_forward_only"),
            max_examples=config.getoption("verified_ta_max_examples"), seed=config.getoption("verified_ta_seed"),
            min_n=config.getoption("verified_ta_min_n"), max_n=config.getoption("verified_ta_max_n"),
            head_dims=config.getoption("verified_ta_head_dims"), max_bound=config.getoption("verified_ta_max_bound"),
            window=config.getoption("verified_ta_window"), kv_heads=config.getoption("verified_ta_kv_heads"),
            database=config.getoption("verified_ta_database"),
        )
        impl = load_impl(target, search_path=config.rootpath)
    except ValueError as exc:
        raise pytest.UsageError(f"--verified-ta-impl: {exc}") from None
    info = probe(impl, conform_config)
    if not isinstance(info, ImplInfo):
        raise pytest.UsageError(f"--verified-ta-impl {target}: the probe call failed:\n{info.describe()}")
    collector = ConformCollector.from_parent(
        session, name=f"verified-ta-conform[{target}]", nodeid=f"verified-ta-conform[{target}]",
        impl=impl, conform_config=conform_config, info=info,
    )
    items.extend(session.genitems(collector))  # runs the collection hooks, so the reported counts include them
