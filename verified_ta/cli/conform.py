"""``verified-ta conform MODULE:CALLABLE``: run the conformance checks on anyone's tensor-attention implementation.

The implementation runs in worker processes (:mod:`verified_ta.testing.worker`): an exception, ``sys.exit``, a hang
past ``--timeout`` or a segfault is reported as ERROR or TIMEOUT, the reports are written, and the exit code is 1.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from ..report import ROW_SCHEMA, document_schema
from ..testing.defaults import CONFORM_DEFAULTS as D
from . import QUIET, VERBOSE, ExitCode, check_outputs, human_console

#: what each exit code means for this command (rendered in the CLI reference of the documentation site)
EXIT_CODES = {
    ExitCode.OK: "every check passed or was skipped (the reason is printed)",
    ExitCode.FAILED: "a check failed (FAIL), the implementation raised, broke the calling convention or crashed its "
                     "worker (ERROR), or a call ran past --timeout (TIMEOUT); the reports are written all the same",
    ExitCode.USAGE: "bad options, an unwritable --json/--junit path, or MODULE:CALLABLE cannot be imported",
    ExitCode.INTERNAL: "verified-ta itself crashed",
}
_STATUSES = ["PASS", "FAIL", "ERROR", "TIMEOUT", "SKIP"]
_CHECK_ROW = {**ROW_SCHEMA, "required": [*ROW_SCHEMA["required"], "status", "examples", "fixed_cases", "shrinks",
                                          "seconds", "counterexample"],
              "properties": {**ROW_SCHEMA["properties"], "status": {"enum": _STATUSES},
                             "examples": {"type": "integer", "description": "Hypothesis examples (<= max_examples)"},
                             "fixed_cases": {"type": "integer"}, "shrinks": {"type": "integer"},
                             "seconds": {"type": "number"},
                             "counterexample": {"type": "object", "description": "empty unless not passed"},
                             "traceback": {"type": "string", "description": "ERROR: the implementation's frames"}}}
#: the JSON document ``--json`` writes (JSON Schema, draft 2020-12)
JSON_SCHEMA = document_schema("conform", "verified-ta conform", {
    "impl": {"type": "string"}, "device": {"type": "string"}, "dtype": {"type": "string"},
    "causal": {"type": "boolean"},
    "window": {"type": ["array", "null"], "items": {"type": ["integer", "null"]}},
    "kv_heads": {"type": ["integer", "null"]}, "max_examples": {"type": "integer"},
    "seed": {"type": ["integer", "null"], "description": "null: a --database campaign"},
    "passed": {"type": "boolean"},
    "counts": {"type": "object", "properties": {s: {"type": "integer"} for s in _STATUSES}, "required": _STATUSES},
    "checks": {"type": "array", "items": _CHECK_ROW},
}, ["impl", "device", "dtype", "causal", "window", "kv_heads", "max_examples", "seed", "passed", "counts", "checks"])


def register(app: typer.Typer) -> None:
    @app.command()
    def conform(
        impl: str = typer.Argument(..., metavar="MODULE:CALLABLE",
                                   help="fn(q, k1, k2, v1, v2, *, scale, causal) -> out or (out, lse); tensors (batch, heads, n, d)."),
        device: str = typer.Option(D["device"], help="cpu or cuda[:N] (the float64 reference is built there too)."),
        dtype: str = typer.Option(D["dtype"], help="float64 (derived bounds) or float32/bfloat16/float16 (FlashAttention rule)."),
        causal: bool = typer.Option(False, "--causal", help="The implementation supports causal=True: test it too."),
        window: Optional[str] = typer.Option(None, metavar="W1,W2",
                                             help="Causal sliding window passed as window=(w1, w2) (needs --causal; 'none' = unbounded side)."),
        kv_heads: Optional[int] = typer.Option(None, help="Grouped-query heads: k1, k2, v1, v2 get H heads, q a multiple."),
        forward_only: bool = typer.Option(False, "--forward-only", help="Skip the gradient checks."),
        max_examples: int = typer.Option(D["max_examples"], help="Hypothesis examples per check (fixed adversarial cases and shrinking come on top)."),
        seed: Optional[int] = typer.Option(D["seed"], help="Hypothesis seed (default 0: reproducible)."),
        min_n: int = typer.Option(D["min_n"], help="Smallest sequence length n."),
        max_n: int = typer.Option(D["max_n"], help="Largest sequence length n (tile edges up to it are drawn; cost grows like n³)."),
        head_dims: str = typer.Option(D["head_dims"], help="Comma-separated head dimensions d to draw from (e.g. 16,32)."),
        max_bound: float = typer.Option(D["max_bound"], help="Largest entry bound B of the inputs (SPEC L5)."),
        timeout: float = typer.Option(D["timeout"], help="Seconds one call into the implementation may take (TIMEOUT beyond)."),
        workers: int = typer.Option(D["workers"], help="Worker processes running the checks (results as with 1)."),
        database: Optional[Path] = typer.Option(None, help="Hypothesis example database directory: failures found are saved and replay first."),
        json_file: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON ('-': stdout)."),
        junit: Optional[Path] = typer.Option(None, "--junit", help="Write JUnit XML (one testcase per check)."),
        quiet: bool = QUIET,
        verbose: bool = VERBOSE,
    ) -> None:
        """Check an implementation against the oracles and the paper's properties; exit 1 on any failure."""
        from ..report import render_rows, write_json
        from ..testing.checks import CHECKS, make_config
        from ..testing.runner import CheckResult, write_junit
        from ..testing.worker import run_isolated

        check_outputs(json=json_file, junit=junit)
        module, sep, attr = impl.partition(":")
        if not sep or not module or not attr:
            raise typer.BadParameter(f"impl must have the form MODULE:CALLABLE (e.g. mypkg.attention:forward); got {impl!r}")
        try:
            config = make_config(
                device=device, dtype=dtype, causal=causal, forward_only=forward_only, max_examples=max_examples,
                seed=seed, min_n=min_n, max_n=max_n, head_dims=head_dims, max_bound=max_bound, window=window,
                kv_heads=kv_heads, database=database,
            )
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        console = human_console(json_file)
        colour = {"PASS": "green", "SKIP": "yellow"}

        def report(result: CheckResult) -> None:
            if quiet and result.passed:
                return
            console.print(result.describe(verbose), style=colour.get(result.status, "bold red"), markup=False)

        try:
            results = run_isolated(impl, config, CHECKS, timeout=timeout, workers=workers, search_path=os.getcwd(),
                                   on_result=report)
        except ValueError as exc:  # the target could not be loaded, or a bad --timeout/--workers
            raise typer.BadParameter(str(exc)) from None
        if verbose:
            render_rows([r.row() for r in results], f"verified-ta conform {impl} ({dtype} on {device})", console)
        counts = {s: sum(r.status == s for r in results) for s in ("PASS", "FAIL", "ERROR", "TIMEOUT", "SKIP")}
        summary = (f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped"
                   + "".join(f", {counts[s]} {s.lower()}" for s in ("ERROR", "TIMEOUT") if counts[s]))
        console.print(summary, markup=False)
        failed = [r for r in results if not r.passed]
        if json_file:
            write_json(json_file, {
                "impl": impl, "device": device, "dtype": dtype, "causal": causal, "window": config.window,
                "kv_heads": kv_heads, "max_examples": max_examples,
                "seed": None if config.database else (config.seed or 0), "passed": not failed,
                "counts": counts, "checks": [r.row() for r in results],
            }, command="conform")
        if junit:
            write_junit(results, junit, suite=f"verified-ta conform {impl}")
        if failed:
            raise typer.Exit(ExitCode.FAILED)
