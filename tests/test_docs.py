"""The documentation's examples: every `vqtool` line in README.md and docs/ is a valid invocation of the current CLI,
every --help example too, and the shell blocks of the README and the getting-started guide run as written.

A shell block (```bash) is run unless the line before it is ``<!-- not run: reason -->``: what needs external data,
weights, a network or other machines says so where it stands, rather than being guessed here.
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
GETTING_STARTED = ROOT / "docs" / "getting-started.md"
NOT_RUN = re.compile(r"<!--\s*not run:\s*(.+?)\s*-->")


def doc_pages() -> list[Path]:
    return [README, *sorted((ROOT / "docs").rglob("*.md"))]


def shell_blocks(page: Path) -> list[tuple[int, str, str | None]]:
    """(line number, code, reason it is not run or None) of each ```bash block of ``page``."""
    lines = page.read_text().splitlines()
    blocks, index = [], 0
    while index < len(lines):
        if lines[index].strip() in ("```bash", "```sh", "```console"):
            end = next(i for i in range(index + 1, len(lines)) if lines[i].strip() == "```")
            marker = NOT_RUN.search(lines[index - 1]) if index else None
            blocks.append((index + 1, "\n".join(lines[index + 1:end]), marker.group(1) if marker else None))
            index = end
        index += 1
    return blocks


def doc_examples() -> list[tuple[str, str]]:
    """(page, command line) for each line of a shell block that starts with ``vqtool``, on every page."""
    return [(page.relative_to(ROOT).as_posix(), line.strip()) for page in doc_pages()
            for _, code, _ in shell_blocks(page) for line in code.splitlines() if line.strip().startswith("vqtool ")]


def help_examples() -> list[tuple[str, str]]:
    """(command path, example) for every example line in every command's help."""
    from vqtool.cli import cli

    found = []
    for path, command in walk(cli, ["vqtool"]):
        lines = (command.help or "").splitlines()
        if "Examples:" in (command.help or ""):
            start = next(i for i, line in enumerate(lines) if line.strip() == "Examples:")
            found += [(" ".join(path), line.strip()) for line in lines[start + 1:] if "vqtool " in line]
    return found


def walk(group, path):
    context = click.Context(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        yield [*path, name], command
        if isinstance(command, click.Group):
            yield from walk(command, [*path, name])


def check_invocation(line: str) -> None:
    """Parse ``line`` as vqtool would, without running it; a path that does not exist here is fine."""
    from vqtool.cli import cli

    line = line[line.index("vqtool "):].split(" | ")[0]  # the vqtool part of a pipeline
    args = shlex.split(line, comments=True)
    assert args[0] == "vqtool", line
    args = args[1:]
    command, context = cli, None
    while True:
        try:
            context = command.make_context(command.name or "vqtool", list(args), parent=context)
        except click.UsageError as error:
            if "does not exist" in str(error):
                return
            pytest.fail(f"{line}: {error}")
        if not isinstance(command, click.Group):
            return
        remaining = [*getattr(context, "_protected_args", []), *context.args]  # the subcommand and its args
        name, command, args = command.resolve_command(context, remaining)
        assert command is not None, f"{line}: no command {name}"


def test_the_docs_have_examples_of_every_command():
    from vqtool.cli import COMMANDS

    used = {shlex.split(line, comments=True)[1] for _, line in doc_examples()}
    assert set(COMMANDS) <= used, set(COMMANDS) - used


@pytest.mark.parametrize("page, line", doc_examples())
def test_doc_examples_parse(page, line):
    check_invocation(line)


def test_every_command_has_a_summary_and_examples():
    from vqtool.cli import cli

    for path, command in walk(cli, ["vqtool"]):
        assert command.get_short_help_str(limit=200).strip(), path
        assert "Examples:" in (command.help or ""), f"{' '.join(path)} --help has no examples"


@pytest.mark.parametrize("path, line", help_examples())
def test_help_examples_parse(path, line):
    check_invocation(line)


# Guides written in other branches (issues 25, 27 and 28), linked from the README already; they arrive at the merge.
ARRIVING_AT_MERGE = {"docs/guides/inspect.md", "docs/guides/tuning.md", "docs/guides/multilabel.md"}


def anchors(page: Path) -> set[str]:
    """The ids MkDocs' toc extension gives the headings of ``page`` (lower case, punctuation dropped, - for spaces)."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), flags=re.M)
    return {re.sub(r"[\s-]+", "-", re.sub(r"[^\w\s-]", "", heading.lower())).strip("-") for heading in headings}


def test_the_readme_links_lead_to_pages_and_headings():
    links = re.findall(r"\]\(([^)\s]+)\)", README.read_text())
    assert len(links) > 20
    for link in links:
        target, _, anchor = link.partition("#")
        if "://" in target or not target:
            continue
        if target in ARRIVING_AT_MERGE and not (ROOT / target).exists():
            continue
        assert (ROOT / target).exists(), link
        if anchor:
            assert anchor in anchors(ROOT / target), link


def test_blocks_marked_not_run_are_found(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n<!-- not run: needs photos -->\n```bash\nvqtool train ./photos\n```\n\n```bash\nvqtool runs\n```\n")
    assert shell_blocks(page) == [(3, "vqtool train ./photos", "needs photos"), (7, "vqtool runs", None)]


def run_blocks(page: Path, folder: Path) -> None:
    """Each runnable shell block of ``page`` in turn, in ``folder``, with this environment's vqtool (the worktree's
    code first on PYTHONPATH); a failing block fails the test with its output."""
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                   "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "COLUMNS": "100"}
    runnable = [(number, code) for number, code, reason in shell_blocks(page) if reason is None]
    assert runnable, f"{page.name} has no shell block to run"
    for number, code in runnable:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=folder, env=environment,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{page.name}:{number} exit {done.returncode}\n{code}\n{done.stderr[-3000:]}"


@pytest.mark.slow
def test_the_readme_examples_run(tmp_path):
    run_blocks(README, tmp_path)


@pytest.mark.slow
def test_the_getting_started_examples_run(tmp_path):
    run_blocks(GETTING_STARTED, tmp_path)
