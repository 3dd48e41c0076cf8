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
from pathlib import Path
from typing import Any

from dmu_migrate.evolve.ledger import Ledger, Record
from dmu_migrate.evolve.plan import Plan
from dmu_migrate.evolve.progress import EVOLVE
from dmu_migrate.evolve.run import Run
from dmu_migrate.evolve.screen import add_skipped
from dmu_migrate.evolve.settings import batch_rows
from dmu_migrate.evolve.stream import Stage
from dmu_migrate.evolve.sync import checksums
from dmu_migrate.stores import milvus_bulk
from dmu_migrate.stores.base import TAG_SOURCE

log = logging.getLogger(__name__)


PART_BYTES = 256 << 20  # vector bytes per import job: a few jobs per million wide rows
MAX_PENDING = 2  # jobs in flight while the next part is written; bounds files on disk


class Parts:
    """The recorded parts of a bulk pass and their jobs; every change goes on record."""

    def __init__(self, store: Any, plan: Plan, ledger: Ledger, record: Record, root: Path):
        self.client, self.plan, self.ledger, self.record = store.client, plan, ledger, record
        self.root = root
        if record.bulk is None:
            record.bulk = {"storage": str(root), "parts": []}
        self.pending: list[dict[str, Any]] = [p for p in self.all if not p["done"]]
        self._drop_unrecorded()

    @property
    def all(self) -> list[dict[str, Any]]:
        assert self.record.bulk is not None
        return list(self.record.bulk["parts"])

    def directory(self) -> Path:
        return self.root / f"dmu-{self.record.run_id}-{len(self.all):05d}"

    def _drop_unrecorded(self) -> None:
        """Files a killed run wrote but never recorded: their rows are read again."""
        recorded = {str(Path(p["files"][0]).parent) for p in self.all if p["files"]}
        for stale in self.root.glob(f"dmu-{self.record.run_id}-*"):
            if str(stale) not in recorded:
                milvus_bulk.remove([str(stale / "x")])

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
        milvus_bulk.remove(part["files"])

    def settle_all(self) -> None:
        while self.pending:
            self.settle(self.pending.pop(0))


def bulk_pass(run: Run) -> bool:
    """Like pipeline.main_pass, through import jobs; False when stopped by the time budget.

    The strategy is always NewCollection (write_path.resolve refuses the others): its
    prepare made the empty target; rows go around its write, straight into files.
    """
    from dmu_migrate.evolve.pipeline import prepare

    store, plan, options, record = run.store, run.plan, run.options, run.record

    assert options.bulk_storage is not None or record.bulk is not None
    root = Path(record.bulk["storage"] if record.bulk else str(options.bulk_storage))
    parts = Parts(store, plan, run.ledger, record, milvus_bulk.check_root(str(root)))
    parts.settle_all()  # what a previous run left in flight, before reading on
    schema = store.client.describe_collection(plan.target)  # type: ignore[attr-defined]
    vf, dim = plan.source.vector_field, plan.chain.out_dim
    part_rows = max(1, PART_BYTES // (4 * dim))
    batches = store.iter_batches(
        plan.source,
        batch_rows(options.batch_size, max(plan.source.dim, dim)),
        after=record.cursor,
        filter=plan.filter,
    )
    run.report(EVOLVE, record.rows_done, plan.rows)  # at once: the first part takes a while
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
                part = milvus_bulk.Part(parts.directory(), schema, vf, dim)
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
                run.report(EVOLVE, record.rows_done, plan.rows)
                if options.max_seconds is not None and time.perf_counter() - run.start > (
                    options.max_seconds
                ):
                    return False
    if part is not None:
        _close(parts, part, plan, skipped, last_id)
    parts.settle_all()
    imported = sum(p["rows"] for p in parts.all)
    if not milvus_bulk.wait_visible(store.client, plan.target, imported):  # type: ignore[attr-defined]
        log.warning("'%s' does not show all %d imported rows yet", plan.target, imported)
    run.report(EVOLVE, record.rows_done, record.rows_done)  # read it all: that is the total
    return True


def _close(parts: Parts, part: milvus_bulk.Part, plan: Plan, skipped: list[Any], last: Any) -> None:
    add_skipped(parts.record, plan, skipped)
    files = part.close()
    if part.rows:
        parts.add(files, part.rows, last)
    else:  # every row of the part was a bad vector: nothing to import
        milvus_bulk.remove(files)
        parts.record.cursor = last
        parts.ledger.save(parts.record)
