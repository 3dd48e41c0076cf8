"""Write natively re-embedded vectors into a migration's evolved collection, by id.

Each given row gets its new vector and the tags ``dmu_origin=native``,
``dmu_version=<to version>``, ``dmu_from=""`` and ``dmu_src=""`` (no source
vector it was derived from); every other field of the row is kept and no other
row is touched. evolve's re-runs leave such rows alone (evolve/sync.py) and
verification counts them as present without comparing them to the adapter.

Safety, in order:
1. the input is checked whole before the first write (evolve/backfill_input.py);
2. the migration's lease is held for the run, so a cron ``evolve`` cannot compare
   and overwrite rows between our writes (it waits for the lease, or is refused);
3. each batch is read back (ids present, tag native, the vector as written) before
   the ledger records it, and the ledger keeps the input's fingerprint and the rows
   acknowledged, so a killed run resumes after its last acknowledged batch and a
   batch written twice writes the same values.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from dmu_migrate.errors import InputError, StoreError, VerificationError
from dmu_migrate.evolve.backfill_target import NATIVE, find_migration
from dmu_migrate.evolve.ledger import DONE, RUNNING, Ledger, Record, now_iso
from dmu_migrate.evolve.progress import BACKFILL, INPUT_CHECK, Meter, Report, quiet
from dmu_migrate.metrics import l2_normalize
from dmu_migrate.stores.base import (
    TAG_FROM,
    TAG_ORIGIN,
    TAG_SOURCE,
    TAG_VERSION,
    CollectionInfo,
    VectorStore,
)

READ_BACK_TOLERANCE = 1e-5


class NativeInput(Protocol):
    label: str
    fingerprint: str
    rows: int

    def check(
        self, store: VectorStore, target: CollectionInfo, batch_size: int, meter: Meter
    ) -> None: ...

    def batches(
        self, store: VectorStore, target: CollectionInfo, batch_size: int, skip: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...


@dataclass(frozen=True)
class BackfillResult:
    migration: str
    target: str
    input: str
    rows_written: int  # by this run
    rows_done: int  # of the input, this run and the runs it resumed
    rows_total: int
    resumed: bool
    up_to_date: bool  # the same input was already written completely
    seconds: float

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def target_record(store: VectorStore, collection: str) -> Record:
    record = find_migration(store, collection)
    if record is None:
        raise InputError(
            f"no new-collection migration of '{collection}' is recorded in this store; backfill "
            f"writes into the collection evolve made, so run evolve first"
        )
    if not record.main_pass_done:
        raise InputError(
            f"migration '{record.key}' has not finished its first pass (status "
            f"{record.status}); run evolve to finish it, then backfill"
        )
    if not store.has_collection(record.target):
        raise StoreError(
            f"evolved collection '{record.target}' of migration '{record.key}' does not exist; "
            f"run evolve again to rebuild it"
        )
    return record


def native_tags(record: Record) -> dict[str, str]:
    return {TAG_VERSION: record.to_version, TAG_FROM: "", TAG_ORIGIN: NATIVE, TAG_SOURCE: ""}


def read_back(
    store: VectorStore, target: CollectionInfo, ids: np.ndarray, vectors: np.ndarray
) -> None:
    """The rows just written are there, tagged native, with the vectors given."""
    rows = store.fetch(target, ids, target.vector_field)
    origins = rows.fields.get(TAG_ORIGIN) or [None] * len(ids)
    wrong = [i for i, o in zip(ids.tolist(), origins, strict=True) if o != NATIVE]
    stored, given = rows.vectors, vectors
    if target.metric.upper() == "COSINE":
        # Qdrant stores cosine vectors normalised; the direction is what was written.
        stored, given = l2_normalize(stored), l2_normalize(given)
    error = float(np.abs(stored - given).max()) if len(ids) else 0.0
    if wrong or not error <= READ_BACK_TOLERANCE:
        raise VerificationError(
            f"rows of '{target.name}' read back after the backfill write differ (ids not "
            f"tagged native: {wrong[:3]}, largest vector difference {error:.1e}); the ledger "
            f"did not record them, run backfill again"
        )


def backfill(
    store: VectorStore,
    collection: str,
    source: NativeInput,
    batch_size: int = 1024,
    take_over: bool = False,
    report: Report = quiet,
) -> BackfillResult:
    """Write ``source``'s native vectors into the migration ``collection`` names.

    ``report`` hears the input check, then the backfill phase (evolve/progress.py)."""
    started = time.perf_counter()
    record = target_record(store, collection)
    target = store.describe(record.target, record.vector_field)
    checked = Meter(report, INPUT_CHECK, source.rows).start()
    source.check(store, target, batch_size, checked)  # the whole input, before any write
    checked.end()
    ledger = Ledger(store)
    ledger.acquire(record, take_over)
    try:
        state = record.backfill or {}
        same = state.get("input") == source.fingerprint
        if same and state.get("status") == DONE:
            Meter(report, BACKFILL, source.rows, source.rows).start()  # all of it, earlier
            return BackfillResult(
                record.key, target.name, source.label, 0, source.rows, source.rows,
                False, True, time.perf_counter() - started,
            )  # fmt: skip
        resumed = same and state.get("status") == RUNNING
        done = int(state.get("rows_done", 0)) if resumed else 0
        if not resumed:
            state = {"input": source.fingerprint, "label": source.label, "rows": source.rows,
                     "rows_done": 0, "status": RUNNING, "started_at": now_iso()}  # fmt: skip
            record.backfill = state
            ledger.save(record)
        written = 0
        tags = native_tags(record)
        meter = Meter(report, BACKFILL, source.rows, done).start()
        for ids, vectors in source.batches(store, target, batch_size, done):
            store.write_vectors(target, target.vector_field, ids, vectors, tags)
            read_back(store, target, ids, vectors)
            written += len(ids)
            state["rows_done"] = done + written
            ledger.save(record)  # only now: a crash before this rewrites the same values
            meter.add(len(ids))
        store.flush(target.name)
        meter.end()
        state["status"], state["finished_at"] = DONE, now_iso()
        record.runs.append(
            {"backfilled_at": state["finished_at"], "rows": source.rows, "input": source.label}
        )
        ledger.save(record)
    finally:
        ledger.release(record)
    return BackfillResult(
        record.key, target.name, source.label, written, done + written, source.rows,
        resumed, False, time.perf_counter() - started,
    )  # fmt: skip
