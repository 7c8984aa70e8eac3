"""Result rows and output conventions shared by every command: lines and a table for people, strict JSON for machines.

People: one line per claim (or per check) and a summary by default, the full table with ``-v``, only what failed
with ``-q``. Lines are never wrapped here (a terminal wraps them visually), so no word is split when the output is
80 columns wide or piped. Machines: :func:`write_json` (``"-"`` is stdout), after :func:`check_output_path` has
rejected an unwritable path before any work is done.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "JSON_SCHEMA_VERSION", "ROW_SCHEMA", "document_schema", "CheckRow", "error_ratio", "row_line", "summary_lines", "render_rows", "check_output_path",
    "strict_json", "write_json",
]

#: version of the JSON documents every command writes (bumped when a field changes meaning or disappears)
JSON_SCHEMA_VERSION = 1

#: JSON Schema of one :class:`CheckRow` as ``to_json`` writes it (extra fields follow, per command)
ROW_SCHEMA = {
    "type": "object",
    "required": ["spec_ids", "name", "error", "tolerance", "passed", "detail"],
    "properties": {
        "spec_ids": {"type": "array", "items": {"type": "string"}},
        "name": {"type": "string"},
        "error": {"type": ["number", "null"], "description": "null: infinite or NaN"},
        "tolerance": {"type": ["number", "null"]},
        "passed": {"type": "boolean"},
        "detail": {"type": "string"},
    },
}


def document_schema(command: str, title: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """A command's JSON Schema (draft 2020-12): the shared header of :func:`strict_json` plus its own fields."""
    header = {"schema_version": {"type": "integer"}, "tool": {"const": "verified-ta"},
              "version": {"type": "string"}, "command": {"const": command}}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": title, "type": "object",
            "required": [*header, *required], "properties": {**header, **properties}}


def error_ratio(error: float, tolerance: float) -> float:
    """error / tolerance; inf for a non-finite error or a positive error against a zero tolerance."""
    if not math.isfinite(error):
        return math.inf
    if tolerance <= 0:
        return 0.0 if error == 0 else math.inf
    return error / tolerance


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


    @property
    def spec_ids(self) -> list[str]:
        """The SPEC IDs as a list (``spec_id`` may name several, comma-separated)."""
        return [i.strip() for i in self.spec_id.split(",") if i.strip()]

    @property
    def ratio(self) -> float:
        return error_ratio(self.error, self.tolerance)

    def to_json(self) -> dict[str, Any]:
        """``spec_ids`` as a list, then the row's fields, then its extra fields (flattened)."""
        return {"spec_ids": self.spec_ids, "name": self.name, "error": self.error, "tolerance": self.tolerance,
                "passed": self.passed, "detail": self.detail, **self.extra}


def row_line(row: CheckRow) -> str:
    """``PASS P15 name: error 1.2e-16 <= tolerance 3.4e-15 (detail)`` on one line."""
    verdict = "PASS" if row.passed else "FAIL"
    rel = "<=" if row.passed else ">"
    detail = f" ({row.detail})" if row.detail else ""
    return f"{verdict} {row.spec_id} {row.name}: error {row.error:.3g} {rel} tolerance {row.tolerance:.3g}{detail}"


def summary_lines(rows: Iterable[CheckRow], *, failed_only: bool = False) -> list[str]:
    """One line per distinct (SPEC ID, name): the worst instance over repeated rows (trials), with its count."""
    groups: dict[tuple[str, str], list[CheckRow]] = {}
    for r in rows:
        groups.setdefault((r.spec_id, r.name), []).append(r)
    lines = []
    for (spec_id, name), rs in groups.items():
        ok = all(r.passed for r in rs)
        if failed_only and ok:
            continue
        worst = max(rs, key=lambda r: (not r.passed, r.ratio))
        count = f" over {len(rs)} instances" if len(rs) > 1 else ""
        ratio = f"worst error/tolerance {worst.ratio:.2g}" if math.isfinite(worst.ratio) else "infinite error"
        line = f"{'PASS' if ok else 'FAIL'} {spec_id} {name}: {ratio}{count}"
        if not ok:
            line += f"; error {worst.error:.3g} > tolerance {worst.tolerance:.3g} ({worst.detail})"
        lines.append(line)
    return lines


def render_rows(rows: Iterable[CheckRow], title: str, console: "Console | None" = None) -> None:
    """The full table: one unwrapped line per row, columns aligned (a terminal may wrap long lines; no word is
    split here)."""
    from rich.console import Console

    rows = list(rows)
    header = ("SPEC ID", "check", "max error", "tolerance", "result", "detail")
    cells = [header] + [(r.spec_id, r.name, f"{r.error:.3e}", f"{r.tolerance:.3e}", "PASS" if r.passed else "FAIL",
                         r.detail) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header) - 1)]
    console = console or Console(soft_wrap=True)
    console.print(title, markup=False, highlight=False, soft_wrap=True)
    for c in cells:
        line = "  ".join(v.ljust(w) for v, w in zip(c, widths)) + "  " + c[-1]
        console.print(line.rstrip(), markup=False, highlight=False, soft_wrap=True)


def check_output_path(path: str | Path | None, option: str) -> None:
    """ValueError unless ``path`` (an output file; ``"-"`` is stdout) can be written: call it before the run."""
    if path is None or str(path) == "-":
        return
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{option} {path}: is a directory; give a file path")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"{option} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise ValueError(f"{option} {path}: not writable")


def _plain(o: Any) -> Any:
    """``o`` as JSON-ready values: ``to_json()`` or dataclasses as dicts, tuples as lists, non-finite floats as null."""
    if callable(getattr(o, "to_json", None)) and not isinstance(o, type):
        return _plain(o.to_json())
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
