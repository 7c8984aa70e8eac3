"""``verified-ta certify``: a rigorous, re-checkable certificate for the polynomial method (SPEC L5–L11; docs/certificate.md).

Exit codes (``verified_ta.cli.ExitCode``): 0 certified, 1 target missed, 2 usage, 3 inconclusive (time limit, or a
bound that is derived but not proved), 4 not applicable (the fast path does not pay or does not fit here).
``--verify FILE``: 0 valid, 1 rejected, 3 inconclusive (time limit), 5 the checker failed. ``--map``: the table of
a (B, n) grid; exit 0 when every cell answered.
Only typer is imported at start-up; the certificate machinery is imported inside the command.
"""

from __future__ import annotations

import os
import re
from fractions import Fraction
from pathlib import Path
from typing import Any, Optional

import typer

from . import ExitCode

#: ``verified_ta.certificate.limits.DEFAULT_TIME_LIMIT_S``, restated so that ``--help`` imports nothing heavy (a test
#: keeps the two equal)
DEFAULT_TIME_LIMIT_S = 4.0

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30, "ti": 1 << 40}
_VERIFY_OPTIONS = ("time_limit", "json_file")
_MAP_OPTIONS = ("map_b", "map_n", "png", "jobs")


def parse_memory(text: str) -> int:
    """Bytes from "4GiB", "512MiB", "16G", "1e9"-style integers ("k/m/g/t" decimal, "ki/mi/gi/ti" binary)."""
    match = _SIZE.match(text)
    if not match:
        raise typer.BadParameter(f"--memory-limit must be bytes, optionally with a unit (KiB, MiB, GiB, TiB, K, M, G, T); "
                                 f"got {text!r}")
    unit = (match.group(2) or "").lower().rstrip("b")
    value = int(float(match.group(1)) * _UNITS[unit])
    if value < 1:
        raise typer.BadParameter(f"--memory-limit must be at least 1 byte; got {text!r}")
    return value


def _grid(text: str, name: str, kind: type) -> list:
    try:
        values = [kind(float(v)) if kind is int else kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"{name} must be a comma-separated list of numbers; got {text!r}") from None
    if not values or len(values) > 32:
        raise typer.BadParameter(f"{name} must hold 1 to 32 values; got {len(values)}")
    return values


def _check_output(path: Optional[Path]) -> None:
    """Refuse an output path that cannot be written, before any work (``-`` is stdout)."""
    if path is None or str(path) == "-":
        return
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir() or not parent.is_dir() or not os.access(parent, os.W_OK):
        raise typer.BadParameter(f"cannot write {path}: the directory does not exist or is not writable")


def _console(json_file: Optional[Path]):
    from rich.console import Console

    return Console(stderr=json_file is not None and str(json_file) == "-")


def _render(cert: Any, console: Any) -> None:
    from rich.table import Table

    from ..certificate.exact import magnitude

    data = cert.to_json()
    inp, plan, reg = data["inputs"], data["plan"], data["regime"]
    console.print(
        f"[bold]inputs[/] B = {inp['B']:g}, n = {inp['n']}, d = {inp['d']}, ε = {inp['eps']:g}, target = {inp['target']}, "
        f"dtype = {inp['dtype']}, family = {inp['family']}, scale s = {inp['scale']} (<= {float(Fraction(data['scale'])):.6g})"
    )
    console.print(f"[bold]score bound[/] (L5) M = s·d·B³ <= {float(cert.M):.6g}; shifted interval (L6) "
                  f"[0, 2M] = [0, {float(2 * cert.M):.6g}]")
    ratio = "" if reg["M_over_ln_n"] is None else f"M / ln n = {reg['M_over_ln_n']:.3g}: "
    console.print(f"[bold]regime[/] ({reg['label']}): {ratio}{reg['verdict']}")
    lb = plan["lower_bound_costs"]
    console.print(
        f"[bold]plan[/] δ limit {plan['delta_limit']}; every polynomial reaching ε has degree >= "
        f"{plan['degree_lower_bound']} (proved), so rank >= {magnitude(lb['rank'])}; features fit up to degree "
        f"{lb['max_degree_fitting']} ({inp['memory_limit_bytes']} bytes); the fast path pays up to degree "
        f"{lb['max_degree_paying']} at n = {inp['n']} (cost model); δ budget {plan['delta_budget']}"
    )
    if plan["note"]:
        console.print(f"[bold]plan[/] {plan['note']}")
    if cert.degree_table:
        table = Table(title="least certified degree per family (L7; search log, not vouched for)")
        for col in ("family", "degree", "rank C(g+d,d)", "certified upper", "degree−1 lower", "minimal", "note"):
            table.add_column(col)
        for row in cert.degree_table:
            table.add_row(row["family"], str(row["degree"]), str(row["rank"]), str(row.get("upper", "")),
                          str(row.get("below_lower", "")), str(row.get("minimal", "")), row.get("note", ""))
        console.print(table)
    poly, ae = data["polynomial"], data["approx_error"]
    if poly is not None:
        console.print(f"[bold]polynomial[/] {poly['family']}, degree {poly['degree']}, SHA-256 {poly['sha256']} "
                      "(exact rational coefficients in --json)")
        console.print(f"[bold]certified approximation error[/] sup |P(x)e^-x − 1| on [0, 2M] ∈ [{ae['lower']}, "
                      f"{ae['upper']}] ({ae['status']}; {ae['piece_count']} pieces, {ae['precision_bits']} bits; Arb "
                      "Taylor models)")
        for check in data["cross_checks"] + [data["unverified"].get("sollya", {})]:
            if not check:
                continue
            if "skipped" in check:
                console.print(f"[bold]cross-check[/] {check['name']}: skipped ({check['skipped']})")
            else:
                verdict = "[green]agrees[/]" if check["agrees"] else "[bold red]DISAGREES[/]"
                console.print(f"[bold]cross-check[/] {check['name']} {check.get('polynomial', '')}: exact {check['exact']}"
                              f": {verdict}")
        bounds = data["bounds"]
        console.print(f"[bold]floating-point term[/] {bounds['fp_message']}")
        lines = Table(title="error bounds (proved: docs/bounds.md; derived: not proved)")
        for col in ("bound", "value", "tag", "SPEC", "note"):
            lines.add_column(col)
        for ln in bounds["lines"]:
            value = "n/a" if ln["value"] is None else f"{ln['value']:.4e}"
            lines.add_row(ln["name"], value, ln["tag"], ln["spec"], ln["note"])
        console.print(lines)
    costs = data["costs"]
    console.print(
        f"[bold]cost model ({inp['target']}, degree {costs['degree']})[/] rank r = {magnitude(costs['rank'])}; fast ≈ "
        f"{magnitude(costs['fast_flops'])} flops, {magnitude(costs['fast_memory_bytes'])} bytes of features; exact "
        f"Θ(n³d) ≈ {magnitude(costs['exact_flops'])} flops; speed-up {costs['speedup']:.3g}×; crossover n = "
        f"{magnitude(costs['crossover_n'])}"
    )
    emp = data["unverified"].get("empirical")
    if emp and emp["worst_ratio"] is not None:
        console.print(f"[bold]empirical[/] {len(emp['instances'])} of {emp['requested']} instances at n = {emp['n']}, "
                      f"d = {emp['d']} vs the mpmath oracle: worst observed/bound = {emp['worst_ratio']:.3g} (must be <= 1)")
    color = {0: "green", 1: "red", 3: "yellow", 4: "yellow"}.get(cert.exit_code, "red")
    console.print(f"[bold {color}]{cert.verdict.upper()}[/]: {cert.message}")


def _given(ctx: typer.Context, names: tuple[str, ...]) -> list[str]:
    """The options in ``names`` the user set explicitly, as they are spelled on the command line."""
    spelled = {p.name: p.opts[0] for p in ctx.command.params}
    return [spelled[n] for n in names if getattr(ctx.get_parameter_source(n), "name", "DEFAULT") != "DEFAULT"]


def _usage(message: str) -> typer.BadParameter:
    """A usage error: typer prints it and exits 2 (``ExitCode.USAGE``)."""
    return typer.BadParameter(message)


def _verify(path: Path, time_limit: Optional[float], json_file: Optional[Path]) -> None:
    from ..certificate import verify_certificate
    from ..certificate.verify import DEFAULT_VERIFY_TIME_LIMIT_S
    from ..report import write_json

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read --verify file {path}: {exc}") from None
    result = verify_certificate(data, time_limit_s=DEFAULT_VERIFY_TIME_LIMIT_S if time_limit is None else time_limit)
    console = _console(json_file)
    if result.ok:
        console.print(f"VALID: {result.pieces_checked} pieces re-checked in {result.seconds:.2f} s; all recomputed "
                      "fields agree")
    else:
        console.print(f"{result.status.upper() if result.status != 'rejected' else 'REJECTED'}:", soft_wrap=True)
        for problem in result.problems:
            console.print(f"  - {problem}", soft_wrap=True, markup=False)
    if json_file is not None:
        write_json(json_file, {"status": result.status, "problems": result.problems,
                               "pieces_checked": result.pieces_checked, "seconds": result.seconds}, "certify --verify")
    raise typer.Exit(ExitCode(result.exit_code))


def register(app: typer.Typer) -> None:
    @app.command()
    def certify(
        ctx: typer.Context,
        B: Optional[float] = typer.Option(None, "--B", help="Bound on the entries of Q, K1, K2, V1, V2 (B > 0)."),
        n: Optional[int] = typer.Option(None, "--n", help="Sequence length (n >= 1)."),
        d: Optional[int] = typer.Option(None, "--d", help="Head dimension (d >= 1)."),
        eps: float = typer.Option(1e-6, "--eps", help="Target ε in (0, 1) for the chosen target's total error bound."),
        target: str = typer.Option("forward", "--target", help="forward | gradient (gradient bounds are derived)."),
        dtype: str = typer.Option("float64", "--dtype", help="float64 | float32 (floating-point term)."),
        family: str = typer.Option("auto", "--family", help="auto | taylor | taylor-mid | chebyshev | minimax."),
        scale: str = typer.Option("1/d", "--scale", help="Softmax scale s: 1/d, 1/sqrt(d) or a number (e.g. 0.125)."),
        memory_limit: str = typer.Option("4GiB", "--memory-limit", help="Feature memory the fast path may use."),
        degree: Optional[int] = typer.Option(None, "--degree", help="Certify this degree instead of searching."),
        time_limit: float = typer.Option(DEFAULT_TIME_LIMIT_S, "--time-limit",
                                         help="Seconds of work after start-up (--verify: 60 unless given)."),
        json_file: Optional[Path] = typer.Option(None, "--json", help="Write the certificate as JSON ('-': stdout)."),
        empirical: int = typer.Option(0, "--empirical", help="K random + adversarial instances: observed / bound."),
        verify: Optional[Path] = typer.Option(None, "--verify", help="Re-check a certificate JSON file, piece by piece."),
        regime_map: bool = typer.Option(False, "--map", help="Tabulate a (B, n) grid for the given d and ε."),
        map_b: str = typer.Option("0.25,0.5,0.75,1,1.25,1.5,2,3", "--map-B", help="--map: the B grid."),
        map_n: str = typer.Option("64,1024,16384,262144,4194304,67108864", "--map-n", help="--map: the n grid."),
        png: Optional[Path] = typer.Option(None, "--png", help="--map: write the heatmap PNG here."),
        jobs: int = typer.Option(0, "--jobs", help="--map: worker processes (0: one per CPU)."),
    ) -> None:
        """Certify the polynomial method: plan, degree, rigorous error, floating-point term, L9/L10 bounds, costs.

        Exit 0 certified, 1 target missed, 2 usage, 3 inconclusive, 4 not applicable (does not pay or fit).

        --verify FILE: 0 valid, 1 rejected, 3 inconclusive. --map: one certify call per (B, n) cell.
        """
        if time_limit <= 0:
            raise typer.BadParameter(f"--time-limit must be > 0 seconds; got {time_limit}")
        _check_output(json_file)
        _check_output(png)
        everything = tuple(p.name for p in ctx.command.params)
        if verify is not None:
            extra = _given(ctx, tuple(p for p in everything if p not in ("verify", *_VERIFY_OPTIONS)))
            if extra:
                raise _usage(f"--verify re-checks a file on its own; it takes only --time-limit and --json, "
                             f"not {', '.join(extra)}")
            _verify(verify, time_limit if _given(ctx, ("time_limit",)) else None, json_file)
        if not regime_map:
            stray = _given(ctx, _MAP_OPTIONS)
            if stray:
                raise _usage(f"{', '.join(stray)} only go with --map")
        memory = parse_memory(memory_limit)
        if regime_map:
            stray = _given(ctx, ("B", "n", "degree", "empirical"))
            if stray:
                raise _usage(f"--map takes grids (--map-B, --map-n), not {', '.join(stray)}")
            if d is None:
                raise _usage("--map needs --d")
            _run_map(d, eps, target, dtype, family, scale, memory, time_limit, _grid(map_b, "--map-B", float),
                     _grid(map_n, "--map-n", int), json_file, png, jobs)
        missing = [name for name, v in (("--B", B), ("--n", n), ("--d", d)) if v is None]
        if missing:
            raise _usage(f"{', '.join(missing)} required (or use --verify FILE, or --map)")
        from ..certificate import CertifyInputs, build_certificate
        from ..report import write_json

        try:
            inputs = CertifyInputs(B=B, n=n, d=d, eps=eps, target=target, dtype=dtype, family=family, scale=scale,
                                   memory_limit_bytes=memory, degree=degree, time_limit_s=time_limit)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        console = _console(json_file)
        if empirical < 0:
            raise typer.BadParameter(f"--empirical must be >= 0; got {empirical}")
        with console.status("certify") as status:
            cert = build_certificate(inputs, empirical=empirical, progress=lambda msg: status.update(msg))
        _render(cert, console)
        if json_file is not None:
            write_json(json_file, cert.to_json(), "certify")
            if str(json_file) != "-":
                console.print(f"certificate written to {json_file}")
        raise typer.Exit(ExitCode(cert.exit_code))


def _run_map(d: int, eps: float, target: str, dtype: str, family: str, scale: str, memory: int, time_limit: float,
             b_grid: list[float], n_grid: list[int], json_file: Optional[Path], png: Optional[Path], jobs: int) -> None:
    from ..certificate.regime_map import map_table, regime_map, write_heatmap
    from ..report import write_json

    console = _console(json_file)
    try:
        result = regime_map(d, eps, b_grid, n_grid, target=target, dtype=dtype, family=family, scale=scale,
                            memory_limit_bytes=memory, time_limit_s=time_limit, jobs=jobs or None)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    console.print(map_table(result))
    if png is not None:
        write_heatmap(result, png)
        console.print(f"heatmap written to {png}")
    if json_file is not None:
        write_json(json_file, result, "certify --map")
    raise typer.Exit(ExitCode.OK)
