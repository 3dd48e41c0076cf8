"""Which path the main pass writes by: upserts (insert) or Milvus bulk import (bulk).

Deciding needs no pymilvus: the bulk module (which loads it, over a second) is
imported only where a Milvus store is already open or a bulk run was chosen.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from dmu_migrate.errors import InputError
from dmu_migrate.evolve import AUTO, BULK, INSERT
from dmu_migrate.evolve.ledger import Record
from dmu_migrate.evolve.plan import NEW_COLLECTION, Plan
from dmu_migrate.evolve.settings import EvolveOptions
from dmu_migrate.stores.base import VectorStore
from dmu_migrate.stores.bulk_storage import Storage, open_storage
from dmu_migrate.stores.pair import StorePair

if TYPE_CHECKING:
    from dmu_migrate.stores.milvus import MilvusStore

log = logging.getLogger(__name__)

# Below this many rows `auto` keeps the insert path (docs/benchmarks.md, 2.3.5 server,
# end to end): at 100k x 128 bulk was no faster (1.00x; its probe import and the wait
# for the imported rows to be counted are fixed costs), at 1M it won 1.34x at 128-d
# and 1.94x at 512-d.
AUTO_MIN_ROWS = 1_000_000


def resolve(
    store: VectorStore, plan: Plan, options: EvolveOptions, record: Record | None
) -> tuple[str, Storage | None]:
    """The write path this run takes, with the bulk storage it opened and probed (None
    when inserting, or resuming a bulk pass on record, which reopens the storage it
    names); one-line errors for a bulk run that cannot be."""
    path = options.write_path  # one of WRITE_PATHS: EvolveOptions checked it
    if record is not None and record.bulk is not None and not record.main_pass_done:
        return BULK, None  # a bulk pass on record resumes as one, whatever this run asked
    if path == INSERT or (record is not None and record.main_pass_done):
        return INSERT, None  # re-runs after the main pass write what changed, row by row
    problem = _problem(store, plan, options)
    # Opened once a bulk pass could run: a bad --bulk-storage is an error under auto too.
    storage = None if problem else open_storage(str(options.bulk_storage))
    if path == AUTO:
        if problem or plan.rows < AUTO_MIN_ROWS:
            log.info("write path: insert (%s)", problem or f"{plan.rows} rows < {AUTO_MIN_ROWS}")
            return INSERT, None
    elif problem:
        raise InputError(f"--write-path bulk: {problem}; use --write-path insert")
    assert storage is not None
    from dmu_migrate.stores import milvus_bulk

    milvus_bulk.probe(importer(store).client, storage)
    return BULK, storage


def _ends(store: VectorStore) -> tuple[VectorStore, VectorStore]:
    """(the store read, the store written): a pair's two, else ``store`` twice."""
    return (store.source, store.target) if isinstance(store, StorePair) else (store, store)


def importer(store: VectorStore) -> MilvusStore:
    """The Milvus server the bulk pass imports into: ``store``, or a pair's target."""
    from dmu_migrate.stores.milvus import MilvusStore

    target = _ends(store)[1]
    assert isinstance(target, MilvusStore)  # _problem said so
    return target


def _problem(store: VectorStore, plan: Plan, options: EvolveOptions) -> str | None:
    from dmu_migrate.stores.milvus import MilvusStore

    source, target = _ends(store)
    if not isinstance(target, MilvusStore) or not target.shared:
        return f"store '{getattr(target, 'uri', target)}' has no bulk import (Milvus server only)"
    if not isinstance(source, MilvusStore):
        # Its fields reach Milvus as dynamic keys (stores/crossing.py), which an import of
        # per-field files cannot carry.
        return f"a source in another store kind ('{source.uri}') cannot be bulk imported"
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
    from dmu_migrate.stores import milvus_bulk, milvus_partitions

    if milvus_partitions.named(source.client, plan.source.name):
        return f"'{plan.source.name}' has named partitions"
    return milvus_bulk.unsupported(plan.source.schema or {"fields": []}, plan.source.vector_field)
