"""Operations on recorded migrations: status, history, rollback, prune."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from dmu_migrate.errors import InputError
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
from dmu_migrate.evolve.strategies import STRATEGY_CLASSES
from dmu_migrate.stores.base import VectorStore


def _involves(record: Record, names: set[str]) -> bool:
    return bool(names & {record.source, record.target, record.alias})


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
                names |= {n for n in (r.source, r.target, r.alias) if n}
        grew = len(names) > before
    return [r for r in records if _involves(r, names)]


def migration_status(store: VectorStore, collection: str | None) -> list[dict[str, Any]]:
    rows = []
    for r in _lineage(store, collection):
        row = r.to_dict()
        row["alias_target"] = store.alias_target(r.alias) if r.alias else None
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
    from dmu_migrate.evolve.shards import load_shards

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
    """Undo the newest finished migration of a lineage; the evolved data is kept."""
    lineage = _lineage(store, collection)
    if lineage and lineage[-1].status == PRUNED:
        last = lineage[-1]
        raise InputError(
            f"migration '{last.key}' was pruned ({_pruned_at(last)}): '{last.source}' no longer "
            f"exists, so there is nothing to roll back to"
        )
    if lineage and lineage[-1].status == ROLLED_BACK:
        last = lineage[-1]
        raise InputError(
            f"migration '{last.key}' is already rolled back (at {last.finished_at}); "
            f"'dmu-migrate evolve --reapply' cuts over again"
        )
    record = _latest_done(store, collection)
    message = STRATEGY_CLASSES[record.strategy].rollback(store, record)
    record.status = ROLLED_BACK
    record.finished_at = now_iso()
    record.runs.append({"rolled_back_at": record.finished_at, "what": message})
    Ledger(store).save(record)
    return record.key, message


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
    if record.alias and store.alias_target(record.alias) == collection:
        raise InputError(
            f"alias '{record.alias}' still points at '{collection}'; it is live, not pruned"
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
