"""How every invocation ends: one line (or one JSON object) for any failure, and the
metrics file written whatever the exit.

Click reports a usage error (an unknown option, a value of the wrong type) as a
usage block plus an "Error:" line, in text whatever ``--log-format`` says, and
before any command runs, so no ``--metrics-file`` is written; an unexpected
exception prints a traceback of dozens of lines, which a log collector splits
into as many records. The group below runs click in its non-standalone mode
and ends each of those itself: a usage error is one line naming the command's
``--help``; a crash is one line naming the exception and where it was raised,
its traceback written to a file the line names (``-vv`` also prints it). The
flags that shape this (``--log-format``, ``--metrics-file``) are read from the
raw arguments, since a usage error means they were never parsed.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from typer import _click
from typer.core import TyperGroup

from dmu_migrate.cli import jsonlog, run_metrics
from dmu_migrate.cli.common import err
from dmu_migrate.errors import DmuError

EXIT_USAGE = 2
EXIT_CRASH = 1
EXIT_INTERRUPTED = 130
PACKAGE = Path(__file__).resolve().parent.parent  # dmu_migrate/


class OneLineGroup(TyperGroup):
    """The app's command group: click's own endings replaced by ``run``'s one line."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:  # a caller that handles the endings itself
            return super().main(
                args, prog_name, complete_var, standalone_mode, windows_expand_args, **extra
            )
        argv = list(sys.argv[1:] if args is None else args)

        run_metrics.WRITTEN.clear()
        start = time.monotonic()
        code = run(
            lambda: super(OneLineGroup, self).main(
                argv, prog_name, complete_var, False, windows_expand_args, **extra
            ),
            argv,
        )
        if code != 0:
            metrics_on_exit(argv, code, time.monotonic() - start)
        sys.exit(code)


def run(invoke: Any, argv: list[str]) -> int:
    """Run the command line; its exit code, every failure said in one line."""
    try:
        code = invoke()
    except _click.exceptions.NoArgsIsHelpError as exc:
        exc.show()  # no arguments at all: the help, as before
        return exc.exit_code
    except _click.exceptions.ClickException as exc:
        say(usage_line(exc), argv, exit_code=exc.exit_code)
        return exc.exit_code
    except typer.Abort:
        say("aborted: a question got no answer (stdin closed)", argv, exit_code=EXIT_CRASH)
        return EXIT_CRASH
    except DmuError as exc:  # raised outside a command's own error mapping
        say(str(exc), argv, exit_code=exc.exit_code)
        return exc.exit_code
    except KeyboardInterrupt:
        say("interrupted", argv, exit_code=EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    except Exception as exc:
        crash(exc, argv)
        return EXIT_CRASH
    return code if isinstance(code, int) else 0


def usage_line(exc: Any) -> str:
    """Click's message on one line, and where the command's options are listed."""
    message = " ".join(exc.format_message().split()).rstrip(".")
    ctx = getattr(exc, "ctx", None)
    if ctx is None:
        return message
    return f"{message}{' ' if message.endswith('?') else '; '}see '{ctx.command_path} --help'"


def crash(exc: BaseException, argv: list[str]) -> None:
    """A bug: one line naming the exception and where it was raised; the traceback to a file."""
    text = "".join(traceback.format_exception(exc))
    where = raised_at(exc)
    saved = save_traceback(text)
    if verbosity(argv) >= 2 and log_format(argv) == "text":
        sys.stderr.write(text)
    kept = (
        f"its traceback is in {saved} (-vv prints it)"
        if saved
        else "run again with -vv to print its traceback"
    )
    say(
        f"unexpected {type(exc).__name__} at {where}: {one_line(str(exc))}; dmu-migrate did "
        f"not expect this (a bug): {kept}; please report it",
        argv,
        exit_code=EXIT_CRASH,
        exception=type(exc).__name__,
        where=where,
        traceback=str(saved) if saved else None,
        exc=text,
    )


def raised_at(exc: BaseException) -> str:
    """The innermost frame in dmu_migrate (else the innermost of all), as path:line."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if Path(f.filename).resolve().is_relative_to(PACKAGE)]
    if not frames:
        return "an unknown place"
    frame = (ours or frames)[-1]
    path = Path(frame.filename).resolve()
    shown = path.relative_to(PACKAGE.parent) if path.is_relative_to(PACKAGE.parent) else path
    return f"{shown}:{frame.lineno}"


def save_traceback(text: str) -> Path | None:
    """The traceback in a file of its own (the temp directory, or DMU_CRASH_DIR)."""
    directory = Path(os.environ.get("DMU_CRASH_DIR") or tempfile.gettempdir())
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"dmu-migrate-crash-{stamp}-{os.getpid()}.txt"
    try:
        path.write_text(text, encoding="utf-8")
    except OSError:
        return None
    return path


def one_line(text: str) -> str:
    return " ".join(text.split()) or "(no message)"


def say(message: str, argv: list[str], **fields: Any) -> None:
    """The error line, in the format the arguments asked for."""
    if log_format(argv) == "json":
        record = jsonlog.line(
            "ERROR", "dmu_migrate.cli", message, **{k: v for k, v in fields.items() if v}
        )
        err.file.write(record + "\n")
        err.file.flush()
        return
    err.file.write(f"error: {message}\n")
    err.file.flush()


def flag_value(argv: list[str], flag: str) -> str | None:
    """The last value given to ``flag`` (``--flag V`` or ``--flag=V``), read before parsing."""
    value = None
    for i, token in enumerate(argv):
        if token == "--":
            break
        if token == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif token.startswith(flag + "="):
            value = token.split("=", 1)[1]
    return value


def log_format(argv: list[str]) -> str:
    """json when the arguments ask for it (an unknown format is refused in text)."""
    return "json" if flag_value(argv, "--log-format") == "json" else "text"


def verbosity(argv: list[str]) -> int:
    """-v counted as the command line counts it: -v, -vv, --verbose, before or after."""
    count = 0
    for token in argv:
        if token == "--":
            break
        if token == "--verbose":
            count += 1
        elif token.startswith("-v") and set(token[1:]) == {"v"}:
            count += len(token) - 1
    return count


def command_name(argv: list[str]) -> str | None:
    """The command the arguments name: the first word that is not a global flag or its value."""
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token == "--log-format":
            skip = True
        elif not token.startswith("-"):
            return token
    return None


def metrics_on_exit(argv: list[str], code: int, seconds: float) -> None:
    """A failure the command never saw (a usage error, a refused flag, a crash before it ran):
    the metrics file it was asked for still says how the run ended."""
    command = command_name(argv)
    path = flag_value(argv, "--metrics-file")
    outcomes = run_metrics.OUTCOMES.get(command or "")
    if not path or outcomes is None or Path(path) in run_metrics.WRITTEN:
        return
    run = run_metrics.Run(labels={"command": command or ""})
    try:
        run_metrics.write(Path(path), run, code, seconds, outcomes)
    except (DmuError, OSError) as exc:
        reason = str(exc) if isinstance(exc, DmuError) else (exc.strerror or str(exc))
        say(f"--metrics-file {path} could not be written either ({reason})", argv)
