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
from functools import partial

from dmu_migrate.artifact import Artifact
from dmu_migrate.errors import InputError, NothingToDo
from dmu_migrate.evolve import BULK, write_path
from dmu_migrate.evolve.aliases import rolled_back_at
from dmu_migrate.evolve.batch import Prepared, prepare
from dmu_migrate.evolve.finish import finish
from dmu_migrate.evolve.ledger import DONE, ROLLED_BACK, RUNNING, Ledger, Record
from dmu_migrate.evolve.plan import IN_PLACE, Plan, make_plan
from dmu_migrate.evolve.progress import EVOLVE, Report, reporter
from dmu_migrate.evolve.retry import Retrier
from dmu_migrate.evolve.run import EXIT_REMAINING as EXIT_REMAINING
from dmu_migrate.evolve.run import EvolveResult, Outcome, Run
from dmu_migrate.evolve.screen import add_skipped
from dmu_migrate.evolve.settings import EvolveOptions, batch_rows
from dmu_migrate.evolve.stream import Stage
from dmu_migrate.evolve.transform import AdapterChain
from dmu_migrate.stores.base import VectorStore

log = logging.getLogger(__name__)

__all__ = ["EvolveOptions", "EvolveResult", "Outcome", "evolve", "evolve_collection"]

LEDGER_EVERY = 1.0  # seconds between cursor saves in the main pass


def evolve(
    store: VectorStore,
    plan: Plan,
    options: EvolveOptions | None = None,
    on_progress: Report | None = None,
) -> EvolveResult:
    """Evolve ``plan.source`` into its target, verify and cut over; resumable from the ledger."""
    start = time.perf_counter()
    options = options or EvolveOptions()
    ledger, retry = Ledger(store), Retrier(options.retry)
    record, found = open_record(ledger, retry, plan, options)
    if record.shards and not record.main_pass_done:
        raise InputError(
            f"migration '{plan.key}' is split into {record.shards} shards; run it with "
            f"--shards {record.shards} (or --restart to start over unsharded)"
        )
    result = EvolveResult.begin(plan, record, resumed=found and record.status != DONE)
    run = Run(store, plan, options, ledger, retry, record, result, reporter(on_progress), start)
    # Before the lease: a bulk run that cannot be fails with nothing written.
    path, storage = write_path.resolve(store, plan, options, record if found else None)
    run.step("taking the lease", lambda: ledger.acquire(record, options.take_over))
    record.status = RUNNING
    with run.recorded():
        run.step("preparing the target", lambda: run.strategy.prepare(record))
        run.save()  # whether it made the target, on record before any row is written
        # This run reads the whole source itself: counts can then stand in for the id diff.
        whole_pass = not record.main_pass_done and record.cursor is None
        if not record.main_pass_done:
            run_pass = main_pass
            if path == BULK:
                # Here, not at the top: it loads pymilvus (seconds), which a Qdrant or
                # Parquet run never needs.
                from dmu_migrate.evolve.bulk_pass import bulk_pass

                run_pass = partial(bulk_pass, storage=storage)
            finished = run.timed(
                "main_pass",
                lambda: run.step(
                    "reading and writing batches", lambda: run_pass(run), lambda: record.cursor
                ),
            )
            if not finished:
                return run.stopped()
            record.main_pass_done = True
            run.save()
        finish(run, whole_pass)
    return result


def open_record(
    ledger: Ledger, retry: Retrier, plan: Plan, options: EvolveOptions
) -> tuple[Record, bool]:
    """This migration's ledger record and whether it was on record (else a new one)."""
    record = retry.run("reading the ledger", lambda: ledger.load(plan.key))
    if record is not None and options.restart:
        fresh = plan.new_record()
        fresh.created_target = record.created_target  # a target it made is still its own
        return fresh, False
    if record is None:
        return plan.new_record(), False
    check_adapters(record, plan)
    # Each alias is rolled back on its own: the record stays done while another serves it.
    if record.status == ROLLED_BACK or rolled_back_at(record, plan.alias):
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
            f"'{plan.alias or record.alias}' stays where the rollback put it and nothing was "
            f"written; pass "
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


def main_pass(run: Run) -> bool:
    """Stream every row after the cursor; False when stopped by the time budget.

    Reading, screening + the adapter, and writing run as overlapped stages
    (evolve/stream.py); this thread is the only writer and takes batches in
    read order, so the cursor always marks a prefix of the source.
    """
    store, plan, options, record, strategy = (
        run.store,
        run.plan,
        run.options,
        run.record,
        run.strategy,
    )
    if record.pending:
        # Died (or failed) between snapshot and overwrite: the part, not the store,
        # holds that batch's old vectors, so replay it before reading on.
        strategy.apply(record.pending)
        # Its rows were not counted when the run died: count them with the cursor.
        record.rows_done += int(record.pending.get("rows", 0))
        record.cursor = record.pending["last_id"]
        record.pending = None
        run.ledger.save(record)
    # Reads and overwrites of the same collection: keep them in turn.
    depth = 0 if strategy.overwrites_source else options.read_ahead
    batch_size = batch_rows(options.batch_size, max(plan.source.dim, plan.chain.out_dim))
    # A shard record bounds the pass to its range; an unsharded one has until = None.
    batches = store.iter_batches(
        plan.source, batch_size, after=record.cursor, filter=plan.filter, until=record.until
    )
    saved = time.perf_counter()
    # A shard's count is of its own range; its total, the share it was given at the split.
    total = record.source_rows if record.parent is not None else plan.rows
    run.report(EVOLVE, record.rows_done, total)  # at once: the first batch can take a while
    with (
        Stage(batches, depth, "dmu-read") as reads,
        Stage((prepare(raw, plan, options) for raw in reads), depth, "dmu-adapt") as ready,
    ):
        for item in ready:
            add_skipped(record, plan, item.skipped)
            write(run, item)  # moves the cursor with the count: nothing may fail in between
            run.result.rows_written += len(item.batch)
            run.sample.add(item.batch.ids)
            # The ledger is a resume point, not a log: a lagging cursor only means a
            # few batches are upserted again after a crash. In place it must not lag.
            now = time.perf_counter()
            if strategy.overwrites_source or now - saved >= LEDGER_EVERY:
                run.ledger.save(record)
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
            run.report(EVOLVE, record.rows_done, total)
            if options.max_seconds is not None and now - run.start > options.max_seconds:
                run.ledger.save(record)
                return False
    run.ledger.save(record)
    run.report(EVOLVE, record.rows_done, record.rows_done)  # rows read it all: that is the total
    if record.parent is None:  # shards leave it to finish: one flush, not one per shard
        store.flush(plan.target)
    return True


def write(run: Run, item: Prepared) -> None:
    """Write one batch, then count its rows and move the cursor past it, together.

    A record saved between the two (a failure records the run) would count rows
    that the next run, resuming from the old cursor, writes and counts again.
    """
    record = run.record
    if len(item.batch):
        log.debug("writing %d rows after cursor %r", len(item.batch), record.cursor)
        pending = run.strategy.write(record, item.batch, item.evolved)
        if pending is not None:  # a snapshot part of the rows about to be overwritten
            record.pending = pending
            run.ledger.save(record)  # the snapshot must be on record before the overwrite
            run.strategy.apply(pending)
            record.pending = None
    record.rows_done += len(item.batch)
    record.cursor = item.last_id


def evolve_collection(
    store: VectorStore,
    collection: str,
    artifacts: list[Artifact],
    alias: str | None = None,
    options: EvolveOptions | None = None,
    on_progress: Report | None = None,
) -> EvolveResult:
    """The default path in one call: new collection, alias moved after verification."""
    plan = make_plan(store, collection, AdapterChain(artifacts), alias=alias)
    return evolve(store, plan, options, on_progress)
