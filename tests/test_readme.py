"""The Python examples of the README and of the documentation pages (docs/**/*.md) run as written.

Every fenced ```python block runs, each in a fresh namespace; a block that is not meant to run is fenced as
``text`` or ``console``.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]


def python_blocks(path: Path) -> list[str]:
    """The bodies of the ```python fenced blocks of a markdown file, in order."""
    blocks = re.findall(r"^([ \t]*)```python\n(.*?)^\1```", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    return [textwrap.dedent(body) for _, body in blocks]


EXAMPLES = [(page, i, code) for page in PAGES for i, code in enumerate(python_blocks(page))]


@pytest.mark.parametrize("page, index, code", EXAMPLES,
                         ids=[f"{p.relative_to(ROOT).as_posix()}-block{i}" for p, i, _ in EXAMPLES])
def test_example_runs(page, index, code):
    exec(compile(code, f"{page.relative_to(ROOT).as_posix()} (python block {index})", "exec"), {"__name__": "example"})


def test_readme_has_examples_and_two_setup_lines():
    text = README.read_text(encoding="utf-8")
    assert python_blocks(README)
    setup = text.split("<!-- setup:begin -->", 1)[1].split("<!-- setup:end -->", 1)[0]
    assert len([line for line in setup.splitlines() if line.startswith("python3 ")]) == 2


def test_docs_examples_are_collected(tmp_path):
    """The documentation's own examples are among the tests; fences indented in a list item are found too."""
    assert any(page.parent.name == "docs" for page, _, _ in EXAMPLES)
    page = tmp_path / "page.md"
    page.write_text("text\n```python\nx = 1\n```\n\n```text\nnot run\n```\n- item\n\n"
                    "    ```python\n    if x:\n        y = 2\n    ```\n")
    assert python_blocks(page) == ["x = 1\n", "if x:\n    y = 2\n"]
