"""SPEC-ID coverage, read statically from ``@spec(...)`` tags in proofs/, properties/ and tests/, checked against the
status each entry of docs/spec.md claims (:data:`verified_ta.spec.SPEC_STATUS`)."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

from .spec import SPEC_IDS, SPEC_STATUS, entry_link

__all__ = ["KINDS", "PAPER_DOCS", "Coverage", "scan", "status_problems", "unproved_claims", "derived_only",
           "markdown_table"]

#: folder → the kind of evidence its tags stand for
KINDS = {"proofs": "proved", "properties": "property", "tests": "tested"}
#: the documents whose headings a ``paper`` status tag points at (the written proofs)
PAPER_DOCS = ("docs/bounds.md", "docs/certificate.md")
#: status tag → the kind of evidence that must exist for it (and that must not exist without it)
_EVIDENCE_TAGS = {"z3": "proved", "property": "property", "tested": "tested"}


@dataclass
class Coverage:
    """For each SPEC ID and kind, the ``file::function`` places that carry its tag; tags naming no SPEC ID."""

    places: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    unknown: list[tuple[str, str]] = field(default_factory=list)

    def add(self, spec_id: str, kind: str, place: str) -> None:
        if spec_id not in SPEC_IDS:
            self.unknown.append((spec_id, place))
            return
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


def _paper_headings(root: Path) -> str:
    texts = [(root / doc).read_text(encoding="utf-8") for doc in PAPER_DOCS if (root / doc).is_file()]
    return "\n".join(line for text in texts for line in text.splitlines() if line.startswith("#"))


def status_problems(cov: Coverage, root: str | Path) -> list[dict[str, str]]:
    """Where docs/spec.md's status tags and the repository disagree, as ``{"id", "problem"}`` records.

    ``z3 …`` needs tags in proofs/, ``property`` in properties/, ``tested`` in tests/, and each such tag needs its
    tag in the status (no overclaim, no stale status); ``paper`` needs a heading of a :data:`PAPER_DOCS` document
    naming the ID; every entry needs a tag; every ``@spec`` tag must name a SPEC ID.
    """
    headings = _paper_headings(Path(root))
    problems = [{"id": spec_id, "problem": f"{place} tags an ID that docs/spec.md does not define"}
                for spec_id, place in cov.unknown]
    for spec_id, tags in SPEC_STATUS.items():
        kinds = cov.kinds_of(spec_id)
        if not tags:
            problems.append({"id": spec_id, "problem": "the entry has no status tag"})
        for prefix, kind in _EVIDENCE_TAGS.items():
            claimed = any(t.startswith(prefix) for t in tags)
            if claimed and not kinds[kind]:
                problems.append({"id": spec_id, "problem": f"status claims `{prefix}` but nothing is tagged in "
                                                           f"{next(f for f, k in KINDS.items() if k == kind)}/"})
            if kinds[kind] and not claimed:
                problems.append({"id": spec_id, "problem": f"{len(kinds[kind])} {kind} tag(s) (e.g. {kinds[kind][0]}) "
                                                           f"but the status lacks `{prefix}`"})
        if "paper" in tags and not re.search(rf"\b{spec_id}\b", headings):
            problems.append({"id": spec_id,
                             "problem": f"status claims `paper` but no heading of {', '.join(PAPER_DOCS)} names it"})
    return problems


def unproved_claims() -> list[str]:
    """Identities, lemmas and algorithms (T, L, A) whose status has neither a ``z3`` nor a ``paper`` tag."""
    return [i for i, tags in SPEC_STATUS.items()
            if i[0] in "TLA" and not any(t.startswith("z3") or t == "paper" for t in tags)]


def derived_only() -> list[str]:
    """IDs whose status is only ``derived`` and/or ``cited``: stated, with no proof and no check behind them."""
    return [i for i, tags in SPEC_STATUS.items() if set(tags) <= {"derived", "cited"}]


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(cov: Coverage, spec_link: str = "docs/spec.md") -> str:
    """The README table (one row per SPEC ID, linked to its entry at ``spec_link``; status, then counts and files of
    each kind of evidence), followed by the IDs that are not proved and those that are derived only."""
    def cell(places: list[str]) -> str:
        files = sorted({p.split("::")[0] for p in places})
        return f"{len(places)} ({', '.join(f'`{f}`' for f in files)})" if places else "—"

    lines = ["| ID | claim | status | proved (z3) | properties | tests |", "|---|---|---|---|---|---|"]
    for spec_id, claim in SPEC_IDS.items():
        k = cov.kinds_of(spec_id)
        status = ", ".join(SPEC_STATUS[spec_id])
        lines.append(f"| [{spec_id}]({entry_link(spec_id, spec_link)}) | {_escape(claim)} | {status} | "
                     f"{cell(k['proved'])} | {cell(k['property'])} | {cell(k['tested'])} |")

    def listed(ids: list[str]) -> str:
        return ", ".join(f"[{i}]({entry_link(i, spec_link)}) ({', '.join(SPEC_STATUS[i])})" for i in ids) or "none"

    lines += ["", f"**Not proved by the project** (identities, lemmas and algorithms without a `z3` or `paper` tag): "
                  f"{listed(unproved_claims())}.",
              "", f"**Derived only** (stated, with no proof and no check): {listed(derived_only())}."]
    return "\n".join(lines)
