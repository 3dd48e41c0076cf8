"""``--log-format json``: one JSON object per log record on stderr, for log shippers.

A scheduled run's stderr goes to a collector (journald, Loki, a Kubernetes log
agent) that splits on newlines, so a record never spans lines: a traceback is
folded into the ``exc`` field. ``ts`` is ISO-8601 UTC; the fields a record
carries through ``extra=`` (collection, rows, rate, ...) become keys of their own.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

FORMATS = ("text", "json")

# Every attribute a bare LogRecord has: anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _plain(value: Any) -> Any:
    """A value json can write: numbers, strings, lists and dicts as they are, else their str."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "item"):  # numpy scalars
        return _plain(value.item())
    return str(value)


def line(level: str, logger: str, msg: str, created: float | None = None, **fields: Any) -> str:
    """One record as a single JSON line (also used for the CLI's one-line errors)."""
    when = datetime.now(UTC) if created is None else datetime.fromtimestamp(created, UTC)
    ts = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    record = {"ts": ts, "level": level, "logger": logger, "msg": msg}
    record.update({k: _plain(v) for k, v in fields.items() if k not in record})
    return json.dumps(record, ensure_ascii=False)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        fields.pop("dmu_migrate", None)
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            fields["exc"] = record.exc_text
        if record.stack_info:
            fields["stack"] = self.formatStack(record.stack_info)
        return line(record.levelname, record.name, record.getMessage(), record.created, **fields)
