"""The small protocol every vector store backend implements, and URI dispatch.

Vectors cross this boundary as float32 arrays ``(n, d)`` beside an id array;
each backend converts to and from its client's wire format internally.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from dmu_migrate.errors import InputError, StoreError

# Version tags written on every evolved row; filterable scalar fields.
TAG_VERSION = "dmu_version"  # the embedding space the vector lives in now
TAG_FROM = "dmu_from"  # the space it was evolved from
TAG_ORIGIN = "dmu_origin"  # "evolved" (adapter output) or "native" (new model)
TAG_FIELDS = (TAG_VERSION, TAG_FROM, TAG_ORIGIN)


@dataclass(frozen=True)
class CollectionInfo:
    requested: str  # the name the user gave (may be an alias)
    name: str  # the concrete collection behind it
    alias: str | None  # the alias the user gave, if ``requested`` is one
    pk_field: str
    vector_field: str
    dim: int
    metric: str
    count: int
    schema: Any = field(repr=False, default=None)  # backend-specific, for copying


@dataclass(frozen=True)
class Batch:
    ids: np.ndarray  # (n,) int64 or object (string keys)
    vectors: np.ndarray  # (n, d) float32
    fields: dict[str, list[Any]]  # every other stored field, column-wise

    def __len__(self) -> int:
        return len(self.ids)


class VectorStore(Protocol):
    uri: str

    def describe(self, name: str, vector_field: str | None = None) -> CollectionInfo: ...

    def has_collection(self, name: str) -> bool: ...

    def iter_batches(self, info: CollectionInfo, batch_size: int) -> Iterator[Batch]: ...

    def create_evolved(self, source: CollectionInfo, target: str, new_dim: int) -> None: ...

    def target_matches(self, source: CollectionInfo, target: str, new_dim: int) -> str | None: ...

    def upsert(
        self, source: CollectionInfo, target: str, batch: Batch, tags: dict[str, str]
    ) -> None: ...

    def flush(self, name: str) -> None: ...

    def count(self, name: str) -> int: ...

    def fetch_vectors(self, name: str, vector_field: str, ids: np.ndarray) -> np.ndarray: ...

    def alias_target(self, alias: str) -> str | None: ...

    def point_alias(self, alias: str, target: str) -> None: ...

    def close(self) -> None: ...


def open_store(uri: str, token: str | None = None) -> VectorStore:
    """Open the store a URI names.

    ``./file.db``            Milvus Lite (embedded, the default)
    ``http(s)://host:19530`` a Milvus server
    """
    if uri.startswith(("http://", "https://", "tcp://", "grpc://")):
        from dmu_migrate.stores.milvus import MilvusStore

        return MilvusStore.connect(uri, token)
    if "://" in uri:
        scheme = uri.split("://", 1)[0]
        raise InputError(
            f"unknown store URI scheme '{scheme}://' in '{uri}'; use a Milvus Lite file "
            f"(./gallery.db) or a Milvus server (http://host:19530)"
        )
    if not uri.endswith(".db"):
        raise InputError(f"store URI '{uri}' is not a Milvus Lite file; it must end in '.db'")
    if not Path(uri).exists():
        raise StoreError(f"no Milvus Lite database at '{uri}'; check --uri")
    from dmu_migrate.stores.milvus import MilvusStore

    return MilvusStore.connect(uri, token)
