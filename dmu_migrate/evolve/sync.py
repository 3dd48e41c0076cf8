"""Keep a new-collection target in step with a source the application still writes.

Milvus and Qdrant offer no change feed and no per-row update time, so the only
complete way to learn what changed is to read the source again. Each evolved
row carries ``dmu_src``, a short checksum of the source vector it was evolved
from, so one merge-join of the source (ids and hashed vectors) with the target
(ids and tags) sorts every id into:

    missing   in the source, not in the target (inserted since)        -> evolve
    stale     evolved from a source vector that has changed since,     -> evolve again
              or now in another partition than its evolved row        (moved: deleted first)
    deleted   evolved, but its id is gone from the source               -> delete
    native    written by the application (dmu_origin other than        -> never touched
              'evolved'), whatever the source holds for its id

The adapter runs on missing and stale rows only; unchanged rows cost one hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from dmu_migrate.evolve.id_diff import ID_BATCH, VERIFY_SAMPLE, Reservoir
from dmu_migrate.evolve.id_join import Page, Window, windows
from dmu_migrate.evolve.progress import CATCH_UP, ID_DIFF, Meter, Report, quiet
from dmu_migrate.evolve.screen import add_skipped, clear_skipped, screen
from dmu_migrate.evolve.settings import batch_rows
from dmu_migrate.evolve.stream import Stage
from dmu_migrate.stores.base import (
    PARTITION_KEY,
    TAG_ORIGIN,
    TAG_SOURCE,
    CollectionInfo,
    Id,
    VectorStore,
    id_array,
)

if TYPE_CHECKING:
    from dmu_migrate.evolve.ledger import Record
    from dmu_migrate.evolve.plan import Plan
    from dmu_migrate.evolve.strategies import Strategy

EVOLVED = "evolved"
WRITE_BATCH = 4096  # ids fetched and written per round of the repair


def checksums(vectors: np.ndarray) -> list[str]:
    """16 hex digits per row of float32 vectors: enough to tell an updated vector apart."""
    rows = np.ascontiguousarray(vectors, dtype="<f4")
    return [hashlib.blake2b(row.tobytes(), digest_size=8).hexdigest() for row in rows]


@dataclass
class SyncReport:
    added: int = 0
    updated: int = 0
    deleted: int = 0
    native: int = 0  # target rows the application wrote, left alone
    missing: list[Id] = field(default_factory=list)
    stale: list[Id] = field(default_factory=list)
    # Stale rows whose partition changed: an upsert into the new partition leaves the old
    # row in place on a Milvus server, so these are deleted from the target first.
    moved: list[Id] = field(default_factory=list)
    extra: list[Id] = field(default_factory=list)  # evolved rows whose source row is gone
    sample: Reservoir = field(default_factory=lambda: Reservoir(VERIFY_SAMPLE))

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.deleted)


def target_info(store: VectorStore, plan: Plan) -> CollectionInfo:
    """The target as a collection to read: the source's layout with the evolved size."""
    dims = dict(plan.source.vector_fields)
    dims[plan.source.vector_field] = plan.chain.out_dim
    return replace(
        plan.source, requested=plan.target, name=plan.target, alias=None,
        dim=plan.chain.out_dim, vector_fields=dims,
    )  # fmt: skip


def page_rows(dim: int) -> int:
    """Rows per page of a full read: the largest query window, fewer when rows are wide.

    Measured on Milvus Lite 3.2: every page filters and sorts all the rows after the
    cursor, so a read costs about (rows / page) x rows; at 200k x 32, pages of 4096
    took 122 s for the two reads of a re-run with nothing to do.
    """
    return batch_rows(ID_BATCH, dim)


def _source_rows(store: VectorStore, plan: Plan, hashed: bool) -> Iterator[Page]:
    if hashed:
        rows = page_rows(plan.source.dim)
        for batch in store.iter_batches(plan.source, rows, filter=plan.filter):
            parts = batch.fields.get(PARTITION_KEY) or [None] * len(batch)
            yield batch.ids, (_column(checksums(batch.vectors)), _column(parts))
    else:
        for ids in store.iter_ids(plan.source.name, ID_BATCH, plan.filter):
            nothing = _column([None] * len(ids))
            yield ids, (nothing, nothing)


def _target_rows(store: VectorStore, plan: Plan) -> Iterator[Page]:
    info = target_info(store, plan)
    for batch in store.iter_batches(info, page_rows(info.dim), filter=plan.filter):
        origins = batch.fields.get(TAG_ORIGIN) or [None] * len(batch)
        sources = batch.fields.get(TAG_SOURCE) or [None] * len(batch)
        parts = batch.fields.get(PARTITION_KEY) or [None] * len(batch)
        yield batch.ids, (_column(origins), _column(sources), _column(parts))


def _column(values: list[Any]) -> np.ndarray:
    """Python values as an object array: compared element by element, None kept as None."""
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column


def _sort_window(w: Window, hashed: bool, report: SyncReport) -> None:
    """One window of the join (see the module docstring), by whole-array operations."""
    ids, (checksum, source_part) = w.left
    target_ids, (origin, source_sum, target_part) = w.right
    report.missing += ids[w.left_only].tolist()
    # Target only: evolved rows whose source is gone, or rows the application wrote.
    evolved_only = origin[w.right_only] == EVOLVED
    report.extra += target_ids[w.right_only][evolved_only].tolist()
    report.native += int((~evolved_only).sum())
    # In both: rows the application wrote are never touched.
    evolved = origin[w.right_both] == EVOLVED
    report.native += int((~evolved).sum())
    sampled = w.left_only.copy()
    sampled[w.left_both[evolved]] = True
    report.sample.add(ids[sampled])  # missing and evolved source ids, in key order
    if not hashed:
        return
    both = w.left_both[evolved]
    kept_sum, now_sum = source_sum[w.right_both[evolved]], checksum[both]
    # A row written before checksums were kept has none (None; "" is a checksum too):
    # it is not stale.
    has_sum = kept_sum.astype(bool) | (kept_sum == "")
    changed = has_sum & (kept_sum != now_sum)
    moved = source_part[both] != target_part[w.right_both[evolved]]
    report.stale += ids[both][changed | moved].tolist()
    report.moved += ids[both][moved].tolist()


def compare(
    store: VectorStore,
    plan: Plan,
    hashed: bool,
    meter: Meter | None = None,
    skipped: frozenset[Id] = frozenset(),
) -> SyncReport:
    """Sort every id of source and target (see the module docstring); writes nothing.

    ``hashed`` reads the source's vectors to find stale rows; without it only
    the ids are compared (missing, deleted), which is what verification needs.
    ``meter``, if given, counts the source ids as they are merged. ``skipped`` (rows
    left out as bad) are never drawn into the sample: it is of vectors to check.
    """
    report = SyncReport(sample=Reservoir(VERIFY_SAMPLE, skipped))
    with (
        Stage(_source_rows(store, plan, hashed), 2, "dmu-sync-source") as source,
        Stage(_target_rows(store, plan), 2, "dmu-sync-target") as target,
    ):
        pages = meter.pages(source, lambda page: len(page[0])) if meter else source
        for w in windows(pages, target, widths=(2, 3)):
            _sort_window(w, hashed, report)
    return report


def sync(
    store: VectorStore,
    plan: Plan,
    strategy: Strategy,
    record: Record,
    skip_bad: bool,
    progress: Report = quiet,
) -> SyncReport:
    """Evolve missing and stale rows, delete evolved rows gone from the source.

    ``progress`` hears the comparison as the id diff phase, the repair as catch-up.
    """
    diffed = Meter(progress, ID_DIFF, plan.rows).start()
    known_bad = frozenset(record.skipped)
    report = compare(store, plan, hashed=True, meter=diffed, skipped=known_bad)
    diffed.end()
    if plan.filter is None and known_bad:
        # Every source id was compared: a row left out earlier that is neither missing nor
        # stale now is gone from the source, or its evolved row is current again.
        behind = set(report.missing) | set(report.stale)
        record.skipped = [i for i in record.skipped if i in behind]
    # Rows left out earlier are read and screened again: one fixed since is evolved now.
    todo = {False: report.missing, True: report.stale}
    repaired = Meter(progress, CATCH_UP, len(todo[False]) + len(todo[True]) + len(report.extra))
    if repaired.total:
        repaired.start()
    for start in range(0, len(report.moved), WRITE_BATCH):
        store.delete_ids(plan.target, id_array(report.moved[start : start + WRITE_BATCH]))
    if report.moved:
        # Measured on Milvus Lite 3.2: a row deleted and then upserted into another
        # partition before a flush shows up in its old partition again.
        store.flush(plan.target)
    for stale, rows in todo.items():
        for start in range(0, len(rows), WRITE_BATCH):
            chunk = id_array(rows[start : start + WRITE_BATCH])
            fetched = store.fetch(plan.source, chunk, plan.source.vector_field)
            batch, bad = screen(fetched, plan, skip_bad, known_bad)
            add_skipped(record, plan, bad)
            if len(batch):
                strategy.write(record, batch, plan.chain(batch.vectors))
                clear_skipped(record, batch.ids)
            if stale:
                report.updated += len(batch)
            else:
                report.added += len(batch)
            repaired.add(len(chunk))  # bad rows left out count as handled
    for start in range(0, len(report.extra), WRITE_BATCH):
        chunk = id_array(report.extra[start : start + WRITE_BATCH])
        store.delete_ids(plan.target, chunk)
        report.deleted += len(chunk)
        repaired.add(len(chunk))
    if report.changed:
        store.flush(plan.target)
    return report
