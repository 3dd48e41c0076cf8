"""Shared pieces of the command line: consoles, error mapping, progress, option types."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from dmu_migrate.errors import DmuError, InputError, NothingToDo

VERBOSE = 0  # -v count, set by the app's callback

out = Console()
err = Console(stderr=True)

LabelCol = Annotated[str, typer.Option(help="Column with the identity / class label.")]
OldCol = Annotated[str, typer.Option(help="Column with the stored old-model embedding.")]
XCol = Annotated[str, typer.Option(help="Column with the new model's input features.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn a DmuError into one line on stderr and its exit code, with no traceback."""
    try:
        yield
    except NothingToDo as exc:
        out.print(str(exc), highlight=False, soft_wrap=True)
        raise typer.Exit(0) from None
    except DmuError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except Exception as exc:
        from dmu_migrate.evolve.retry import client_error

        mapped = client_error(exc, "the store call")
        if mapped is None:
            raise  # a bug: keep the traceback
        err.print(f"[bold red]error:[/] {mapped}", highlight=False, soft_wrap=True)
        raise typer.Exit(mapped.exit_code) from None


def check_range(flag: str, value: float, low: float, high: float, why: str = "") -> None:
    """A numeric flag outside its range: one line naming the flag, the range and the value."""
    if not low <= value <= high:
        raise InputError(
            f"{flag} must be between {low:g} and {high:g}, got {value:g}"
            + (f" ({why})" if why else "")
        )


def needs_train_extra() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise InputError(
            "this command needs torch; install the training extra: pip install 'dmu-migrate[train]'"
        ) from None


def progress() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
        # Bars are for people at a terminal; cron logs get -v lines instead.
        disable=not err.is_terminal,
    )


def epoch_logger(bar: Progress, task: Any) -> Any:
    def on_epoch(epoch: int, entry: dict[str, float]) -> None:
        info = " ".join(f"{k}={entry[k]:.3f}" for k in ("loss", "new", "sbc", "fa"))
        bar.update(task, completed=epoch, info=info)

    return on_epoch


def scores_table(report: Any, title: str) -> Table:
    table = Table(title=title)
    table.add_column("setting")
    metrics = list(next(iter(report.scores.values())).as_dict())
    for metric in metrics:
        table.add_column(metric, justify="right")
    for setting, scores in report.scores.items():
        table.add_row(setting, *(f"{v:.4f}" for v in scores.as_dict().values()))
    return table


def quiet_client_logs() -> None:
    """Silence client libraries' own error logs unless -v was given.

    pymilvus configures its loggers when first imported (so this runs after a
    store is opened) and logs a traceback for every failed call, which this
    tool already reports as one line.
    """
    if VERBOSE:
        return
    for name in ("pymilvus", "milvus_lite", "grpc"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
