"""``verified-ta conform MODULE:CALLABLE``: run the conformance checks on anyone's tensor-attention implementation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def conform(
        impl: str = typer.Argument(..., metavar="MODULE:CALLABLE",
                                   help="fn(q, k1, k2, v1, v2, *, scale, causal) -> out or (out, lse); tensors (batch, heads, n, d)."),
        device: str = typer.Option("cpu", help="cpu or cuda[:N]."),
        dtype: str = typer.Option("float64", help="float64 (derived bounds) or float32/bfloat16/float16 (FlashAttention rule)."),
        causal: bool = typer.Option(False, "--causal", help="The implementation supports causal=True: test it too."),
        forward_only: bool = typer.Option(False, "--forward-only", help="Skip the gradient checks."),
        max_examples: int = typer.Option(25, help="Hypothesis examples per check."),
        seed: Optional[int] = typer.Option(None, help="Hypothesis seed (default: derandomized, reproducible)."),
        min_n: int = typer.Option(1, help="Smallest sequence length n."),
        max_n: int = typer.Option(6, help="Largest sequence length n (cost grows like n³)."),
        head_dims: str = typer.Option("1,2,3,4", help="Comma-separated head dimensions d to draw from (e.g. 16,32)."),
        max_bound: float = typer.Option(2.0, help="Largest entry bound B of the inputs (SPEC L5)."),
        json_file: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON."),
        junit: Optional[Path] = typer.Option(None, "--junit", help="Write JUnit XML (one testcase per check)."),
    ) -> None:
        """Check an implementation against the oracles and the paper's properties; exit 1 on any failure."""
        from rich.console import Console
        from rich.progress import Progress

        from ..report import render_rows, write_json
        from ..testing.checks import CHECKS, load_impl, make_config
        from ..testing.runner import run_conformance, write_junit

        try:
            config = make_config(
                device=device, dtype=dtype, causal=causal, forward_only=forward_only, max_examples=max_examples,
                seed=seed, min_n=min_n, max_n=max_n, head_dims=head_dims, max_bound=max_bound,
            )
            implementation = load_impl(impl, search_path=os.getcwd())
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        console = Console()
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"conform {impl}", total=len(CHECKS))

            def report(result) -> None:
                progress.advance(task)
                console.print(result.describe(), style={"PASS": "green", "FAIL": "bold red"}.get(result.status, "yellow"),
                              markup=False, highlight=False)

            results = run_conformance(implementation, config, on_result=report)
        ran = [r for r in results if r.status != "SKIP"]
        render_rows([r.row() for r in ran], f"verified-ta conform {impl} ({dtype} on {device})", console)
        failed = [r for r in results if r.status == "FAIL"]
        skipped = [r for r in results if r.status == "SKIP"]
        typer.echo(f"{len(ran) - len(failed)} passed, {len(failed)} failed, {len(skipped)} skipped")
        if json_file:
            write_json(json_file, {
                "impl": impl, "device": device, "dtype": dtype, "causal": causal, "passed": not failed,
                "checks": [r.row() for r in results],
            })
        if junit:
            write_junit(results, junit, suite=f"verified-ta conform {impl}")
        if failed:
            raise typer.Exit(1)
