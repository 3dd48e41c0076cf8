"""The ``dmu-migrate`` command line: options in, library call, Rich output.

Every user error is a DmuError: printed as one line on stderr, exit code by
class (see errors.py). Results go to stdout (``--json`` for scripts); progress
goes to stderr so that it never mixes with JSON. The library never prints.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from dmu_migrate import __version__
from dmu_migrate.cli import (
    admin,
    backfill,
    completion,
    evaluation,
    logs,
    migration,
    sampling,
    training,
)
from dmu_migrate.cli.exits import OneLineGroup

app = typer.Typer(
    help="Upgrade the embedding model behind a vector database without backfilling.",
    no_args_is_help=True,
    # Usage errors and crashes end in one line too, and --metrics-file is written on them.
    cls=OneLineGroup,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Help is printed as written: "[o ; psi(o)]" or "[train]" are text, not Rich markup.
    rich_markup_mode=None,
)


def _version(show: bool) -> None:
    if show:
        typer.echo(f"dmu-migrate {__version__}")
        raise typer.Exit()


@app.callback()
def configure(
    verbose: logs.Verbose = 0,
    quiet: logs.Quiet = False,
    log_format: logs.LogFormat = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_version, is_eager=True
        ),
    ] = False,
) -> None:
    """Upgrade the embedding model behind a vector database without backfilling."""
    logs.GLOBAL.update(verbose=verbose, quiet=quiet, log_format=log_format)


app.command()(training.train)
app.command()(training.transition)
app.command()(training.calibrate)
app.command()(evaluation.evaluate)
app.command()(migration.evolve)
app.command()(admin.verify)
app.command()(admin.status)
app.command()(admin.history)
app.command()(admin.rollback)
app.command()(admin.prune)
app.command()(training.demo)
app.command("plan-backfill")(backfill.plan_backfill)
app.command()(backfill.backfill)
app.command()(sampling.sample)
app.command()(completion.completion)
completion.enable()

# Last, so that every command registered above also takes -v/-q/--log-format after its name.
for _command in app.registered_commands:
    _command.callback = logs.with_output_flags(_command.callback)  # type: ignore[arg-type]


def main() -> None:
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    app()
