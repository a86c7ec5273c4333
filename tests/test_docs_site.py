"""The documentation site: every command's generated reference page lists exactly the options its --help lists, and
`mkdocs build --strict` (what `make docs` runs) passes."""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]


def reference_hook():
    """docs/hooks/reference.py, the generator MkDocs runs (a file of the site, not a package)."""
    name = "vqtool_docs_reference"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / "hooks" / "reference.py")
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def every_command_path() -> list[list[str]]:
    """Every command below the root, nested ones included, as the root group lists them (no list kept here)."""
    hook = reference_hook()
    return [doc.path for doc in hook.walk(hook.root_command(), ["vqtool"]) if len(doc.path) > 1]


def squeeze(text: str) -> str:
    """Text without its whitespace: --help wraps lines (and hyphenated words) to the terminal, the page does not."""
    return "".join(text.split())


def help_options(path: list[str]) -> list[tuple[str, str]]:
    """(options, help) of each row of the Options section that ``vqtool ... --help`` prints."""
    from vqtool.cli import cli

    result = CliRunner().invoke(cli, [*path[1:], "--help"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    section = result.output.split("\nOptions:\n", 1)[1].split("\nCommands:\n", 1)[0]
    rows = []
    for line in section.splitlines():
        if re.match(r"  \S", line):  # a new row: the options, then (after 2+ spaces) the start of its help
            options, _, help_text = line.strip().partition("  ")
            rows.append([options.strip(), help_text])
        elif line.strip():
            rows[-1][1] += " " + line
    return [(options, squeeze(help_text)) for options, help_text in rows]


def page_options(page: str, path: list[str]) -> list[tuple[str, str]]:
    """(options, help) of the option table in the section of ``path`` on its generated page, unescaped."""
    anchor = "{#" + "-".join(path[1:]) + "}"
    section = page.split(anchor, 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| `(.+?)` \| (.*) \|$", section, flags=re.M)
    unescape = lambda text: re.sub(r"\\(.)", r"\1", text).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")  # noqa: E731
    return [(options, squeeze(unescape(help_text))) for options, help_text in rows]


@pytest.mark.parametrize("path", every_command_path(), ids=lambda path: " ".join(path[1:]))
def test_every_command_has_a_reference_page_with_its_help_options(path):
    page = reference_hook().command_page(path[1])
    options = page_options(page, path)
    assert options, f"no option table for {' '.join(path)}"
    assert options == help_options(path)


def test_the_reference_index_links_every_command():
    hook = reference_hook()
    index = hook.index_page()
    for name in hook.top_level_commands():
        assert f"]({name}.md)" in index, name


def test_a_new_command_gets_its_page_without_an_edit(monkeypatch):
    """The pages come from the root group's command map: a command added there is listed and documented."""
    from vqtool import cli

    monkeypatch.setitem(cli.COMMANDS, "zz-example", "vqtool.commands.listing:models")
    hook = reference_hook()
    assert "zz-example" in hook.top_level_commands()
    assert "# vqtool zz-example {#zz-example}" in hook.command_page("zz-example")


def build_site(tmp_path) -> subprocess.CompletedProcess:
    mkdocs = shutil.which("mkdocs", path=os.path.dirname(sys.executable)) or shutil.which("mkdocs")
    environment = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                   "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT,
                          env=environment, capture_output=True, text=True, timeout=300)


def test_the_site_builds_strictly_with_a_page_per_command(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    built = build_site(tmp_path)
    assert built.returncode == 0, built.stderr[-3000:]
    assert "WARNING" not in built.stderr, built.stderr[-3000:]
    for name in reference_hook().top_level_commands():
        assert (tmp_path / "site" / "reference" / f"{name}.html").is_file(), name
    architecture = (tmp_path / "site" / "architecture.html").read_text()
    assert "How vqtool is built" in architecture  # ARCHITECTURE.md, included into the contributors' page
