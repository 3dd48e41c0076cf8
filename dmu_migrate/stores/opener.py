"""Opening stores: a URI to its backend, and the stores a run works on.

Above base.py and the backends: the backends import base for the protocol and its
types, and only this module imports the backends, so nothing in stores/ imports in
a circle. Each backend is imported when its kind is first opened, because each
brings its client library (pymilvus, qdrant_client, pyarrow), seconds to load, and
a run needs only the one its URI names.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from dmu_migrate.errors import InputError, StoreError
from dmu_migrate.stores.base import VectorStore, redact, store_kind, store_place
from dmu_migrate.stores.pair import StorePair


def _qdrant_url(uri: str) -> str:
    """http(s)://host:6333 (or :6334, gRPC) as the qdrant(s)://host:6333 form QdrantStore takes."""
    parts = urlsplit(uri)
    scheme = "qdrants" if parts.scheme == "https" else "qdrant"
    netloc = parts.netloc.rsplit(":", 1)[0] + ":6333"
    return urlunsplit((scheme, netloc, parts.path, parts.query, ""))


def open_store(uri: str, token: str | None = None, create: bool = False) -> VectorStore:
    """Open the store a URI names.

    ``./file.db``                   Milvus Lite (embedded, the default)
    ``http(s)://host:19530``        a Milvus server (any port but Qdrant's)
    ``http(s)://host:6333``         a Qdrant server (its REST port 6333 or gRPC port 6334)
    ``qdrant://host:6333``          a Qdrant server on any port (``qdrants://`` for TLS)
    ``qdrant:path/to/dir``          Qdrant local mode (embedded, for tests and small data)
    ``parquet:path/to/dir``         a directory of Parquet files (offline evolve, snapshots)

    ``create``: a Milvus Lite file that does not exist yet is made (a target store);
    otherwise a missing one is refused, since it is most likely a typo in --uri.
    """
    kind = store_kind(uri)
    if kind == "parquet":
        # Each backend imported here, not at the top: see the module's docstring.
        from dmu_migrate.stores.parquet import ParquetStore

        return ParquetStore.connect(uri, token)
    if kind == "qdrant":
        from dmu_migrate.stores.qdrant import QdrantStore

        if uri.startswith(("http://", "https://")):
            uri = _qdrant_url(uri)
        return QdrantStore.connect(uri, token)
    if uri.startswith(("http://", "https://", "tcp://", "grpc://")):
        from dmu_migrate.stores.milvus import MilvusStore

        return MilvusStore.connect(uri, token)
    if "://" in uri:
        scheme = uri.split("://", 1)[0]
        raise InputError(
            f"unknown store URI scheme '{scheme}://' in '{redact(uri)}'; use a Milvus Lite file "
            f"(./gallery.db), a Milvus server (http://host:19530) or Qdrant (qdrant://host:6333)"
        )
    if not uri.endswith(".db"):
        raise InputError(f"store URI '{uri}' is not a Milvus Lite file; it must end in '.db'")
    if not create and not Path(uri).exists():
        raise StoreError(f"no Milvus Lite database at '{uri}'; check --uri")
    from dmu_migrate.stores.milvus import MilvusStore

    return MilvusStore.connect(uri, token)


def crosses(uri: str, target_uri: str | None) -> bool:
    """Whether a run writes into another store than it reads (evolve --target-uri); the
    source's own store, spelled another way, is no other store."""
    if not target_uri:
        return False
    return store_place(target_uri) != store_place(uri)


@contextmanager
def open_run(
    uri: str,
    token: str | None,
    collection: str,
    target_uri: str | None = None,
    target_token: str | None = None,
    filter: str | None = None,
) -> Iterator[VectorStore]:
    """The store a migration of ``collection`` runs on, closed on leaving: the one at ``uri``,
    or, given another ``target_uri``, a StorePair that reads the collection there and writes
    the evolved collection, ledger and alias into the target (created if missing), with the
    run's ``filter`` carried into the target's language. Tokens are used as given."""
    source = open_store(uri, token)
    try:
        if not crosses(uri, target_uri):
            yield source
            return
        assert target_uri is not None  # crosses() is False without one
        target = open_store(target_uri, target_token, create=True)
        try:
            yield StorePair(source, target, collection, filter)
        finally:
            target.close()
    finally:
        source.close()
