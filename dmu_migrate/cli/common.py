"""Shared pieces of the command line: consoles, error mapping, progress, option types."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from dmu_migrate.cli import logs
from dmu_migrate.cli.logs import err as err  # the consoles live with the output flags
from dmu_migrate.cli.logs import out as out
from dmu_migrate.cli.logs import print_error as print_error
from dmu_migrate.errors import DmuError, InputError, NothingToDo
from dmu_migrate.errors import check_range as check_range  # where the commands import it from

progress_log = logging.getLogger("dmu_migrate.progress")


LabelCol = Annotated[str, typer.Option(help="Column with the identity / class label.")]
OldCol = Annotated[str, typer.Option(help="Column with the stored old-model embedding.")]
XCol = Annotated[str, typer.Option(help="Column with the new model's input features.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
DistractorsOpt = Annotated[
    str,
    typer.Option(
        "--distractors",
        help="Stored old vectors beside the held-out gallery, so the verdict is judged at the "
        "gallery's real size: 'training' (the training table's other rows), 'none', a Parquet "
        "of stored old vectors (as sample writes), or a collection with --distractors-uri.",
    ),
]
DistractorsUri = Annotated[
    str | None,
    typer.Option(help="Store holding the --distractors collection (a Milvus Lite file or URL)."),
]


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn a DmuError into one line on stderr and its exit code, with no traceback."""
    try:
        yield
    except NothingToDo as exc:
        out.print(str(exc), highlight=False, soft_wrap=True)
        raise typer.Exit(0) from None
    except DmuError as exc:
        print_error(str(exc))
        raise typer.Exit(exc.exit_code) from None


def choices(names: tuple[str, ...]) -> str:
    """The metavar of an option that takes one of ``names``: --help shows them, not <str>."""
    return "[" + "|".join(names) + "]"


def say(message: str) -> None:
    """A step of a long command, on stderr beside the bar; -q hides it."""
    if not logs.QUIET:
        err.print(message, highlight=False, soft_wrap=True)


def needs_train_extra() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise InputError(
            "this command needs torch; install the training extra: pip install 'dmu-migrate[train]'"
        ) from None


class _Progress(Progress):
    """A bar at a terminal; elsewhere (cron, CI, a pipe) the same updates as -v log lines.

    A log line at most every LOG_EVERY seconds per task, plus the last one, so
    a long training or migration is never silent in a log file.
    """

    LOG_EVERY = 10.0

    def __init__(self, *columns: Any, logged: bool, **kwargs: Any) -> None:
        super().__init__(*columns, **kwargs)
        self.logged = logged
        self.last_logged: dict[Any, float] = {}

    def update(self, task_id: Any, **kwargs: Any) -> None:
        super().update(task_id, **kwargs)
        if not self.logged:
            return
        task = next(t for t in self.tasks if t.id == task_id)
        now = time.monotonic()
        finished = task.total is not None and task.completed >= task.total
        if not finished and now - self.last_logged.get(task_id, -self.LOG_EVERY) < self.LOG_EVERY:
            return
        self.last_logged[task_id] = now
        total = "?" if task.total is None else f"{task.total:,.0f}"
        info = task.fields.get("info", "")
        rate = task.speed  # None until two updates apart
        progress_log.info(
            "%s: %s/%s %s%s",
            task.description,
            f"{task.completed:,.0f}",
            total,
            info,
            f" ({rate:,.1f}/s)" if rate else "",
            # The same numbers as fields, for --log-format json.
            extra={"task": task.description, "rows": task.completed, "total": task.total}
            | ({"rate": round(rate, 1)} if rate else {}),
        )


def progress() -> Progress:
    at_terminal = err.is_terminal and not logs.QUIET
    return _Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
        disable=not at_terminal,
        logged=not at_terminal,
    )


# What each phase counts (dmu_migrate/evolve/progress.py, PHASES).
UNITS = {
    "split": "ids", "evolve": "rows", "id diff": "ids", "catch-up": "rows", "verify": "ids",
    "native ids": "ids", "score": "rows", "untag": "rows", "tag": "rows",
    "input check": "rows", "backfill": "rows",
}  # fmt: skip


class PhaseBars:
    """One bar per phase of a run (evolve's split, evolve, id diff, catch-up, verify; the
    backfill verbs' phases), each with its ETA, appearing with the phase's first report; the
    library's callback (phase, done, total).

    A phase with no known total shows a pulsing bar and its running count. Off a
    terminal each phase logs its own lines (see _Progress).
    """

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.tasks: dict[str, Any] = {}

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        task = self.tasks.get(phase)
        if task is None:
            task = self.bar.add_task(phase, total=total, info=UNITS.get(phase, ""))
            self.tasks[phase] = task
        self.bar.update(task, completed=done, total=total)

    def summary(self, phase: str, done: int, total: int) -> None:
        """A phase this run had nothing to do in (a resumed or no-op run): its state, once."""
        if phase not in self.tasks:
            self(phase, done, total)


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
