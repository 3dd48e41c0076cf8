"""Sharded evolve: the id space cut into ranges that run, fail and resume on their own.

    split   (once, under the migration's lease) the target is prepared, cut points
            are drawn from the source's ids and each shard gets a ledger record
            whose cursor starts at its lower bound
    shards  (any process, any order, each under its own lease) the main pass over
            (start, until], resumable from the shard's own cursor
    finish  (under the migration's lease, once every shard's pass is done) counts
            or the id diff, catch-up, verification and cut-over, as one run does

Shards write disjoint ranges of the target, keyed by source id, so their order
and interleaving do not matter, and the alias moves in finish alone: readers
never see a target that not every shard has written and verification passed.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from dmu_migrate.errors import DmuError, InputError, LeaseHeld, StoreError
from dmu_migrate.evolve import BULK, write_path
from dmu_migrate.evolve.finish import finish
from dmu_migrate.evolve.id_diff import ID_BATCH
from dmu_migrate.evolve.ledger import DONE, RUNNING, STOPPED, Ledger, Record, now_iso, settle
from dmu_migrate.evolve.pipeline import check_adapters, main_pass, open_record
from dmu_migrate.evolve.plan import IN_PLACE, Plan
from dmu_migrate.evolve.progress import EVOLVE, SPLIT, Meter, Report, reporter
from dmu_migrate.evolve.retry import Retrier
from dmu_migrate.evolve.run import EvolveResult, Outcome, Run
from dmu_migrate.evolve.settings import EvolveOptions
from dmu_migrate.stores.base import Id, VectorStore

log = logging.getLogger(__name__)

SPLIT_WAIT = 600.0  # seconds a --shard run waits for another process to finish the split
POLL = 1.0
# JSON bytes of the verification sample a shard keeps in its ledger record: 256 UUIDs
# take 10k; long string keys must not push the record past Milvus's 65,535 bytes.
SAMPLE_BYTES = 24_000


def within(ids: list[Any], size: int) -> list[Any]:
    """The first of ``ids`` whose JSON takes at most ``size`` bytes (a uniform sample
    cut short is still uniform)."""
    kept: list[Any] = []
    for value in ids:
        size -= len(json.dumps(value, ensure_ascii=False).encode()) + 2
        if size < 0:
            break
        kept.append(value)
    return kept


def shard_key(key: str, index: int, count: int) -> str:
    return f"{key}#shard-{index}-of-{count}"


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/8"`` -> (2, 8): shard 2 of 8, counted from 0 like a Kubernetes completion index."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if m is None or not int(m.group(1)) < int(m.group(2)):
        raise InputError(
            f"--shard '{text}' is not INDEX/COUNT with 0 <= INDEX < COUNT; e.g. --shard 0/4 "
            f"(indexes count from 0)"
        )
    return int(m.group(1)), int(m.group(2))


@dataclass
class ShardOutcome:
    """What one shard's run did; plain data, so it can come back from a worker process."""

    index: int
    count: int
    rows_written: int = 0  # in this run
    rows_done: int = 0  # over the shard's whole life
    finished: bool = False  # its main pass is complete
    seconds: float = 0.0
    retries: int = 0
    error: str | None = None
    error_kind: type[DmuError] | None = None  # so the caller can re-raise its kind

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["error_kind"] = self.error_kind.__name__ if self.error_kind else None
        return out


def check_shardable(plan: Plan, count: int) -> None:
    if count < 1:
        raise InputError(f"--shards must be >= 1, got {count}")
    if count > plan.rows:
        raise InputError(
            f"--shards {count} is more than the {plan.rows} rows of '{plan.source.name}'; "
            f"use at most {plan.rows}"
        )
    if plan.strategy == IN_PLACE and count > 1:
        raise InputError(
            "--strategy in-place runs as one process (each batch is snapshotted before it is "
            "overwritten); drop --shards/--shard, or use --strategy new-collection"
        )


def cut_points(store: VectorStore, plan: Plan, count: int, meter: Meter | None = None) -> list[Id]:
    """``count - 1`` source ids that cut it into shards of nearly equal rows.

    One scan of the ids alone (no vectors, no payload), so the cuts are exact
    row ranks and the same for every process that computes them from the same
    rows. The shard past the last cut is open above: rows added later land there.
    ``meter`` counts the ids read, up to the last cut (where the scan stops).
    """
    check_shardable(plan, count)
    ranks = [plan.rows * k // count - 1 for k in range(1, count)]  # last row of each shard
    cuts: list[Id] = []
    seen = 0
    kinds: set[type] = set()
    for chunk in store.iter_ids(plan.source.name, ID_BATCH, plan.filter):
        values = chunk.tolist()
        kinds.update(type(v) for v in values[:1] + values[-1:])
        while len(cuts) < len(ranks) and ranks[len(cuts)] < seen + len(values):
            cuts.append(values[ranks[len(cuts)] - seen])
        if meter is not None:
            meter.add(min(len(values), (ranks[-1] + 1 if ranks else 0) - seen))
        seen += len(values)
        if len(cuts) == len(ranks):
            break
    if len(kinds) > 1:
        raise InputError(
            f"collection '{plan.source.name}' mixes integer and string ids, which have no "
            f"common order to cut; evolve it without --shards"
        )
    if len(cuts) < len(ranks):  # rows deleted since the count: fewer, still disjoint, shards
        raise StoreError(
            f"'{plan.source.name}' shrank while it was being split ({seen} of {plan.rows} "
            f"rows left); run evolve again"
        )
    return cuts


def shard_records(plan: Plan, parent: Record) -> list[Record]:
    lows: list[Id | None] = [None, *parent.bounds]
    highs: list[Id | None] = [*parent.bounds, None]
    records = []
    for index, (low, high) in enumerate(zip(lows, highs, strict=True)):
        record = plan.new_record()
        record.key = shard_key(plan.key, index, parent.shards)
        record.parent, record.parent_run = parent.key, parent.run_id
        record.start = record.cursor = low
        record.until = high
        record.source_rows = plan.rows * (index + 1) // parent.shards - plan.rows * index // (
            parent.shards
        )
        records.append(record)
    return records


def load_shard(ledger: Ledger, parent: Record, index: int) -> Record | None:
    """Shard ``index`` of the parent's current split (None when missing or stale)."""
    record = ledger.load(shard_key(parent.key, index, parent.shards))
    return record if record is not None and record.parent_run == parent.run_id else None


def load_shards(ledger: Ledger, parent: Record) -> list[Record | None]:
    return [load_shard(ledger, parent, index) for index in range(parent.shards)]


def refuse_live_shards(ledger: Ledger, parent: Record | None) -> None:
    """--restart must not reset shards that some process is still writing."""
    if parent is None or not parent.shards:
        return
    now = time.time()
    for index, shard in enumerate(load_shards(ledger, parent)):
        if shard and shard.lease_owner and shard.lease_expires > now and shard.status == RUNNING:
            raise StoreError(
                f"shard {index}/{parent.shards} of '{parent.key}' is being run by "
                f"{shard.lease_owner}; stop it or let it finish before --restart"
            )


def check_split(record: Record, found: bool, count: int) -> None:
    """Refuse to mix a split with another split, or with an unsharded run under way."""
    if not found or record.main_pass_done or record.shards == count:
        return
    if record.shards:
        raise InputError(
            f"migration '{record.key}' is split into {record.shards} shards; pass "
            f"--shards {record.shards} (or --shard i/{record.shards}), or --restart to start over"
        )
    if record.cursor is not None or record.rows_done:
        raise InputError(
            f"migration '{record.key}' was started without --shards and is at id "
            f"{record.cursor!r}; finish it the same way, or pass --restart to start over sharded"
        )


def split(run: Run, count: int) -> None:
    """Prepare the target and put the shards on record; the caller holds the lease."""
    plan, record = run.plan, run.record
    run.step("preparing the target", lambda: run.strategy.prepare(record))
    if record.shards == count or record.main_pass_done:
        return

    def cuts() -> list[Id]:
        # Ids up to the last cut are read; a retry starts the count again.
        meter = Meter(run.report, SPLIT, plan.rows * (count - 1) // count).start()
        found = cut_points(run.store, plan, count, meter)
        meter.end()
        return found

    record.bounds = run.step("splitting the ids", cuts)
    record.shards = count
    for shard in shard_records(plan, record):
        run.step("writing shard records", partial(run.ledger.save, shard))
    # The parent names its shards only once all of them are on record.
    run.save()


def claim(ledger: Ledger, record: Record, take_over: bool) -> bool:
    """Take the lease and read it back: False when another process took it meanwhile.

    Stores have no compare-and-set, so two processes that both found the lease
    free both write it; after a moment only the last writer reads itself back.
    """
    ledger.acquire(record, take_over)
    if not ledger.store.shared:
        return True  # one process opens this store at a time: nobody else wrote it
    time.sleep(settle() / 4)  # 0.5 s at the default: the same lease, read back once more
    now = ledger.load(record.key)
    return now is not None and now.lease_owner == ledger.owner


def run_shard(
    store: VectorStore,
    plan: Plan,
    index: int,
    count: int,
    options: EvolveOptions,
    owner: str | None = None,
    on_progress: Report | None = None,
) -> ShardOutcome:
    """The main pass of one shard, under its own lease; the split must be on record.

    ``on_progress`` hears the evolve phase: the shard's rows, of its share.
    """
    start = time.perf_counter()
    ledger = Ledger(store, owner)
    retry = Retrier(options.retry)
    outcome = ShardOutcome(index, count)
    parent = retry.run("reading the ledger", lambda: ledger.load(plan.key))
    if parent is None or parent.shards != count:
        raise StoreError(
            f"migration '{plan.key}' has no split into {count} shards on record; run evolve "
            f"--shards {count} (or --shard i/{count}) to make it"
        )
    check_adapters(parent, plan)
    record = retry.run("reading the ledger", lambda: load_shard(ledger, parent, index))
    if parent.main_pass_done or (record is not None and record.main_pass_done):
        outcome.finished = True
        outcome.rows_done = record.rows_done if record else 0
        return outcome
    if record is None:
        raise StoreError(
            f"shard {index}/{count} of '{plan.key}' is not on record; pass --restart to split "
            f"the migration again"
        )
    result = EvolveResult.begin(plan, record, resumed=record.cursor != record.start)
    run = Run(store, plan, options, ledger, retry, record, result, reporter(on_progress), start)
    run.step("taking the shard's lease", lambda: ledger.acquire(record, options.take_over))
    record.status = RUNNING
    whole = record.cursor == record.start and record.rows_done == 0 and not record.skipped
    run_pass = main_pass
    if parent.bulk is not None:  # the split chose bulk import (write_path.resolve)
        # Here, not at the top: it loads pymilvus (seconds), which a Qdrant or Parquet run never
        # needs.
        from dmu_migrate.evolve.bulk_pass import bulk_pass as run_pass
        from dmu_migrate.evolve.bulk_pass import shard_storage

        shard_storage(parent, record)
    with run.recorded():
        run.step("finding native rows", run.strategy.find_native)  # they keep their ids
        finished = run.step(
            "reading and writing batches", lambda: run_pass(run), lambda: record.cursor
        )
        if finished:
            record.main_pass_done, record.whole_pass = True, whole
            record.status, record.finished_at, record.error = DONE, now_iso(), None
            record.sample = within(run.sample.ids().tolist(), SAMPLE_BYTES)  # finish verifies them
            run.save()
        else:
            record.status = STOPPED
    outcome.rows_written, outcome.rows_done = result.rows_written, record.rows_done
    outcome.finished, outcome.seconds, outcome.retries = finished, result.seconds, result.retries
    return outcome


def finish_split(run: Run) -> int:
    """With every shard's pass done: add them up, then catch up, verify and cut over.

    Returns how many shards are not done yet (0: finished). The caller holds the lease.
    """
    record = run.record
    whole = False
    if not record.main_pass_done:
        shards = run.step("reading the shards", lambda: load_shards(run.ledger, record))
        waiting = sum(1 for s in shards if s is None or not s.main_pass_done)
        if waiting:
            return waiting
        done = [s for s in shards if s is not None]
        record.rows_done = sum(s.rows_done for s in done)
        record.skipped = [i for s in done for i in s.skipped]
        record.main_pass_done = True
        run.save()
        # Counts stand in for the id diff only when every shard read its range in one go.
        whole = all(s.whole_pass for s in done)
        for s in done:
            run.sample.add(s.sample)
        if record.bulk is not None:
            # Here, not at the top: it loads pymilvus (seconds), which a Qdrant or Parquet run never
            # needs.
            from dmu_migrate.evolve.bulk_pass import imported, wait_imported

            rows = imported(*done)
            run.step("waiting for imported rows", lambda: wait_imported(run, rows))
        # The shards' passes did not flush.
        run.step("flushing", lambda: run.store.flush(run.plan.target))
    finish(run, whole)
    return 0


def open_split(
    ledger: Ledger, retry: Retrier, plan: Plan, options: EvolveOptions, count: int
) -> tuple[Record, bool]:
    check_shardable(plan, count)
    if options.restart:
        refuse_live_shards(ledger, retry.run("reading the ledger", lambda: ledger.load(plan.key)))
    record, found = open_record(ledger, retry, plan, options)
    check_split(record, found, count)
    return record, found


def split_path(store: VectorStore, plan: Plan, options: EvolveOptions, record: Record) -> None:
    """Whether the split's shards import (write_path.resolve), on the record it will make;
    before the lease, as unsharded, so that a bulk split that cannot be writes nothing."""
    if record.shards or record.main_pass_done:
        return
    path, storage = write_path.resolve(store, plan, options, None)
    if path == BULK:
        assert storage is not None
        # As every shard will open it, wherever it runs: a directory by its absolute path.
        record.bulk = {"storage": storage.uri, "parts": []}


def evolve_split(
    store: VectorStore,
    plan: Plan,
    count: int,
    options: EvolveOptions,
    run_shards: Any,
    owner: str | None = None,
    on_progress: Report | None = None,
) -> EvolveResult:
    """Split (or resume a split), run every unfinished shard through ``run_shards``, finish.

    ``run_shards(indexes, tick)`` runs the shards (in this process, in worker
    processes or on Ray) and returns their ShardOutcomes; it calls ``tick(rows)``
    every second or so, which keeps this run's lease on the migration alive and
    moves the progress bar (``rows``: done by its shards, None when it cannot tell).
    ``on_progress`` hears the split, evolve (every shard's rows), id diff, catch-up
    and verify phases.
    """
    start = time.perf_counter()
    ledger, retry = Ledger(store, owner), Retrier(options.retry)
    record, found = open_split(ledger, retry, plan, options, count)
    split_path(store, plan, options, record)
    result = EvolveResult.begin(plan, record, resumed=found and record.status != DONE)
    run = Run(store, plan, options, ledger, retry, record, result, reporter(on_progress), start)
    run.step("taking the lease", lambda: ledger.acquire(record, options.take_over))
    record.status = RUNNING
    renewed = polled = time.monotonic()
    earlier = 0  # rows of the shards this run does not touch

    def tick(rows: int | None) -> None:
        """Keep the lease; report progress: ``rows`` done by this run's shards, when known."""
        nonlocal renewed, polled
        now = time.monotonic()
        if now - renewed > 60:  # well inside the lease's 600 s
            run.save()
            renewed = now
        if on_progress is None:
            return
        if rows is not None:
            run.report(EVOLVE, earlier + rows, plan.rows)
        elif now - polled > max(5.0, record.shards / 20):
            # Shards in other processes: their records are the progress (one strong read
            # each, so seldom; never on a writer's thread).
            shards = load_shards(ledger, record)
            run.report(EVOLVE, sum(s.rows_done for s in shards if s is not None), plan.rows)
            polled = now

    with run.recorded():
        run.timed("split", lambda: split(run, count))  # target + cut points (an id scan)
        if not record.main_pass_done:
            shards = load_shards(ledger, record)
            todo = [i for i, s in enumerate(shards) if s is None or not s.main_pass_done]
            earlier = sum(s.rows_done for i, s in enumerate(shards) if s and i not in todo)
            outcomes: list[ShardOutcome] = run.timed(
                "main_pass", lambda: run_shards(todo, tick) if todo else []
            )
            done = sum(o.rows_done for o in outcomes) + earlier
            if all(o.finished for o in outcomes):  # every shard read its range: a whole total
                run.report(EVOLVE, done, done)
            result.shards = [o.as_dict() for o in outcomes]
            result.rows_written = sum(o.rows_written for o in outcomes)
            result.retries += sum(o.retries for o in outcomes)
            failed = [o for o in outcomes if o.error]
            if failed:
                raise shard_failure(plan, failed, count)
            if not all(o.finished for o in outcomes):
                return run.stopped()
        left = finish_split(run)
        if left:  # a shard record vanished or went stale under us
            raise StoreError(
                f"{left} shards of '{plan.key}' are not done after their runs; run evolve again"
            )
    return result


def shard_failure(plan: Plan, failed: list[ShardOutcome], count: int) -> DmuError:
    """One error for the failed shards, of the first one's kind (its exit code)."""
    first = failed[0]
    kind = first.error_kind or StoreError
    return kind(
        f"{len(failed)} of {count} shards of '{plan.key}' failed (shard {first.index}/{count}: "
        f"{first.error}); the other shards' work is kept and the failed ones resume from their "
        f"cursors: fix that, then run the same command again"
    )


def evolve_one_shard(
    store: VectorStore,
    plan: Plan,
    index: int,
    count: int,
    options: EvolveOptions,
    on_progress: Report | None = None,
) -> EvolveResult:
    """``--shard i/N``: make the split if no one has, run shard i, finish if it was the last.

    For N independent processes (a Kubernetes indexed Job, N cron entries): each
    runs its own shard, and whichever sees every shard done verifies and cuts over.
    """
    if options.restart:
        raise InputError(
            "--restart resets every shard; run it once without --shard (e.g. with "
            "--shards N --max-seconds 0), then start the shards"
        )
    start = time.perf_counter()
    ledger, retry = Ledger(store), Retrier(options.retry)
    record, _ = open_split(ledger, retry, plan, options, count)
    split_path(store, plan, options, record)
    bulk = record.bulk  # what this process's split would write, if it makes the split
    result = EvolveResult.begin(plan, record, resumed=False)
    run = Run(store, plan, options, ledger, retry, record, result, reporter(on_progress), start)
    deadline = time.monotonic() + SPLIT_WAIT
    while not run.record.main_pass_done and run.record.shards != count:
        try:
            mine = claim(ledger, run.record, options.take_over)
        except LeaseHeld:  # another process holds the lease: it is splitting
            mine = False
        if mine:
            try:
                split(run, count)
            finally:
                ledger.release(run.record)
            break
        if time.monotonic() > deadline:
            raise StoreError(
                f"migration '{plan.key}' was not split within {SPLIT_WAIT:.0f}s by the process "
                f"holding its lease; check that process, or pass --take-over if it is dead"
            )
        time.sleep(POLL)
        run.record, _ = open_split(ledger, retry, plan, options, count)
        if run.record.shards == 0:
            run.record.bulk = bulk
    shard = run_shard(store, plan, index, count, options, on_progress=run.report)
    result.rows_done, result.resumed = run.record.rows_done, shard.rows_done > shard.rows_written
    result.shards = [shard.as_dict()]
    result.rows_written, result.retries = shard.rows_written, shard.retries
    if not shard.finished:
        result.outcome = Outcome.REMAINING
        result.seconds = time.perf_counter() - start
        return result
    return finish_if_last(run, count)


def finish_if_last(run: Run, count: int) -> EvolveResult:
    """After a shard's pass: verify and cut over if every shard is done and no one else is."""
    result = run.result
    record = run.reload()  # the split is on record: the shard just ran under it
    waiting = sum(
        1 for s in load_shards(run.ledger, record) if s is None or not s.main_pass_done
    ) * (not record.main_pass_done)
    try:
        mine = not waiting and claim(run.ledger, record, take_over=False)
    except LeaseHeld:  # another shard's process is finishing
        # Only a live holder: a store too slow or failing to take the lease raises, so a
        # run never reports "another process is cutting over" when none is.
        mine = False
    if not mine:
        result.outcome = Outcome.SHARD_DONE
        result.rows_done = record.rows_done
        result.notes.append(
            f"{count - waiting} of {count} shards done; the last to finish verifies and cuts over"
            if waiting
            else "every shard is done; another shard's process is verifying and cutting over"
        )
        result.seconds = time.perf_counter() - run.start
        return result
    record.status = RUNNING
    with run.recorded():
        finish_split(run)
        result.outcome = Outcome.DONE
    return result
