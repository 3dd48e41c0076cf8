"""The small protocol every vector store backend implements, and what a URI names.

Vectors cross this boundary as float32 arrays ``(n, d)`` beside an id array;
each backend converts to and from its client's wire format internally.
Every read that a migration relies on is in primary-key order, so that a
cursor (the last id acknowledged) is enough to resume, and two id streams of
the same store can be merge-joined to find missing rows.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import numpy as np

from dmu_migrate.errors import InputError

# Version tags written on every evolved row; filterable scalar fields / payload keys.
TAG_VERSION = "dmu_version"  # the embedding space the vector lives in now
TAG_FROM = "dmu_from"  # the space it was evolved from
TAG_ORIGIN = "dmu_origin"  # "evolved" (adapter output) or "native" (new model)
# Checksum of the source vector an evolved row came from: a re-run sees which source
# rows changed since (evolve/sync.py). Written per row, so it travels in Batch.fields.
TAG_SOURCE = "dmu_src"
TAG_FIELDS = (TAG_VERSION, TAG_FROM, TAG_ORIGIN)  # written together, one value per run
# Every name evolve writes into a user's rows: a Milvus field or dynamic key, a Qdrant
# payload key, a Parquet column. The one list every store's checks and writes use, so a
# source holding one of them as its own data is refused before a row is overwritten.
RESERVED_NAMES = (*TAG_FIELDS, TAG_SOURCE)
TAG_FIX = (
    f"where evolve writes its tags ({', '.join(RESERVED_NAMES)}); copy the collection "
    f"with that field renamed and evolve the copy"
)

# plan-backfill --tag: each planned row's rank (1 = re-embed first) in the evolved
# collection, for the application to select by; never written by evolve itself.
RANK_FIELD = "dmu_backfill_rank"

LEDGER_COLLECTION = "dmu_ledger"  # migration state, kept in the store it describes
# Batch.fields key of a named vector other than the one being evolved (Qdrant and
# Parquet keep them apart from payload keys, which live in another namespace).
VECTOR_KEY_PREFIX = "__vector__:"
# Batch.fields key of each row's named partition (Milvus, stores/milvus_partitions.py):
# a read learns it and a write puts the row back there; never a field of its own.
PARTITION_KEY = "__partition__"
# Batch.fields key of each row's payload keys whose value is JSON null (Qdrant keeps null
# apart from absent; stores/qdrant.py), so that null stays null where a store can say so.
NULL_KEYS = "__null_keys__"

Id = int | str


def id_array(ids: list[Any]) -> np.ndarray:
    """Keys as a Batch holds them: int64 for integers, else an object array of Python values.

    Not numpy's fixed-width strings: those drop trailing NUL characters, so a key
    ending in one would come back as another key.
    """
    if ids and all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        return np.asarray(ids, dtype=np.int64)
    out = np.empty(len(ids), dtype=object)
    out[:] = ids
    return out


def id_value(value: Any) -> Id:
    """One key as a plain int or str (a numpy scalar from an int64 array, or an object item)."""
    return value.item() if isinstance(value, np.generic) else value


@dataclass(frozen=True)
class CollectionInfo:
    requested: str  # the name the user gave (may be an alias)
    name: str  # the concrete collection behind it
    alias: str | None  # the alias the user gave, if ``requested`` is one
    pk_field: str
    vector_field: str
    dim: int
    metric: str  # "COSINE", "IP" or "L2"
    count: int
    vector_fields: dict[str, int] = field(default_factory=dict)  # every float vector field: dim
    schema: Any = field(repr=False, default=None)  # backend-specific, for copying


@dataclass(frozen=True)
class ForeignSchema:
    """``CollectionInfo.schema`` of a source that lives in another store kind.

    create_like and target_problem then build from this and the info's names,
    dims and metric (stores/crossing.py maps them) instead of copying a schema
    of their own kind.
    """

    store: str  # the source's kind: "milvus", "qdrant" or "parquet"
    string_ids: bool  # keys are strings (else integers)
    key_length: int  # longest string key the target must hold, in bytes


# Candidates a graph index (HNSW) keeps per search in VectorStore.search: far above its
# defaults, which missed a vector's own id on a 100k-row HNSW collection (M 16,
# efConstruction 64) that ef 64 found.
SEARCH_EF = 256
# How much a second look widens that budget (HNSW ef, IVF nprobe, DiskANN search list) for
# the rows a first search missed: a sparse HNSW graph (M 4, efConstruction 8) on the
# 2.3.5 server missed 14 of 256 own rows at ef 256 in one build and none in another.
WIDER = 16


@dataclass(frozen=True)
class Hits:
    """The k nearest rows per query as a store's index ranked them, with their scores.

    ``metric`` says how the scores read: "COSINE" and "IP" are similarities (higher is
    nearer), "L2" (squared or not) and "L1" distances (lower is nearer). ``params``
    names how the index was searched ("HNSW ef=256", "exact"), for reports and logs.
    """

    ids: list[list[Id]]
    scores: list[list[float]]
    metric: str
    params: str
    exact: bool = False  # every row was scored: a row the search missed is not in the index


@dataclass(frozen=True)
class Batch:
    ids: np.ndarray  # (n,) int64, or object (Python str) for string keys: see id_array
    vectors: np.ndarray  # (n, d) float32
    fields: dict[str, list[Any]]  # every other stored field / payload key, column-wise

    def __len__(self) -> int:
        return len(self.ids)


class VectorStore(Protocol):
    """What a migration needs from a store. Names are concrete collections unless stated."""

    uri: str
    # Whether other processes may open this store while we hold it (servers: yes;
    # Milvus Lite files and Qdrant local directories are locked to one process).
    shared: bool

    # -- discovery ---------------------------------------------------------
    def describe(self, name: str, vector_field: str | None = None) -> CollectionInfo:
        """Schema of a collection or alias; refuses a missing one or an ambiguous vector field."""
        ...

    def has_collection(self, name: str) -> bool: ...

    def count(self, name: str, filter: str | None = None) -> int:
        """Exact row count with strong consistency."""
        ...

    # -- reading (primary-key order) ----------------------------------------
    def iter_batches(
        self,
        info: CollectionInfo,
        batch_size: int,
        after: Id | None = None,
        filter: str | None = None,
        vector_field: str | None = None,
        until: Id | None = None,
    ) -> Iterator[Batch]:
        """Rows with ``after`` < id <= ``until`` (open ends when None), every field, the
        chosen vector as vectors. The two bounds make a shard of the id space."""
        ...

    def iter_ids(
        self, name: str, batch_size: int, filter: str | None = None
    ) -> Iterator[np.ndarray]:
        """Only the ids, in order: cheap enough to diff two collections."""
        ...

    def fetch(self, info: CollectionInfo, ids: np.ndarray, vector_field: str) -> Batch:
        """Rows by id, in the order given; StoreError when any is missing."""
        ...

    def search(
        self, name: str, vector_field: str, queries: np.ndarray, k: int, widen: int = 1
    ) -> Hits:
        """The k nearest rows per query, through the store's own index, searched with
        parameters fitted to that index (a thorough search, not the index's default),
        their search budget multiplied by ``widen``."""
        ...

    # -- writing -------------------------------------------------------------
    def read_setup_from(self, source: VectorStore) -> None:
        """Read what create_like and target_problem need of the source collection beyond its
        CollectionInfo (indexes, partitions, collection config) through ``source``, another
        store of this kind: evolve --target-uri between two stores of one kind."""
        ...

    def create_like(self, source: CollectionInfo, target: str, new_dim: int) -> None:
        """A collection with the source's fields and index, the vector resized, plus tags."""
        ...

    def target_problem(self, source: CollectionInfo, target: str, new_dim: int) -> str | None:
        """None when ``target`` can receive evolved rows of ``source``, else why not."""
        ...

    def add_vector_field(self, info: CollectionInfo, name: str, dim: int) -> None:
        """A new vector field beside the old one; StoreError where the store cannot."""
        ...

    def write_rows(
        self, source: CollectionInfo, target: str, batch: Batch, tags: dict[str, str]
    ) -> None:
        """Idempotent upsert of whole rows keyed by the source id."""
        ...

    def write_vectors(
        self,
        info: CollectionInfo,
        field: str,
        ids: np.ndarray,
        vectors: np.ndarray,
        tags: dict[str, str],
    ) -> None:
        """Overwrite one vector field (and the tags) of existing rows, keeping everything else."""
        ...

    def delete_ids(self, name: str, ids: np.ndarray) -> None: ...

    def tag_filter(self, tag: str, value: str) -> str:
        """This store's filter text for ``tag == value`` (for counts per version)."""
        ...

    def source_problem(self, name: str, allowed: dict[str, list[str] | None]) -> str | None:
        """None when evolve can copy ``name`` faithfully here: its tag fields (``allowed``
        names every one of RESERVED_NAMES) are absent or hold only tags (values in
        ``allowed[tag]``; None: any value, but only on rows that also hold TAG_ORIGIN),
        and nothing in it is beyond create_like. Else the rest of a sentence after "collection 'x'"
        that says what and the fix (see TAG_FIX)."""
        ...

    # -- backfill ranks (plan-backfill --tag) --------------------------------------
    def rank_problem(self, name: str) -> str | None:
        """None when rows of ``name`` can get RANK_FIELD set and cleared by id, nothing else of
        them changed; else the rest of a sentence after "collection 'x'" with the fix."""
        ...

    def write_ranks(self, name: str, ids: np.ndarray, ranks: np.ndarray | None) -> int:
        """Set RANK_FIELD of the rows of ``ids`` to ``ranks`` (None: clear it), keeping every
        other field; ids with no row are left out, never added. Returns the rows written."""
        ...

    def rank_filter(self) -> str:
        """This store's filter text for rows that hold a rank."""
        ...

    def flush(self, name: str) -> None: ...

    def drop_collection(self, name: str) -> None: ...

    # -- aliases -------------------------------------------------------------
    def alias_target(self, alias: str) -> str | None: ...

    def point_alias(self, alias: str, target: str) -> None:
        """Create or atomically move an alias."""
        ...

    # -- ledger --------------------------------------------------------------
    def ledger_get(self, key: str) -> dict[str, Any] | None: ...

    def ledger_put(self, key: str, record: dict[str, Any]) -> None: ...

    def ledger_list(self) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


# Greedy up to the last "@" before the path: passwords may hold quotes or a raw "@".
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/\s]*@")
_SECRET_QUERY = re.compile(r"(?i)\b(token|api_key|apikey|password)=[^&\s'\"]*")


def redact(text: str) -> str:
    """``text`` with credentials in URLs masked: errors and logs never carry secrets."""
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}***@", text)
    return _SECRET_QUERY.sub(lambda m: f"{m.group(1)}=***", text)


def choose_vector_field(collection: str, vectors: dict[str, int], requested: str | None) -> str:
    """The vector field to evolve: the only one, or the one asked for; refuses ambiguity."""
    names = ", ".join(repr(v) for v in vectors) or "none"
    if requested is None:
        if len(vectors) != 1:
            raise InputError(
                f"collection '{collection}' has vector fields [{names}]; "
                f"name the one to evolve with --vector-field"
            )
        return next(iter(vectors))
    if requested not in vectors:
        raise InputError(
            f"collection '{collection}' has no float vector field '{requested}' (vector fields: "
            f"{names}); fix --vector-field"
        )
    return requested


# Qdrant's REST and gRPC ports: an http(s):// URL on one of them means Qdrant, not Milvus.
QDRANT_PORTS = (6333, 6334)
# Each store's own credential variable, read when neither --token nor DMU_TOKEN is given.
TOKEN_ENV = {"milvus": "MILVUS_TOKEN", "qdrant": "QDRANT_API_KEY"}


def store_kind(uri: str) -> str:
    """'milvus', 'qdrant' or 'parquet': which backend a URI names (see stores/opener.py)."""
    if uri.startswith("parquet:"):
        return "parquet"
    if uri.startswith(("qdrant://", "qdrants://", "qdrant:")):
        return "qdrant"
    if uri.startswith(("http://", "https://")):
        try:
            port = urlsplit(uri).port
        except ValueError:
            port = None  # a bad port is the Milvus client's to report
        return "qdrant" if port in QDRANT_PORTS else "milvus"
    return "milvus"


def store_place(uri: str) -> str:
    """Where the store a URI names lives, one spelling per place: the resolved path of a
    file or directory store, else the URI's scheme, host, port and path (a Milvus
    database) as written."""
    for prefix in ("parquet:", "qdrant:"):
        if uri.startswith(prefix) and not uri.startswith(("qdrant://", "qdrants://")):
            return f"{prefix}{Path(uri[len(prefix) :]).expanduser().resolve()}"
    if "://" not in uri:  # a Milvus Lite file
        return str(Path(uri).expanduser().resolve())
    parts = urlsplit(uri)
    host = (parts.hostname or "").lower()
    return f"{parts.scheme}://{host}:{parts.port or ''}{parts.path.rstrip('/')}"


def store_token(uri: str, token: str | None) -> str | None:
    """--token (or DMU_TOKEN), else the store's own variable: MILVUS_TOKEN or QDRANT_API_KEY."""
    if token:
        return token
    name = TOKEN_ENV.get(store_kind(uri))
    return (os.environ.get(name) or None) if name else None
