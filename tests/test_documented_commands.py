"""Every dmu-migrate command the docs and examples show parses against the real CLI.

A renamed flag, a removed choice or an option typed after the wrong command
(``evolve --verbose``) fails here instead of in a user's shell. The commands
(tests/doc_commands.py) are read from the fenced code blocks of the README and
docs/, and from the example scripts; shell arrays (``"${COMMON[@]}"``) are
expanded from their definitions.
Parsing validates names, choices and types without running anything; the cron
examples and the demo also run for real (test_lifecycle.py, test_cli.py), and so
does every command on a Milvus Lite file (test_documented_runs.py).
"""

from __future__ import annotations

import pytest
import typer
from doc_commands import COMMANDS

from dmu_migrate.cli import app

pytestmark = pytest.mark.timeout(120)


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
