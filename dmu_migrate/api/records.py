"""The verbs on recorded migrations: status, history, rollback, prune."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dmu_migrate.api.store import opened
from dmu_migrate.errors import InputError
from dmu_migrate.evolve import IN_PLACE
from dmu_migrate.evolve.admin import migration_status, prune_plan
from dmu_migrate.evolve.admin import prune as run_prune
from dmu_migrate.evolve.admin import rollback as run_rollback


@dataclass(frozen=True)
class Migrations:
    """The ledger records of a store (or of one lineage), oldest first.

    Each row is the record's fields (key, source, target, alias, strategy,
    from_version, to_version, status, rows_done, source_rows, started_at,
    finished_at, runs, ...) plus ``alias_target``, where the alias it was started
    for points now, ``aliases``, each alias it moved (``alias``, ``previous``: what
    that alias named before, ``moved_at``, ``rolled_back_at``, ``points_at``: where
    it points now, ``derived``: read from a record of an earlier version, whose
    ``previous`` may be unknown), and ``shard_status`` for sharded migrations.
    """

    collection: str | None  # the lineage asked for; None: every migration in the store
    migrations: list[dict[str, Any]]


@dataclass(frozen=True)
class RollbackResult:
    migration: str
    message: str  # what was undone: the alias moved back, or the snapshot restored

    def as_dict(self) -> dict[str, object]:
        return {"migration": self.migration, "result": self.message}


@dataclass(frozen=True)
class PruneResult:
    migration: str
    collection: str  # the old collection (or in-place snapshot's collection) named
    pruned: bool  # False when ``confirm`` said no: nothing was dropped
    message: str
    dropped: str | None = None  # what went: the old collection, or the snapshot's path
    rows: int = 0  # old vectors that went with it (the migration's source rows)

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def status(
    uri: str = "milvus.db", token: str | None = None, collection: str | None = None
) -> Migrations:
    """Migrations recorded in the store: progress, status, versions, alias targets."""
    with opened(uri, token) as store:
        return Migrations(collection, migration_status(store, collection))


def history(
    uri: str = "milvus.db", token: str | None = None, collection: str | None = None
) -> Migrations:
    """Every recorded upgrade, oldest first (v1 -> v2 -> v3 ...): the lineage of ``collection``."""
    return status(uri, token, collection)


def rollback(collection: str, uri: str = "milvus.db", token: str | None = None) -> RollbackResult:
    """Undo the cut-over of the alias ``collection`` names; the evolved data is kept.

    ``collection`` is the alias to move back (to what it named before the
    migration that moved it there; other aliases stay), or a collection whose
    migrations moved exactly one alias. Raises InputError when the name fits
    several aliases (they are listed), when there is no finished migration, or
    it was already rolled back or pruned.
    """
    with opened(uri, token) as store:
        return RollbackResult(*run_rollback(store, collection))


def prune(
    collection: str,
    uri: str = "milvus.db",
    token: str | None = None,
    yes: bool = False,
    confirm: Callable[[str], bool] | None = None,
) -> PruneResult:
    """Drop old vectors that a finished, verified migration replaced. Cannot be undone.

    Nothing is dropped unless ``yes`` is True or ``confirm(what)`` (given the
    sentence saying what would go) returns True; with neither, InputError.
    """
    with opened(uri, token) as store:
        record, what = prune_plan(store, collection)
        if not yes:
            if confirm is None:
                raise InputError(
                    f"prune would {what} and cannot be undone; pass yes=True (--yes) to confirm"
                )
            if not confirm(what):
                # The operator's answer, not a failure: scripts that say no must not break.
                message = f"not pruned: nothing was dropped from '{collection}'"
                return PruneResult(record.key, collection, False, message)
        message = run_prune(store, record)
        dropped = record.snapshot if record.strategy == IN_PLACE else record.source
        return PruneResult(
            record.key, collection, True, message, dropped=dropped, rows=record.source_rows
        )
