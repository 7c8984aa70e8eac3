"""``verified-ta kernels``: the offline compile gate of the exact Triton kernels (no GPU needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import ExitCode


def _csv(value: str, cast, name: str) -> list:
    try:
        return [cast(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"{name} must be a comma-separated list; got {value!r}") from None


def register(app: typer.Typer) -> None:
    @app.command()
    def kernels(
        target: str = typer.Option("sm_90", help="GPU target to compile for: sm_90 (Hopper) or sm_80 (Ampere)."),
        dtypes: str = typer.Option("float16,bfloat16,float32", "--dtypes", help="Comma-separated operand dtypes."),
        head_dims: str = typer.Option("16,32,64,128", "--head-dims", help="Comma-separated head dimensions."),
        kernel: Optional[str] = typer.Option(None, help="Only these kernels (comma-separated: forward, combine, "
                                             "delta, dq, k1_owner, k2_owner)."),
        jobs: int = typer.Option(0, help="Compile processes (0: one per CPU)."),
        json_file: Optional[Path] = typer.Option(None, "--json", help="Write every variant as JSON ('-': stdout)."),
        verbose: bool = typer.Option(False, "--verbose", "-v", help="One row per variant (default: failures only)."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the summary line."),
    ) -> None:
        """Compile every kernel variant the dispatcher can launch for a GPU target, on this CPU; report registers,
        spills, shared memory and wgmma; exit 1 if any variant fails to compile, overflows shared memory, spills
        (fp16/bf16) or lacks wgmma (fp16/bf16 dot kernels)."""
        import os

        from ..kernels import triton_available
        from ..kernels.gate import parse_target, run_gate, variants

        try:
            parse_target(target)
            vs = variants(dtypes=_csv(dtypes, str, "--dtypes"), head_dims=_csv(head_dims, int, "--head-dims"),
                          kernels=_csv(kernel, str, "--kernel") if kernel else None)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        if json_file is not None and str(json_file) != "-" and not json_file.parent.exists():
            raise typer.BadParameter(f"directory {json_file.parent} does not exist", param_hint="--json")
        if not triton_available():
            typer.echo("triton is not installed: pip install 'verified-ta[triton]'", err=True)
            raise typer.Exit(ExitCode.INCONCLUSIVE)
        to_stdout = json_file is not None and str(json_file) == "-"
        echo = (lambda *a, **k: typer.echo(*a, err=True, **k)) if to_stdout else typer.echo

        def show(r) -> None:
            if quiet or (r.passed and not verbose):
                return
            verdict = "PASS" if r.passed else "FAIL " + "; ".join(r.reasons)
            echo(f"{verdict:<6} {r.label}")
            if r.error is None:
                echo(f"       regs {r.registers}  spill {r.spill_stores} B  smem {r.shared_bytes} B  "
                     f"wgmma {r.wgmma}  {r.compile_s:.1f} s")
            else:
                echo(f"       {r.error.splitlines()[-1][:160]}")

        results = run_gate(vs, target, jobs=jobs or os.cpu_count() or 1, progress=show)
        failed = [r for r in results if not r.passed]
        echo(f"{len(results) - len(failed)} passed, {len(failed)} failed ({len(results)} variants, {target})")
        if json_file is not None:
            from ..report import write_json

            write_json(json_file, {"target": target, "passed": not failed, "variants": [r.to_dict() for r in results]},
                       command="kernels")
        if failed:
            raise typer.Exit(ExitCode.FAILED)
