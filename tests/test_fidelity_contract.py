"""One fidelity contract for every store: the same user-like source, evolved, described alike.

Each store kind gets the same source, as far as it can express it: integer or
string ids (UUIDs on Qdrant), scalar fields of three types, a nullable field
set on one row in twenty (so whole batches hold only nulls), a default value
(Milvus Lite), keys on some rows only (a Milvus dynamic field, Qdrant payload),
named partitions (Milvus) and an index with build parameters (Milvus).

``describe(backend, name)`` reads a collection with the store's native client
into one plain dict of the same shape for every store: pk, scalar fields (type,
nullable, default), vector fields (dim, metric), index, dynamic field,
partitions and every row's payload (and partition). A new store kind needs one
``describe_<kind>`` function and a seeding branch; the checks stay as they are.
The target must describe exactly as its source, but for the version tags and
the evolved vectors, which must be the adapter's output of the source's.
Store-specific depth stays in tests/test_fidelity_milvus_*.py and
tests/test_fidelity_qdrant.py.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from backends import Backend
from galleries import Digits
from limits import limit
from milvus_sources import build_params, native, seed
from pymilvus import DataType

from dmu_migrate.artifact import Artifact
from dmu_migrate.evolve.pipeline import EvolveOptions, evolve
from dmu_migrate.evolve.plan import make_plan
from dmu_migrate.evolve.run import Outcome
from dmu_migrate.evolve.transform import AdapterChain
from dmu_migrate.onnx_model import OnnxModel
from dmu_migrate.stores.base import TAG_FIELDS, TAG_SOURCE
from dmu_migrate.stores.milvus_schema import TIMEOUT

ROWS = 48
TAGS = (*TAG_FIELDS, TAG_SOURCE)
PARTITIONS = ("_default", "europe", "asia")  # Milvus row i lies in PARTITIONS[i % 3]
INDEX = {"M": 16, "efConstruction": 96}
PART = "__partition__"  # the row key describe() adds for a row's named partition


# -- the source ------------------------------------------------------------------


def user_rows(backend: Backend, digits: Digits, id_kind: str) -> list[dict[str, Any]]:
    """Rows of the user-like source; the vector under "vector", other keys per store below."""
    ids: list[Any] = (
        list(range(1000, 1000 + ROWS)) if id_kind == "int" else backend.string_ids(ROWS)
    )
    rows = []
    for i, row_id in enumerate(ids):
        row: dict[str, Any] = {
            "id": row_id,
            "vector": digits.old_te[i].tolist(),
            "label": int(digits.y_te[i]),
            "name": f"item-{i}",
            "score": i * 0.25,
            "note": f"note {i}" if i % 20 == 0 else None,  # batches of 16 with nulls only
        }
        if i % 10 == 3:  # keys on some rows only (dynamic field / payload)
            row["color"] = f"c{i}"
        if i % 7 == 0:
            row["meta"] = {"tags": ["a", str(i)], "n": i}
        rows.append(row)
    return rows


def seed_source(backend: Backend, name: str, alias: str, rows: list[dict[str, Any]]) -> None:
    if backend.is_milvus:
        _seed_milvus(backend, name, alias, rows)
    elif backend.is_qdrant:
        _seed_qdrant(backend, name, alias, rows)
    else:
        _seed_parquet(backend, name, alias, rows)


def _seed_milvus(backend: Backend, name: str, alias: str, rows: list[dict[str, Any]]) -> None:
    lite = backend.kind == "milvus-lite"
    dim = len(rows[0]["vector"])

    def build(schema: Any) -> None:
        if isinstance(rows[0]["id"], str):
            schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        else:
            schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("label", DataType.INT64)
        schema.add_field("name", DataType.VARCHAR, max_length=32)
        schema.add_field("score", DataType.DOUBLE)
        if lite:  # nullable fields and defaults came after the 2.3 server
            schema.add_field("note", DataType.VARCHAR, max_length=32, nullable=True)
            schema.add_field("weight", DataType.DOUBLE, default_value=0.5)

    index = {"field_name": "vector", "index_type": "HNSW", "metric_type": "COSINE"}
    index |= build_params(backend, INDEX)
    seed(backend, name, build, [], [index], alias, enable_dynamic_field=True)
    client = native(backend)
    try:
        for partition in PARTITIONS[1:]:
            client.create_partition(name, partition, timeout=TIMEOUT)
        for k, partition in enumerate(PARTITIONS):
            part = []
            for i in range(k, len(rows), 3):
                row = dict(rows[i])
                if not lite and row["note"] is None:
                    row.pop("note")  # no nullable fields: a dynamic key on some rows
                elif lite and i % 2 == 0:
                    row["weight"] = 2.0  # the other rows get the default
                part.append(row)
            client.insert(name, part, partition_name=partition, timeout=TIMEOUT)
    finally:
        client.close()


def _seed_qdrant(backend: Backend, name: str, alias: str, rows: list[dict[str, Any]]) -> None:
    from qdrant_client import models

    def make(client: Any) -> None:
        size = len(rows[0]["vector"])
        client.create_collection(
            name, vectors_config=models.VectorParams(size=size, distance=models.Distance.COSINE)
        )
        points = [
            models.PointStruct(
                id=r["id"],
                vector=r["vector"],
                payload={k: v for k, v in r.items() if k not in ("id", "vector")},
            )
            for r in rows
        ]
        client.upsert(name, points)
        op = models.CreateAlias(collection_name=name, alias_name=alias)
        client.update_collection_aliases(
            change_aliases_operations=[models.CreateAliasOperation(create_alias=op)]
        )

    backend._with_qdrant(make)


def _seed_parquet(backend: Backend, name: str, alias: str, rows: list[dict[str, Any]]) -> None:
    """The store's on-disk layout by hand (as tests/backends.py): columns, no per-row keys."""
    directory = backend.root / "parquet" / name
    directory.mkdir(parents=True)
    dim = len(rows[0]["vector"])
    schema = {"format": 1, "pk": "id", "metric": "COSINE", "vector_fields": {"vector": dim}}
    (directory / "schema.json").write_text(json.dumps(schema))
    flat = pa.array(np.asarray([r["vector"] for r in rows], dtype=np.float32).ravel())
    columns: dict[str, Any] = {
        "id": pa.array([r["id"] for r in rows]),
        "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
    }
    for key in ("label", "name", "score", "note"):
        columns[key] = pa.array([r[key] for r in rows])
    table = pa.table(columns).replace_schema_metadata({"dmu_seq": str(time.time_ns())})
    pq.write_table(table, directory / "part-seed.parquet")
    (backend.root / "parquet" / "aliases.json").write_text(json.dumps({alias: name}))


# -- one description per store -------------------------------------------------------


def describe(backend: Backend, name: str) -> dict[str, Any]:
    """The collection as one plain dict, the same keys for every store (None: no such notion)."""
    if backend.is_milvus:
        return describe_milvus(backend, name)
    if backend.is_qdrant:
        return describe_qdrant(backend, name)
    return describe_parquet(backend, name)


def _plain(value: Any) -> Any:
    """Rows compare as JSON does: numpy scalars and tuples become plain values."""
    return json.loads(json.dumps(value, default=lambda v: v.item()))


def describe_milvus(backend: Backend, name: str) -> dict[str, Any]:
    client = native(backend)
    try:
        desc = client.describe_collection(name, timeout=TIMEOUT)
        fields: dict[str, Any] = {}
        vectors: dict[str, dict[str, Any]] = {}
        pk: dict[str, Any] = {}
        for f in desc["fields"]:
            kind = DataType(f["type"]).name
            if f["type"] == DataType.FLOAT_VECTOR:
                vectors[f["name"]] = {"dim": int(f["params"]["dim"])}
            elif f.get("is_primary"):
                pk = {"name": f["name"], "type": kind}
            else:
                fields[f["name"]] = {
                    "type": kind,
                    "params": {k: str(v) for k, v in f.get("params", {}).items()},
                    "nullable": bool(f.get("nullable")),
                    "default": str(f.get("default_value")) if "default_value" in f else None,
                }
        indexes = {}
        for index_name in client.list_indexes(name, timeout=TIMEOUT):
            raw = client.describe_index(name, index_name, timeout=TIMEOUT)
            counters = ("total_rows", "indexed_rows", "pending_index_rows", "state", "index_name")
            indexes[raw["field_name"]] = {k: v for k, v in raw.items() if k not in counters}
        for field_name, index in indexes.items():
            vectors.get(field_name, {})["metric"] = index.get("metric_type")
        partitions = sorted(client.list_partitions(name, timeout=TIMEOUT))
        where = {}
        client.load_collection(name, timeout=TIMEOUT)
        everything = 'id >= ""' if pk["type"] == "VARCHAR" else "id >= 0"
        for partition in partitions:
            found = client.query(
                name,
                filter=everything,
                output_fields=["id"],
                partition_names=[partition],
                limit=16384,
                consistency_level="Strong",
                timeout=TIMEOUT,
            )
            where.update({r["id"]: partition for r in found})
    finally:
        client.close()
    rows = {}
    for key, row in backend.read_all(name).items():
        rows[key] = _plain({k: v for k, v in row.items() if k not in vectors}) | {PART: where[key]}
    return {
        "pk": pk,
        "fields": fields,
        "vectors": vectors,
        "index": indexes,
        "dynamic": bool(desc.get("enable_dynamic_field")),
        "partitions": partitions,
        "rows": rows,
    }


def describe_qdrant(backend: Backend, name: str) -> dict[str, Any]:
    def read(client: Any) -> dict[str, Any]:
        info = client.get_collection(name)
        params = info.config.params
        dense = params.vectors if isinstance(params.vectors, dict) else {"": params.vectors}
        return {
            "pk": {"name": None, "type": None},  # point ids: integers or UUIDs, no field
            # Payload is schemaless; its indexes are the closest thing to declared fields.
            "fields": {k: v.data_type.value for k, v in (info.payload_schema or {}).items()},
            "vectors": {k: {"dim": v.size, "metric": v.distance.value} for k, v in dense.items()},
            "index": {"hnsw": info.config.hnsw_config.model_dump()},
            "dynamic": None,
            "partitions": None,
            "sparse": sorted(params.sparse_vectors or {}),
            "_vector_names": list(dense),
        }

    out = backend._with_qdrant(read)
    names = out.pop("_vector_names")
    out["rows"] = {
        key: _plain({k: v for k, v in row.items() if k not in names})
        for key, row in backend.read_all(name).items()
    }
    return out


def describe_parquet(backend: Backend, name: str) -> dict[str, Any]:
    directory = backend.root / "parquet" / name
    schema = json.loads((directory / "schema.json").read_text())
    types: dict[str, set[str]] = {}
    for path in sorted(directory.glob("part-*.parquet")):
        for f in pq.read_schema(path):
            types.setdefault(f.name, set()).add(str(f.type))
    vectors = {
        k: {"dim": d, "metric": schema["metric"]} for k, d in schema["vector_fields"].items()
    }
    fields = {
        k: {"type": sorted(t)}  # one type per column across part files
        for k, t in types.items()
        if k != schema["pk"] and k not in vectors
    }
    rows = {
        key: _plain({k: v for k, v in row.items() if k not in vectors})
        for key, row in backend.read_all(name).items()
    }
    return {
        "pk": {"name": schema["pk"], "type": sorted(types[schema["pk"]])},
        "fields": fields,
        "vectors": vectors,
        "index": None,
        "dynamic": None,
        "partitions": None,
        "rows": rows,
    }


def without_tags(description: dict[str, Any]) -> dict[str, Any]:
    """The target's description minus what evolve adds: its tags, fields and values."""
    out = dict(description)
    out["fields"] = {k: v for k, v in description["fields"].items() if k not in TAGS}
    out["rows"] = {
        key: {k: v for k, v in row.items() if k not in TAGS}
        for key, row in description["rows"].items()
    }
    return out


# -- the contract ----------------------------------------------------------------------


@limit(600)
@pytest.mark.parametrize("id_kind", ["int", "str"])
def test_the_evolved_collection_describes_as_its_source(
    backend: Backend, digits: Digits, artifact: Artifact, id_kind: str
) -> None:
    name, alias = backend.unique("user"), backend.unique("live")
    rows = user_rows(backend, digits, id_kind)
    seed_source(backend, name, alias, rows)
    source = describe(backend, name)
    # The source is what it claims to be, so that the comparison below means something.
    assert len(source["rows"]) == ROWS
    assert sum(r.get("note") is not None for r in source["rows"].values()) == 3
    if backend.is_milvus:
        assert source["dynamic"] and source["partitions"] == sorted(PARTITIONS)
        assert source["index"]["vector"]["index_type"] == "HNSW"
    if backend.kind == "milvus-lite":
        assert source["fields"]["note"]["nullable"] and source["fields"]["weight"]["default"]
        assert {r["weight"] for r in source["rows"].values()} == {0.5, 2.0}
    if backend.is_milvus or backend.is_qdrant:
        assert sum("color" in r for r in source["rows"].values()) == 5

    store = backend.open_store()
    plan = make_plan(store, alias, AdapterChain([artifact]))
    result = evolve(store, plan, EvolveOptions(batch_size=16))
    assert result.outcome == Outcome.DONE
    backend.close_stores()  # Qdrant local mode: one client per directory

    target = describe(backend, result.target)
    assert without_tags(target) == source
    for key, row in target["rows"].items():
        assert row["dmu_version"] == "v2" and row["dmu_origin"] == "evolved", key
    # The evolved vectors are the adapter's output of the source vectors, row by row.
    vector = backend.vector_name
    src, dst = backend.read_all(name), backend.read_all(result.target)
    keys = sorted(src, key=str)
    want = OnnxModel(artifact.adapter_path)(
        np.asarray([src[k][vector] for k in keys], dtype=np.float32)
    )
    got = np.asarray([dst[k][vector] for k in keys], dtype=np.float32)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert all(isinstance(k, str) for k in keys) == (id_kind == "str")
    if backend.is_qdrant and id_kind == "str":
        assert all(uuid.UUID(k) for k in keys)
