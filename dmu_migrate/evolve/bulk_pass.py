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
from typing import TYPE_CHECKING, Any

from dmu_migrate.errors import InputError
from dmu_migrate.evolve import AUTO, BULK, INSERT, WRITE_PATHS
from dmu_migrate.evolve.ledger import Ledger, Record
from dmu_migrate.evolve.plan import NEW_COLLECTION, Plan
from dmu_migrate.evolve.progress import EVOLVE, Report
from dmu_migrate.evolve.screen import add_skipped
from dmu_migrate.evolve.settings import batch_rows
from dmu_migrate.evolve.stream import Stage
from dmu_migrate.evolve.sync import checksums
from dmu_migrate.stores.base import TAG_SOURCE, VectorStore

if TYPE_CHECKING:
    from dmu_migrate.evolve.pipeline import EvolveOptions, EvolveResult
    from dmu_migrate.evolve.strategies import Strategy
    from dmu_migrate.evolve.verify import Reservoir
    from dmu_migrate.stores import milvus_bulk

log = logging.getLogger(__name__)


def _milvus_bulk() -> Any:
    """The bulk module, imported on first use: it loads pymilvus (over a second), which
    Qdrant, Parquet and insert-path runs never need."""
    from dmu_migrate.stores import milvus_bulk

    return milvus_bulk


# Below this many rows `auto` keeps the insert path. Measured at 100k x 128 bulk was no
# faster than insert end to end (docs/benchmarks.md); no size has yet been measured
# where it wins, so auto stays on insert up to 1M until one is.
AUTO_MIN_ROWS = 1_000_000
PART_BYTES = 256 << 20  # vector bytes per import job: a few jobs per million wide rows
MAX_PENDING = 2  # jobs in flight while the next part is written; bounds files on disk


def resolve(store: VectorStore, plan: Plan, options: EvolveOptions, record: Record | None) -> str:
    """The write path this run takes; one-line errors for a bulk run that cannot be."""
    path = options.write_path
    if path not in WRITE_PATHS:
        raise InputError(f"--write-path must be one of {', '.join(WRITE_PATHS)}, got '{path}'")
    if record is not None and record.bulk is not None and not record.main_pass_done:
        return BULK  # a bulk pass on record resumes as one, whatever this run asked
    if path == INSERT or (record is not None and record.main_pass_done):
        return INSERT  # re-runs after the main pass write what changed, row by row
    problem = _problem(store, plan, options)
    if path == AUTO:
        if problem or plan.rows < AUTO_MIN_ROWS:
            log.info("write path: insert (%s)", problem or f"{plan.rows} rows < {AUTO_MIN_ROWS}")
            return INSERT
    elif problem:
        raise InputError(f"--write-path bulk: {problem}; use --write-path insert")
    from dmu_migrate.stores.milvus import MilvusStore

    assert isinstance(store, MilvusStore)  # _problem said so
    _milvus_bulk().probe(store.client, _milvus_bulk().check_root(str(options.bulk_storage)))
    return BULK


def _problem(store: VectorStore, plan: Plan, options: EvolveOptions) -> str | None:
    from dmu_migrate.stores.milvus import MilvusStore

    if not isinstance(store, MilvusStore) or not store.shared:
        return f"store '{getattr(store, 'uri', store)}' has no bulk import (Milvus server only)"
    if options.bulk_storage is None:
        return "no --bulk-storage directory that the Milvus server shares was given"
    if plan.strategy != NEW_COLLECTION:
        return f"bulk import writes a new collection only, not the {plan.strategy} strategy"
    if plan.filter:
        return "a --filter run writes into a collection that may hold rows"
    if store.has_collection(plan.target) and store.count(plan.target) > 0:
        return (
            f"target collection '{plan.target}' already holds rows and an import would "
            "duplicate their ids"
        )
    from dmu_migrate.stores import milvus_partitions

    if milvus_partitions.named(store.client, plan.source.name):
        return f"'{plan.source.name}' has named partitions"
    _milvus_bulk().check_root(str(options.bulk_storage))
    return _milvus_bulk().unsupported(
        plan.source.schema or {"fields": []}, plan.source.vector_field
    )


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
                _milvus_bulk().remove([str(stale / "x")])

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
        part["job"] = _milvus_bulk().find_job(self.client, target, part["files"])
        if part["job"] is None:
            part["job"] = _milvus_bulk().submit(self.client, target, part["files"])
        self.ledger.save(self.record)
        log.info("bulk import job %s: %d rows from %s", part["job"], part["rows"], part["files"])

    def settle(self, part: dict[str, Any]) -> None:
        """Wait for a part's job (submitting it if a run died before it could); then clean up."""
        if part["job"] is not None:
            state = _milvus_bulk().state_of(self.client, part["job"])
            if state in _milvus_bulk().FAILED_STATES:
                part["job"] = None
        if part["job"] is None:
            self.submit(part)
        _milvus_bulk().wait(self.client, part["job"], self.plan.target)
        part["done"] = True
        self.ledger.save(self.record)
        _milvus_bulk().remove(part["files"])

    def settle_all(self) -> None:
        while self.pending:
            self.settle(self.pending.pop(0))


def bulk_pass(
    store: VectorStore,
    plan: Plan,
    strategy: Strategy,
    ledger: Ledger,
    record: Record,
    options: EvolveOptions,
    result: EvolveResult,
    sample: Reservoir,
    report: Report,
    start: float,
) -> bool:
    """Like pipeline.main_pass, through import jobs; False when stopped by the time budget.

    ``strategy`` is always NewCollection (resolve refuses the others): its prepare made
    the empty target; rows go around its write, straight into files.
    """
    from dmu_migrate.evolve.pipeline import prepare

    assert options.bulk_storage is not None or record.bulk is not None
    root = Path(record.bulk["storage"] if record.bulk else str(options.bulk_storage))
    parts = Parts(store, plan, ledger, record, _milvus_bulk().check_root(str(root)))
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
    report(EVOLVE, record.rows_done, plan.rows)  # at once: the first part takes a while
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
                part = _milvus_bulk().Part(parts.directory(), schema, vf, dim)
            skipped.extend(item.skipped)
            last_id = item.last_id
            if len(item.batch):
                ids = item.batch.ids
                columns = {**item.batch.fields, plan.source.pk_field: ids}
                columns[TAG_SOURCE] = checksums(item.batch.vectors)
                columns.update({k: [v] * len(ids) for k, v in plan.tags.items()})
                part.append(columns, item.evolved)
                result.rows_written += len(ids)
                sample.add(ids)
            if part.rows >= part_rows:
                _close(parts, part, plan, skipped, last_id)
                part, skipped = None, []
                report(EVOLVE, record.rows_done, plan.rows)
                if options.max_seconds is not None and time.perf_counter() - start > (
                    options.max_seconds
                ):
                    return False
    if part is not None:
        _close(parts, part, plan, skipped, last_id)
    parts.settle_all()
    imported = sum(p["rows"] for p in parts.all)
    if not _milvus_bulk().wait_visible(store.client, plan.target, imported):  # type: ignore[attr-defined]
        log.warning("'%s' does not show all %d imported rows yet", plan.target, imported)
    report(EVOLVE, record.rows_done, record.rows_done)  # read it all: that is the total
    return True


def _close(parts: Parts, part: milvus_bulk.Part, plan: Plan, skipped: list[Any], last: Any) -> None:
    add_skipped(parts.record, plan, skipped)
    files = part.close()
    if part.rows:
        parts.add(files, part.rows, last)
    else:  # every row of the part was a bad vector: nothing to import
        _milvus_bulk().remove(files)
        parts.record.cursor = last
        parts.ledger.save(parts.record)
