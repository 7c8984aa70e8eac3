"""``verified-ta kernels``: the offline compile gate of the exact Triton kernels (no GPU needed; issue 9)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..report import document_schema
from . import QUIET, VERBOSE, ExitCode, check_outputs

#: what each exit code means for ``kernels`` (rendered in the CLI reference of the documentation site)
EXIT_CODES = {
    ExitCode.OK: "every variant compiled, fits shared memory, and (fp16/bf16) has no spills and uses wgmma",
    ExitCode.FAILED: "a variant does not compile, overflows shared memory, spills (fp16/bf16) or lacks wgmma",
    ExitCode.USAGE: "bad options (target, dtypes, head dims, kernel names, an unwritable --json path)",
    ExitCode.INCONCLUSIVE: "triton is not installed, so nothing could be compiled",
}
_VARIANT = {
    "type": "object",
    "required": ["label", "kernel", "qualname", "dtype", "d", "causal", "contexts", "num_warps", "num_stages",
                 "signature", "constexprs", "registers", "spill_stores", "spill_loads", "stack_bytes", "shared_bytes",
                 "wgmma", "compile_s", "error", "reasons", "passed"],
    "properties": {"qualname": {"type": "string"}, "signature": {"type": "object"}, "constexprs": {"type": "object"},
                   "registers": {"type": ["integer", "null"]}, "spill_stores": {"type": ["integer", "null"]},
                   "shared_bytes": {"type": ["integer", "null"]}, "wgmma": {"type": ["integer", "null"]},
                   "reasons": {"type": "array", "items": {"type": "string"}}, "passed": {"type": "boolean"}},
}
#: the JSON document (JSON Schema, draft 2020-12)
JSON_SCHEMA = document_schema("kernels", "verified-ta kernels", {
    "target": {"type": "string"}, "passed": {"type": "boolean"}, "variants": {"type": "array", "items": _VARIANT},
}, ["target", "passed", "variants"])


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
        quiet: bool = QUIET,
        verbose: bool = VERBOSE,
    ) -> None:
        """Compile every kernel variant the dispatcher can launch for a GPU target, on this CPU; report registers,
        spills, shared memory and wgmma; exit 1 if any variant fails to compile, overflows shared memory, spills
        (fp16/bf16) or lacks wgmma (fp16/bf16 dot kernels). By default one line per failing variant and a summary."""
        import os

        from ..kernels import triton_available
        from ..kernels.gate import parse_target, run_gate, variants

        try:
            parse_target(target)
            vs = variants(dtypes=_csv(dtypes, str, "--dtypes"), head_dims=_csv(head_dims, int, "--head-dims"),
                          kernels=_csv(kernel, str, "--kernel") if kernel else None)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        if jobs < 0:
            raise typer.BadParameter(f"--jobs must be >= 0; got {jobs}")
        check_outputs(json=json_file)
        if not triton_available():
            typer.echo("triton is not installed: pip install 'verified-ta[triton]'", err=True)
            raise typer.Exit(ExitCode.INCONCLUSIVE)
        to_stdout = json_file is not None and str(json_file) == "-"

        def echo(text: str) -> None:
            typer.echo(text, err=to_stdout)

        def show(r) -> None:
            if quiet and r.passed or not (verbose or not r.passed):
                return
            echo(f"{'PASS' if r.passed else 'FAIL':<4}  {r.label}" + ("" if r.passed else f": {'; '.join(r.reasons)}"))
            if r.error is None:
                echo(f"      regs {r.registers}  spill {r.spill_stores} B  smem {r.shared_bytes} B  "
                     f"wgmma {r.wgmma}  {r.compile_s:.1f} s")
            else:
                echo(f"      {r.error.splitlines()[-1][:160]}")

        results = run_gate(vs, target, jobs=jobs or os.cpu_count() or 1, progress=show)
        failed = [r for r in results if not r.passed]
        echo(f"{len(results) - len(failed)} passed, {len(failed)} failed ({len(results)} variants, {target})")
        if json_file is not None:
            from ..report import write_json

            write_json(json_file, {"target": target, "passed": not failed, "variants": [r.to_dict() for r in results]},
                       command="kernels")
        if failed:
            raise typer.Exit(ExitCode.FAILED)
