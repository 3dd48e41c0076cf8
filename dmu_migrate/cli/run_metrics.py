"""``--metrics-file``: a scheduled run's numbers in Prometheus text format.

node_exporter's textfile collector reads ``*.prom`` files from a directory; a
cron job or CronJob that runs ``evolve --metrics-file DIR/dmu.prom`` is then
visible to Prometheus like any service. The file is written when the command
ends on every path (done, stopped at --max-seconds, error, even a crash) and
replaced atomically (temp file + rename in the same directory), so the
collector never reads half a file. ``dmu_migrate_last_success_timestamp_seconds``
is carried over from the previous file when this run failed, so an alert on
its age fires when runs keep failing, not when they stop reporting.

Only numbers the run measured are written: the result object of the verb
(evolve.pipeline.EvolveResult, evolve.verify.VerifyReport,
evolve.backfill_write.BackfillResult) and the command's own wall time and exit code.
"""

from __future__ import annotations

import functools
import inspect
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from dmu_migrate.cli.common import print_error, user_errors
from dmu_migrate.errors import InputError

PREFIX = "dmu_migrate_"
LAST_SUCCESS = PREFIX + "last_success_timestamp_seconds"
ERROR = "error"
# Exit codes after which the migration made progress as asked: 0, and 75 (stopped at
# --max-seconds, run again). A long migration under --max-seconds exits 75 for days.
SUCCESS_CODES = (0, 75)

MetricsFile = Annotated[
    Path | None,
    typer.Option(
        help="Write this run's numbers here in Prometheus text format when it ends, also on "
        "failure (for node_exporter's textfile collector).",
        show_default=False,
    ),
]


@dataclass
class Run:
    """What a command hands to the metrics file: its outcome and its measured numbers."""

    outcome: str | None = None
    labels: dict[str, str] = field(default_factory=dict)  # command and its label options
    values: list[tuple[str, str, str, dict[str, str], float]] = field(default_factory=list)

    def add(self, name: str, kind: str, help: str, value: float, **labels: str) -> None:
        self.values.append((PREFIX + name, kind, help, labels, float(value)))


_ACTIVE: list[Run] = []  # the Run of the command now running, when it has --metrics-file
# Per command with --metrics-file, its outcomes; and the files this invocation's command
# answered for (written, or refused as unwritable), so that a failure before or around the
# command (cli/exits.py) writes one where none was, and never says twice that it cannot.
OUTCOMES: dict[str, tuple[str, ...]] = {}
WRITTEN: set[Path] = set()


def reported(
    command: str, outcomes: tuple[str, ...], *label_options: str
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command ``--metrics-file``; ``label_options`` name options that label its numbers.

    The command body stays as it is but for one call that hands over its result
    (``evolve_numbers``/``verify_numbers``); the file is written however it ends.
    """

    OUTCOMES[command] = outcomes

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(fn, eval_str=True)
        option = inspect.Parameter(
            "metrics_file", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=MetricsFile
        )

        @functools.wraps(fn)
        def run(*args: Any, metrics_file: Path | None = None, **kwargs: Any) -> Any:
            labels = {k: str(kwargs[k]) for k in label_options if kwargs.get(k) is not None}
            with recorded(metrics_file, command, outcomes, **labels) as active:
                _ACTIVE.append(active)
                try:
                    return fn(*args, **kwargs)
                finally:
                    _ACTIVE.remove(active)

        run.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[*signature.parameters.values(), option]
        )
        return run

    return wrap


def active() -> Run:
    """The running command's Run; a throwaway one when no metrics file was asked for."""
    return _ACTIVE[-1] if _ACTIVE else Run()


@contextmanager
def recorded(
    path: Path | None, command: str, outcomes: tuple[str, ...], **labels: str
) -> Iterator[Run]:
    """Yield a Run for the command to fill; write ``path`` however the command ends."""
    run = Run()
    start, code = time.monotonic(), 0
    if path is not None:
        WRITTEN.add(path)  # this command answers for the file, refused or written

        with user_errors():  # refused before the run, not after hours of work
            _check_writable(path)
    try:
        yield run
    except typer.Exit as exc:
        code = exc.exit_code
        raise
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        raise
    except KeyboardInterrupt:
        code = 130  # what the shell reports for an interrupt
        raise
    except BaseException:
        code = 1  # a bug: still reported, as an error
        raise
    finally:
        if path is not None:
            run.labels = {"command": command, **labels}
            _write_or_say(path, run, code, time.monotonic() - start, outcomes)


def _write_or_say(
    path: Path, run: Run, code: int, seconds: float, outcomes: tuple[str, ...]
) -> None:
    """Write the file; if the directory went away meanwhile, one error line (exit 2 if none yet).

    The run's own work is done by now and its result already printed: the line says
    so, so that an operator fixes the path instead of re-running a migration.
    """
    try:
        write(path, run, code, seconds, outcomes)
    except (InputError, OSError) as exc:
        message = str(exc) if isinstance(exc, InputError) else _unwritable(path, exc)
        print_error(f"{message} (the run itself ended with exit code {code}; its work is kept)")
        if code == 0:
            raise typer.Exit(2) from None


def _unwritable(path: Path, exc: OSError) -> str:
    return (
        f"--metrics-file {path}: cannot write in {path.parent} ({exc.strerror or exc}); "
        "give a path in a writable directory"
    )


def _check_writable(path: Path) -> None:
    directory = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise InputError(
            f"--metrics-file {path} is a directory; give a file path such as {path / 'dmu-migrate.prom'}"
        )
    if not directory.is_dir() or not os.access(directory, os.W_OK | os.X_OK):
        raise InputError(
            f"--metrics-file {path}: directory {directory} does not exist or is not writable; "
            "create it or give a path in a writable directory"
        )


def write(path: Path, run: Run, code: int, seconds: float, outcomes: tuple[str, ...]) -> None:
    now = time.time()
    success = code in SUCCESS_CODES
    outcome = run.outcome or (ERROR if not success else "nothing to do")
    base = run.labels
    lines: list[str] = []
    seen: set[str] = set()

    def sample(name: str, kind: str, help: str, labels: dict[str, str], value: float) -> None:
        if name not in seen:
            seen.add(name)
            lines.append(f"# HELP {name} {help}")
            lines.append(f"# TYPE {name} {kind}")
        lines.append(f"{name}{_labels(labels)} {_number(value)}")

    for name in (*outcomes, ERROR, "nothing to do"):
        sample(
            PREFIX + "run_outcome",
            "gauge",
            "1 for how the last run ended, 0 for the other outcomes.",
            {**base, "outcome": name},
            1.0 if name == outcome else 0.0,
        )
    sample(PREFIX + "run_exit_code", "gauge", "Exit code of the last run.", base, code)
    sample(PREFIX + "run_duration_seconds", "gauge", "Wall time of the last run.", base, seconds)
    sample(PREFIX + "run_timestamp_seconds", "gauge", "When the last run ended.", base, now)
    last = now if success else previous(path, LAST_SUCCESS)
    if last is not None:
        sample(
            LAST_SUCCESS,
            "gauge",
            "When a run last ended with exit code 0 or 75 (kept across failed runs).",
            base,
            last,
        )
    for name, kind, help, labels, value in run.values:
        sample(name, kind, help, {**base, **labels}, value)
    _replace(path, "\n".join(lines) + "\n")


def previous(path: Path, name: str) -> float | None:
    """The first sample of ``name`` in the file an earlier run left, if any."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            try:
                return float(line.rsplit(" ", 1)[1])
            except ValueError:
                return None
    return None


def _replace(path: Path, text: str) -> None:
    """Write-then-rename in the target directory: a reader sees the old file or the new one."""
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise InputError(_unwritable(path, exc)) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the collector may run as another user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}"


def _escape(value: str) -> str:
    # The text format escapes exactly these three in label values.
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(value)


def evolve_numbers(result: Any) -> None:
    """The numbers an EvolveResult holds, under the collection and target they are about."""
    run = active()
    run.outcome = result.outcome
    where = {"target": result.target}
    for name, value, help in (
        ("rows_written", result.rows_written, "Rows evolved and written by the last run."),
        ("rows_caught_up", result.caught_up, "Rows found missing at the target and written."),
        ("rows_updated", result.updated, "Rows evolved again because their source changed."),
        ("rows_deleted", result.deleted, "Target rows deleted because their source is gone."),
        ("retries", result.retries, "Steps retried after passing store failures."),
    ):
        run.add(f"run_{name}_total", "counter", help, value, **where)
    run.add(
        "migration_rows_done", "gauge", "Rows at the target version.", result.rows_done, **where
    )
    run.add("migration_rows_total", "gauge", "Rows in the source.", result.rows_total, **where)
    run.add(
        "run_evolve_seconds", "gauge", "Seconds the evolve itself took.", result.seconds, **where
    )
    for phase, seconds in result.phases.items():
        run.add(
            "run_phase_seconds",
            "gauge",
            "Seconds per step of the last run.",
            seconds,
            **where,
            phase=phase,
        )
    if result.verify is not None:
        verify_numbers(result.verify, **where)


def verify_result(report: Any, target: str) -> None:
    """The verify command's report: it passed (a failure raises before this)."""
    active().outcome = "done"
    active().add(
        "verify_source_rows", "gauge", "Rows in the source.", report.source_rows, target=target
    )
    verify_numbers(report, target=target)


def verify_numbers(report: Any, **where: str) -> None:
    """A VerifyReport's counts (also inside an evolve's result)."""
    run, v = active(), report
    run.add("verify_target_rows", "gauge", "Rows found at the target.", v.target_rows, **where)
    run.add(
        "verify_missing_rows", "gauge", "Source rows missing at the target.", v.missing, **where
    )
    run.add("verify_sampled_rows", "gauge", "Vectors recomputed and compared.", v.sampled, **where)
    run.add(
        "verify_max_abs_error",
        "gauge",
        "Largest difference in the sample.",
        v.max_abs_error,
        **where,
    )


def backfill_numbers(result: Any) -> None:
    """A BackfillResult's counts; the same input already written is 'nothing to do'."""
    run, where = active(), {"target": result.target}
    if not result.up_to_date:
        run.outcome = "done"
    run.add(
        "run_rows_written_total",
        "counter",
        "Native rows written by the last run.",
        result.rows_written,
        **where,
    )
    run.add(
        "backfill_rows_done",
        "gauge",
        "Rows of the input written so far.",
        result.rows_done,
        **where,
    )
    run.add("backfill_rows_total", "gauge", "Rows in the input.", result.rows_total, **where)
    run.add(
        "run_backfill_seconds",
        "gauge",
        "Seconds the backfill itself took.",
        result.seconds,
        **where,
    )
