"""Migration state kept in the target store, like Alembic's version table.

One record per migration (source -> target): which adapters, which strategy,
the cursor (last source id whose evolved row is acknowledged), counts, status,
timestamps, host, and a lease. The cursor only advances after a batch is
written, so a crash anywhere is resumed by re-reading from the cursor.
The lease keeps two runs from writing the same migration at once; a lease
whose holder died expires, or can be taken over explicitly.

A sharded migration (evolve/shards.py) keeps one more record per shard, keyed
``<migration>#shard-<i>-of-<n>``, with its own id range, cursor and lease.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from dmu_migrate.errors import StoreError
from dmu_migrate.stores.base import Id, VectorStore

LEASE_SECONDS = 600.0

RUNNING, DONE, FAILED, ROLLED_BACK = "running", "done", "failed", "rolled_back"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Record:
    key: str
    source: str
    target: str  # collection (new-collection) or collection.field
    strategy: str
    alias: str | None
    vector_field: str
    target_field: str
    adapters: list[str]  # artifact names, oldest first
    checksum: str  # of the adapter chain
    from_version: str
    to_version: str
    filter: str | None = None
    quality: str | None = None  # the adapters' verdict validated at training (quality.py)
    status: str = RUNNING
    cursor: Id | None = None
    main_pass_done: bool = False
    rows_done: int = 0
    source_rows: int = 0
    previous_alias_target: str | None = None
    snapshot: str | None = None
    pending: dict[str, Any] | None = None  # in-place: the snapshot part being applied
    started_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)
    finished_at: str | None = None
    host: str = field(default_factory=this_process)
    lease_owner: str | None = None
    lease_expires: float = 0.0
    runs: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[Any] = field(default_factory=list)  # ids of bad vectors left out
    error: str | None = None
    # Sharding. A migration split into shards keeps the cut points, and each shard
    # record its range (start, until] and the run_id of the split it belongs to.
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    shards: int = 0  # 0: not sharded
    bounds: list[Any] = field(default_factory=list)  # shards - 1 ids, ascending
    parent: str | None = None  # a shard record: the migration's key
    parent_run: str | None = None  # a shard record: the run_id of the split
    start: Id | None = None  # a shard record: exclusive lower bound (None: the first id)
    until: Id | None = None  # a shard record: inclusive upper bound (None: the last id)
    whole_pass: bool = False  # a shard record: its pass ran start to end in one go
    sample: list[Any] = field(default_factory=list)  # a shard record: ids to verify at finish

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Record:
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class Ledger:
    def __init__(self, store: VectorStore, owner: str | None = None) -> None:
        self.store = store
        self.owner = owner or this_process()

    def load(self, key: str) -> Record | None:
        raw = self.store.ledger_get(key)
        return Record.from_dict(raw) if raw else None

    def save(self, record: Record) -> None:
        record.updated_at = now_iso()
        if record.lease_owner == self.owner:
            record.lease_expires = time.time() + LEASE_SECONDS
        self.store.ledger_put(record.key, record.to_dict())

    def acquire(self, record: Record, take_over: bool = False) -> None:
        """Refuse while another live run holds the migration; take a dead one's lease when told."""
        held = record.lease_owner not in (None, self.owner) and record.lease_expires > time.time()
        if held and not take_over:
            until = datetime.fromtimestamp(record.lease_expires, timezone.utc).isoformat(
                timespec="seconds"
            )
            raise StoreError(
                f"migration '{record.key}' is being run by {record.lease_owner} (lease until "
                f"{until}); wait for it, or pass --take-over if that run is dead"
            )
        record.lease_owner = self.owner
        self.save(record)

    def release(self, record: Record) -> None:
        record.lease_owner = None
        record.lease_expires = 0.0
        self.save(record)

    def history(self) -> list[Record]:
        """Migrations, oldest first; shard records are parts of theirs, not listed."""
        records = [Record.from_dict(r) for r in self.store.ledger_list()]
        return sorted((r for r in records if r.parent is None), key=lambda r: r.started_at)
