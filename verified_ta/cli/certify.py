"""``verified-ta certify``: a rigorous, re-checkable certificate for the polynomial method (SPEC L5–L11; docs/certificate.md).

Exit codes: 0 certified, 1 target missed, 2 inconclusive, 3 bad input (including a rank whose features would not
fit in memory). ``--verify FILE`` re-checks a certificate from its JSON alone: 0 valid, 1 rejected.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer

BAD_INPUT = 3


def _fail_input(message: str) -> NoReturn:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(BAD_INPUT)


def _render(cert: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    data = cert.to_json()
    inp = data["inputs"]
    console.print(
        f"[bold]inputs[/] B = {inp['B']}, n = {inp['n']}, d = {inp['d']}, ε = {inp['eps']}, target = {inp['target']}, "
        f"dtype = {inp['dtype']}, family = {inp['family']}, scale s = {data['scale']}"
    )
    M = cert.M
    console.print(f"[bold]score bound[/] (L5) M = s·d·B³ <= {float(M):.6g}; shifted interval (L6) [0, 2M] = [0, {float(2 * M):.6g}]")
    reg = data["regime"]
    if reg.get("B_cubed_over_ln_n") is None:
        console.print(f"[bold]regime[/] (L11) {reg['verdict']}")
    else:
        console.print(
            f"[bold]regime[/] (L11) B³ = {reg['B_cubed']:.4g}, ln n = {reg['ln_n']:.4g}, B³/ln n = {reg['B_cubed_over_ln_n']:.3g}; "
            f"threshold ∛ln n = {reg['threshold_B']:.4g}, B is {reg['B_over_threshold']:.3g}× it: {reg['verdict']}"
        )
    table = Table(title="minimal certified degree per family (L7)")
    for col in ("family", "degree", "rank C(g+d,d)", "certified upper", "degree−1 lower", "minimal"):
        table.add_column(col)
    for row in data["degree_table"]:
        table.add_row(row["family"], str(row["degree"]), str(row["rank"]), str(row.get("upper", row.get("note", ""))),
                      str(row.get("below_lower")), str(row.get("minimal")))
    console.print(table)
    poly = data["polynomial"]
    console.print(f"[bold]polynomial[/] {poly['family']}, degree {poly['degree']}, SHA-256 {poly['sha256']}")
    for t, c in enumerate(poly["coefficients"]):
        console.print(f"  c_{t} = {c}", soft_wrap=True)
    ae = data["approx_error"]
    console.print(
        f"[bold]certified approximation error[/] sup |P(x)e^-x − 1| on [0, 2M] ∈ [{ae['lower']}, {ae['upper']}] "
        f"({ae['status']}; {ae['piece_count']} pieces, {ae['precision_bits']} bits, {ae['seconds']:.2f} s; {ae['method']})"
    )
    for check in data["cross_checks"]:
        if "skipped" in check:
            console.print(f"[bold]cross-check[/] {check['name']}: skipped ({check['skipped']})")
        else:
            verdict = "[green]agrees[/]" if check["agrees"] else "[bold red]DISAGREES[/]"
            console.print(f"[bold]cross-check[/] {check['name']} {check.get('polynomial', '')}: exact {check['exact']} "
                          f"vs certified {check.get('certified', [ae['lower'], ae['upper']])}: {verdict}")
    bounds = data["bounds"]
    console.print(f"[bold]floating-point term[/] {bounds['fp_message']}")
    console.print(f"[bold]total[/] δ + ρ = {bounds['total']} against ε = {inp['eps']}")
    lines = Table(title="error bounds")
    for col in ("bound", "value", "tag", "SPEC", "note"):
        lines.add_column(col, overflow="fold")
    for ln in bounds["lines"]:
        value = "n/a" if ln["value"] is None else f"{ln['value']:.4e}"
        lines.add_row(ln["name"], value, ln["tag"], ln["spec"], ln["note"])
    console.print(lines)
    costs = data["costs"]
    console.print(
        f"[bold]cost ({inp['target']})[/] rank r = {costs['rank']}; fast ≈ {costs['fast_flops']:.3e} flops, "
        f"{costs['fast_memory_bytes'] / 2**20:.1f} MiB features; exact Θ(n³d) ≈ {costs['exact_flops']:.3e} flops "
        f"({costs['exact_memory_bytes_materialised'] / 2**20:.1f} MiB if scores are materialised); speed-up "
        f"{costs['speedup']:.3g}×; crossover n = {costs['crossover_n']} "
        f"({'the fast path pays here' if costs['fast_pays'] else 'the exact path is cheaper at this n'})"
    )
    emp = data["empirical"]
    if emp:
        console.print(f"[bold]empirical[/] {len(emp['instances'])} instances at n = {emp['n']}, d = {emp['d']} "
                      f"vs the mpmath oracle: worst observed/bound = {emp['worst_ratio']:.3g} (must be <= 1)")
    color = {0: "green", 1: "red", 2: "yellow"}[cert.exit_code]
    console.print(f"[bold {color}]{cert.verdict.upper()}[/]: {cert.message}")


def register(app: typer.Typer) -> None:
    @app.command()
    def certify(
        B: Optional[float] = typer.Option(None, "--B", help="Bound on the entries of Q, K1, K2, V1, V2 (B > 0)."),
        n: Optional[int] = typer.Option(None, "--n", help="Sequence length (n >= 1)."),
        d: Optional[int] = typer.Option(None, "--d", help="Head dimension (d >= 1); scale s = 1/d."),
        eps: float = typer.Option(1e-6, "--eps", help="Target relative error ε in (0, 1) for δ + ρ."),
        target: str = typer.Option("forward", "--target", help="forward | gradient (which cost model leads)."),
        dtype: str = typer.Option("float64", "--dtype", help="float64 | float32 (floating-point term)."),
        family: str = typer.Option("auto", "--family", help="auto | taylor | taylor-mid | chebyshev | minimax."),
        json_file: Optional[Path] = typer.Option(None, "--json", help="Write the certificate as JSON."),
        empirical: int = typer.Option(0, "--empirical", help="K random + adversarial instances: observed / bound."),
        verify: Optional[Path] = typer.Option(None, "--verify", help="Re-check a certificate JSON file, piece by piece."),
    ) -> None:
        """Certify the polynomial method: degree, rigorous error, floating-point term, L9/L10 bounds, costs.

        Exit 0 certified, 1 target missed, 2 inconclusive, 3 bad input. With --verify: 0 valid, 1 rejected.
        """
        from ..certificate import CertifyInputs, build_certificate, certificate_to_json, verify_certificate

        if verify is not None:
            try:
                text = verify.read_text()
            except OSError as exc:
                _fail_input(f"cannot read --verify file {verify}: {exc}")
            try:
                payload = json.loads(text)
            except json.JSONDecodeError as exc:
                typer.echo(f"REJECTED: not JSON ({exc})")
                raise typer.Exit(1)
            result = verify_certificate(payload)
            if result.ok:
                typer.echo(f"VALID: {result.pieces_checked} pieces re-checked in {result.seconds:.2f} s; all bounds recompute")
                raise typer.Exit(0)
            typer.echo("REJECTED:")
            for problem in result.problems:
                typer.echo(f"  - {problem}")
            raise typer.Exit(1)
        missing = [name for name, v in (("--B", B), ("--n", n), ("--d", d)) if v is None]
        if missing:
            _fail_input(f"{', '.join(missing)} required (or use --verify FILE)")
        try:
            inputs = CertifyInputs(B=B, n=n, d=d, eps=eps, target=target, dtype=dtype, family=family)
        except ValueError as exc:
            _fail_input(str(exc))
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), transient=True) as bar:
            task = bar.add_task("certify", total=None)
            try:
                cert = build_certificate(inputs, empirical=empirical, progress=lambda msg: bar.update(task, description=msg))
            except ValueError as exc:
                _fail_input(str(exc))
        _render(cert)
        if json_file is not None:
            json_file.write_text(certificate_to_json(cert))
            typer.echo(f"certificate written to {json_file}")
        raise typer.Exit(cert.exit_code)
