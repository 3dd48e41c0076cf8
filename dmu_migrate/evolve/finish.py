"""After the main pass: bring the target in step, verify, cut over, mark the record done.

Split from pipeline.py, which streams the main pass; sharded runs (shards.py)
finish through the same steps once every shard's pass is done.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dmu_migrate.evolve.id_diff import VERIFY_SAMPLE, Reservoir
from dmu_migrate.evolve.ledger import DONE, Record, now_iso
from dmu_migrate.evolve.plan import Plan
from dmu_migrate.evolve.progress import CATCH_UP, ID_DIFF, Meter
from dmu_migrate.evolve.screen import add_skipped, clear_skipped, screen
from dmu_migrate.evolve.strategies import MISSING, SYNC
from dmu_migrate.evolve.sync import sync
from dmu_migrate.evolve.verify import diff_ids, verify
from dmu_migrate.stores.base import VectorStore, id_array

if TYPE_CHECKING:
    from dmu_migrate.evolve.run import Run

CATCH_UP_BATCH = 4096


def finish(run: Run, whole_pass: bool) -> None:
    """After the main pass: catch up, verify, cut over, and mark the record done.

    ``whole_pass``: this run wrote the whole source in one pass, so equal counts
    can stand in for the id diff; ``run.sample`` holds the ids it wrote. The
    run's report hears the id diff, catch-up and verify phases (evolve/progress.py).
    """
    store, plan, record, result, strategy = (
        run.store,
        run.plan,
        run.record,
        run.result,
        run.strategy,
    )
    sample = run.sample
    diffed = False  # whether the full id sets were compared after every write
    if strategy.in_step == SYNC and whole_pass and not run.options.full_verify:
        diffed = run.step("counting", lambda: counts_agree(store, plan, record))
        result.id_check = "counts" if diffed else result.id_check
    if strategy.in_step == SYNC and not diffed:
        synced = run.timed(
            "sync",
            lambda: run.step(
                "bringing the target in step",
                lambda: sync(
                    store, plan, strategy, record, run.options.skip_bad_vectors, run.report
                ),
            ),
        )
        result.caught_up, result.updated, result.deleted = (
            synced.added,
            synced.updated,
            synced.deleted,
        )
        result.native = synced.native
        record.rows_done += synced.added - synced.deleted
        sample = synced.sample
        # Nothing written or deleted means the comparison just made, after every write, holds.
        diffed = not synced.changed
    elif strategy.in_step == MISSING:
        result.caught_up, _extra, sample = run.timed(
            "catch_up", lambda: run.step("catching up", lambda: catch_up(run))
        )
        diffed = result.caught_up == 0
    else:
        # In place, a later run cannot tell a row added in the old space from one the
        # application wrote in the new space, so no run evolves rows added after the pass.
        result.notes.append(
            f"{plan.strategy} evolves only the rows its pass read: rows added to "
            f"'{plan.source.name}' after it are not evolved by this or any later run; "
            f"write them with the new model, or use --strategy new-collection, whose "
            f"re-runs add them"
        )
    skipped = frozenset(record.skipped)
    checked = id_array([i for i in sample.ids().tolist() if i not in skipped])
    result.verify = run.timed(
        "verify",
        lambda: run.step(
            "verifying",
            lambda: verify(store, plan, strategy, checked, skipped, diffed, run.report),
        ),
    )
    if record.skipped:
        result.notes.append(
            f"{len(record.skipped)} rows with NaN, inf or all-zero vectors were left out "
            f"(first ids: {record.skipped[:5]}); they are listed in the ledger"
        )
    result.cut_over = run.timed(
        "cut_over", lambda: run.step("cutting over", lambda: strategy.cut_over(record))
    )
    record.status, record.finished_at, record.error = DONE, now_iso(), None
    record.runs.append(
        {
            "finished_at": record.finished_at,
            "rows": result.rows_written,
            "caught_up": result.caught_up,
            # What this run changed in the target, for status: rows new to it, rows
            # evolved again after their source vector changed, rows deleted in the source.
            "added": result.rows_written + result.caught_up,
            "updated": result.updated,
            "deleted": result.deleted,
            "cut_over": result.cut_over,
        }
    )
    record.runs = record.runs[-20:]


def counts_agree(store: VectorStore, plan: Plan, record: Record) -> bool:
    """After one pass read the whole source into a target only it writes: do the counts add up?

    The pass saw every source row of its snapshot, and each acknowledged write is
    one distinct id, so if the source still has exactly the rows the pass read and
    the target exactly the rows it wrote, no row was added behind the cursor and
    no write was lost. Any other count sends the run through the full id diff.
    (After one whole pass, or one per shard, ``rows_done`` is the rows it wrote.)
    """
    seen = record.rows_done + len(record.skipped)
    if store.count(plan.source.name, plan.filter) != seen:
        return False
    return store.count(plan.target, plan.filter) == record.rows_done


def catch_up(run: Run) -> tuple[int, int, Reservoir]:
    """Write source rows that the target lacks: rows inserted since the pass, or lost writes.

    Both id streams come from the same store in its own key order, so a
    merge-join finds the difference in one pass. The same scan draws the
    verification sample uniformly over every source row (a cron re-run
    writes few rows itself). Returns (rows written, rows only in the target, sample).
    """
    store, plan, strategy, record = run.store, run.plan, run.strategy, run.record
    known_bad = frozenset(record.skipped)
    sample = Reservoir(VERIFY_SAMPLE, known_bad)
    diffed = Meter(run.report, ID_DIFF, plan.rows).start()
    missing, extra = diff_ids(store, plan, strategy, sample, diffed)
    diffed.end()
    if plan.filter is None and known_bad:  # every source id was compared: the rest are gone
        behind = set(missing)
        record.skipped = [i for i in record.skipped if i in behind]
    # Rows left out earlier are screened again (missing still): one fixed since is written.
    written = Meter(run.report, CATCH_UP, len(missing))
    if missing:
        written.start()
    done = 0
    for start in range(0, len(missing), CATCH_UP_BATCH):
        ids = id_array(missing[start : start + CATCH_UP_BATCH])
        batch, bad = screen(
            store.fetch(plan.source, ids, plan.source.vector_field),
            plan,
            run.options.skip_bad_vectors,
            known_bad,
        )
        add_skipped(record, plan, bad)
        if len(batch):
            strategy.write(record, batch, plan.chain(batch.vectors))
            clear_skipped(record, batch.ids)
            done += len(batch)
        written.add(len(ids))  # bad rows left out count as handled
    if done:
        store.flush(plan.target)
        record.rows_done += done
    return done, len(extra), sample
