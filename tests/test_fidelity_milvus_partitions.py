"""Named Milvus partitions are carried: the evolved collection has the source's partitions
and every row lies in the same partition as its source row, after a resumed copy, after
re-runs that bring inserts, updates, deletes and moves across, and in place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from backends import Backend
from galleries import Digits
from limits import limit
from milvus_sources import milvus_fixture, native, seed
from pymilvus import DataType

from dmu_migrate.artifact import Artifact
from dmu_migrate.evolve import admin
from dmu_migrate.evolve.pipeline import EvolveOptions, evolve
from dmu_migrate.evolve.plan import make_plan
from dmu_migrate.evolve.run import Outcome
from dmu_migrate.evolve.transform import AdapterChain
from dmu_migrate.stores.milvus_schema import TIMEOUT

milvus = milvus_fixture()
FLAT = {"field_name": "vector", "index_type": "FLAT", "metric_type": "COSINE"}
ROWS = 60
HOME = ("_default", "europe", "asia")  # row i starts in HOME[i % 3]


def seed_partitioned(milvus: Backend, digits: Digits, alias: str | None) -> str:
    """ROWS rows spread over '_default', 'europe' and 'asia' by the native client."""
    name = milvus.unique("parts")
    dim = digits.old_te.shape[1]

    def build(schema: Any) -> None:
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("label", DataType.INT64)

    seed(milvus, name, build, [], [FLAT], alias)
    client = native(milvus)
    try:
        for partition in HOME[1:]:
            client.create_partition(name, partition, timeout=TIMEOUT)
        for k, partition in enumerate(HOME):
            rows = [row(digits, i) for i in range(k, ROWS, 3)]
            client.insert(name, rows, partition_name=partition, timeout=TIMEOUT)
    finally:
        client.close()
    return name


def row(digits: Digits, i: int, vector: int | None = None) -> dict[str, Any]:
    v = i if vector is None else vector
    return {"id": i, "vector": digits.old_te[v].tolist(), "label": int(digits.y_te[v])}


def layout(milvus: Backend, collection: str, read_through: str | None = None) -> dict[str, Any]:
    """{partition: sorted ids} of ``collection``, queried partition by partition through
    ``read_through`` (an alias) when given; each count(*) must agree with its ids."""
    client = native(milvus)
    try:
        out: dict[str, Any] = {}
        name = read_through or collection
        client.load_collection(name, timeout=TIMEOUT)
        for partition in client.list_partitions(collection, timeout=TIMEOUT):
            ids = client.query(
                name,
                filter="id >= 0",
                output_fields=["id"],
                partition_names=[partition],
                limit=16384,
                consistency_level="Strong",
                timeout=TIMEOUT,
            )
            # With an empty filter Milvus Lite 3.2 counts the whole collection, whatever
            # partition_names says; any filter makes it count the partition.
            (count,) = client.query(
                name,
                filter="id >= 0",
                output_fields=["count(*)"],
                partition_names=[partition],
                consistency_level="Strong",
                timeout=TIMEOUT,
            )
            out[partition] = sorted(r["id"] for r in ids)
            assert count["count(*)"] == len(out[partition]), partition
        return out
    finally:
        client.close()


@limit(600)
def test_every_row_lands_in_its_partition_and_stays_there_on_reruns(
    milvus: Backend, digits: Digits, artifact: Artifact
) -> None:
    alias = milvus.unique("live")
    name = seed_partitioned(milvus, digits, alias)
    expected = layout(milvus, name)
    assert [len(expected[p]) for p in HOME] == [ROWS // 3] * 3
    store = milvus.open_store()
    chain = AdapterChain([artifact])

    first = evolve(store, make_plan(store, alias, chain), EvolveOptions(16, max_seconds=0))
    assert first.outcome == Outcome.REMAINING  # stopped after one batch: the rest is a resumed run
    second = evolve(store, make_plan(store, alias, chain), EvolveOptions(16))
    assert second.outcome == Outcome.DONE and second.resumed and second.verify is not None
    assert layout(milvus, second.target, read_through=alias) == expected
    rows = milvus.read_all(second.target)
    evolved = chain(digits.old_te[:ROWS])
    for i in range(ROWS):
        np.testing.assert_allclose(rows[i]["vector"], evolved[i], atol=1e-5)
        assert rows[i]["label"] == int(digits.y_te[i])

    # The application keeps writing the source: an insert into 'asia', an update in
    # 'europe', a delete from '_default', a row moved from 'europe' to 'asia' with its
    # vector unchanged, and a partition that did not exist at the first run.
    client = native(milvus)
    try:
        client.insert(name, [row(digits, 100), row(digits, 101)], partition_name="asia")
        client.upsert(name, [row(digits, 1, vector=150)], partition_name="europe")
        client.delete(name, filter="id == 3", timeout=TIMEOUT)
        client.delete(name, filter="id == 4", timeout=TIMEOUT)
        client.insert(name, [row(digits, 4)], partition_name="asia", timeout=TIMEOUT)
        client.create_partition(name, "africa", timeout=TIMEOUT)
        client.insert(name, [row(digits, 102)], partition_name="africa", timeout=TIMEOUT)
    finally:
        client.close()
    changed = layout(milvus, name)
    assert 4 in changed["asia"] and 4 not in changed["europe"] and changed["africa"] == [102]

    again = evolve(store, make_plan(store, alias, chain), EvolveOptions(16))
    assert again.outcome == Outcome.DONE and again.verify is not None
    # Inserted: 100-102; changed: 1 (vector) and 4 (partition); deleted: 3.
    assert (again.caught_up, again.updated, again.deleted) == (3, 2, 1)
    assert layout(milvus, again.target, read_through=alias) == changed
    rows = milvus.read_all(again.target)
    np.testing.assert_allclose(rows[1]["vector"], chain(digits.old_te[150:151])[0], atol=1e-5)
    assert 3 not in rows and rows[102]["dmu_origin"] == "evolved"
    idle = evolve(store, make_plan(store, alias, chain), EvolveOptions(16))
    assert (idle.rows_written, idle.caught_up, idle.updated, idle.deleted) == (0, 0, 0, 0)


@limit(600)
def test_in_place_keeps_rows_in_their_partitions(
    milvus: Backend, digits: Digits, artifact: Artifact, tmp_path: Path
) -> None:
    """Upserts name each row's partition: a server would otherwise add a second row in
    '_default' and keep the old one (measured on 2.3.5)."""
    name = seed_partitioned(milvus, digits, alias=None)
    expected = layout(milvus, name)
    store = milvus.open_store()
    chain = AdapterChain([artifact])
    plan = make_plan(store, name, chain, strategy="in-place", yes_overwrite=True)
    result = evolve(store, plan, EvolveOptions(16, snapshot_root=tmp_path / "snap"))
    assert result.outcome == Outcome.DONE and result.verify is not None
    assert layout(milvus, name) == expected
    rows = milvus.read_all(name)
    assert len(rows) == ROWS
    evolved = chain(digits.old_te[:ROWS])
    for i in range(ROWS):
        np.testing.assert_allclose(rows[i]["vector"], evolved[i], atol=1e-5)

    _, message = admin.rollback(store, name)
    assert f"restored {ROWS} vectors" in message
    assert layout(milvus, name) == expected
    rows = milvus.read_all(name)
    for i in range(ROWS):
        np.testing.assert_allclose(rows[i]["vector"], digits.old_te[i], atol=1e-6)
