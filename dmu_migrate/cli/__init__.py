"""The ``dmu-migrate`` command line: options in, library call, Rich output.

Every user error is a DmuError: printed as one line on stderr, exit code by
class (see errors.py). Results go to stdout (``--json`` for scripts); progress
goes to stderr so that it never mixes with JSON. The library never prints.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated

import typer

from dmu_migrate.cli import admin, backfill, common, evaluation, migration, training

app = typer.Typer(
    help="Upgrade the embedding model behind a vector database without backfilling.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def configure(
    verbose: Annotated[
        int,
        typer.Option("--verbose", "-v", count=True, help="Log progress to stderr (-vv: debug)."),
    ] = 0,
) -> None:
    """Upgrade the embedding model behind a vector database without backfilling."""
    common.VERBOSE = verbose
    if verbose:
        level = logging.DEBUG if verbose > 1 else logging.INFO
        logging.basicConfig(
            level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        # Client libraries are chatty at debug level; keep their warnings only.
        for noisy in ("pymilvus", "grpc", "httpx", "httpcore", "faiss", "milvus_lite"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


app.command()(training.train)
app.command()(training.transition)
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


def main() -> None:
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    app()
