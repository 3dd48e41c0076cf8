"""The main pass through Milvus bulk import (``evolve --write-path bulk``).

    read -> adapters -> part files on shared storage -> ledger (files, cursor)
    -> import job -> ledger (job id) -> wait -> ledger (done) -> delete files

Bulk import appends: a part imported twice is two copies of every row. So a
part's files go on record with the cursor BEFORE the job is submitted, and its
job id right after; a resumed run settles every recorded part first (it asks
the server which job took those files, or submits them if none did) and reads
on from the cursor. Killed anywhere, a part is imported exactly once.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from dmu_migrate.evolve.batch import prepare
from dmu_migrate.evolve.ledger import Ledger, Record
from dmu_migrate.evolve.plan import Plan
from dmu_migrate.evolve.progress import EVOLVE
from dmu_migrate.evolve.run import Run
from dmu_migrate.evolve.screen import add_skipped
from dmu_migrate.evolve.settings import batch_rows
from dmu_migrate.evolve.stream import Stage
from dmu_migrate.evolve.sync import checksums
from dmu_migrate.evolve.write_path import importer
from dmu_migrate.stores import milvus_bulk
from dmu_migrate.stores.base import TAG_SOURCE
from dmu_migrate.stores.bulk_storage import Storage, open_storage, part_name

log = logging.getLogger(__name__)


PART_BYTES = 256 << 20  # vector bytes per import job: a few jobs per million wide rows
MAX_PENDING = 2  # jobs in flight while the next part is written; bounds files on disk


class Parts:
    """The recorded parts of a bulk pass and their jobs; every change goes on record."""

    def __init__(self, client: Any, plan: Plan, ledger: Ledger, record: Record, storage: Storage):
        self.client, self.plan, self.ledger, self.record = client, plan, ledger, record
        self.storage = storage
        if record.bulk is None:
            record.bulk = {"storage": storage.uri, "parts": []}
        self.pending: list[dict[str, Any]] = [p for p in self.all if not p["done"]]
        self._drop_unrecorded()

    @property
    def all(self) -> list[dict[str, Any]]:
        assert self.record.bulk is not None
        return list(self.record.bulk["parts"])

    def next_name(self) -> str:
        return f"dmu-{self.record.run_id}-{len(self.all):05d}"

    def _drop_unrecorded(self) -> None:
        """Files a killed run wrote but never recorded: their rows are read again."""
        recorded = {part_name(p["files"]) for p in self.all if p["files"]}
        for stale in self.storage.names(f"dmu-{self.record.run_id}-") - recorded:
            self.storage.drop(stale)

    def add(self, files: list[str], rows: int, last_id: Any) -> None:
        part = {"files": files, "rows": rows, "last_id": last_id, "job": None, "done": False}
        assert self.record.bulk is not None
        self.record.bulk["parts"].append(part)
        self.record.cursor = last_id
        self.record.rows_done += rows
        self.ledger.save(self.record)  # on record before the server sees the files
        self.submit(part)
        self.pending.append(part)
        while len(self.pending) > MAX_PENDING:
            self.settle(self.pending.pop(0))

    def submit(self, part: dict[str, Any]) -> None:
        target = self.plan.target
        part["job"] = milvus_bulk.find_job(self.client, target, part["files"])
        if part["job"] is None:
            part["job"] = milvus_bulk.submit(self.client, target, part["files"])
        self.ledger.save(self.record)
        log.info("bulk import job %s: %d rows from %s", part["job"], part["rows"], part["files"])

    def settle(self, part: dict[str, Any]) -> None:
        """Wait for a part's job (submitting it if a run died before it could); then clean up."""
        if part["job"] is not None:
            state = milvus_bulk.state_of(self.client, part["job"])
            if state in milvus_bulk.FAILED_STATES:
                part["job"] = None
        if part["job"] is None:
            self.submit(part)
        milvus_bulk.wait(self.client, part["job"], self.plan.target)
        part["done"] = True
        self.ledger.save(self.record)
        self.storage.drop(part_name(part["files"]))

    def settle_all(self) -> None:
        while self.pending:
            self.settle(self.pending.pop(0))


def bulk_pass(run: Run, storage: Storage | None = None) -> bool:
    """Like pipeline.main_pass, through import jobs; False when stopped by the time budget.

    The strategy is always NewCollection (write_path.resolve refuses the others): its
    prepare made the empty target; rows go around its write, straight into files.
    ``storage``: as write_path.resolve opened it; else (a resumed pass, a shard) the
    storage the record names is opened.
    """
    store, plan, options, record = run.store, run.plan, run.options, run.record
    client = importer(store).client  # the target's: with --target-uri, not the one read

    if storage is None:
        assert options.bulk_storage is not None or record.bulk is not None
        storage = open_storage(record.bulk["storage"] if record.bulk else str(options.bulk_storage))
    parts = Parts(client, plan, run.ledger, record, storage)
    parts.settle_all()  # what a previous run left in flight, before reading on
    schema = milvus_bulk.describe(client, plan.target)
    vf, dim = plan.source.vector_field, plan.chain.out_dim
    part_rows = max(1, PART_BYTES // (4 * dim))
    batches = store.iter_batches(
        plan.source,
        batch_rows(options.batch_size, max(plan.source.dim, dim)),
        after=record.cursor,
        filter=plan.filter,
        until=record.until,  # a shard's range; None unsharded
    )
    total = record.source_rows if record.parent is not None else plan.rows
    run.report(EVOLVE, record.rows_done, total)  # at once: the first part takes a while
    part: milvus_bulk.Part | None = None
    skipped: list[Any] = []
    last_id: Any = None
    with (
        Stage(batches, options.read_ahead, "dmu-read") as reads,
        Stage(
            (prepare(raw, plan, options) for raw in reads), options.read_ahead, "dmu-adapt"
        ) as ready,
    ):
        for item in ready:
            if part is None:
                name = parts.next_name()
                part = milvus_bulk.Part(storage.scratch(name), schema, vf, dim)
            skipped.extend(item.skipped)
            last_id = item.last_id
            if len(item.batch):
                ids = item.batch.ids
                columns = {**item.batch.fields, plan.source.pk_field: ids}
                columns[TAG_SOURCE] = checksums(item.batch.vectors)
                columns.update({k: [v] * len(ids) for k, v in plan.tags.items()})
                part.append(columns, item.evolved)
                run.result.rows_written += len(ids)
                run.sample.add(ids)
            if part.rows >= part_rows:
                _close(parts, part, plan, skipped, last_id)
                part, skipped = None, []
                run.report(EVOLVE, record.rows_done, total)
                if options.max_seconds is not None and time.perf_counter() - run.start > (
                    options.max_seconds
                ):
                    return False
    if part is not None:
        _close(parts, part, plan, skipped, last_id)
    parts.settle_all()
    if record.parent is None:  # shards leave it to the finish, which waits for them all
        wait_imported(run, imported(record))
    run.report(EVOLVE, record.rows_done, record.rows_done)  # read it all: that is the total
    return True


def imported(*records: Record) -> int:
    """Rows the records' import jobs put into the target."""
    return sum(p["rows"] for r in records if r.bulk for p in r.bulk["parts"])


def wait_imported(run: Run, rows: int) -> None:
    """Before the id diff: a completed job's rows reach the query nodes a little later, and
    a row the diff misses would be written again beside its imported copy."""
    client = importer(run.store).client
    if not milvus_bulk.wait_visible(client, run.plan.target, rows):
        log.warning("'%s' does not show all %d imported rows yet", run.plan.target, rows)


def shard_storage(parent: Record, shard: Record) -> None:
    """A shard of a bulk split imports through the split's storage, whoever runs it."""
    if parent.bulk is not None and shard.bulk is None:
        shard.bulk = {"storage": parent.bulk["storage"], "parts": []}


def _close(parts: Parts, part: milvus_bulk.Part, plan: Plan, skipped: list[Any], last: Any) -> None:
    add_skipped(parts.record, plan, skipped)
    files = part.close()
    name = part.directory.name
    if part.rows:
        parts.add(parts.storage.publish(name, files), part.rows, last)
    else:  # every row of the part was a bad vector: nothing to import
        parts.storage.drop(name)
        parts.record.cursor = last
        parts.ledger.save(parts.record)
