"""``dmu-migrate evolve``: stream old vectors through the adapters into the target.

    ledger (resume point) -> read batch after cursor -> adapters -> write -> ledger
    -> catch-up (source ids not yet at the target version) -> verify -> cut-over

The source is never written except by the in-place strategy, which
snapshots first. Writes are keyed by source id, and the cursor advances only
after a batch is acknowledged, so a crash anywhere resumes to the same state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dmu_migrate.artifact import Artifact
from dmu_migrate.errors import DmuError, InputError, NothingToDo
from dmu_migrate.evolve import bulk_pass
from dmu_migrate.evolve.finish import finish
from dmu_migrate.evolve.ledger import (
    DONE,
    FAILED,
    LEASE_SECONDS,
    ROLLED_BACK,
    RUNNING,
    STOPPED,
    Ledger,
    Record,
)
from dmu_migrate.evolve.plan import IN_PLACE, Plan, make_plan
from dmu_migrate.evolve.progress import EVOLVE, ProgressCallback, Report, reporter
from dmu_migrate.evolve.retry import Retrier, RetryPolicy
from dmu_migrate.evolve.screen import add_skipped, screen
from dmu_migrate.evolve.settings import batch_rows
from dmu_migrate.evolve.strategies import InPlace, Strategy, make_strategy
from dmu_migrate.evolve.stream import Stage
from dmu_migrate.evolve.transform import AdapterChain
from dmu_migrate.evolve.verify import VERIFY_SAMPLE, Reservoir, VerifyReport
from dmu_migrate.stores.base import Batch, Id, VectorStore, id_value

log = logging.getLogger(__name__)


# Outcomes, with the exit codes schedulers see.
COMPLETED, REMAINING = "done", "remaining"
EXIT_REMAINING = 75  # EX_TEMPFAIL: stopped at --max-seconds, run again to continue
LEDGER_EVERY = 1.0  # seconds between cursor saves in the main pass


@dataclass(frozen=True)
class EvolveOptions:
    batch_size: int = 8192
    max_seconds: float | None = None  # stop (resumably) after this much work
    take_over: bool = False  # take the lease of a run that died
    restart: bool = False  # forget the ledger record and start from the beginning
    snapshot_root: Path = Path("dmu-snapshots")
    skip_bad_vectors: bool = False  # leave NaN/inf/zero vectors out (recorded) instead of failing
    retry: RetryPolicy = RetryPolicy()
    read_ahead: int = 1  # batches each stage may run ahead of the writer; 0 = no threads
    full_verify: bool = False  # diff every id even after a whole pass in one run
    reapply: bool = False  # bring a rolled-back migration in step and cut over again
    write_path: str = "insert"  # insert, bulk (Milvus import jobs) or auto (evolve/bulk_pass.py)
    bulk_storage: str | None = None  # a directory the Milvus server reads, for bulk


@dataclass
class EvolveResult:
    migration: str
    outcome: str  # COMPLETED or REMAINING
    strategy: str
    source: str
    target: str
    target_field: str
    alias: str | None
    rows_written: int  # in this run
    rows_done: int  # over the whole migration
    rows_total: int
    caught_up: int  # rows found missing by the id diff and written
    resumed: bool
    seconds: float
    cut_over: str = ""
    retries: int = 0  # passing store failures retried during this run
    verify: VerifyReport | None = None
    notes: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)  # seconds per step of this run
    id_check: str = "full diff"  # or "counts": how every source row was shown to be at the target
    shards: list[dict[str, Any]] = field(default_factory=list)  # per shard, sharded runs only
    updated: int = 0  # evolved again: their source vector changed since
    deleted: int = 0  # evolved rows whose source row is gone
    native: int = 0  # target rows the application wrote, left alone

    def as_dict(self) -> dict[str, object]:
        out = dict(self.__dict__)
        out["verify"] = self.verify.as_dict() if self.verify else None
        return out


def evolve(
    store: VectorStore,
    plan: Plan,
    options: EvolveOptions = EvolveOptions(),
    on_progress: ProgressCallback | None = None,
) -> EvolveResult:
    check_options(options)
    start = time.perf_counter()
    report = reporter(on_progress)
    ledger = Ledger(store)
    retry = Retrier(options.retry)
    record, found = open_record(ledger, retry, plan, options)
    if record.shards and not record.main_pass_done:
        raise InputError(
            f"migration '{plan.key}' is split into {record.shards} shards; run it with "
            f"--shards {record.shards} (or --restart to start over unsharded)"
        )
    resumed = found and record.status != DONE
    # Before the lease: a bulk run that cannot be fails with nothing written.
    write_path = bulk_pass.resolve(store, plan, options, record if found else None)
    retry.run("taking the lease", lambda: ledger.acquire(record, options.take_over))
    record.status = RUNNING
    strategy = make_strategy(store, plan, options.snapshot_root)
    result = new_result(plan, record, resumed)
    with recorded(ledger, retry, record, result, start):
        retry.run("preparing the target", lambda: strategy.prepare(record))
        # This run reads the whole source itself: counts can then stand in for the id diff.
        whole_pass = not record.main_pass_done and record.cursor is None
        sample = Reservoir(VERIFY_SAMPLE)
        if not record.main_pass_done:
            clock = time.perf_counter()
            run_pass = bulk_pass.bulk_pass if write_path == bulk_pass.BULK else main_pass
            finished = retry.run(
                "reading and writing batches",
                lambda: run_pass(
                    store,
                    plan,
                    strategy,
                    ledger,
                    record,
                    options,
                    result,
                    sample,
                    report,
                    start,
                ),
                progress=lambda: record.cursor,
            )
            result.phases["main_pass"] = time.perf_counter() - clock
            if not finished:
                result.outcome = REMAINING
                record.status = STOPPED  # no process runs it now; the next run resumes
                return result
            record.main_pass_done = True
            retry.run("saving the ledger", lambda: ledger.save(record))
        finish(store, plan, strategy, record, options, result, retry, sample, whole_pass, report)
    return result


def check_options(options: EvolveOptions) -> None:
    if options.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {options.batch_size}")
    if options.read_ahead < 0:
        raise InputError(f"--read-ahead must be >= 0, got {options.read_ahead}")


def open_record(
    ledger: Ledger, retry: Retrier, plan: Plan, options: EvolveOptions
) -> tuple[Record, bool]:
    """This migration's ledger record and whether it was on record (else a new one)."""
    record = retry.run("reading the ledger", lambda: ledger.load(plan.key))
    if record is not None and options.restart:
        record = None
    if record is None:
        return plan.new_record(), False
    check_adapters(record, plan)
    if record.status == ROLLED_BACK:
        keep_rolled_back(record, plan, options)
    if record.filter != plan.filter:  # a full run after a --filter one covers every row
        record.filter = plan.filter
    record.source_rows = plan.rows  # the source keeps changing; status shows it as it is now
    return record, True


def keep_rolled_back(record: Record, plan: Plan, options: EvolveOptions) -> None:
    """A rollback is an operator's decision: a scheduled run must not undo it."""
    if not options.reapply:
        raise NothingToDo(
            f"migration '{plan.key}' was rolled back at {record.finished_at}, so alias "
            f"'{record.alias}' stays where the rollback put it and nothing was written; pass "
            f"--reapply to bring '{plan.target}' in step and cut over again, or --restart to "
            f"start over"
        )
    if record.strategy == IN_PLACE:
        raise InputError(
            f"migration '{plan.key}' was rolled back by restoring its snapshot; --reapply "
            f"cannot redo an in-place migration, pass --restart to run it again"
        )


def check_adapters(record: Record, plan: Plan) -> None:
    """A migration resumes only through the adapters it started with."""
    if record.checksum != plan.chain.checksum:
        raise InputError(
            f"migration '{plan.key}' was started with adapters {record.adapters} "
            f"({record.checksum}); resume with the same artifacts, or pass --restart"
        )


def new_result(plan: Plan, record: Record, resumed: bool) -> EvolveResult:
    return EvolveResult(
        plan.key,
        COMPLETED,
        plan.strategy,
        plan.source.name,
        plan.target,
        plan.target_field,
        plan.alias,
        0,
        record.rows_done,
        plan.rows,
        0,
        resumed,
        0.0,
    )


@contextmanager
def recorded(
    ledger: Ledger, retry: Retrier, record: Record, result: EvolveResult, start: float
) -> Iterator[None]:
    """Around a leased run: a failure of any kind goes on record; totals and the lease always."""
    failure: BaseException | None = None
    try:
        yield
    except DmuError as exc:
        failure = exc
        record.status, record.error = FAILED, str(exc)
        raise
    except KeyboardInterrupt as exc:
        failure = exc
        record.status, record.error = STOPPED, "interrupted"
        raise
    except BaseException as exc:  # a bug: still on record, never left 'running'
        failure = exc
        record.status, record.error = FAILED, f"{type(exc).__name__}: {exc}"
        raise
    finally:
        result.rows_done = record.rows_done
        result.retries += retry.retries
        try:
            retry.run("releasing the lease", lambda: ledger.release(record))
        except DmuError as exc:  # the lease expires by itself; keep the first error visible
            log.warning("could not release the lease of %s: %s", record.key, exc)
            if isinstance(failure, DmuError):
                # The advice must match what the next run will meet: a lease still held.
                failure.args = (
                    f"{failure}; the lease could not be released either, so the next run "
                    f"needs --take-over (or waits {LEASE_SECONDS / 60:.0f} minutes)",
                )
        result.seconds = time.perf_counter() - start


def main_pass(
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
    """Stream every row after the cursor; False when stopped by the time budget.

    Reading, screening + the adapter, and writing run as overlapped stages
    (evolve/stream.py); this thread is the only writer and takes batches in
    read order, so the cursor always marks a prefix of the source.
    """
    if isinstance(strategy, InPlace) and record.pending:
        # Died (or failed) between snapshot and overwrite: the part, not the store,
        # holds that batch's old vectors, so replay it before reading on.
        strategy.apply(record.pending)
        record.cursor = record.pending["last_id"]
        record.pending = None
        ledger.save(record)
    # In place, reads and overwrites touch the same collection: keep them in turn.
    depth = 0 if isinstance(strategy, InPlace) else options.read_ahead
    batch_size = batch_rows(options.batch_size, max(plan.source.dim, plan.chain.out_dim))
    # A shard record bounds the pass to its range; an unsharded one has until = None.
    batches = store.iter_batches(
        plan.source, batch_size, after=record.cursor, filter=plan.filter, until=record.until
    )
    saved = time.perf_counter()
    # A shard's count is of its own range; its total, the share it was given at the split.
    total = record.source_rows if record.parent is not None else plan.rows
    report(EVOLVE, record.rows_done, total)  # at once: the first batch can take a while
    with (
        Stage(batches, depth, "dmu-read") as reads,
        Stage((prepare(raw, plan, options) for raw in reads), depth, "dmu-adapt") as ready,
    ):
        for item in ready:
            add_skipped(record, plan, item.skipped)
            if len(item.batch):
                write(strategy, ledger, record, item)
                result.rows_written += len(item.batch)
                sample.add(item.batch.ids)
            record.cursor = item.last_id
            # The ledger is a resume point, not a log: a lagging cursor only means a
            # few batches are upserted again after a crash. In place it must not lag.
            now = time.perf_counter()
            if isinstance(strategy, InPlace) or now - saved >= LEDGER_EVERY:
                ledger.save(record)
                saved = now
                # What a resumed run starts from: an operator (or a test) can tell from this
                # line, not from the clock, that killing the run now leaves progress behind.
                log.debug("cursor saved: %d rows, cursor %r", record.rows_done, record.cursor)
            log.info(
                "batch acknowledged: %d rows, cursor %r",
                record.rows_done,
                record.cursor,
                extra={"collection": plan.source.name, "target": plan.target}
                | {"rows": record.rows_done, "batch_rows": len(item.batch)},
            )
            report(EVOLVE, record.rows_done, total)
            if options.max_seconds is not None and now - start > options.max_seconds:
                ledger.save(record)
                return False
    ledger.save(record)
    report(EVOLVE, record.rows_done, record.rows_done)  # rows read it all: that is the total
    if record.parent is None:  # shards leave it to finish: one flush, not one per shard
        store.flush(plan.target)
    return True


@dataclass
class Prepared:
    """One batch ready to write: good rows, their evolved vectors, and what was left out."""

    batch: Batch
    evolved: np.ndarray
    skipped: list[Id]
    last_id: Id  # the last id read, kept or not: the cursor after this batch


def prepare(raw: Batch, plan: Plan, options: EvolveOptions) -> Prepared:
    batch, skipped = screen(raw, plan, options.skip_bad_vectors)
    evolved = plan.chain(batch.vectors) if len(batch) else batch.vectors
    return Prepared(batch, evolved, skipped, id_value(raw.ids[-1]))


def write(strategy: Strategy, ledger: Ledger, record: Record, item: Prepared) -> None:
    log.debug("writing %d rows after cursor %r", len(item.batch), record.cursor)
    pending = strategy.write(record, item.batch, item.evolved)
    if pending is not None and isinstance(strategy, InPlace):
        record.pending = pending
        ledger.save(record)  # the snapshot must be on record before the overwrite
        strategy.apply(pending)
        record.pending = None
    record.rows_done += len(item.batch)


def evolve_collection(
    store: VectorStore,
    collection: str,
    artifacts: list[Artifact],
    alias: str | None = None,
    options: EvolveOptions = EvolveOptions(),
    on_progress: ProgressCallback | None = None,
) -> EvolveResult:
    """The default path in one call: new collection, alias moved after verification."""
    plan = make_plan(store, collection, AdapterChain(artifacts), alias=alias)
    return evolve(store, plan, options, on_progress)
