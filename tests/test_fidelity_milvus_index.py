"""The evolved Milvus collection gets every index of the source with its build parameters,
or no collection at all (Milvus Lite and the Milvus 2.3 server)."""

from __future__ import annotations

from typing import Any

import pytest
from backends import Backend
from galleries import Digits
from limits import limit
from milvus_sources import build_params, ledger_rows, milvus_fixture, native, seed
from pymilvus import DataType

from dmu_migrate.artifact import Artifact
from dmu_migrate.errors import StoreError
from dmu_migrate.evolve.pipeline import EvolveOptions, evolve
from dmu_migrate.evolve.plan import make_plan
from dmu_migrate.evolve.run import Outcome
from dmu_migrate.evolve.transform import AdapterChain
from dmu_migrate.stores import milvus_schema
from dmu_migrate.stores.base import LEDGER_COLLECTION

milvus = milvus_fixture()
ROWS = 60


def gallery(backend: Backend, digits: Digits, indexes: list[dict[str, Any]]) -> tuple[str, str]:
    name, alias = backend.unique("idx"), backend.unique("live")
    dim = digits.old_te.shape[1]

    def build(schema: Any) -> None:
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("label", DataType.INT64)

    rows = [
        {"id": i, "vector": digits.old_te[i].tolist(), "label": int(digits.y_te[i])}
        for i in range(ROWS)
    ]
    seed(backend, name, build, rows, indexes, alias)
    return name, alias


@limit(300)
@pytest.mark.parametrize(
    "index_type, metric, params",
    [("HNSW", "L2", {"M": 24, "efConstruction": 144}), ("IVF_FLAT", "IP", {"nlist": 256})],
)
def test_the_target_gets_the_source_index_with_its_parameters(
    milvus: Backend,
    digits: Digits,
    artifact: Artifact,
    index_type: str,
    metric: str,
    params: dict[str, Any],
) -> None:
    index = {
        "field_name": "vector",
        "index_type": index_type,
        "metric_type": metric,
        "params": build_params(milvus, params),
    }
    source, alias = gallery(milvus, digits, [index])
    store = milvus.open_store()
    result = evolve(
        store, make_plan(store, alias, AdapterChain([artifact])), EvolveOptions(batch_size=16)
    )
    assert result.outcome == Outcome.DONE
    client = native(milvus)
    try:
        want = milvus_schema.read_indexes(client, source)
        got = milvus_schema.read_indexes(client, result.target)
    finally:
        client.close()
    assert [s.describe() for s in got] == [s.describe() for s in want]
    assert got[0].index_type == index_type and got[0].metric == metric
    assert {k: int(v) for k, v in got[0].params.items()} == params
    assert len(milvus.read_all(result.target)) == ROWS


@limit(300)
def test_a_source_without_an_index(milvus: Backend, digits: Digits, artifact: Artifact) -> None:
    """The server cannot load it: refused before anything is written. Lite reads it: the
    target has no index either, as in the source."""
    source, alias = gallery(milvus, digits, [])
    store = milvus.open_store()
    chain = AdapterChain([artifact])
    if milvus.kind == "milvus-server":
        before = milvus.list_collections()
        with pytest.raises(StoreError, match=f"'{source}' has no index on vector field 'vector'"):
            evolve(store, make_plan(store, alias, chain), EvolveOptions(batch_size=16))
        assert milvus.list_collections() == before  # no target, no ledger
        return
    result = evolve(store, make_plan(store, alias, chain), EvolveOptions(batch_size=16))
    assert result.outcome == Outcome.DONE
    client = native(milvus)
    try:
        assert client.list_indexes(result.target) == []
    finally:
        client.close()
    assert len(milvus.read_all(result.target)) == ROWS


@limit(300)
def test_a_target_left_without_its_index_is_refused(
    milvus: Backend, digits: Digits, artifact: Artifact
) -> None:
    """A target that an earlier version left unindexed is named, not written into."""
    index = {"field_name": "vector", "index_type": "FLAT", "metric_type": "L2"}
    source, alias = gallery(milvus, digits, [index])
    store = milvus.open_store()
    plan = make_plan(store, alias, AdapterChain([artifact]))
    client = native(milvus)
    try:
        # The target's definition as create_like makes it, minus the index.
        desc = client.describe_collection(source)
        schema = client.create_schema(auto_id=False)
        for f in desc["fields"]:
            extra = {"dim": plan.chain.out_dim} if f["name"] == "vector" else {}
            schema.add_field(f["name"], f["type"], is_primary=bool(f.get("is_primary")), **extra)
        for tag in ("dmu_version", "dmu_from", "dmu_origin", "dmu_src"):
            schema.add_field(tag, DataType.VARCHAR, max_length=64)
        client.create_collection(plan.target, schema=schema, timeout=milvus_schema.TIMEOUT)
    finally:
        client.close()
    with pytest.raises(StoreError, match=r"its index on 'vector' is no index, not FLAT L2"):
        evolve(store, plan, EvolveOptions(batch_size=16))
    client = native(milvus)
    try:
        # Nothing written into it (an unindexed collection cannot be queried on a server).
        assert int(client.get_collection_stats(plan.target)["row_count"]) == 0
    finally:
        client.close()


@limit(300)
def test_an_index_the_store_refuses_leaves_no_target(milvus: Backend, digits: Digits) -> None:
    """create_with_indexes drops what it created when the index fails or comes out different."""
    index = {"field_name": "vector", "index_type": "FLAT", "metric_type": "L2"}
    source, _ = gallery(milvus, digits, [index])
    target = milvus.unique("broken")
    client = native(milvus)
    try:
        desc = client.describe_collection(source)
        schema = client.create_schema(auto_id=False)
        for f in desc["fields"]:
            extra = {"dim": f["params"]["dim"]} if f["name"] == "vector" else {}
            schema.add_field(f["name"], f["type"], is_primary=bool(f.get("is_primary")), **extra)
        # The server refuses an out-of-range parameter; Milvus Lite accepts any, but drops
        # parameters given in the flat form (a server's, which lite=(False, False) asks
        # for), so the index comes out different.
        lite = milvus.kind == "milvus-lite"
        params = {"M": 24, "efConstruction": 144 if lite else 144_000_000_000}
        bad = milvus_schema.IndexSpec("vector", "vector", "HNSW", "L2", params)
        with pytest.raises(StoreError, match=f"'{target}' was dropped again"):
            milvus_schema.create_with_indexes(
                client, desc, target, {"schema": schema}, [bad], skip="vector"
            )
        assert not client.has_collection(target)
    finally:
        client.close()
    assert ledger_rows(milvus) == 0
    if milvus.kind == "milvus-lite":  # a fresh file; the server keeps an empty ledger
        assert LEDGER_COLLECTION not in milvus.list_collections()
