"""plan-backfill --tag: each planned id's rank written into the migration's evolved rows.

The application can then pick what to re-embed next from the store itself, e.g.
``dmu_backfill_rank <= 1000``: the field is stores.base.RANK_FIELD, 1 the highest score.

What is written, and what is not:
- only the field, only on rows of the plan that exist in the evolved collection
  (a planned id the main pass or catch-up has not written yet is counted, not added);
- first every rank a row holds from an earlier plan but not in this one is cleared
  (null or the key removed, so ``dmu_backfill_rank <= N`` no longer matches it),
  then the plan's ranks are written over the old ones: a rerun with the same plan
  writes the same values, and after any run the ranked rows are exactly this plan's;
- the store is checked first (``rank_problem``): one that cannot hold the field, or
  cannot write one field alone, is refused before anything is written.
While a run is under way the old plan's ranks and the new one's are mixed.

evolve never writes the field. A row it writes again (its source vector changed)
loses the rank where an upsert replaces the whole row (Qdrant, Milvus servers) and
keeps it on Milvus Lite; a rank is of the vector scored, so the next --tag is what
makes the ranks right again, on every store.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dmu_migrate.errors import InputError, StoreError
from dmu_migrate.evolve.backfill_target import find_migration
from dmu_migrate.evolve.progress import TAG, UNTAG, Meter, Report, quiet
from dmu_migrate.stores.base import VectorStore


@dataclass(frozen=True)
class TagReport:
    target: str  # the evolved collection the ranks went into
    tagged: int  # planned rows that got their rank
    not_in_target: int  # planned ids with no row there yet (run evolve, then tag again)
    cleared: int  # rows whose rank from an earlier plan was cleared

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def tag_target_of(store: VectorStore, collection: str) -> str:
    """The evolved collection ``collection``'s migration writes ranks into, once the store
    says it can hold them; refused here, before a plan is made, when it cannot."""
    record = find_migration(store, collection)
    if record is None:
        raise InputError(
            f"--tag writes ranks into the evolved collection of a migration, but no "
            f"new-collection migration of '{collection}' is recorded; run evolve first, or "
            f"drop --tag"
        )
    if not store.has_collection(record.target):
        raise StoreError(
            f"evolved collection '{record.target}' of migration '{record.key}' does not exist; "
            f"run evolve again to rebuild it, then plan-backfill --tag"
        )
    problem = store.rank_problem(record.target)
    if problem is not None:
        raise StoreError(f"collection '{record.target}' {problem}")
    return record.target


def tag_target(
    store: VectorStore, target: str, ids: np.ndarray, batch_size: int, report: Report = quiet
) -> TagReport:
    """Write rank k + 1 onto the row of ``ids[k]`` in ``target`` (from tag_target_of), and
    clear the rank of every row of ``target`` not in ``ids``."""
    planned = set(ids.tolist())
    ranked = store.rank_filter()
    # Ranked rows are read in id order and each page's stale ones cleared at once: only
    # rows behind the read's cursor change, which no page still to come holds.
    untagged = Meter(report, UNTAG, store.count(target, ranked)).start()
    cleared = 0
    for page in store.iter_ids(target, batch_size, ranked):
        stale = page[np.fromiter((i not in planned for i in page.tolist()), bool, len(page))]
        if len(stale):
            cleared += store.write_ranks(target, stale, None)
        untagged.add(len(page))
    untagged.end()
    tagged = 0
    meter = Meter(report, TAG, len(ids)).start()
    for start in range(0, len(ids), batch_size):
        chunk = ids[start : start + batch_size]
        ranks = np.arange(start + 1, start + 1 + len(chunk), dtype=np.int64)
        tagged += store.write_ranks(target, chunk, ranks)
        meter.add(len(chunk))
    meter.end()
    store.flush(target)
    return TagReport(target, tagged, len(ids) - tagged, cleared)
