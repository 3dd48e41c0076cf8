"""Operations on recorded migrations: status, history, rollback, prune."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from dmu_migrate.errors import InputError
from dmu_migrate.evolve import aliases
from dmu_migrate.evolve.ledger import (
    DONE,
    PRUNED,
    ROLLED_BACK,
    RUNNING,
    Ledger,
    Record,
    now_iso,
)
from dmu_migrate.evolve.plan import IN_PLACE, NEW_COLLECTION
from dmu_migrate.evolve.shards import load_shards
from dmu_migrate.evolve.strategies import STRATEGY_CLASSES
from dmu_migrate.stores.base import VectorStore


def _names(record: Record) -> set[str]:
    return {n for n in (record.source, record.target, record.alias) if n} | set(
        record.moved_aliases
    )


def _involves(record: Record, names: set[str]) -> bool:
    return bool(names & _names(record))


def _lineage(store: VectorStore, collection: str | None) -> list[Record]:
    records = Ledger(store).history()
    if collection is None:
        return records
    names = {collection}
    target = store.alias_target(collection)
    if target:
        names.add(target)
    # Follow the chain both ways: v1 -> v2 -> v3 all belong to one lineage.
    grew = True
    while grew:
        before = len(names)
        for r in records:
            if _involves(r, names):
                names |= _names(r)
        grew = len(names) > before
    return [r for r in records if _involves(r, names)]


def migration_status(store: VectorStore, collection: str | None) -> list[dict[str, Any]]:
    rows = []
    for r in _lineage(store, collection):
        row = r.to_dict()
        row["alias_target"] = store.alias_target(r.alias) if r.alias else None
        # Every alias it moved (``alias`` is only the one it was started for).
        del row["moved_aliases"]
        row["aliases"] = aliases.shown(r, store.alias_target)
        if r.status == RUNNING and r.lease_expires < time.time():
            # The run that held it died without a word; the next run resumes from its cursor.
            row["status"] = "interrupted"
        if r.shards:
            row["shard_status"] = _shard_status(store, r)
            if not r.main_pass_done:  # until finish adds them up, the shards hold the progress
                row["rows_done"] = sum(s["rows_done"] for s in row["shard_status"])
        rows.append(row)
    return rows


def _shard_status(store: VectorStore, parent: Record) -> list[dict[str, Any]]:
    out = []
    for index, s in enumerate(load_shards(Ledger(store), parent)):
        out.append(
            {
                "shard": f"{index}/{parent.shards}",
                "status": "missing" if s is None else s.status,
                "rows_done": s.rows_done if s else 0,
                "cursor": s.cursor if s else None,
                "lease_owner": s.lease_owner if s else None,
                "updated_at": s.updated_at if s else None,
            }
        )
    return out


def _latest_done(store: VectorStore, collection: str) -> Record:
    done = [r for r in _lineage(store, collection) if r.status == DONE]
    if not done:
        raise InputError(
            f"no finished migration of '{collection}' is recorded in this store; "
            f"see 'dmu-migrate status'"
        )
    return done[-1]


def rollback(store: VectorStore, collection: str) -> tuple[str, str]:
    """Undo the cut-over that put the alias named (or the one alias of the collection
    named) where it is; the evolved data is kept. Migrations that moved no alias
    (new-field, in-place): undo the newest finished one of the lineage."""
    records = Ledger(store).history()
    alias = _alias_named(store, records, collection)
    if alias is not None:
        return _rollback_alias(store, records, alias)
    lineage = _lineage(store, collection)
    if lineage and lineage[-1].status == PRUNED:
        raise _pruned(lineage[-1])
    if lineage and lineage[-1].status == ROLLED_BACK:
        raise _already(lineage[-1], lineage[-1].finished_at)
    record = _latest_done(store, collection)
    message = STRATEGY_CLASSES[record.strategy].rollback(store, record)
    record.status = ROLLED_BACK
    record.finished_at = now_iso()
    record.runs.append({"rolled_back_at": record.finished_at, "what": message})
    Ledger(store).save(record)
    return record.key, message


def _alias_named(store: VectorStore, records: list[Record], name: str) -> str | None:
    """The alias a rollback of ``name`` moves back: ``name`` itself when a migration moved
    it, else the one alias that the migrations of collection ``name`` moved."""
    if any(name in r.moved_aliases for r in records):
        return name
    collection = store.alias_target(name) or name  # an alias no migration moved
    # The migrations that wrote the collection, else those that read it.
    mine = [r for r in records if r.target == collection] or [
        r for r in records if r.source == collection
    ]
    names = list(dict.fromkeys(a for r in mine for a in r.moved_aliases))
    if len(names) > 1:
        moved = [r.key for r in mine if r.moved_aliases]
        raise InputError(
            f"'{name}' names {len(moved)} migration{'s' if len(moved) > 1 else ''} "
            f"({', '.join(moved)}) that moved {len(names)} aliases, and rollback moves one "
            f"alias back at a time; pass --collection ALIAS (one of "
            f"{', '.join(repr(a) for a in names)})"
        )
    return names[0] if names else None


def _rollback_alias(store: VectorStore, records: list[Record], alias: str) -> tuple[str, str]:
    moves = [r for r in records if alias in r.moved_aliases]
    current = store.alias_target(alias)
    serving = [r for r in moves if r.target == current and alias in aliases.live(r)]
    if not serving:
        raise _not_serving(alias, current, moves)
    record = serving[-1]
    if record.status == PRUNED:
        raise _pruned(record)
    if record.status == RUNNING and record.lease_expires > time.time():
        raise InputError(
            f"migration '{record.key}' is being run by {record.lease_owner}, which would move "
            f"alias '{alias}' again at its end; wait for it to finish, then roll back"
        )
    message = STRATEGY_CLASSES[record.strategy].rollback(store, record, alias)
    when = now_iso()
    aliases.mark_rolled_back(record, alias, when)
    if not aliases.live(record):  # no alias serves its target any more
        record.status, record.finished_at = ROLLED_BACK, when
    record.runs.append({"rolled_back_at": when, "what": message, "alias": alias})
    Ledger(store).save(record)
    return record.key, message


def _not_serving(alias: str, current: str | None, moves: list[Record]) -> InputError:
    """Why no migration's cut-over of ``alias`` is there to undo."""
    back = [r for r in moves if aliases.rolled_back_at(r, alias)]
    if back:
        latest = max(back, key=lambda r: str(aliases.rolled_back_at(r, alias)))
        return _already(latest, aliases.rolled_back_at(latest, alias), alias)
    where = f"points at '{current}'" if current else "names no collection"
    keys = ", ".join(f"'{r.key}'" for r in moves)
    return InputError(
        f"alias '{alias}' {where}, where no recorded migration moved it (it was moved by "
        f"{keys}); nothing was changed: point it yourself, or see 'dmu-migrate status'"
    )


def _pruned(record: Record) -> InputError:
    return InputError(
        f"migration '{record.key}' was pruned ({_pruned_at(record)}): '{record.source}' no "
        f"longer exists, so there is nothing to roll back to"
    )


def _already(record: Record, when: str | None, alias: str | None = None) -> InputError:
    what = f"alias '{alias}' of migration '{record.key}'" if alias else f"migration '{record.key}'"
    return InputError(
        f"{what} is already rolled back (at {when}); 'dmu-migrate evolve --reapply' cuts over again"
    )


def _pruned_at(record: Record) -> str:
    return next((r["pruned_at"] for r in reversed(record.runs) if "pruned_at" in r), "earlier")


def prune_plan(store: VectorStore, collection: str) -> tuple[Record, str]:
    """What prune would delete; refuses anything still live or not verified."""
    mine = [r for r in Ledger(store).history() if r.source == collection]
    if mine and mine[-1].status == ROLLED_BACK:
        raise InputError(
            f"migration '{mine[-1].key}' was rolled back at {mine[-1].finished_at}, so "
            f"'{collection}' is live again and is not pruned; 'dmu-migrate evolve --reapply' "
            f"cuts over again"
        )
    if mine and mine[-1].status == PRUNED:
        raise InputError(
            f"'{collection}' was already pruned ({_pruned_at(mine[-1])}) after migration "
            f"'{mine[-1].key}'; there is nothing left to prune"
        )
    candidates = [r for r in mine if r.status == DONE and r.strategy in (NEW_COLLECTION, IN_PLACE)]
    if not candidates:
        raise InputError(
            f"no finished migration has '{collection}' as its source; prune only drops old "
            f"data that a verified migration replaced"
        )
    record = candidates[-1]
    if record.source_uri:
        raise InputError(
            f"migration '{record.key}' read '{collection}' from '{record.source_uri}', not from "
            f"this store; prune drops only this store's collections, so drop it there yourself "
            f"once nothing reads it"
        )
    if record.strategy == IN_PLACE:
        return record, f"delete the snapshot {record.snapshot} of '{collection}'"
    # Any migration of it may have moved an alias that a rollback has sent back to it.
    names = dict.fromkeys(a for r in mine for a in [r.alias, *r.moved_aliases] if a)
    for alias in names:
        if store.alias_target(alias) == collection:
            raise InputError(
                f"alias '{alias}' still points at '{collection}'; it is live, not pruned"
            )
    if record.filter:
        raise InputError(
            f"migration '{record.key}' covered only rows matching --filter; '{collection}' "
            f"still holds rows that were not evolved"
        )
    return record, f"drop collection '{collection}' ({record.source_rows} old vectors)"


def prune(store: VectorStore, record: Record) -> str:
    if record.strategy == IN_PLACE:
        if record.snapshot:
            shutil.rmtree(Path(record.snapshot), ignore_errors=True)
        message = f"deleted snapshot {record.snapshot}"
    else:
        store.drop_collection(record.source)
        message = f"dropped '{record.source}'"
    record.runs.append({"pruned_at": now_iso(), "what": message})
    record.status = PRUNED  # later cron runs then stop early with a note (plan.upgraded_source)
    Ledger(store).save(record)
    return message
