"""SPEC IDs (docs/spec.md) and the ``@spec`` tag that tests, properties and proofs carry.

The specification lives in ``docs/spec.md``: one entry per ID with its claim, statement, assumptions, source and
status. The installed package does not ship docs/, so the ID table (ID → claim and status tags) is compiled from it
into :mod:`verified_ta.spec_table`, a generated module; ``tests/test_spec.py`` fails when the two differ, and
``python -m verified_ta.spec`` regenerates the module. (A generated module rather than package data: docs/spec.md
stays where the site and the forge show it, importing the table reads no file, and a wheel cannot miss it.)

``verified-ta coverage`` reads the tags statically (AST), so a tag must be a literal ``@spec("T1", ...)``
decorator. Unknown IDs raise at import time, so a typo cannot hide coverage.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, TypeVar

from .spec_table import ENTRIES

__all__ = ["SPEC_IDS", "SPEC_STATUS", "STATUS_TAGS", "SpecEntry", "parse_spec", "table_source", "entry_link", "spec"]

F = TypeVar("F", bound=Callable)

#: the status tags an entry may carry (docs/spec.md explains each); ``z3 swept ≤ K`` carries its sweep size K
STATUS_TAGS = ("z3 all sizes", "z3 swept", "paper", "property", "tested", "cited", "derived")
_TAG = re.compile(r"^(z3 all sizes|z3 swept ≤ [1-9][0-9]*|paper|property|tested|cited|derived)$")
_HEADING = re.compile(r"^### ([TLAP][1-9][0-9]*)[ \t]*$", re.M)
_FIELDS = ("Statement", "Assumptions", "Source", "Status")


@dataclass(frozen=True)
class SpecEntry:
    """One SPEC entry as the code needs it: the ID, its one-line claim and its status tags."""

    id: str
    claim: str
    status: tuple[str, ...]


def _entry(spec_id: str, body: str) -> SpecEntry:
    claim = re.search(r"^\*\*Claim:\*\* (\S.*)$", body, re.M)
    if claim is None:
        raise ValueError(f"docs/spec.md entry {spec_id}: needs a '**Claim:** …' line")
    missing = [f for f in _FIELDS if not re.search(rf"^- \*\*{f}:\*\*\s+\S", body, re.M)]
    if missing:
        raise ValueError(f"docs/spec.md entry {spec_id}: missing field(s) {missing}; each entry has {list(_FIELDS)}")
    status_line = re.search(r"^- \*\*Status:\*\* ((?:`[^`]+`[ .]*)+)", body, re.M)
    if status_line is None:
        raise ValueError(f"docs/spec.md entry {spec_id}: the Status line must open with tags such as `property`")
    tags = tuple(re.findall(r"`([^`]+)`", status_line.group(1)))
    bad = [t for t in tags if not _TAG.match(t)]
    if bad or len(set(tags)) != len(tags):
        raise ValueError(f"docs/spec.md entry {spec_id}: status tags must be distinct and among {STATUS_TAGS} "
                         f"('z3 swept ≤ K' with K >= 1); got {list(tags)}")
    return SpecEntry(spec_id, claim.group(1).strip(), tags)


def parse_spec(text: str) -> list[SpecEntry]:
    """The entries of docs/spec.md, in order: each ``### ID`` heading opens one (until the next heading)."""
    parts = re.split(r"^(?=#{1,3} )", text, flags=re.M)
    entries = []
    for part in parts:
        m = _HEADING.match(part)
        if m:
            entries.append(_entry(m.group(1), part))
    ids = [e.id for e in entries]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates or not entries:
        raise ValueError(f"docs/spec.md must hold each ID once; duplicated: {duplicates or 'none'}, "
                         f"entries: {len(ids)}")
    return entries


def table_source(entries: Sequence[SpecEntry]) -> str:
    """The source of :mod:`verified_ta.spec_table` for ``entries``."""
    rows = "".join(f"    ({e.id!r}, {e.claim!r},\n     {e.status!r}),\n" for e in entries)
    return ('"""The SPEC ID table, generated from docs/spec.md by ``python -m verified_ta.spec``: do not edit.\n\n'
            'tests/test_spec.py fails when this table and docs/spec.md differ.\n"""\n\n'
            f"ENTRIES: tuple[tuple[str, str, tuple[str, ...]], ...] = (\n{rows})\n")


#: ID → one-line claim, in SPEC order
SPEC_IDS: dict[str, str] = {spec_id: claim for spec_id, claim, _ in ENTRIES}
#: ID → status tags (see docs/spec.md, "How to read an entry")
SPEC_STATUS: dict[str, tuple[str, ...]] = {spec_id: status for spec_id, _, status in ENTRIES}


def entry_link(spec_id: str, base: str = "docs/spec.md") -> str:
    """Where the entry of ``spec_id`` is: ``base#t1`` (the heading anchor on the site and on forges)."""
    if spec_id not in SPEC_IDS:
        raise ValueError(f"spec_id must be a SPEC ID such as T1 or L10; got {spec_id!r}")
    return f"{base}#{spec_id.lower()}"


def spec(*ids: str) -> Callable[[F], F]:
    """Tag a test, property or proof with the SPEC IDs it covers (read by ``verified-ta coverage``)."""
    unknown = [i for i in ids if i not in SPEC_IDS]
    if not ids or unknown:
        raise ValueError(f"spec() needs known SPEC IDs; unknown: {unknown or 'none given'}")

    def decorate(fn: F) -> F:
        fn.spec_ids = tuple(getattr(fn, "spec_ids", ())) + ids  # type: ignore[attr-defined]
        try:
            import pytest
        except ImportError:  # proofs run outside pytest too
            return fn
        return pytest.mark.spec(*ids)(fn)

    return decorate


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m verified_ta.spec [SPEC_MD [OUT]]``: regenerate verified_ta/spec_table.py (or OUT) from the spec."""
    args = list(sys.argv[1:] if argv is None else argv)
    source = Path(args[0]) if args else Path(__file__).resolve().parents[1] / "docs" / "spec.md"
    target = Path(args[1]) if len(args) > 1 else Path(__file__).with_name("spec_table.py")
    entries = parse_spec(source.read_text(encoding="utf-8"))
    target.write_text(table_source(entries), encoding="utf-8")
    print(f"{target}: {len(entries)} entries from {source}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
