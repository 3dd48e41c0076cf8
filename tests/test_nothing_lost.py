"""Nothing lost or stuck: the user's data under a reserved name, rows left out as bad and
fixed since, a column whose type changes between batches, a target no row ever reached,
a nullable field crossing into a Milvus that has none.

Each case is one a user met on real collections: the run either keeps the data or stops
with one line before anything is overwritten, and the next run is never blocked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from backends import Backend
from galleries import Digits
from limits import limit
from migrations import run
from pymilvus import DataType, MilvusClient

from dmu_migrate.api import migrate, records
from dmu_migrate.artifact import Artifact
from dmu_migrate.errors import InputError, StoreError, VerificationError
from dmu_migrate.evolve.ledger import Ledger
from dmu_migrate.evolve.pipeline import EvolveOptions
from dmu_migrate.evolve.plan import make_plan
from dmu_migrate.evolve.run import EvolveResult, Outcome
from dmu_migrate.evolve.strategies import make_strategy
from dmu_migrate.evolve.transform import AdapterChain
from dmu_migrate.evolve.verify import VERIFY_SAMPLE, verify
from dmu_migrate.stores.base import LEDGER_COLLECTION, RESERVED_NAMES, Batch

EMBEDDED = ["milvus-lite", "parquet", "qdrant-local"]
ROWS = 300  # more than the verification sample (256): a short sample shows


def harness(kind: str, root: Path) -> Backend:
    root.mkdir(parents=True, exist_ok=True)
    uri = {
        "milvus-lite": str(root / "store.db"),
        "qdrant-local": f"qdrant:{root / 'qdrant'}",
        "parquet": f"parquet:{root / 'parquet'}",
    }[kind]
    return Backend(kind, uri, root)


# -- reserved names ------------------------------------------------------------------


@limit(300)
@pytest.mark.parametrize("backend", EMBEDDED, indirect=True)
@pytest.mark.parametrize("reserved", RESERVED_NAMES)
def test_every_reserved_name_holding_the_users_data_is_refused_before_writing(
    backend: Backend, digits: Digits, artifact: Artifact, reserved: str
) -> None:
    """A Milvus field, a Parquet column, a Qdrant payload key: the one list, every store."""
    source, alias = backend.unique("mine"), backend.unique("live")
    ids = np.arange(1, 41)
    backend.seed(
        source, ids, digits.old_te[:40], {reserved: [f"mine-{i}" for i in ids]}, alias=alias
    )
    store = backend.open_store()
    before = backend.list_collections()
    with pytest.raises(InputError) as caught:
        run(store, alias, [artifact])
    message = str(caught.value)
    assert "\n" not in message
    assert f"collection '{source}' has its own" in message and f"'{reserved}'" in message
    assert "copy the collection with that field renamed" in message
    assert backend.list_collections() == before and LEDGER_COLLECTION not in before
    assert backend.read_all(source)[1][reserved] == "mine-1"  # nothing overwritten


@limit(300)
@pytest.mark.parametrize("key", ["dmu_src", "dmu_from"])
def test_a_milvus_dynamic_key_with_a_reserved_name_is_refused(
    tmp_path: Path, digits: Digits, artifact: Artifact, key: str
) -> None:
    """Keys on some rows only, in the dynamic field: the ones no value list covers."""
    db = str(tmp_path / "dyn.db")
    client = MilvusClient(db)
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=digits.old_te.shape[1])
    index = client.prepare_index_params()
    index.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="COSINE")
    client.create_collection("dyn", schema=schema, index_params=index)
    rows: list[dict[str, Any]] = [
        {"id": i, "vector": digits.old_te[i].tolist()} | ({key: f"mine-{i}"} if i % 7 == 3 else {})
        for i in range(40)
    ]
    client.insert("dyn", rows)
    client.close()
    with pytest.raises(InputError, match=rf"has its own values in field '{key}' \(e\.g\. 'mine-"):
        migrate.evolve("dyn", artifact.path, uri=db, alias="dyn_live")
    client = MilvusClient(db)
    try:
        assert client.list_collections() == ["dyn"]
    finally:
        client.close()


@pytest.mark.integration
@limit(600)
def test_a_server_dynamic_key_with_a_reserved_name_is_refused(
    digits: Digits, artifact: Artifact, milvus_server: str
) -> None:
    """The same on the 2.3.5 server: the check's ``exists`` expressions are its syntax too."""
    server = Backend("milvus-server", milvus_server, Path("."))
    name = server.unique("dyn")
    client = MilvusClient(milvus_server)
    try:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=digits.old_te.shape[1])
        index = client.prepare_index_params()
        index.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="COSINE")
        client.create_collection(name, schema=schema, index_params=index, timeout=60)
        rows = [
            {"id": i, "vector": digits.old_te[i].tolist()} | ({"dmu_src": "x"} if i == 5 else {})
            for i in range(20)
        ]
        client.insert(name, rows, timeout=60)
        with pytest.raises(
            InputError, match=r"has its own values in field 'dmu_src' \(e\.g\. 'x'\)"
        ):
            migrate.evolve(name, artifact.path, uri=milvus_server, alias=server.unique("live"))
        assert f"{name}__v2" not in client.list_collections()
    finally:
        client.drop_collection(name)
        client.close()


# -- rows left out as bad ------------------------------------------------------------


@limit(300)
@pytest.mark.parametrize("backend", EMBEDDED, indirect=True)
def test_rows_left_out_as_bad_are_evolved_once_fixed_and_verify_counts_them(
    backend: Backend, digits: Digits, artifact: Artifact
) -> None:
    source, alias = backend.unique("bad"), backend.unique("live")
    ids = np.arange(1, ROWS + 1)
    vectors = digits.old_te[:ROWS].copy()
    bad = ids[::30]  # 10 rows with no direction: every store accepts them
    vectors[bad - 1] = 0.0
    backend.seed(source, ids, vectors, {"name": [f"n{i}" for i in ids]}, alias=alias)
    store = backend.open_store()
    skip = EvolveOptions(batch_size=64, skip_bad_vectors=True)
    first = run(store, alias, [artifact], options=skip)
    assert first.outcome == Outcome.DONE
    assert first.verify is not None and first.verify.sampled == VERIFY_SAMPLE
    good = sorted(set(ids.tolist()) - set(bad.tolist()))
    assert sorted(backend.read_all(first.target)) == good

    # Half of them fixed in the source.
    fixed = bad[:5]
    fresh = digits.old_te[ROWS : ROWS + 5]
    info = store.describe(source)
    names = [f"fixed-{i}" for i in fixed.tolist()]
    store.write_rows(info, source, Batch(fixed, fresh, {"name": names}), {})
    store.flush(source)

    # verify alone no longer counts them as left out on purpose.
    chain = AdapterChain([artifact])
    plan = make_plan(store, alias, chain)
    record = Ledger(store).load(first.migration)
    assert record is not None and record.skipped == bad.tolist()
    strategy = make_strategy(store, plan, backend.root / "snap")
    with pytest.raises(VerificationError, match=r"5 rows of .* are not in"):
        verify(store, plan, strategy, None, frozenset(record.skipped))

    # The next run (without the flag: the rest were left out with it before) evolves them.
    again = run(store, alias, [artifact])
    assert again.outcome == Outcome.DONE and again.caught_up == 5
    assert again.verify is not None and again.verify.sampled == VERIFY_SAMPLE
    rows = backend.read_all(first.target)
    assert sorted(rows) == sorted(good + fixed.tolist())
    for k, row_id in enumerate(fixed.tolist()):
        np.testing.assert_allclose(rows[row_id][backend.vector_name], chain(fresh)[k], atol=1e-5)
        assert rows[row_id]["name"] == f"fixed-{row_id}"
    record = Ledger(store).load(first.migration)
    assert record is not None and record.skipped == bad[5:].tolist()
    assert any("5 rows with NaN, inf or all-zero vectors were left out" in n for n in again.notes)
    checked = verify(store, plan, strategy, None, frozenset(record.skipped))
    assert checked.missing == 0 and checked.sampled == VERIFY_SAMPLE


@limit(300)
@pytest.mark.parametrize("backend", ["milvus-lite", "parquet"], indirect=True)
def test_an_l2_collection_with_nan_rows_is_judged_by_its_valid_rows(
    backend: Backend, digits: Digits, artifact: Artifact
) -> None:
    """No 'median norm nan'; the sample is its full size, of rows that are there."""
    source, alias = backend.unique("l2"), backend.unique("live")
    n = 2 * ROWS
    ids = np.arange(1, n + 1)
    vectors = np.tile(digits.old_te, (2, 1))[:n].copy()
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)  # unit vectors: L2 keeps meaning
    vectors[::3] = np.nan  # a third, the first row among them
    backend.seed(source, ids, vectors, {"name": [f"n{i}" for i in ids]}, metric="L2", alias=alias)
    store = backend.open_store()
    skip = EvolveOptions(batch_size=64, skip_bad_vectors=True)
    for _ in range(2):  # the first run and a cron re-run, which draws its sample anew
        result = run(store, alias, [artifact], options=skip)
        assert result.outcome == Outcome.DONE
        assert result.verify is not None and result.verify.sampled == VERIFY_SAMPLE


# -- a column type changing between batches (Parquet) ----------------------------------


def _evolve_mixed(src: Backend, dst: Backend, artifact: Artifact, **extra: Any) -> Any:
    return migrate.evolve(
        "mixed", artifact.path, uri=src.uri, target_uri=dst.uri, alias="m", batch_size=32, **extra
    )


@limit(300)
def test_a_type_change_between_batches_stops_before_parquet_cannot_read_it(
    tmp_path: Path, digits: Digits, artifact: Artifact
) -> None:
    src, dst = harness("qdrant-local", tmp_path / "src"), harness("parquet", tmp_path / "dst")
    ids = list(range(1, 201))
    values: list[Any] = [i if i <= 96 else f"s{i}" for i in ids]  # batches of 32: the 4th turns
    src.seed("mixed", ids, digits.old_te[:200], {"v": values})
    for extra in ({}, {"restart": True}):
        with pytest.raises(StoreError) as caught:
            _evolve_mixed(src, dst, artifact, **extra)
        message = str(caught.value)
        assert "\n" not in message
        assert "field 'v'" in message and "string values" in message and "int64" in message
        assert "ids 97 to 128" in message and "'mixed__v2' stays readable" in message
        # Readable by the store itself: status, and the rows before the turn.
        assert [m["status"] for m in records.status(dst.uri).migrations] == ["failed"]
        store = dst.open_store()
        assert store.count("mixed__v2") == 96
        dst.close_stores()

    # Fixed in the source, the next run finishes from the same target.
    store = src.open_store()
    info = store.describe("mixed")
    later = np.asarray(ids[96:])
    store.write_rows(info, "mixed", Batch(later, digits.old_te[96:200], {"v": later.tolist()}), {})
    src.close_stores()
    done = _evolve_mixed(src, dst, artifact)
    assert isinstance(done, EvolveResult) and done.outcome == Outcome.DONE
    assert {r["v"] for r in dst.read_all("mixed__v2").values()} == set(ids)


# -- a target no row reached -----------------------------------------------------------


@limit(300)
def test_an_empty_target_the_pass_could_not_fill_is_no_blocker(
    tmp_path: Path, digits: Digits, artifact: Artifact
) -> None:
    """A first batch Parquet cannot hold leaves an empty target: the fixed source reuses it.
    An empty target this migration made that no longer fits is made anew; a collection it
    did not make stays the user's to drop."""
    src, dst = harness("qdrant-local", tmp_path / "src"), harness("parquet", tmp_path / "dst")
    ids = list(range(1, 41))
    src.seed("mixed", ids, digits.old_te[:40], {"v": [1, "one", *ids[2:]]})
    with pytest.raises(StoreError, match="holds values of mixed types"):
        _evolve_mixed(src, dst, artifact)
    assert dst.open_store().count("mixed__v2") == 0
    dst.close_stores()
    store = src.open_store()
    store.write_rows(
        store.describe("mixed"), "mixed", Batch(np.asarray([2]), digits.old_te[1:2], {"v": [2]}), {}
    )
    src.close_stores()
    done = _evolve_mixed(src, dst, artifact)
    assert isinstance(done, EvolveResult) and done.outcome == Outcome.DONE
    assert sorted(dst.read_all("mixed__v2")) == ids

    # Its first batch refused (an all-zero vector, no --skip-bad-vectors), then the source
    # rebuilt with another field: the empty target this migration made no longer fits.
    lite = harness("milvus-lite", tmp_path / "lite")
    vectors = digits.old_te[:40].copy()
    vectors[3] = 0.0
    lite.seed("docs", np.arange(1, 41), vectors, {"name": [f"n{i}" for i in range(40)]})
    with pytest.raises(InputError, match="NaN, inf or all-zero"):
        migrate.evolve("docs", artifact.path, uri=lite.uri, alias="docs_live")
    assert lite.read_all("docs__v2") == {}
    client = MilvusClient(lite.uri)
    client.drop_collection("docs")
    client.close()
    fields = {"name": [f"n{i}" for i in range(40)], "lang": ["en"] * 40}
    lite.seed("docs", np.arange(1, 41), digits.old_te[:40], fields)
    result = migrate.evolve("docs", artifact.path, uri=lite.uri, alias="docs_live")
    assert isinstance(result, EvolveResult) and result.outcome == Outcome.DONE
    assert {r["lang"] for r in lite.read_all("docs__v2").values()} == {"en"}

    # A collection this migration did not make is never dropped for it, empty or not.
    lite.seed("other", np.arange(1, 41), digits.old_te[:40], {"name": [f"n{i}" for i in range(40)]})
    client = MilvusClient(lite.uri)
    client.create_collection("other__v2", dimension=8)
    client.close()
    for _ in range(2):
        with pytest.raises(StoreError, match=r"'other__v2' exists but .*drop or rename"):
            migrate.evolve("other", artifact.path, uri=lite.uri, alias="other_live")
    client = MilvusClient(lite.uri)
    try:
        assert "other__v2" in client.list_collections()
    finally:
        client.close()


# -- a nullable field crossing into a Milvus server ----------------------------------------


def _nullable_source(db: str, digits: Digits) -> None:
    client = MilvusClient(db)
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=digits.old_te.shape[1])
    schema.add_field("opt", DataType.VARCHAR, max_length=32, nullable=True)
    index = client.prepare_index_params()
    index.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="COSINE")
    client.create_collection("nul", schema=schema, index_params=index)
    rows = [
        {"id": i, "vector": digits.old_te[i].tolist(), "opt": f"o{i}" if i % 20 == 0 else None}
        for i in range(100)
    ]
    client.insert("nul", rows)
    client.close()


@pytest.mark.integration
@limit(600)
def test_a_nullable_field_into_a_server_without_them_is_refused_before_writing(
    tmp_path: Path, digits: Digits, artifact: Artifact, milvus_server: str
) -> None:
    """The 2.3.5 server takes nullable=True and makes the field non-nullable; the first
    batch holding a null failed mid-pass. Refused when the target is created, none left,
    every time; a non-nullable collection of that name that someone else made is named as
    what does not fit, and kept."""
    db = str(tmp_path / "src.db")
    _nullable_source(db, digits)
    server = Backend("milvus-server", milvus_server, tmp_path / "server")
    before = server.list_collections()
    try:
        for _ in range(2):
            with pytest.raises(StoreError) as caught:
                migrate.evolve(
                    "nul", artifact.path, uri=db, target_uri=milvus_server, alias="nul_live"
                )
            message = str(caught.value)
            assert "\n" not in message
            assert "field 'opt' of 'nul' is nullable" in message
            assert "nullable fields need Milvus 2.5 or later" in message
            assert "nul__v2" not in server.list_collections()

        client = MilvusClient(milvus_server)  # what the mid-pass failure used to leave
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=artifact.manifest.new_dim)
        schema.add_field("opt", DataType.VARCHAR, max_length=32)
        for tag in RESERVED_NAMES:
            schema.add_field(tag, DataType.VARCHAR, max_length=64)
        index = client.prepare_index_params()
        index.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="COSINE")
        client.create_collection("nul__v2", schema=schema, index_params=index, timeout=60)
        client.close()
        with pytest.raises(StoreError, match=r"its field 'opt' cannot hold null, unlike in 'nul'"):
            migrate.evolve("nul", artifact.path, uri=db, target_uri=milvus_server, alias="nul_live")
        assert "nul__v2" in server.list_collections()
    finally:
        server.drop_created(server.created_since(before))
