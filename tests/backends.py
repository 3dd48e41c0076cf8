"""One harness per store kind, for tests that must run against every backend.

A ``Backend`` seeds a source collection with the store's NATIVE client (MilvusClient,
QdrantClient, pyarrow), never with our write API, so that a test of a store's reads
does not depend on its writes; ``read_all`` reads back natively for the same reason.

Fixtures (tests/conftest.py): ``backend`` (parametrized over ``backend_kinds()``),
``milvus_server`` (the session's real Milvus 2.3.5 server; only integration tests may
use it). ``kind_params(...)`` marks server kinds integration in a test's own parametrize.

    def test_x(backend: Backend) -> None:
        name = backend.unique("src")
        backend.seed(name, ids, vectors, {"label": [...], "name": [...]}, alias=backend.unique("a"))
        store = backend.open_store()          # closed by the fixture's teardown
        ...
        rows = backend.read_all(target)       # {id: {field: value, vector name: list}}

``unique(prefix)`` names collections and aliases (servers are shared by the session);
``string_ids(n)`` gives ascending string keys the store accepts (UUIDs on Qdrant);
``shared(key, make)`` seeds read-only data once per session on the private Milvus
server (and every time elsewhere); ``is_milvus``/``is_qdrant`` pick per-kind filter text.

Vectors: an ``(n, d)`` array is seeded as Milvus field "vector", the unnamed Qdrant
vector (reported as vector field "") and Parquet column "vector"; a dict
``{name: (n, d)}`` seeds several named vector fields. ``vector_name`` says which
name the single-array form got.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dmu_migrate.stores.base import LEDGER_COLLECTION, VectorStore
from dmu_migrate.stores.opener import open_store

_DISTANCE = {"COSINE": "Cosine", "IP": "Dot", "L2": "Euclid"}
T = TypeVar("T")
# Every call a test helper makes to a server gives up after this long: a stalled server
# fails the test instead of blocking the run (it once blocked one for 17 minutes).
CALL_TIMEOUT = 120
# Read-only fixtures seeded once per private Milvus server (collections there cost seconds
# each); the names in _KEPT survive the per-test drop and die with the server.
_SHARED: dict[tuple[str, str], Any] = {}
_KEPT: set[str] = set()


SERVER_KINDS = ("milvus-server", "qdrant-server")


def kind_params(*kinds: str) -> list[Any]:
    """``kinds`` as parameters; a server kind is marked integration (``pytest -m integration``)."""
    return [
        pytest.param(k, marks=pytest.mark.integration) if k in SERVER_KINDS else k for k in kinds
    ]


def backend_kinds() -> list[Any]:
    """Store kinds to test; a Qdrant server only when one is configured (no skipped tests).

    The embedded kinds are the fast suite's store contract; the servers run in the
    integration suite.
    """
    kinds = ["milvus-lite", "milvus-server", "qdrant-local", "parquet"]
    if os.environ.get("QDRANT_URL"):
        kinds.append("qdrant-server")
    return kind_params(*kinds)


def clear_ledger(uri: str) -> None:
    """Delete every record of a Milvus server's ledger and keep the collection.

    Creating, indexing and loading a collection costs seconds on the server, and every
    evolve needs the ledger: dropping it after each test made the next test build it again.
    """
    from pymilvus import MilvusClient

    client = MilvusClient(uri)
    try:
        if not client.has_collection(LEDGER_COLLECTION, timeout=CALL_TIMEOUT):
            return
        for _ in range(10):  # a page of 16,384 keys at a time; a test writes a few
            rows = client.query(
                LEDGER_COLLECTION,
                filter="",
                output_fields=["key"],
                limit=16384,
                consistency_level="Strong",
                timeout=CALL_TIMEOUT,
            )
            if not rows:
                return
            client.delete(LEDGER_COLLECTION, ids=[r["key"] for r in rows], timeout=CALL_TIMEOUT)
        raise RuntimeError(f"the ledger on {uri} still has records after 10 deletes")
    finally:
        client.close()


def fast_on(kind: str) -> pytest.MarkDecorator:
    """Run a ``backend`` test on every kind, the fast suite on ``kind`` alone.

    For a scenario whose store-specific steps other fast tests cover on each kind (the
    store contract, the end-to-end evolve): the fast suite runs it once, the integration
    suite on the rest.
    """
    kinds = [p if isinstance(p, str) else p.values[0] for p in backend_kinds()]
    params = [k if k == kind else pytest.param(k, marks=pytest.mark.integration) for k in kinds]
    return pytest.mark.parametrize("backend", params, indirect=True)


EMBEDDED_KINDS = ("milvus-lite", "qdrant-local", "parquet")


def embedded_only() -> pytest.MarkDecorator:
    """Run a ``backend`` test on the embedded kinds alone (all in the fast suite).

    For checks made before or beside the store (flags, plans, what the ledger already
    holds): a server would repeat them at seconds a test and test nothing of its own.
    """
    return pytest.mark.parametrize("backend", EMBEDDED_KINDS, indirect=True)


def _vector_map(vectors: np.ndarray | dict[str, np.ndarray], single: str) -> dict[str, np.ndarray]:
    if isinstance(vectors, dict):
        return {k: np.asarray(v, dtype=np.float32) for k, v in vectors.items()}
    return {single: np.asarray(vectors, dtype=np.float32)}


@dataclass
class Backend:
    kind: str
    uri: str
    root: Path
    _stores: list[VectorStore] = field(default_factory=list)
    _created: set[str] = field(default_factory=set)

    @property
    def vector_name(self) -> str:
        """The vector field name a single-array seed gets in this store."""
        return "" if self.kind.startswith("qdrant") else "vector"

    @property
    def is_milvus(self) -> bool:
        return self.kind.startswith("milvus")

    @property
    def is_qdrant(self) -> bool:
        return self.kind.startswith("qdrant")

    def unique(self, prefix: str) -> str:
        """A collection/alias name no other test uses (servers are shared by the session)."""
        return f"{prefix}_{uuid.uuid4().hex[:8]}"

    def string_ids(self, n: int) -> list[str]:
        """String keys this store accepts, in ascending order (Qdrant: UUIDs only)."""
        if self.is_qdrant:
            return [str(uuid.UUID(int=1000 + 7 * i)) for i in range(n)]
        return [f"key-{i:05d}" for i in range(n)]

    def shared(self, key: str, make: Callable[[], T]) -> T:
        """``make()`` once per session on the private Milvus server, else every time.

        Only for data no test modifies. Other kinds reseed: their stores live in tmp_path
        (cheap), and an external Qdrant server must not keep our collections.
        """
        if self.kind != "milvus-server":
            return make()
        if (self.uri, key) not in _SHARED:
            before = self.list_collections()
            _SHARED[(self.uri, key)] = make()
            _KEPT.update(self.list_collections() - before)
        return _SHARED[(self.uri, key)]

    def created_since(self, before: set[str]) -> list[str]:
        """Collections made since ``before``, except shared read-only ones."""
        return sorted(self.list_collections() - before - _KEPT)

    def open_store(self) -> VectorStore:
        """A store over this backend; the fixture closes it at teardown."""
        # Qdrant local mode allows one client per path: our native reads reuse the
        # store's client while it is open, so close any earlier one first.
        if self.kind == "qdrant-local":
            self.close_stores()
        if self.kind == "milvus-lite" and not Path(self.uri).exists():
            # open_store refuses a missing .db (a typo in --uri); the user would create it.
            from pymilvus import MilvusClient

            MilvusClient(self.uri).close()
        store = open_store(self.uri, os.environ.get("QDRANT_API_KEY") if self.is_qdrant else None)
        self._stores.append(store)
        return store

    def close_stores(self) -> None:
        while self._stores:
            self._stores.pop().close()

    # -- seeding with the native client ---------------------------------------
    def seed(
        self,
        name: str,
        ids: list[Any] | np.ndarray,
        vectors: np.ndarray | dict[str, np.ndarray],
        fields: dict[str, list[Any]] | None = None,
        metric: str = "COSINE",
        alias: str | None = None,
    ) -> None:
        ids = list(np.asarray(ids, dtype=object).tolist()) if len(ids) else []
        fields = fields or {}
        self._created.add(name)
        if self.is_milvus:
            self._seed_milvus(name, ids, _vector_map(vectors, "vector"), fields, metric, alias)
        elif self.is_qdrant:
            self._seed_qdrant(name, ids, _vector_map(vectors, ""), fields, metric, alias)
        else:
            self._seed_parquet(name, ids, _vector_map(vectors, "vector"), fields, metric, alias)

    def _seed_milvus(self, name, ids, vectors, fields, metric, alias) -> None:
        from pymilvus import DataType, MilvusClient

        client = MilvusClient(self.uri)
        try:
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            if isinstance(ids[0], str):
                schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
            else:
                schema.add_field("id", DataType.INT64, is_primary=True)
            for vname, arr in vectors.items():
                schema.add_field(vname, DataType.FLOAT_VECTOR, dim=arr.shape[1])
            for fname, values in fields.items():
                if isinstance(values[0], str):
                    schema.add_field(fname, DataType.VARCHAR, max_length=256)
                elif isinstance(values[0], float):
                    schema.add_field(fname, DataType.DOUBLE)
                else:
                    schema.add_field(fname, DataType.INT64)
            index = client.prepare_index_params()
            for vname in vectors:
                index.add_index(field_name=vname, index_type="AUTOINDEX", metric_type=metric)
            client.create_collection(name, schema=schema, index_params=index, timeout=CALL_TIMEOUT)
            rows = []
            for i, row_id in enumerate(ids):
                row: dict[str, Any] = {"id": row_id}
                row.update({k: v[i].tolist() for k, v in vectors.items()})
                row.update({k: v[i] for k, v in fields.items()})
                rows.append(row)
            for start in range(0, len(rows), 1000):
                client.insert(name, rows[start : start + 1000], timeout=CALL_TIMEOUT)
            # No flush: it costs seconds on a server, and reads that matter use Strong consistency.
            if alias:
                client.create_alias(name, alias, timeout=CALL_TIMEOUT)
        finally:
            client.close()

    def _qdrant_client(self) -> Any:
        """The open store's client (local mode: one client per path), else a new one."""
        from qdrant_client import QdrantClient

        for store in reversed(self._stores):
            if not getattr(store, "closed", True):
                return store.client  # type: ignore[attr-defined]
        if self.kind == "qdrant-local":
            return QdrantClient(path=str(self.root / "qdrant"))
        url = self.uri.replace("qdrants://", "https://", 1).replace("qdrant://", "http://", 1)
        return QdrantClient(url=url, api_key=os.environ.get("QDRANT_API_KEY"))

    def _with_qdrant(self, fn: Any) -> Any:
        client = self._qdrant_client()
        owned = all(getattr(s, "client", None) is not client for s in self._stores)
        try:
            return fn(client)
        finally:
            if owned:
                client.close()

    def _seed_qdrant(self, name, ids, vectors, fields, metric, alias) -> None:
        from qdrant_client import models

        distance = models.Distance(_DISTANCE[metric])
        if list(vectors) == [""]:
            config: Any = models.VectorParams(size=vectors[""].shape[1], distance=distance)
        else:
            config = {
                k: models.VectorParams(size=v.shape[1], distance=distance)
                for k, v in vectors.items()
            }

        def seed(client: Any) -> None:
            client.create_collection(name, vectors_config=config)
            points = []
            for i, row_id in enumerate(ids):
                vec: Any = (
                    vectors[""][i].tolist()
                    if "" in vectors
                    else {k: v[i].tolist() for k, v in vectors.items()}
                )
                payload = {k: v[i] for k, v in fields.items()}
                points.append(models.PointStruct(id=row_id, vector=vec, payload=payload))
            for start in range(0, len(points), 500):
                client.upsert(name, points[start : start + 500])
            if alias:
                op = models.CreateAlias(collection_name=name, alias_name=alias)
                client.update_collection_aliases(
                    change_aliases_operations=[models.CreateAliasOperation(create_alias=op)]
                )

        self._with_qdrant(seed)

    def _seed_parquet(self, name, ids, vectors, fields, metric, alias) -> None:
        # The on-disk layout of dmu_migrate.stores.parquet, written by hand with pyarrow.
        directory = self.root / "parquet" / name
        directory.mkdir(parents=True)
        schema = {
            "format": 1,
            "pk": "id",
            "metric": metric,
            "vector_fields": {k: int(v.shape[1]) for k, v in vectors.items()},
        }
        (directory / "schema.json").write_text(json.dumps(schema))
        columns: dict[str, Any] = {"id": pa.array(ids)}
        for vname, arr in vectors.items():
            flat = pa.array(arr.reshape(-1), type=pa.float32())
            columns[vname] = pa.FixedSizeListArray.from_arrays(flat, arr.shape[1])
        columns.update({k: pa.array(v) for k, v in fields.items()})
        table = pa.table(columns).replace_schema_metadata({"dmu_seq": str(time.time_ns())})
        pq.write_table(table, directory / "part-seed.parquet")
        if alias:
            aliases_path = self.root / "parquet" / "aliases.json"
            aliases = json.loads(aliases_path.read_text()) if aliases_path.exists() else {}
            aliases[alias] = name
            aliases_path.write_text(json.dumps(aliases))

    # -- reading with the native client ---------------------------------------
    def read_all(self, name: str) -> dict[Any, dict[str, Any]]:
        """Every row by id; vectors as lists of float under their field (Qdrant: vector name)."""
        if self.is_milvus:
            return self._read_milvus(name)
        if self.is_qdrant:
            return self._with_qdrant(lambda client: self._read_qdrant(client, name))
        return self._read_parquet(name)

    def _read_milvus(self, name: str) -> dict[Any, dict[str, Any]]:
        from pymilvus import MilvusClient

        client = MilvusClient(self.uri)
        try:
            client.load_collection(name, timeout=CALL_TIMEOUT)
            # A Strong query first: iterators read at a client-side timestamp (see milvus.py).
            client.query(
                name,
                filter="",
                output_fields=["count(*)"],
                consistency_level="Strong",
                timeout=CALL_TIMEOUT,
            )
            it = client.query_iterator(
                name, batch_size=1000, filter="", output_fields=["*"], consistency_level="Strong"
            )
            rows: dict[Any, dict[str, Any]] = {}
            while batch := it.next():
                for row in batch:
                    assert row["id"] not in rows, "duplicate primary key"
                    rows[row["id"]] = dict(row)
            it.close()
            return rows
        finally:
            client.close()

    @staticmethod
    def _read_qdrant(client: Any, name: str) -> dict[Any, dict[str, Any]]:
        rows: dict[Any, dict[str, Any]] = {}
        offset = None
        while True:
            records, offset = client.scroll(name, limit=256, offset=offset, with_vectors=True)
            for r in records:
                row = dict(r.payload or {})
                vec = r.vector if isinstance(r.vector, dict) else {"": r.vector}
                row.update({k: list(v) for k, v in vec.items()})
                rows[r.id] = row
            if offset is None:
                return rows

    def _read_parquet(self, name: str) -> dict[Any, dict[str, Any]]:
        directory = self.root / "parquet" / name
        schema = json.loads((directory / "schema.json").read_text())
        parts = []
        for path in directory.glob("*.parquet"):
            table = pq.read_table(path)
            parts.append((int(table.schema.metadata[b"dmu_seq"]), path.name, table))
        rows: dict[Any, dict[str, Any]] = {}
        for _seq, part_name, table in sorted(parts, key=lambda p: (p[0], p[1])):
            for row in table.to_pylist():
                if part_name.startswith("del-"):
                    rows.pop(row[schema["pk"]], None)
                else:
                    rows[row[schema["pk"]]] = row
        return rows

    # -- teardown ---------------------------------------------------------------
    def drop_created(self, names: list[str]) -> None:
        """Drop collections (and their aliases) a test made on a shared server.

        The ledger's records go too, whoever wrote them: they describe this test's
        migrations, and a later test's ledger must not list them. The ledger collection
        itself stays (see clear_ledger).
        """
        self.close_stores()
        if self.kind == "milvus-server":
            from pymilvus import MilvusClient

            client = MilvusClient(self.uri)
            try:
                for name in names:
                    if name == LEDGER_COLLECTION:
                        continue
                    if client.has_collection(name, timeout=CALL_TIMEOUT):
                        aliases = client.list_aliases(name, timeout=CALL_TIMEOUT)
                        for alias in aliases.get("aliases", []):
                            client.drop_alias(alias, timeout=CALL_TIMEOUT)
                        client.drop_collection(name, timeout=CALL_TIMEOUT)
            finally:
                client.close()
            clear_ledger(self.uri)
        elif self.kind == "qdrant-server":

            def drop(client: Any) -> None:
                for a in client.get_aliases().aliases:
                    if a.collection_name in names:
                        client.delete_alias(a.alias_name)
                for name in names:
                    client.delete_collection(name)

            self._with_qdrant(drop)

    def list_collections(self) -> set[str]:
        if self.is_milvus:
            from pymilvus import MilvusClient

            client = MilvusClient(self.uri)
            try:
                return set(client.list_collections(timeout=CALL_TIMEOUT))
            finally:
                client.close()
        if self.is_qdrant:
            return self._with_qdrant(lambda c: {x.name for x in c.get_collections().collections})
        base = self.root / "parquet"
        return {p.name for p in base.iterdir() if p.is_dir()} if base.exists() else set()
