"""The documentation site: generated pages cover every command, module and figure; the nav lists every page;
nothing in the project points outside it (issue 14). The strict build itself: `mkdocs build --strict` in CI."""

from __future__ import annotations

import importlib.util
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import verified_ta
from verified_ta.cli import ExitCode, app

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _load_hooks():
    spec = importlib.util.spec_from_file_location("site_hooks", DOCS / "site_hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hooks = _load_hooks()


def _command_names() -> list[str]:
    return [info.name or info.callback.__name__.replace("_", "-") for info in app.registered_commands]


def test_every_placeholder_of_every_page_is_generated():
    pages = sorted(DOCS.rglob("*.md"))
    used = {m for page in pages for m in hooks.PLACEHOLDER.findall(page.read_text(encoding="utf-8"))}
    assert used == set(hooks.GENERATORS), "each generator is used by a page, and each page's placeholder exists"
    with pytest.raises(ValueError, match="unknown placeholder <!-- generated:nope -->"):
        hooks.expand("text\n<!-- generated:nope -->\n")


def test_cli_reference_covers_every_command_with_usage_exit_codes_and_schema():
    text = hooks.cli_reference()
    names = _command_names()
    assert len(names) >= 5 and re.findall(r"^## `verified-ta (\S+)`$", text, re.M) == names
    for name in names:
        section = text.split(f"## `verified-ta {name}`", 1)[1].split("\n## ", 1)[0]
        assert f"**Usage:** `verified-ta {name} " in section and "`--help`" in section
        assert "**Exit codes**" in section and "**JSON output**" in section
    coverage = text.split("## `verified-ta coverage`", 1)[1].split("\n## ", 1)[0]
    assert f"| {int(ExitCode.FAILED)} | `FAILED` |" in coverage and '"title": "verified-ta coverage"' in coverage
    assert "`--fail-under <int>`" in coverage


def test_exit_code_table_lists_every_code():
    text = hooks.exit_codes()
    assert all(f"| {int(c)} | `{c.name}` |" in text for c in ExitCode) and "2 is click's usage-error code" in text


def test_cli_reference_says_when_a_command_declares_nothing(monkeypatch):
    import verified_ta.cli.coverage as command

    monkeypatch.delattr(command, "EXIT_CODES")
    monkeypatch.delattr(command, "JSON_SCHEMA")
    coverage = hooks.cli_reference().split("## `verified-ta coverage`", 1)[1].split("\n## ", 1)[0]
    assert "does not declare its exit codes" in coverage and "does not declare the JSON schema" in coverage


def test_every_module_is_documented_exactly_once():
    shown = [m for page in DOCS.rglob("*.md") if page.name != "modules.md"
             for m in re.findall(r"^::: (\S+)", page.read_text(encoding="utf-8"), re.M)]
    assert all(page.parent.name == "api" for page in DOCS.rglob("*.md") if "\n::: " in page.read_text(encoding="utf-8")
               and page.name != "modules.md"), "mkdocstrings blocks live on docs/api/ pages (the modules page skips them)"
    generated = re.findall(r"^::: (\S+)", hooks.module_reference(), re.M)
    modules = {m.name for m in pkgutil.walk_packages(verified_ta.__path__, "verified_ta.")
               if not any(p.startswith("_") for p in m.name.split("."))}
    assert sorted(shown + generated) == sorted(set(shown + generated)), "an object rendered twice has two addresses"
    assert modules <= set(shown + generated)


def test_results_show_the_table_and_every_figure(monkeypatch, tmp_path):
    (tmp_path / "RESULTS.md").write_text("## Fast path\n\n| n | s |\n|---|---|\n| 1 | 2 |\n\n![shown](a.png)\n")
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(b"\x89PNG")
    monkeypatch.setattr(hooks, "BENCHMARKS", tmp_path)
    text = hooks.results()
    assert text.startswith("## Fast path") and "| 1 | 2 |" in text
    assert "![b](b.png)" in text and text.count("a.png") == 1, "b.png added once, a.png not repeated"
    assert "![bench_fast](bench_fast.png)" in _load_hooks().results()


def test_readme_setup_is_the_readme_block():
    block = hooks.readme_setup()
    assert block.startswith("```bash") and len([x for x in block.splitlines() if x.startswith("python3 ")]) == 2


def test_nav_lists_every_page():
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = set(re.findall(r"^\s+- (?:[^:\n]+: )?(\S+\.md)$", config, re.M))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert pages == nav, f"pages without a nav line: {sorted(pages - nav)}; without a page: {sorted(nav - pages)}"


def test_nothing_refers_to_a_path_outside_the_project():
    """Issue 14: the spec ships with the project; no tracked file points at notes outside the repository."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    offenders = set()
    for name in tracked:
        path = ROOT / name
        if path.suffix in {".py", ".md", ".toml", ".yml", ".yaml", ".cfg", ".txt"} or path.name == "run":
            if re.search(r"\.\./shared\b|shared/SPEC\.md", path.read_text(encoding="utf-8", errors="replace")):
                offenders.add(name)
    assert not offenders, sorted(offenders)


@pytest.mark.slow
def test_strict_build_fails_on_a_broken_anchor(tmp_path):
    """The site's own config turns a link to a missing anchor into a failed build (a control build passes).

    Not with ``-q``: mkdocs then drops warnings before ``--strict`` counts them, and the broken build passes."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    for item in ("docs", "benchmarks", "README.md", "mkdocs.yml", "verified_ta", "proofs", "properties", "tests"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / item)

    def build() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                              cwd=tmp_path, capture_output=True, text=True, env={"PYTHONPATH": str(tmp_path),
                                                                              "PATH": "/usr/bin:/bin",
                                                                              "NO_MKDOCS_2_WARNING": "1"})

    control = build()
    assert control.returncode == 0, control.stderr
    page = tmp_path / "docs" / "getting-started.md"
    page.write_text(page.read_text(encoding="utf-8") + "\nSee [P99](spec.md#p99).\n", encoding="utf-8")
    broken = build()
    assert broken.returncode != 0 and "p99" in broken.stderr
