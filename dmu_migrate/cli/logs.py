"""How much the command line says: -v/-q before or after the command, and whose logs show.

Users type ``dmu-migrate evolve ... -v`` as often as ``dmu-migrate -v evolve``;
both count (``-v -v`` anywhere is ``-vv``). Our own modules log progress at
-v and debug at -vv. Client libraries (pymilvus, grpc, qdrant-client, ...)
log failed calls that are normal states here (an alias that does not exist
yet) and the real failures come out as our own one-line errors, so their
records only show at -vv, and then as one line without a traceback.
``--log-format json`` (also before or after the command) writes every record,
warnings included, as one JSON line (cli/jsonlog.py) for a scheduled run's log
collector.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from dmu_migrate.api import store
from dmu_migrate.cli import jsonlog
from dmu_migrate.errors import InputError

# Loggers of the client libraries a command can load; pymilvus installs its own
# handlers on import, so the policy is applied again after a store is opened.
CLIENTS = (
    "pymilvus",
    "pymilvus.milvus_client",
    "pymilvus.bulk_writer",
    "milvus_lite",
    "grpc",
    "httpx",
    "httpcore",
    "urllib3",
    "qdrant_client",
    "faiss",
    "onnxruntime",
)
OURS = "dmu_migrate"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_ROOT_LEVEL: list[int] = []  # the root level before -v changed it
VERBOSE = 0  # -v count, before and after the command together
QUIET = False  # -q: errors only
LOG_FORMAT = "text"  # or "json": one JSON object per record and per error line
# What the app's callback saw before the command name; the command adds its own.
GLOBAL: dict[str, Any] = {"verbose": 0, "quiet": False, "log_format": None}


class _Out(Console):
    """stdout: -q silences it, except for the --json document a script asked for."""

    def print_json(self, *args: Any, **kwargs: Any) -> None:
        quiet, self.quiet = self.quiet, False
        try:
            super().print_json(*args, **kwargs)
        finally:
            self.quiet = quiet


# markup=False: messages carry user and library text ("pip install 'dmu-migrate[train]'",
# filters, paths) that Rich would otherwise read as style tags and swallow. Styles are
# given as Text objects instead.
out = _Out(markup=False)
err = Console(stderr=True, markup=False)


def print_error(message: str) -> None:
    if LOG_FORMAT == "json":  # the same one line, as a record a log collector parses
        err.file.write(jsonlog.line("ERROR", "dmu_migrate.cli", message) + "\n")
        err.file.flush()
        return
    err.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)


def _refuse(message: str) -> None:
    """A contradiction among the output flags: one line (in the chosen format) and exit 2."""
    print_error(message)
    raise typer.Exit(InputError.exit_code)


Verbose = Annotated[
    int,
    typer.Option(
        "--verbose",
        "-v",
        count=True,
        help="Log progress to stderr; -vv adds debug lines (also before the command).",
        show_default=False,
    ),
]
Quiet = Annotated[
    bool,
    typer.Option(
        "--quiet",
        "-q",
        help="Print errors only: no progress, notes or results (--json output still prints).",
        show_default=False,
    ),
]

LogFormat = Annotated[
    str | None,
    typer.Option(
        "--log-format",
        help="Log records and errors on stderr as text (default) or json: one JSON object a "
        "line, for log collectors (also before the command).",
        metavar="[text|json]",
        show_default=False,
    ),
]


class _OneLine(logging.Filter):
    """Client records reach stderr at -vv only, as their first line and without a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == OURS or record.name.startswith(OURS + "."):
            return True
        # warnings.warn, captured in json (text prints them as Python does): shown as before.
        if VERBOSE < 2 and record.name != "py.warnings":
            return record.levelno >= logging.CRITICAL
        record.msg = record.getMessage().splitlines()[0] if record.getMessage() else ""
        record.args = None
        record.exc_info = record.exc_text = record.stack_info = None
        return True


def configure(verbose: int, quiet: bool, log_format: str | None = None) -> None:
    """Set this invocation's verbosity; every invocation sets it anew (tests run many)."""
    global VERBOSE, QUIET, LOG_FORMAT
    LOG_FORMAT = "text"
    if log_format is not None and log_format not in jsonlog.FORMATS:
        _refuse(f"--log-format must be text or json, got {log_format!r}")
    LOG_FORMAT = log_format or "text"

    if verbose and quiet:
        _refuse("-q (errors only) and -v (more output) contradict; give one of them")
    VERBOSE, QUIET = verbose, quiet
    out.quiet = quiet
    ours = logging.getLogger(OURS)
    ours.setLevel(logging.ERROR if quiet else logging.NOTSET)
    release()
    root = logging.getLogger()
    # Without -v, text leaves warnings to Python's last-resort handler (plain lines);
    # json installs its handler anyway so that those come out as JSON too.
    if verbose or LOG_FORMAT == "json":
        handler = logging.StreamHandler(sys.stderr)
        json_lines = LOG_FORMAT == "json"
        handler.setFormatter(jsonlog.JsonFormatter() if json_lines else logging.Formatter(FORMAT))
        handler.addFilter(_OneLine())
        handler.dmu_migrate = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        # A library's warnings.warn prints two plain lines; as a record it is one JSON line.
        logging.captureWarnings(json_lines)
        _ROOT_LEVEL.append(root.level)
        if verbose:
            root.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
    client_logs()


def release() -> None:
    """Take back an invocation's handler and root level: the process may go on (tests,
    notebooks) with library calls, whose records must not reach that invocation's
    stderr, closed by then, nor print at its verbosity."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "dmu_migrate", False)]:
        root.removeHandler(old)
        logging.captureWarnings(False)
    if _ROOT_LEVEL:
        root.setLevel(_ROOT_LEVEL.pop())


def client_logs() -> None:
    """Route client libraries' loggers through our filter (see the module docstring)."""
    for name in CLIENTS:
        logger = logging.getLogger(name)
        if VERBOSE >= 2:
            logger.setLevel(logging.WARNING)  # their debug lines would drown ours
        else:
            logger.setLevel(logging.CRITICAL)
        # pymilvus logs to its own handler with propagate off; ours applies the filter.
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True


# The library opens stores; the command line's log policy follows each opening.
store.AFTER_OPEN.append(client_logs)


def with_output_flags(command: Callable[..., Any]) -> Callable[..., Any]:
    """``command`` that also takes -v/-q/--log-format after the command name."""
    signature = inspect.signature(command, eval_str=True)
    extra = [
        inspect.Parameter("verbose", inspect.Parameter.KEYWORD_ONLY, default=0, annotation=Verbose),
        inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Quiet),
        inspect.Parameter(
            "log_format", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=LogFormat
        ),
    ]

    @functools.wraps(command)
    def run(
        *args: Any,
        verbose: int = 0,
        quiet: bool = False,
        log_format: str | None = None,
        **kwargs: Any,
    ) -> Any:
        # After the command wins over before it, as the later flag does everywhere.
        configure(
            GLOBAL["verbose"] + verbose,
            GLOBAL["quiet"] or quiet,
            log_format or GLOBAL["log_format"],
        )
        try:
            return command(*args, **kwargs)
        finally:
            release()

    run.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*signature.parameters.values(), *extra]
    )
    return run
