"""Which aliases a migration moved, and which of them a rollback has sent back.

One migration (one source, one target) can move several aliases: `evolve --alias
faces_v2` first, then a plain `evolve` of `faces` through the same adapter moves
`faces` to the same target. Each alias is rolled back on its own, so the record
keeps them one by one (``Record.moved_aliases``); the migration counts as rolled
back once none of its aliases serves its target any more.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dmu_migrate.evolve.ledger import Record, now_iso


def record_move(record: Record, alias: str, current: str | None) -> None:
    """Note a cut-over of ``alias``, which named ``current`` (None: nothing) until now.

    A cron re-run finds the alias in place already: the first note, with what it named
    before the migration, stands.
    """
    if current == record.target and alias in live(record):
        return
    previous = None if current == record.target else current
    record.moved_aliases[alias] = {
        "previous": previous,
        "moved_at": now_iso(),
        "rolled_back_at": None,
    }
    record.previous_alias_target = previous or record.source  # what earlier versions read


def live(record: Record) -> list[str]:
    """The aliases this migration moved that no rollback has sent back."""
    return [a for a, e in record.moved_aliases.items() if not e.get("rolled_back_at")]


def rolled_back_at(record: Record, alias: str | None) -> str | None:
    """When ``alias``'s move by this migration was rolled back; None if it was not."""
    entry = record.moved_aliases.get(alias or "")
    return entry.get("rolled_back_at") if entry else None


def mark_rolled_back(record: Record, alias: str, when: str) -> None:
    record.moved_aliases[alias]["rolled_back_at"] = when


def shown(record: Record, point: Callable[[str], str | None]) -> list[dict[str, Any]]:
    """Each moved alias for status and history: what it named before and, asking
    ``point`` (the store's alias_target), what it names now."""
    return [
        {
            "alias": alias,
            "previous": entry.get("previous"),
            "moved_at": entry.get("moved_at"),
            "rolled_back_at": entry.get("rolled_back_at"),
            "points_at": point(alias),
            # From a record written before aliases were kept one by one: "previous" may
            # be unknown (None) there, and a rollback then points the alias at the source.
            "derived": bool(entry.get("derived")),
        }
        for alias, entry in record.moved_aliases.items()
    ]
