"""SPEC-ID coverage, read statically from ``@spec(...)`` tags in proofs/, properties/ and tests/."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

from .spec import SPEC_IDS

__all__ = ["KINDS", "Coverage", "scan", "markdown_table"]

#: folder → the kind of evidence its tags stand for
KINDS = {"proofs": "proved", "properties": "property", "tests": "tested"}


@dataclass
class Coverage:
    """For each SPEC ID and kind, the ``file::function`` places that carry its tag."""

    places: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def add(self, spec_id: str, kind: str, place: str) -> None:
        self.places.setdefault(spec_id, {k: [] for k in KINDS.values()})[kind].append(place)

    def kinds_of(self, spec_id: str) -> dict[str, list[str]]:
        return self.places.get(spec_id, {k: [] for k in KINDS.values()})

    @property
    def uncovered(self) -> list[str]:
        return [i for i in SPEC_IDS if i not in self.places]


def _spec_ids_of(decorator: ast.expr) -> list[str]:
    if not isinstance(decorator, ast.Call):
        return []
    fn = decorator.func
    name = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else ""
    if name != "spec":
        return []
    return [a.value for a in decorator.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]


def scan(root: str | Path) -> Coverage:
    """Collect every ``@spec("ID", ...)`` decorator under ``root``'s proofs/, properties/ and tests/."""
    root = Path(root)
    folders = [root / f for f in KINDS]
    if not any(f.is_dir() for f in folders):
        raise ValueError(f"root must be a verified-ta checkout holding proofs/, properties/ or tests/; got {root}")
    cov = Coverage()
    for folder, kind in KINDS.items():
        for path in sorted((root / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    for dec in node.decorator_list:
                        for spec_id in _spec_ids_of(dec):
                            cov.add(spec_id, kind, f"{path.relative_to(root).as_posix()}::{node.name}")
    return cov


def markdown_table(cov: Coverage) -> str:
    """The README table: one row per SPEC ID, with counts and the files of each kind of evidence."""
    def cell(places: list[str]) -> str:
        files = sorted({p.split("::")[0] for p in places})
        return f"{len(places)} ({', '.join(f'`{f}`' for f in files)})" if places else "—"

    lines = ["| ID | statement | proved (z3) | properties | tests |", "|---|---|---|---|---|"]
    for spec_id, statement in SPEC_IDS.items():
        k = cov.kinds_of(spec_id)
        lines.append(f"| {spec_id} | {statement} | {cell(k['proved'])} | {cell(k['property'])} | {cell(k['tested'])} |")
    return "\n".join(lines)
