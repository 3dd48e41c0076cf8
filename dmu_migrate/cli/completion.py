"""completion: the shell script that completes dmu-migrate's commands and flags.

Typer answers completion requests itself (the script calls the program back with
``_DMU_MIGRATE_COMPLETE`` set); this command only prints the script for a named
shell. A command rather than Typer's ``--install-completion``: that one guesses the
shell from the parent process and edits the user's rc files, neither of which a
Dockerfile, a CI image or a dotfiles repository wants.
"""

from __future__ import annotations

from typing import Annotated

import typer

from dmu_migrate.cli.common import user_errors
from dmu_migrate.errors import InputError

PROGRAM = "dmu-migrate"  # the console script of pyproject.toml, whatever argv[0] is
COMPLETE_VAR = "_DMU_MIGRATE_COMPLETE"  # the variable Typer reads for that program name
SHELLS = ("bash", "zsh", "fish", "powershell")


def completion(
    shell: Annotated[str, typer.Argument(help=f"The shell: {', '.join(SHELLS)}.")],
) -> None:
    """Print the shell completion script of dmu-migrate for bash, zsh, fish or powershell.

    Load it in the shell's startup file, e.g. in ~/.bashrc:
    eval "$(dmu-migrate completion bash)"

    Example: dmu-migrate completion bash > ~/.local/share/bash-completion/completions/dmu-migrate
    """
    with user_errors():
        from typer.completion import get_completion_script

        if shell not in SHELLS:
            raise InputError(f"unknown shell '{shell}'; use one of {', '.join(SHELLS)}")
        # Byte for byte: a console would wrap long lines (fish's is one) and read ":x:" codes.
        typer.echo(get_completion_script(prog_name=PROGRAM, complete_var=COMPLETE_VAR, shell=shell))


def enable() -> None:
    """Register Typer's completion classes, whose answers match the script printed above.

    ``add_completion=False`` (no --install-completion) skips this registration, and
    click's own classes answer in another format ("plain,evolve") that the script
    does not read.
    """
    from typer.completion import completion_init

    completion_init()
