"""The evolved Milvus collection holds what the source holds, field by field and row by
row, for schemas users have (Milvus Lite and the Milvus 2.3 server). Named partitions:
tests/test_fidelity_milvus_partitions.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from backends import Backend
from galleries import Digits
from limits import limit
from milvus_sources import milvus_fixture, native, seed
from pymilvus import DataType, Function, FunctionType

from dmu_migrate.artifact import Artifact
from dmu_migrate.errors import InputError
from dmu_migrate.evolve.pipeline import EvolveOptions, evolve
from dmu_migrate.evolve.plan import make_plan
from dmu_migrate.evolve.run import Outcome
from dmu_migrate.evolve.transform import AdapterChain
from dmu_migrate.stores import milvus_schema
from dmu_migrate.stores.base import TAG_FIELDS, TAG_SOURCE

milvus = milvus_fixture()
FLAT = {"field_name": "vector", "index_type": "FLAT", "metric_type": "COSINE"}


def run(backend: Backend, alias: str, artifact: Artifact, batch_size: int = 16) -> Any:
    store = backend.open_store()
    plan = make_plan(store, alias, AdapterChain([artifact]))
    result = evolve(store, plan, EvolveOptions(batch_size=batch_size))
    assert result.outcome == Outcome.DONE
    return result


def without(row: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in keys}


@limit(300)
def test_every_dynamic_key_of_every_row_is_copied(
    milvus: Backend, digits: Digits, artifact: Artifact
) -> None:
    """Keys on a few rows only, keys first seen mid-page, nested values; absent stays absent."""
    name, alias = milvus.unique("dyn"), milvus.unique("live")
    dim = digits.old_te.shape[1]

    def build(schema: Any) -> None:
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)

    rows: list[dict[str, Any]] = []
    for i in range(100):
        row: dict[str, Any] = {"id": i, "vector": digits.old_te[i].tolist()}
        if i % 10 == 3:  # on 10% of rows, never on a page's first row
            row["color"] = f"c{i}"
        if i % 2:
            row["size"] = i * 1.5
        if i % 7 == 0:
            row["meta"] = {"tags": ["a", str(i)], "n": i}
        rows.append(row)
    seed(milvus, name, build, rows, [FLAT], alias, enable_dynamic_field=True)
    result = run(milvus, alias, artifact)

    source, target = milvus.read_all(name), milvus.read_all(result.target)
    assert sorted(target) == sorted(source) == list(range(100))
    for key, row in source.items():
        assert without(target[key], "vector", *TAG_FIELDS, TAG_SOURCE) == without(row, "vector"), (
            key
        )
    assert sum("color" in r for r in target.values()) == 10
    assert all(r["dmu_version"] == "v2" for r in target.values())


@limit(300)
def test_a_dynamic_key_named_like_a_tag_is_refused(
    milvus: Backend, digits: Digits, artifact: Artifact
) -> None:
    """Only rows that have the key count: on a server a plain "not in" matches rows without it."""
    name, alias = milvus.unique("dyntag"), milvus.unique("live")
    dim = digits.old_te.shape[1]

    def build(schema: Any) -> None:
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)

    rows = [{"id": i, "vector": digits.old_te[i].tolist()} for i in range(20)]
    rows[7]["dmu_origin"] = "camera-7"
    seed(milvus, name, build, rows, [FLAT], alias, enable_dynamic_field=True)
    store = milvus.open_store()
    before = milvus.list_collections()
    with pytest.raises(InputError, match=r"own values in field 'dmu_origin' \(e.g. 'camera-7'\)"):
        make_plan(store, alias, AdapterChain([artifact]))
    assert milvus.list_collections() == before


@limit(300)
def test_collection_settings_and_field_attributes_are_carried(
    milvus: Backend, digits: Digits, artifact: Artifact
) -> None:
    """Partition key with its partition count, auto_id, description, consistency level,
    TTL, field descriptions and (where the store has them) nullable fields and defaults."""
    name, alias = milvus.unique("rich"), milvus.unique("live")
    dim = digits.old_te.shape[1]
    lite = milvus.kind == "milvus-lite"

    def build(schema: Any) -> None:
        # auto_id on Milvus Lite only: a server refuses it at the plan (test below).
        schema.add_field("id", DataType.INT64, is_primary=True, auto_id=lite)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("tenant", DataType.VARCHAR, max_length=16, is_partition_key=True)
        schema.add_field("label", DataType.INT64, description="digit class")
        if lite:  # nullable fields and defaults came after the 2.3 server
            schema.add_field("note", DataType.VARCHAR, max_length=32, nullable=True)
            schema.add_field("score", DataType.DOUBLE, default_value=0.5)

    rows = []
    for i in range(40):
        row: dict[str, Any] = {
            "vector": digits.old_te[i].tolist(),
            "tenant": f"t{i % 5}",
            "label": int(digits.y_te[i]),
        }
        if lite:
            row["note"] = None if i % 3 else f"note {i}"
            row["score"] = float(i)
        if not lite:
            row["id"] = 1000 + i
        rows.append(row)
    seed(
        milvus,
        name,
        build,
        rows,
        [FLAT],
        alias,
        auto_id=lite,
        description="digits gallery",
        num_partitions=16,
        consistency_level="Bounded",
        properties={"collection.ttl.seconds": 86400},
    )
    result = run(milvus, alias, artifact)

    client = native(milvus)
    try:
        source = client.describe_collection(name)
        target = client.describe_collection(result.target)
        assert milvus_schema.definition(target, "vector", drop_tags=True) == (
            milvus_schema.definition(source, "vector")
        )
        assert target["num_partitions"] == source["num_partitions"] >= 16
        assert target["properties"]["collection.ttl.seconds"] == "86400"
        fields = {f["name"]: f for f in target["fields"]}
        assert bool(fields["id"].get("auto_id")) == lite and fields["tenant"].get(
            "is_partition_key"
        )
        # The application's inserts through the alias still leave the id to Milvus (Lite).
        new_row = dict(rows[0]) | {"dmu_version": "v2"} | ({} if lite else {"id": 5})
        new_row |= {"dmu_from": "", "dmu_origin": "native", "dmu_src": ""}
        new_row["vector"] = [0.1] * int(fields["vector"]["params"]["dim"])
        client.insert(alias, [new_row], timeout=milvus_schema.TIMEOUT)
    finally:
        client.close()
    src_rows, dst_rows = milvus.read_all(name), milvus.read_all(result.target)
    assert len(dst_rows) == len(src_rows) + 1
    for key, row in src_rows.items():
        assert without(dst_rows[key], "vector", *TAG_FIELDS, TAG_SOURCE) == without(
            row, "vector"
        ), key


@limit(300)
def test_auto_id_on_a_server_is_refused_before_writing(
    milvus: Backend, digits: Digits, artifact: Artifact
) -> None:
    """Lite keeps given ids in an auto_id collection (the test above); a server does not."""
    name, alias = milvus.unique("auto"), milvus.unique("live")
    dim = digits.old_te.shape[1]

    def build(schema: Any) -> None:
        schema.add_field("id", DataType.INT64, is_primary=True, auto_id=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)

    rows = [{"vector": digits.old_te[i].tolist()} for i in range(10)]
    seed(milvus, name, build, rows, [FLAT], alias, auto_id=True)
    store = milvus.open_store()
    before = milvus.list_collections()
    if milvus.kind == "milvus-lite":
        assert run(milvus, alias, artifact).rows_written == 10
        return
    with pytest.raises(InputError, match="has an auto_id primary key, and a Milvus server"):
        make_plan(store, alias, AdapterChain([artifact]))
    assert milvus.list_collections() == before


@limit(300)
def test_a_bm25_function_is_carried_and_milvus_fills_its_output(
    digits: Digits, artifact: Artifact, tmp_path: Path
) -> None:
    """Milvus Lite 3.2 keeps BM25 functions. The 2.3.5 server takes a schema with one and
    drops the function (measured), so no server collection has one to carry; a target
    made without it would be dropped again by the check after creation."""
    milvus = Backend("milvus-lite", str(tmp_path / "store.db"), tmp_path)
    name, alias = milvus.unique("bm25"), milvus.unique("live")
    dim = digits.old_te.shape[1]
    words = ["apple", "river", "stone", "cloud", "ember"]

    def build(schema: Any) -> None:
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        analyzer = {"tokenizer": "standard", "filter": ["lowercase"]}
        schema.add_field(
            "text", DataType.VARCHAR, max_length=256, enable_analyzer=True, analyzer_params=analyzer
        )
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(
            Function(
                name="text_bm25",
                function_type=FunctionType.BM25,
                input_field_names=["text"],
                output_field_names=["sparse"],
                description="keyword search",
            )
        )

    rows = [
        {"id": i, "vector": digits.old_te[i].tolist(), "text": f"{words[i % 5]} Digit {i}"}
        for i in range(40)
    ]
    sparse = {"field_name": "sparse", "index_type": "SPARSE_INVERTED_INDEX", "metric_type": "BM25"}
    try:
        seed(milvus, name, build, rows, [FLAT, sparse], alias)
        result = run(milvus, alias, artifact)
        client = native(milvus)
        try:
            source = client.describe_collection(name)
            target = client.describe_collection(result.target)
            assert [f["name"] for f in target["functions"]] == ["text_bm25"]
            assert milvus_schema.definition(target, "vector", drop_tags=True) == (
                milvus_schema.definition(source, "vector")
            )
            # Keyword search through the alias finds exactly the rows with the word.
            hits = client.search(
                alias,
                data=["RIVER"],
                anns_field="sparse",
                limit=20,
                search_params={"metric_type": "BM25"},
                timeout=milvus_schema.TIMEOUT,
            )
            assert sorted(h["id"] for h in hits[0]) == list(range(1, 40, 5))
            # The application inserts text only; Milvus computes the sparse vector.
            new_row = {"id": 500, "text": "quartz river", "vector": [0.1] * dim}
            new_row |= {"dmu_version": "v2", "dmu_from": "", "dmu_origin": "native", "dmu_src": ""}
            client.insert(alias, [new_row], timeout=milvus_schema.TIMEOUT)
        finally:
            client.close()
        src_rows, dst_rows = milvus.read_all(name), milvus.read_all(result.target)
        assert sorted(dst_rows) == sorted([*src_rows, 500])
        for key, row in src_rows.items():
            assert without(dst_rows[key], "vector", *TAG_FIELDS, TAG_SOURCE) == without(
                row, "vector"
            ), key
        assert dst_rows[500]["sparse"]  # computed by Milvus from "quartz river"
    finally:
        milvus.close_stores()
