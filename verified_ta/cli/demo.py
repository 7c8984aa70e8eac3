"""``verified-ta demo match3``: train softmax, exact tensor and poly tensor attention on Match3 (verified_ta.match3).

Exit codes (``ExitCode``): 0 every audited gradient stayed within its certified bound and every run's held-out loss
fell; 1 a bound failed or a loss did not fall; 2 bad options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..report import document_schema
from . import ExitCode, check_outputs

#: what each exit code means for ``demo match3`` (rendered in the CLI reference of the documentation site)
EXIT_CODES = {
    ExitCode.OK: "every audited poly gradient stayed within its certified per-call bound and every held-out loss fell",
    ExitCode.FAILED: "an audited gradient exceeded its bound, or a run's held-out loss did not fall",
    ExitCode.USAGE: "bad options (sizes, seeds, eps, threads)",
}

_AUDIT = {"type": "object", "required": ["max_gap", "max_bound", "max_ratio", "held"],
          "properties": {"max_gap": {"type": "number"}, "max_bound": {"type": "number"},
                         "max_ratio": {"type": "number"}, "held": {"type": "boolean"}}}
_RUN = {
    "type": "object",
    "required": ["kind", "seed", "parameters", "seconds", "train_loss", "train_accuracy", "eval_steps", "eval_loss",
                 "eval_accuracy", "audits"],
    "properties": {
        "kind": {"enum": ["softmax", "exact", "poly"]},
        "audits": {"type": "array", "items": {
            "type": "object",
            "required": ["step", "delta", "delta_derivative", "degree", "rank", "dq", "dk1", "dk2", "dv1", "dv2"],
            "properties": {name: _AUDIT for name in ("dq", "dk1", "dk2", "dv1", "dv2")}}},
    },
}
#: the JSON document OUT.json (JSON Schema, draft 2020-12)
JSON_SCHEMA = document_schema("demo match3", "verified-ta demo match3", {
    "config": {"type": "object", "description": "verified_ta.match3.Match3Config as a dict"},
    "runs": {"type": "array", "items": _RUN},
    "audit_count": {"type": "integer"},
    "bounds_held": {"type": "boolean"},
    "worst_ratio": {"type": "object", "description": "max observed/bound per gradient over all audits"},
    "loss_fell": {"type": "object", "description": "per run: last held-out loss < first"},
}, ["config", "runs", "audit_count", "bounds_held", "worst_ratio", "loss_fell"])


def register(app: typer.Typer) -> None:
    demo = typer.Typer(help="Demonstrations that train models.", no_args_is_help=True)

    @demo.command("match3")
    def match3(
        steps: Optional[int] = typer.Option(None, help="Optimizer steps per run (default 400)."),
        seeds: Optional[str] = typer.Option(None, help="Comma-separated seeds, one run per kind and seed (default 0,1,2)."),
        n: Optional[int] = typer.Option(None, help="Sequence length (default 6)."),
        modulus: Optional[int] = typer.Option(None, help="The modulus M of Match3 (default 28)."),
        batch: Optional[int] = typer.Option(None, help="Sequences per step (default 64)."),
        heads: Optional[int] = typer.Option(None, help="Attention heads (default 4)."),
        head_dim: Optional[int] = typer.Option(None, help="Head dimension d of the tensor block (default 4)."),
        audit_every: Optional[int] = typer.Option(None, help="Audit the poly run's gradients every this many steps "
                                                              "(default 50)."),
        eps: Optional[float] = typer.Option(None, help="Target relative error ε of the certified polynomial (1e-3)."),
        out: Path = typer.Option(Path("match3"), help="Output prefix: writes OUT.json and OUT.png."),
        threads: int = typer.Option(1, help="torch intra-op threads (1 is steadiest on a shared machine)."),
    ) -> None:
        """Train the three kinds of attention on Match3; write curves and gradient audits (JSON) and a figure (PNG).

        Options left out take the defaults of ``verified_ta.match3.Match3Config``.
        """
        import torch

        from ..match3 import Match3Config, plot, run
        from ..report import write_json

        try:
            given = dict(steps=steps, n=n, modulus=modulus, batch=batch, heads=heads, head_dim=head_dim,
                         audit_every=audit_every, eps=eps)
            if seeds is not None:
                given["seeds"] = tuple(int(s) for s in seeds.split(",") if s.strip())
            cfg = Match3Config(**{k: v for k, v in given.items() if v is not None})
            if threads < 1:
                raise ValueError(f"threads must be an integer >= 1; got {threads}")
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        json_path, png_path = out.with_suffix(".json"), out.with_suffix(".png")
        check_outputs(out=json_path)
        check_outputs(out=png_path)
        torch.set_num_threads(threads)
        record = run(cfg, progress=typer.echo)
        fell = {f"{r['kind']} seed {r['seed']}": r["eval_loss"][-1] < r["eval_loss"][0] for r in record["runs"]}
        record["loss_fell"] = fell
        write_json(json_path, record, command="demo match3")
        plot(record, str(png_path))
        worst = ", ".join(f"{k} {v:.3g}" for k, v in record["worst_ratio"].items())
        typer.echo(f"{record['audit_count']} gradient audits, worst observed/bound per input: {worst}")
        typer.echo(f"wrote {json_path} and {png_path}")
        if not record["bounds_held"] or not all(fell.values()):
            typer.echo(f"FAILED: bounds held: {record['bounds_held']}; loss fell: {fell}", err=True)
            raise typer.Exit(ExitCode.FAILED)

    app.add_typer(demo, name="demo")
