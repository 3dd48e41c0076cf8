"""Migration state kept in the target store, like Alembic's version table.

One record per migration (source -> target): which adapters, which strategy,
the cursor (last source id whose evolved row is acknowledged), counts, status,
timestamps, host, and a lease. The cursor only advances after a batch is
written, so a crash anywhere is resumed by re-reading from the cursor.
The lease keeps two runs from writing the same migration at once; a lease
whose holder died expires, or can be taken over explicitly.

A sharded migration (evolve/shards.py) keeps one more record per shard, keyed
``<migration>#shard-<i>-of-<n>``, with its own id range, cursor and lease.

Records must fit every store's limits (Milvus: a 65,535-byte VARCHAR per record, a
512-byte primary key). So the ids of skipped bad vectors, which can number
thousands, live in chunk records ``<key>#skipped-<n>`` of at most CHUNK_CHARS each,
and a key too long for a primary key is stored under a hashed one (the record
keeps its real key).

Stores offer no compare-and-set, so a lease is taken by writing it and reading it
back after the settle time (``settle()``, SETTLE seconds unless $DMU_LEASE_SETTLE says
otherwise): of two runs that both found it free, only the last writer reads itself
back. A run whose read and write lie more than half the settle time apart tries again,
so a slow writer cannot slip in after the other's read-back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import socket
import time
import uuid
from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import datetime, timezone
from typing import Any

from dmu_migrate.errors import InputError, LeaseHeld, LeaseLost, StoreError
from dmu_migrate.stores.base import LEDGER_COLLECTION, Id, VectorStore

log = logging.getLogger(__name__)

LEASE_SECONDS = 600.0
# Seconds between writing a lease and reading it back. A strong read on a loaded
# Milvus server takes a good part of a second; SETTLE must exceed the read-to-write
# time of a rival run (bounded to SETTLE / 2 below), so it is generous.
SETTLE = 2.0
# Overrides SETTLE for every run of this process and its children. A test suite against
# one private server lowers it (no rival run there is slower); a deployment keeps SETTLE.
SETTLE_ENV = "DMU_LEASE_SETTLE"
LEASE_TRIES_SECONDS = 60.0  # keep trying while the store answers too slowly to decide
CHUNK_CHARS = 32_000  # JSON characters of skipped ids per chunk record
MAX_KEY_BYTES = 200  # longer keys are stored hashed (Milvus keys stop at 512 bytes)

RUNNING, DONE, FAILED, ROLLED_BACK = "running", "done", "failed", "rolled_back"
STOPPED = "stopped"  # by --max-seconds or an interrupt, with work left: the next run resumes
PRUNED = "pruned"  # done, and its old collection (or snapshot) deleted


def settle() -> float:
    """Seconds between writing a lease and reading it back: SETTLE, or $DMU_LEASE_SETTLE."""
    raw = os.environ.get(SETTLE_ENV, "").strip()
    if not raw:
        return SETTLE
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 60:
        raise InputError(
            f"{SETTLE_ENV}='{raw}' is not a number of seconds in (0, 60]; unset it to use "
            f"the default {SETTLE:g} s"
        )
    return seconds


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
    # The source's store when it is not this ledger's (evolve --target-uri); rollback and
    # prune then refuse what only that store could undo.
    source_uri: str | None = None
    quality: str | None = None  # the adapters' verdict validated at training (quality.py)
    status: str = RUNNING
    cursor: Id | None = None
    main_pass_done: bool = False
    rows_done: int = 0
    source_rows: int = 0
    previous_alias_target: str | None = None
    # Every alias this migration moved (evolve/aliases.py): alias -> {"previous": what it
    # named before (None: nothing), "moved_at", "rolled_back_at"}. One migration can move
    # several (evolve --alias NAME after a plain evolve of the same source and adapter).
    moved_aliases: dict[str, dict[str, Any]] = field(default_factory=dict)
    snapshot: str | None = None
    pending: dict[str, Any] | None = None  # in-place: the snapshot part being applied
    started_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)
    finished_at: str | None = None
    host: str = field(default_factory=this_process)
    lease_owner: str | None = None
    lease_expires: float = 0.0
    lease_token: str | None = None  # this acquisition's nonce: what a read-back must find
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
    # Progress of the newest `backfill` into the target (evolve/backfill_write.py): the
    # input's fingerprint, rows acknowledged in input order, status; None: never run.
    backfill: dict[str, Any] | None = None
    # A bulk-import main pass (evolve/bulk_pass.py): the shared storage and each part's
    # files, rows, last id, import job id and whether the server finished it.
    bulk: dict[str, Any] | None = None
    # new-collection: this migration created its target. Empty and no longer fitting (its
    # first batch failed, then the source or the adapters changed), it is made anew; a
    # collection someone else made is never dropped for it.
    created_target: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Record:
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        # Unknown keys are dropped (a newer version's additions); missing required ones
        # mean the entry is not a migration record, and no field may be guessed.
        required = [
            f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
        ]
        missing = [name for name in required if name not in known]
        if missing:
            raise StoreError(
                f"ledger entry '{raw.get('key', '?')}' lacks {', '.join(missing)}: it is not a "
                "migration record dmu-migrate wrote; delete it from the ledger (collection "
                f"'{LEDGER_COLLECTION}', or ledger.json in a Parquet store)"
            )
        if "moved_aliases" not in raw:  # written by a version that kept one alias only
            known["moved_aliases"] = derived_moves(raw)
        return cls(**known)


CUT_OVER = re.compile(r"alias '(.+)' -> '(.+)'")


def derived_moves(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The aliases an older record moved, read from what it kept: its cut-over events and
    its alias. Only the alias moved last has a known earlier target (the record kept one);
    the others show it as unknown, and a rollback sends them back to the source."""
    events = [e for e in raw.get("runs") or [] if isinstance(e, dict)]
    order: list[str] = []
    for event in events:
        found = CUT_OVER.fullmatch(str(event.get("cut_over") or ""))
        if found:
            order = [a for a in order if a != found.group(1)] + [found.group(1)]
    finished = raw.get("status") in (DONE, ROLLED_BACK, PRUNED) and not raw.get("filter")
    alias = raw.get("alias")
    if alias and finished and alias not in order:
        order.insert(0, alias)  # its cut-over event may have aged out of the last 20 runs
    rolled_back = [
        next((e["rolled_back_at"] for e in reversed(events) if "rolled_back_at" in e), "earlier")
        if raw.get("status") == ROLLED_BACK and name == alias
        else None
        for name in order
    ]
    return {
        name: {
            "previous": raw.get("previous_alias_target") if name == order[-1] else None,
            "moved_at": None,
            "rolled_back_at": when,
            "derived": True,  # from a record written before aliases were kept one by one
        }
        for name, when in zip(order, rolled_back, strict=True)
    }


def storage_key(key: str) -> str:
    """The key a record is stored under: itself, or a readable prefix and a hash when long."""
    if len(key.encode()) <= MAX_KEY_BYTES:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return f"{key.encode()[:120].decode(errors='ignore')}#{digest}"


def _chunks(ids: list[Any]) -> list[list[Any]]:
    """Consecutive runs of ids whose JSON stays under CHUNK_CHARS; append-only ids keep
    every chunk but the last unchanged, so a save rewrites only the tail."""
    chunks: list[list[Any]] = [[]]
    size = 0
    for item in ids:
        width = len(json.dumps(item, default=str)) + 2
        if chunks[-1] and size + width > CHUNK_CHARS:
            chunks.append([])
            size = 0
        chunks[-1].append(item)
        size += width
    return chunks if chunks[0] else []


class Ledger:
    def __init__(self, store: VectorStore, owner: str | None = None) -> None:
        self.store = store
        self.owner = owner or this_process()
        self._chunks: dict[str, tuple[list[Any], int]] = {}  # key -> (ids, chunks) last stored

    def load(self, key: str) -> Record | None:
        raw = self.store.ledger_get(storage_key(key))
        if not raw:
            return None
        record = Record.from_dict(raw)
        count = int(raw.get("skipped_chunks") or 0)
        if count:
            for n in range(count):
                part = self.store.ledger_get(storage_key(f"{key}#skipped-{n}")) or {}
                record.skipped.extend(part.get("ids") or [])
            self._chunks[key] = (list(record.skipped), count)
        return record

    def save(self, record: Record) -> None:
        """Write the record; while this run holds its lease, only if no other run took it.

        The fence: stores offer no compare-and-set, so a rival's write can land after
        our read-back (a slow writer) or a --take-over can reclaim a lease whose holder
        is alive. Checking the stored token before each write ends such a run at its
        next save (at most LEDGER_EVERY of writes later, and before any cut-over) instead
        of letting both finish; the writes in between are the same evolved rows.
        """
        self._fence(record)
        self._put(record)

    def _fence(self, record: Record) -> None:
        if record.lease_owner != self.owner or record.lease_token is None:
            return  # not holding it: an operator's command, or a released record
        stored = self.store.ledger_get(storage_key(record.key)) or {}
        if stored.get("lease_token") not in (None, record.lease_token):
            raise LeaseLost(
                f"migration '{record.key}' was taken by {stored.get('lease_owner')} while "
                f"this run held it; this run stopped and left it to that one (see status)"
            )

    def _put(self, record: Record) -> None:
        record.updated_at = now_iso()
        if record.lease_owner == self.owner:
            record.lease_expires = time.time() + LEASE_SECONDS
        raw = record.to_dict()
        skipped = raw.pop("skipped")
        raw["skipped"] = []
        raw["skipped_chunks"] = self._save_skipped(record.key, skipped)
        raw["skipped_count"] = len(skipped)
        self.store.ledger_put(storage_key(record.key), raw)

    def _save_skipped(self, key: str, ids: list[Any]) -> int:
        """Store the skipped ids in chunk records (only those that changed); their count."""
        stored_ids, stored_chunks = self._chunks.get(key, ([], 0))
        if ids == stored_ids and (stored_chunks or not ids):
            return stored_chunks
        chunks = _chunks(ids)
        # Ids are appended as runs skip rows, and removed when a fixed row is evolved: an
        # extension rewrites the last stored chunk on, any other change every chunk.
        appended = stored_chunks and ids[: len(stored_ids)] == stored_ids
        for n in range(max(0, stored_chunks - 1) if appended else 0, len(chunks)):
            name = f"{key}#skipped-{n}"
            part = {"key": name, "chunk_of": key, "ids": chunks[n]}
            self.store.ledger_put(storage_key(name), part)
        self._chunks[key] = (list(ids), len(chunks))
        return len(chunks)

    def acquire(self, record: Record, take_over: bool = False) -> None:
        """Refuse while another live run holds the migration; take a dead one's lease when told.

        Write-then-read-back (see the module docstring): of runs that race, one wins.
        """
        wait = settle()
        deadline = time.monotonic() + LEASE_TRIES_SECONDS
        while time.monotonic() < deadline:
            started = time.monotonic()
            current = self.load(record.key) or record
            self._refuse_held(record.key, current, take_over)
            record.lease_owner = self.owner
            record.lease_token = uuid.uuid4().hex
            self._put(record)  # over any earlier token: ours from a slow try, or a dead run's
            if not self.store.shared:
                return  # one process at a time opens this store (its own lock)
            window = time.monotonic() - started
            if window > wait / 2:
                log.info(
                    "lease of %s: reading and writing it took %.1fs (over %.1fs); trying again",
                    record.key,
                    window,
                    wait / 2,
                )
                time.sleep(random.uniform(0, wait / 2))  # a rival retrying must not stay in step
                continue  # our read is too old to rule out a writer in between: again
            time.sleep(wait)
            now = self.load(record.key)
            if now is not None and now.lease_token == record.lease_token:
                return
            record.lease_owner, record.lease_token = None, None
            raise LeaseHeld(
                f"migration '{record.key}' was taken by "
                f"{now.lease_owner if now else 'another run'} at the same moment; this run "
                f"left it to that one (run evolve again once it has finished)"
            )
        self._withdraw(record)
        raise StoreError(
            f"could not take the lease of migration '{record.key}': the store answered too "
            f"slowly to take it safely; run evolve again"
        )

    def _withdraw(self, record: Record) -> None:
        """Clear the lease a give-up left written, when it is still ours (best effort).

        Each try wrote a live lease; left there, the next run (another process) would be
        refused for LEASE_SECONDS as if this one were still running.
        """
        token, record.lease_owner, record.lease_token = record.lease_token, None, None
        try:
            stored = self.load(record.key)
            if stored is not None and stored.lease_token == token:
                self.release(stored)
        except Exception as exc:  # the store is failing already; the lease expires by itself
            log.warning("could not withdraw the lease of %s: %s", record.key, exc)

    def _refuse_held(self, key: str, current: Record, take_over: bool) -> None:
        held = current.lease_owner not in (None, self.owner) and current.lease_expires > time.time()
        if held and not take_over:
            until = datetime.fromtimestamp(current.lease_expires, timezone.utc).isoformat(
                timespec="seconds"
            )
            raise LeaseHeld(
                f"migration '{key}' is being run by {current.lease_owner} (lease until "
                f"{until}); wait for it, or pass --take-over if that run is dead"
            )

    def release(self, record: Record) -> None:
        """Clear our lease and write the record's last state, unless another run took it."""
        try:
            self._fence(record)  # a lost lease leaves the holder's record alone
        except LeaseLost as exc:
            log.info("not writing %s: %s", record.key, exc)
            return
        record.lease_owner = None
        record.lease_expires = 0.0
        record.lease_token = None
        self._put(record)

    def records(self) -> list[Record]:
        """Every migration and shard record, with their skipped ids put back together."""
        raw = self.store.ledger_list()
        parts = {r["key"]: r for r in raw if "chunk_of" in r}
        records = []
        for entry in raw:
            if "chunk_of" in entry:
                continue
            record = Record.from_dict(entry)
            for n in range(int(entry.get("skipped_chunks") or 0)):
                part = parts.get(f"{record.key}#skipped-{n}") or {}
                record.skipped.extend(part.get("ids") or [])
            records.append(record)
        return records

    def history(self) -> list[Record]:
        """Migrations, oldest first; shard records are parts of theirs, not listed."""
        records = self.records()
        return sorted((r for r in records if r.parent is None), key=lambda r: r.started_at)
