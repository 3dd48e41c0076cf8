"""The evolved Milvus collection holds what the source holds, field by field and row by
row, for schemas users have (Milvus Lite and the Milvus 2.3 server)."""

from __future__ import annotations

from typing import Any

from backends import Backend
from conftest import Digits
from limits import limit
from milvus_sources import milvus_fixture, seed
from pymilvus import DataType

from dmu_migrate.artifact import Artifact
from dmu_migrate.evolve.pipeline import COMPLETED, EvolveOptions, evolve
from dmu_migrate.evolve.plan import make_plan
from dmu_migrate.evolve.transform import AdapterChain
from dmu_migrate.stores.base import TAG_FIELDS

milvus = milvus_fixture()
FLAT = {"field_name": "vector", "index_type": "FLAT", "metric_type": "COSINE"}


def run(backend: Backend, alias: str, artifact: Artifact, batch_size: int = 16) -> Any:
    store = backend.open_store()
    plan = make_plan(store, alias, AdapterChain([artifact]))
    result = evolve(store, plan, EvolveOptions(batch_size=batch_size))
    assert result.outcome == COMPLETED
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
        assert without(target[key], "vector", *TAG_FIELDS) == without(row, "vector"), key
    assert sum("color" in r for r in target.values()) == 10
    assert all(r["dmu_version"] == "v2" for r in target.values())
