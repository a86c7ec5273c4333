"""The README's and the --help texts' examples are valid invocations of the current CLI."""

import re
import shlex
from pathlib import Path

import click
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_examples() -> list[str]:
    """Command lines in the shell blocks of the README and the guides in docs/ that start with ``vqtool``."""
    texts = [README.read_text(), *(page.read_text() for page in sorted((README.parent / "docs").rglob("*.md")))]
    blocks = re.findall(r"```(?:bash|sh|console)\n(.*?)```", "\n".join(texts), flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip().startswith("vqtool ")]


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


def test_the_readme_has_examples_of_every_command():
    from vqtool.cli import COMMANDS

    examples = readme_examples()
    used = {shlex.split(line, comments=True)[1] for line in examples}
    assert set(COMMANDS) <= used, set(COMMANDS) - used


@pytest.mark.parametrize("line", readme_examples())
def test_readme_examples_parse(line):
    check_invocation(line)


def test_every_command_has_a_summary_and_examples():
    from vqtool.cli import cli

    for path, command in walk(cli, ["vqtool"]):
        assert command.get_short_help_str(limit=200).strip(), path
        assert "Examples:" in (command.help or ""), f"{' '.join(path)} --help has no examples"


@pytest.mark.parametrize("path, line", help_examples())
def test_help_examples_parse(path, line):
    check_invocation(line)
