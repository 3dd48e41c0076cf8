"""Every dmu-migrate command the docs and examples show parses against the real CLI.

A renamed flag, a removed choice or an option typed after the wrong command
(``evolve --verbose``) fails here instead of in a user's shell. The commands are
read from the fenced code blocks of the README and docs/, and from the example
scripts; shell arrays (``"${COMMON[@]}"``) are expanded from their definitions.
Parsing validates names, choices and types without running anything; the cron
examples and the demo also run for real (test_lifecycle.py, test_cli.py), and so
does every command on a Milvus Lite file (test_documented_runs.py).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from dmu_migrate.cli import app

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(120)

FENCE = re.compile(r"^```(\w*)\s*$")
ARRAY = re.compile(r"^\s*(\w+)=\((.*)\)\s*$")


def _logical_lines(lines: list[str]) -> list[str]:
    """Join backslash continuations into one line each."""
    out: list[str] = []
    pending = ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
        else:
            out.append(pending + line)
            pending = ""
    return out


def _code_lines(path: Path) -> list[str]:
    """Shell lines of a script, or of a Markdown page's fenced shell blocks."""
    text = path.read_text().splitlines()
    if path.suffix != ".md":
        return _logical_lines(text)
    lines: list[str] = []
    block: list[str] | None = None
    for line in text:
        fence = FENCE.match(line.strip())
        if fence and block is None:
            block = [] if fence.group(1) in ("", "bash", "sh", "shell", "console") else None
            if block is None:  # another language: skip to its closing fence
                block = ["<skip>"]
        elif fence:
            if block and block[0] != "<skip>":
                lines += _logical_lines(block)
            block = None
        elif block is not None:
            block.append(line)
    return lines


def _arguments(line: str, arrays: dict[str, list[str]]) -> list[str] | None:
    """The arguments after the dmu-migrate program in one shell line, or None."""
    line = line.strip().removeprefix("$ ")
    if "dmu-migrate" not in line and "-m dmu_migrate" not in line:
        return None
    for name, items in arrays.items():
        line = line.replace(f'"${{{name}[@]}}"', " ".join(shlex.quote(i) for i in items))
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:
        return None
    for cut in ("|", ">>", ">", "&&", ";", "2>&1"):
        if cut in tokens:
            tokens = tokens[: tokens.index(cut)]
    if "..." in tokens:  # an abbreviation ("evolve ... --shards 64"), not a command
        return None
    # Synopsis brackets mark optional flags: check them as if typed.
    tokens = [t.removeprefix("[").removesuffix("]") for t in tokens]
    for i, token in enumerate(tokens):
        program = token.rstrip(")") in ("dmu-migrate", "$(which dmu-migrate")
        module = token == "dmu_migrate" and i and tokens[i - 1] == "-m"
        if program or module:
            rest = tokens[i + 1 :]
            # "docker build -t dmu-migrate ." names an image; the program takes a command.
            return rest if rest and not rest[0].startswith((".", "/")) else None
    return None


def documented_commands() -> list[tuple[str, list[str]]]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    files += sorted((ROOT / "examples").rglob("*.md")) + sorted((ROOT / "examples").rglob("*.sh"))
    found = []
    for path in files:
        lines = _code_lines(path)
        arrays = {}
        for line in lines:
            if match := ARRAY.match(line):
                arrays[match.group(1)] = shlex.split(match.group(2), comments=True)
        for line in lines:
            args = _arguments(line, arrays)
            if args:
                found.append((f"{path.relative_to(ROOT)}: {' '.join(args)[:60]}", args))
    return found


COMMANDS = documented_commands()


def parse(args: list[str]) -> None:
    """Parse like the real program (names, choices, types), without invoking anything.

    Duck-typed: typer ships its own copy of click, whose classes are not public.
    """
    command = typer.main.get_command(app)
    ctx = command.make_context("dmu-migrate", list(args))
    while hasattr(command, "resolve_command"):  # a group: go down to the command
        # The command name is held apart from its arguments (typer's copy of click
        # keeps it in a private attribute).
        rest = [*ctx._protected_args, *ctx.args]
        if not rest:
            return
        name, sub, rest = command.resolve_command(ctx, rest)
        assert sub is not None and name is not None
        command, ctx = sub, sub.make_context(name, rest, parent=ctx)


def usage_error(args: list[str]) -> str | None:
    """The usage error parsing ``args`` raises (click's exit code 2), or None."""
    try:
        parse(args)
    except typer.Exit as done:  # --help, --version
        assert done.exit_code == 0
    except Exception as error:
        if getattr(error, "exit_code", None) == 2 and hasattr(error, "format_message"):
            return str(error.format_message())
        raise
    return None


def test_the_docs_show_every_command() -> None:
    shown = {args[0] for _, args in COMMANDS if not args[0].startswith("-")}
    group = typer.main.get_command(app)
    commands = group.commands  # type: ignore[attr-defined]
    listed = {name for name, cmd in commands.items() if not cmd.hidden}
    assert listed <= shown, listed - shown
    assert len(COMMANDS) >= 30  # the README alone shows more


@pytest.mark.parametrize(("where", "args"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_documented_command_parses(where: str, args: list[str]) -> None:
    error = usage_error(args)
    assert error is None, f"{where}: {error}"


def test_the_check_catches_what_users_hit() -> None:
    """The check itself can fail: a flag after the wrong command, a typo, a bad choice."""
    evolve = ["evolve", "--collection", "faces", "--adapter", "a"]
    assert "--version" in (usage_error([*evolve, "--version"]) or "")  # a global flag only
    assert "--colection" in (usage_error(["evolve", "--colection", "faces"]) or "")
    assert "--epochs" in (
        usage_error(["train", "t.parquet", "--name", "n", "--epochs", "ten"]) or ""
    )
    assert usage_error(["-v", *evolve]) is None
    assert usage_error([*evolve, "--verbose"]) is None  # -v goes before or after the command
