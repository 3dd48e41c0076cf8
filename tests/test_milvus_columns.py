"""The columnar Milvus path (stores/milvus_columns.py) reads and writes exactly what the
row path does, on Milvus Lite and the real server: same pages, same stored rows."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from backends import Backend, kind_params
from pymilvus import DataType, MilvusClient

from dmu_migrate.errors import StoreError
from dmu_migrate.stores import milvus_columns
from dmu_migrate.stores.base import Batch, id_value
from dmu_migrate.stores.milvus import MilvusStore

MILVUS = pytest.mark.parametrize(
    "backend", kind_params("milvus-lite", "milvus-server"), indirect=True
)

ROWS, DIM = 2500, 24


def _rich_collection(
    backend: Backend, string_ids: bool = False
) -> tuple[str, np.ndarray, np.ndarray]:
    """Every scalar kind a gallery carries next to its vector, including JSON and nulls-free arrays."""
    name = backend.unique("cols")
    client = MilvusClient(backend.uri)
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    if string_ids:
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
    else:
        schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
    schema.add_field("label", DataType.INT64)
    schema.add_field("score", DataType.DOUBLE)
    schema.add_field("ok", DataType.BOOL)
    schema.add_field("name", DataType.VARCHAR, max_length=64)
    schema.add_field("meta", DataType.JSON)
    schema.add_field("tags", DataType.ARRAY, element_type=DataType.INT64, max_capacity=4)
    index = client.prepare_index_params()
    index.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="COSINE")
    client.create_collection(name, schema=schema, index_params=index)
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((ROWS, DIM)).astype(np.float32)
    # Shuffled insert order, and ids whose string form sorts differently from their value.
    order = rng.permutation(ROWS)
    ids = np.array([f"k-{i:05d}" for i in range(ROWS)]) if string_ids else order * 7 + 3
    rows = [
        {
            "id": ids[i].item(),
            "vector": vectors[i].tolist(),
            "label": int(i % 10),
            "score": float(i) / 3,
            "ok": bool(i % 2),
            "name": f"n{i}",
            "meta": {"i": int(i), "s": "x" * (i % 5)},
            "tags": [int(i), int(i) + 1],
        }
        for i in order.tolist()
    ]
    for start in range(0, ROWS, 1000):
        client.insert(name, rows[start : start + 1000])
    client.close()
    return name, ids, vectors


def _pages(store: MilvusStore, name: str, columnar: bool, after: Any = None) -> list[Batch]:
    store._columnar = columnar
    info = store.describe(name)
    return list(store.iter_batches(info, 700, after=after))


@MILVUS
@pytest.mark.parametrize("string_ids", [False, True])
def test_columnar_pages_equal_row_pages(backend: Backend, string_ids: bool) -> None:
    name, ids, vectors = _rich_collection(backend, string_ids)
    store = backend.open_store()
    assert isinstance(store, MilvusStore) and milvus_columns.available(store.client)
    fast, slow = _pages(store, name, True), _pages(store, name, False)
    got_ids = np.concatenate([b.ids for b in fast])
    assert got_ids.tolist() == sorted(ids.tolist())  # every row once, in key order
    assert got_ids.tolist() == np.concatenate([b.ids for b in slow]).tolist()
    np.testing.assert_array_equal(
        np.concatenate([b.vectors for b in fast]), np.concatenate([b.vectors for b in slow])
    )
    for f, s in zip(fast, slow, strict=False):
        assert f.vectors.dtype == np.float32 and f.fields == s.fields
    by_id = dict(zip(ids.tolist(), vectors, strict=True))
    np.testing.assert_array_equal(fast[0].vectors[0], by_id[id_value(fast[0].ids[0])])
    # Resuming after a cursor starts at the next key.
    cursor = id_value(got_ids[1234])  # keys are Python ints or strs (stores.base.id_array)
    resumed = np.concatenate([b.ids for b in _pages(store, name, True, after=cursor)])
    assert resumed.tolist() == got_ids[1235:].tolist()
    ids_only = np.concatenate(list(store.iter_ids(name, 600)))
    assert ids_only.tolist() == got_ids.tolist()


@MILVUS
def test_columnar_upsert_stores_what_the_row_path_stores(backend: Backend) -> None:
    name, _, _ = _rich_collection(backend)
    store = backend.open_store()
    assert isinstance(store, MilvusStore)
    info = store.describe(name)
    batch = next(iter(store.iter_batches(info, 500)))
    tags = {"dmu_version": "v2", "dmu_from": "v1", "dmu_origin": "evolved"}
    written = {}
    for columnar in (True, False):
        target = backend.unique("copy")
        store.create_like(info, target, DIM)
        store._columnar = columnar
        store.write_rows(info, target, batch, tags)
        store.write_rows(info, target, batch, tags)  # a replayed batch: still one row per id
        assert store.count(target) == len(batch)
        written[columnar] = store.fetch(store.describe(target), batch.ids, "vector")
    np.testing.assert_array_equal(written[True].vectors, batch.vectors)
    np.testing.assert_array_equal(written[True].vectors, written[False].vectors)
    assert written[True].fields == written[False].fields
    assert written[True].fields["dmu_version"] == ["v2"] * len(batch)


@MILVUS
def test_dynamic_schema_falls_back_to_rows(backend: Backend) -> None:
    name = backend.unique("dyn")
    client = MilvusClient(backend.uri)
    client.create_collection(
        name, dimension=4, enable_dynamic_field=True, consistency_level="Strong"
    )
    client.close()
    store = backend.open_store()
    assert isinstance(store, MilvusStore)
    info = store.describe(name)
    ids = np.arange(5)
    vectors = np.eye(5, 4, dtype=np.float32) + 0.5
    store.write_rows(
        info, name, Batch(ids, vectors, {"colour": ["red"] * 5}), {"dmu_version": "v1"}
    )
    back = store.fetch(info, ids, info.vector_field)
    assert back.fields["colour"] == ["red"] * 5 and back.fields["dmu_version"] == ["v1"] * 5


def test_out_of_order_pages_are_refused() -> None:
    with pytest.raises(StoreError, match="out of primary-key order"):
        milvus_columns._check_order("faces", np.array([1, 3, 2]), None)
    with pytest.raises(StoreError, match="out of primary-key order"):
        milvus_columns._check_order("faces", np.array([5, 6]), 5)
    milvus_columns._check_order("faces", np.array(["a", "b"]), None)
