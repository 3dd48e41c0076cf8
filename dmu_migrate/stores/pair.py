"""One VectorStore over two: the source collection read from one store, all else in another.

``evolve --target-uri`` runs the ordinary pipeline (plan, main pass, catch-up,
verification, cut-over) on a ``StorePair``. Each call goes by collection name:
reads of the source collection (the name given, and the concrete collection
behind it) go to the source store; everything else (the evolved collection,
the ledger, aliases, tag filters) goes to the target store, through the
mapping of stores/crossing.py wherever the target sees the source's layout.
A target of the source's kind needs no mapping; it reads what create_like
needs beyond the CollectionInfo (indexes, partitions, collection config)
through the source store (read_setup_from). The source store is never written.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from dmu_migrate.errors import InputError
from dmu_migrate.stores.base import Batch, CollectionInfo, Hits, Id, VectorStore, store_kind
from dmu_migrate.stores.crossing import Crossing
from dmu_migrate.stores.filter_crossing import carry

FIRST_IDS = 1024  # keys checked at plan time; every batch is checked again as written


class StorePair:
    """The stores are the caller's: ``close`` leaves them open."""

    def __init__(
        self,
        source: VectorStore,
        target: VectorStore,
        collection: str,
        filter: str | None = None,
    ) -> None:
        """``filter``: the run's --filter, in the source's language; the target gets it
        rewritten into its own (stores/filter_crossing.py), refused here if it cannot be."""
        if store_kind(source.uri) == store_kind(target.uri):
            target.read_setup_from(source)
        self.source = source
        self.target = target
        self.uri = target.uri  # the ledger, and every message about the target, are there
        self.source_uri = source.uri
        self.shared = target.shared  # who else may open the ledger's store
        self._names = {collection}
        self._info: CollectionInfo | None = None
        self._crossing: Crossing | None = None
        self._filter = filter
        self._carried = filter and carry(filter, store_kind(source.uri), store_kind(target.uri))

    def _reads(self, name: str) -> bool:
        return name in self._names

    def _in_target(self, filter: str | None) -> str | None:
        """The run's filter as the target reads it; tag and rank filters are the target's own."""
        return self._carried if filter is not None and filter == self._filter else filter

    def _mapping(self) -> Crossing:
        if self._crossing is None:
            if self._info is None:
                raise InputError("the source collection was never described; plan the run first")
            self._cross(self._info.name)
        assert self._crossing is not None
        return self._crossing

    def _cross(self, name: str) -> str | None:
        """Map the source ``name`` into the target kind; what it cannot hold, or None."""
        info = self._info
        if info is None or info.name != name:
            info = self.describe(name)
        crossing = Crossing(info, self.source.uri, self.target.uri)
        first = next(iter(self.source.iter_ids(name, FIRST_IDS)), np.empty(0, dtype=np.int64))
        problem = crossing.problem(np.asarray(first), _partitions(self.source, name))
        self._crossing = crossing
        return problem

    def _view(self, info: CollectionInfo) -> CollectionInfo:
        return self._mapping().view(info)

    # -- discovery -----------------------------------------------------------------
    def describe(self, name: str, vector_field: str | None = None) -> CollectionInfo:
        if not self._reads(name):
            return self.target.describe(name, vector_field)
        info = self.source.describe(name, vector_field)
        self._names.add(info.name)
        if self._info != info:  # another collection or vector field: map it afresh
            self._crossing = None
        self._info = info
        return info

    def has_collection(self, name: str) -> bool:
        # The source is read by the name given; what exists is asked of the target (the
        # evolved collection, or an alias name that must not be a collection there).
        return self.target.has_collection(name)

    def count(self, name: str, filter: str | None = None) -> int:
        if self._reads(name):
            return self.source.count(name, filter)
        return self.target.count(name, self._in_target(filter))

    # -- reading ---------------------------------------------------------------------
    def iter_batches(
        self,
        info: CollectionInfo,
        batch_size: int,
        after: Id | None = None,
        filter: str | None = None,
        vector_field: str | None = None,
        until: Id | None = None,
    ) -> Iterator[Batch]:
        if self._reads(info.name):
            return self.source.iter_batches(info, batch_size, after, filter, vector_field, until)
        field = None if vector_field is None else self._mapping().vector(vector_field)
        view, carried = self._view(info), self._in_target(filter)
        return self.target.iter_batches(view, batch_size, after, carried, field, until)

    def iter_ids(
        self, name: str, batch_size: int, filter: str | None = None
    ) -> Iterator[np.ndarray]:
        if self._reads(name):
            return self.source.iter_ids(name, batch_size, filter)
        return self.target.iter_ids(name, batch_size, self._in_target(filter))

    def fetch(self, info: CollectionInfo, ids: np.ndarray, vector_field: str) -> Batch:
        if self._reads(info.name):
            return self.source.fetch(info, ids, vector_field)
        return self.target.fetch(self._view(info), ids, self._mapping().vector(vector_field))

    def search(
        self, name: str, vector_field: str, queries: np.ndarray, k: int, widen: int = 1
    ) -> Hits:
        if self._reads(name):
            return self.source.search(name, vector_field, queries, k, widen)
        return self.target.search(name, self._mapping().vector(vector_field), queries, k, widen)

    # -- writing (the target only) -------------------------------------------------------
    def _written(self, name: str) -> str:
        if self._reads(name):
            raise InputError(
                f"'{name}' is the source collection in '{self.source_uri}'; evolve "
                f"--target-uri never writes the source store"
            )
        return name

    def read_setup_from(self, source: VectorStore) -> None:
        raise InputError("evolve --target-uri pairs two stores; it reads no third one")

    def create_like(self, source: CollectionInfo, target: str, new_dim: int) -> None:
        self.target.create_like(self._view(source), self._written(target), new_dim)

    def target_problem(self, source: CollectionInfo, target: str, new_dim: int) -> str | None:
        return self.target.target_problem(self._view(source), target, new_dim)

    def add_vector_field(self, info: CollectionInfo, name: str, dim: int) -> None:
        raise InputError("evolve --target-uri writes a new collection; it adds no vector field")

    def write_rows(
        self, source: CollectionInfo, target: str, batch: Batch, tags: dict[str, str]
    ) -> None:
        rows = self._mapping().batch(batch)
        self.target.write_rows(self._view(source), self._written(target), rows, tags)

    def write_vectors(
        self,
        info: CollectionInfo,
        field: str,
        ids: np.ndarray,
        vectors: np.ndarray,
        tags: dict[str, str],
    ) -> None:
        raise InputError("evolve --target-uri writes a new collection; it overwrites no vectors")

    def delete_ids(self, name: str, ids: np.ndarray) -> None:
        self.target.delete_ids(self._written(name), ids)

    def tag_filter(self, tag: str, value: str) -> str:
        # Tags are written, and so filtered, in the target only.
        return self.target.tag_filter(tag, value)

    # Backfill ranks are written on evolved rows, so in the target only.
    def rank_problem(self, name: str) -> str | None:
        return self.target.rank_problem(self._written(name))

    def write_ranks(self, name: str, ids: np.ndarray, ranks: np.ndarray | None) -> int:
        return self.target.write_ranks(self._written(name), ids, ranks)

    def rank_filter(self) -> str:
        return self.target.rank_filter()

    def source_problem(self, name: str, allowed: dict[str, list[str] | None]) -> str | None:
        """The source store's own refusals, then what the target kind cannot hold."""
        return self.source.source_problem(name, allowed) or self._cross(name)

    def flush(self, name: str) -> None:
        (self.source if self._reads(name) else self.target).flush(name)

    def drop_collection(self, name: str) -> None:
        self.target.drop_collection(self._written(name))

    # -- aliases and ledger: the target's ----------------------------------------------
    def alias_target(self, alias: str) -> str | None:
        return self.target.alias_target(alias)

    def point_alias(self, alias: str, target: str) -> None:
        self.target.point_alias(alias, target)

    def ledger_get(self, key: str) -> dict[str, Any] | None:
        return self.target.ledger_get(key)

    def ledger_put(self, key: str, record: dict[str, Any]) -> None:
        self.target.ledger_put(key, record)

    def ledger_list(self) -> list[dict[str, Any]]:
        return self.target.ledger_list()

    def close(self) -> None:
        """The two stores were opened by the caller, who closes them."""


def home(store: VectorStore) -> VectorStore:
    """The store the source collection (and the alias it may be read through) lives in."""
    return store.source if isinstance(store, StorePair) else store


def _partitions(store: VectorStore, name: str) -> list[str]:
    """A Milvus source's named partitions (rows placed by name); none elsewhere."""
    client = getattr(store, "client", None)
    if store_kind(store.uri) != "milvus" or client is None:
        return []
    # Here, not at the top: it loads pymilvus (seconds), which a Qdrant or Parquet run never
    # needs.
    from dmu_migrate.stores import milvus_partitions

    return milvus_partitions.named(client, name)
