"""Result rows shared by ``check``, ``prove``, ``certify`` and ``conform``: a rich table for people, JSON for machines."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from rich.console import Console
from rich.table import Table

__all__ = ["CheckRow", "render_rows", "write_json"]


@dataclass
class CheckRow:
    """One verified claim: ``error <= tolerance`` for the SPEC ID(s) named."""

    spec_id: str
    name: str
    error: float
    tolerance: float
    passed: bool
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def compare(cls, spec_id: str, name: str, error: float, tolerance: float, detail: str = "", **extra: Any) -> "CheckRow":
        """A row that passes iff the (finite) error is within the tolerance."""
        ok = math.isfinite(error) and error <= tolerance
        return cls(spec_id, name, float(error), float(tolerance), ok, detail, dict(extra))


def render_rows(rows: Iterable[CheckRow], title: str, console: Console | None = None) -> None:
    table = Table(title=title)
    for col in ("SPEC ID", "check", "max error", "tolerance", "result", "detail"):
        table.add_column(col, overflow="fold")
    for r in rows:
        verdict = "[green]PASS[/]" if r.passed else "[bold red]FAIL[/]"
        table.add_row(r.spec_id, r.name, f"{r.error:.3e}", f"{r.tolerance:.3e}", verdict, r.detail)
    (console or Console()).print(table)


def write_json(path: str | Path, payload: Any) -> None:
    """Write ``payload`` (dataclasses allowed) as indented JSON."""
    def default(o: Any) -> Any:
        if hasattr(o, "__dataclass_fields__"):
            return asdict(o)
        raise TypeError(f"not JSON serialisable: {type(o).__name__}")

    Path(path).write_text(json.dumps(payload, indent=2, default=default) + "\n")
