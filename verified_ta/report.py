"""Result rows shared by ``check``, ``prove``, ``certify`` and ``conform``: a rich table for people, JSON for machines."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from rich.console import Console
from rich.table import Table

__all__ = ["JSON_SCHEMA_VERSION", "CheckRow", "render_rows", "strict_json", "write_json"]

#: version of the JSON documents every command writes (bumped when a field changes meaning or disappears)
JSON_SCHEMA_VERSION = 1


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


def _plain(o: Any) -> Any:
    """``o`` as JSON-ready values: dataclasses as dicts, tuples as lists, non-finite floats as null."""
    if hasattr(o, "__dataclass_fields__"):
        return _plain(asdict(o))
    if isinstance(o, dict):
        return {str(k): _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple, set, frozenset)):
        return [_plain(v) for v in (sorted(o) if isinstance(o, (set, frozenset)) else o)]
    if isinstance(o, bool) or o is None or isinstance(o, (int, str)):
        return o
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if hasattr(o, "item") and callable(o.item):  # numpy / torch scalars
        return _plain(o.item())
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def strict_json(payload: Any, command: str | None = None) -> str:
    """RFC 8259 JSON (no NaN/Infinity: non-finite numbers become null), indented; a dict payload gains
    ``schema_version``, ``tool`` and ``version`` (and ``command`` when given) in front of its own keys."""
    from . import __version__

    body = _plain(payload)
    if isinstance(body, dict):
        head = {"schema_version": JSON_SCHEMA_VERSION, "tool": "verified-ta", "version": __version__}
        if command is not None:
            head["command"] = command
        body = {**head, **body}
    return json.dumps(body, indent=2, allow_nan=False, ensure_ascii=False) + "\n"


def write_json(path: str | Path, payload: Any, command: str | None = None) -> None:
    """Write ``payload`` as strict JSON (:func:`strict_json`) to ``path``; ``"-"`` writes to stdout."""
    text = strict_json(payload, command)
    if str(path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        Path(path).write_text(text, encoding="utf-8")
