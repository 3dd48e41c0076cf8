"""The migration a partial backfill belongs to, found from the name a user gives.

``plan-backfill`` scores the migration's old vectors (its source) and ``backfill``
writes natively re-embedded vectors into its evolved collection (its target).
Users name either the alias their queries use, the evolved collection or the old
one; the ledger in the store says which migration that is.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from dmu_migrate.evolve.id_diff import ID_BATCH
from dmu_migrate.evolve.ledger import Ledger, Record
from dmu_migrate.evolve.plan import NEW_COLLECTION
from dmu_migrate.stores.base import TAG_ORIGIN, VectorStore

NATIVE = "native"  # dmu_origin of a row written by the new model itself, never by the adapter


def find_migration(store: VectorStore, collection: str) -> Record | None:
    """The newest new-collection migration that ``collection`` names, or None.

    A name can belong to two migrations of a chain (v1 -> v2 -> v3: 'x__v2' is the
    first one's target and the second one's source), so a target match comes first,
    then an alias, then a source.
    """
    names = {collection}
    behind = store.alias_target(collection)
    if behind:
        names.add(behind)
    records = [r for r in Ledger(store).history() if r.strategy == NEW_COLLECTION]
    for role in ("target", "alias", "source"):
        matches = [r for r in records if getattr(r, role) in names]
        if matches:
            return matches[-1]
    return None


def native_ids(store: VectorStore, target: str) -> Iterator[np.ndarray]:
    """Ids of rows already natively re-embedded in ``target``, in id order."""
    if not store.has_collection(target):
        return iter(())
    return store.iter_ids(target, ID_BATCH, store.tag_filter(TAG_ORIGIN, NATIVE))
