"""Every field type a gallery can carry reads and writes the same through the columnar path
(stores/milvus_columns.py, built on pymilvus internals) as through pymilvus's public API,
on Milvus Lite and the real server. pyproject bounds pymilvus to the versions this passes on."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from backends import Backend
from pymilvus import DataType, MilvusClient

from dmu_migrate.stores import milvus_columns
from dmu_migrate.stores.milvus import MilvusStore

# Nullable fields exist from Milvus 2.5 (Lite 3.x), not on the 2.3.5 server; with them the
# columnar writer steps aside (milvus_columns.write_supported), so Lite runs both schemas.
KINDS = pytest.mark.parametrize(
    ("backend", "nullable"),
    [
        ("milvus-lite", False),
        ("milvus-lite", True),
        pytest.param("milvus-server", False, marks=pytest.mark.integration),
    ],
    indirect=["backend"],
)

ROWS, DIM, TIMEOUT = 300, 8, 60.0
TAGS = {"dmu_version": "v2", "dmu_from": "v1", "dmu_origin": "evolved"}

SCALARS = {
    "b": DataType.BOOL,
    "i8": DataType.INT8,
    "i16": DataType.INT16,
    "i32": DataType.INT32,
    "i64": DataType.INT64,
    "f32": DataType.FLOAT,
    "f64": DataType.DOUBLE,
    "s": DataType.VARCHAR,
}


def _value(kind: DataType, i: int) -> Any:
    if kind == DataType.BOOL:
        return bool(i % 3)
    if kind == DataType.VARCHAR:
        return f"v{i}-é"
    if kind in (DataType.FLOAT, DataType.DOUBLE):
        return i / 4  # exact in float32: equality is meaningful
    return (i % 100) - 50  # fits int8


def _schema(nullable: bool) -> Any:
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
    for name, kind in SCALARS.items():
        extra = {"max_length": 32} if kind == DataType.VARCHAR else {}
        schema.add_field(name, kind, **extra)
        schema.add_field(f"a_{name}", DataType.ARRAY, element_type=kind, max_capacity=3, **extra)
    schema.add_field("j", DataType.JSON)
    if nullable:  # Milvus >= 2.5 (Lite 3.x); the 2.3.5 server has no nullable fields
        schema.add_field("n_i64", DataType.INT64, nullable=True)
        schema.add_field("n_s", DataType.VARCHAR, max_length=32, nullable=True)
    return schema


def _rows(nullable: bool) -> list[dict[str, Any]]:
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((ROWS, DIM)).astype(np.float32)
    rows = []
    for i in rng.permutation(ROWS).tolist():
        row: dict[str, Any] = {"id": i * 3 + 1, "vector": vectors[i].tolist()}
        for name, kind in SCALARS.items():
            row[name] = _value(kind, i)
            row[f"a_{name}"] = [_value(kind, i + k) for k in range(i % 4)]
        row["j"] = {"i": i, "s": "x" * (i % 3), "l": [i, None]}
        if nullable:
            row["n_i64"] = None if i % 2 else i
            row["n_s"] = None if i % 3 else f"n{i}"
        rows.append(row)
    return rows


def _collection(backend: Backend, nullable: bool) -> str:
    name = backend.unique("types")
    client = MilvusClient(backend.uri, timeout=TIMEOUT)
    index = client.prepare_index_params()
    index.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="L2")
    client.create_collection(name, schema=_schema(nullable), index_params=index, timeout=TIMEOUT)
    client.insert(name, _rows(nullable), timeout=TIMEOUT)  # the public write path
    client.close()
    return name


def _public(backend: Backend, name: str) -> dict[int, dict[str, Any]]:
    """Every row as pymilvus's public query returns it, vectors as float32 lists."""
    client = MilvusClient(backend.uri, timeout=TIMEOUT)
    try:
        client.load_collection(name, timeout=TIMEOUT)
        rows = client.query(
            name,
            filter="id >= 0",
            output_fields=["*"],
            limit=16384,
            consistency_level="Strong",
            timeout=TIMEOUT,
        )
    finally:
        client.close()
    return {int(r["id"]): _plain(dict(r)) for r in rows}


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in row.items():
        if key == "vector":
            value = np.asarray(value, dtype=np.float32).tolist()
        elif hasattr(value, "tolist"):
            value = value.tolist()
        elif isinstance(value, list | tuple):
            value = [v.item() if hasattr(v, "item") else v for v in value]
        out[key] = value
    return out


def _untagged(row: dict[str, Any]) -> dict[str, Any]:
    """A copied row less the version tags evolve adds to its targets."""
    return {k: v for k, v in row.items() if not k.startswith("dmu_")}


def _columnar_read(store: MilvusStore, name: str) -> dict[int, dict[str, Any]]:
    store._columnar = True
    info = store.describe(name)
    got: dict[int, dict[str, Any]] = {}
    for batch in store.iter_batches(info, 128):
        assert batch.vectors.dtype == np.float32
        for i, row_id in enumerate(batch.ids.tolist()):
            row = {k: v[i] for k, v in batch.fields.items()}
            row.update(id=int(row_id), vector=batch.vectors[i])
            got[int(row_id)] = _plain(row)
    return got


@KINDS
def test_every_field_type_reads_and_writes_alike(backend: Backend, nullable: bool) -> None:
    name = _collection(backend, nullable)
    store = backend.open_store()
    assert isinstance(store, MilvusStore) and milvus_columns.available(store.client)
    public = _public(backend, name)
    assert len(public) == ROWS
    assert _columnar_read(store, name) == public

    # Written back through both paths: what each stored reads back the same.
    info = store.describe(name)
    batch = next(iter(store.iter_batches(info, ROWS)))
    stored = {}
    for columnar in (True, False):
        target = backend.unique("copy")
        store.create_like(info, target, DIM)
        store._columnar = columnar
        # Really the columnar writer where the schema allows it, the row path where not.
        assert (store._write_schema(target) is not None) == (columnar and not nullable)
        store.write_rows(info, target, batch, TAGS)
        stored[columnar] = _public(backend, target)
    assert stored[True] == stored[False]
    assert {k: _untagged(r) for k, r in stored[True].items()} == public
