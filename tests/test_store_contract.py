"""The store protocol's contract, run against every backend kind (tests/backends.py).

Sources are seeded and results read back with each store's native client, so a
read test does not lean on the store's own writes and vice versa.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from backends import Backend
from pymilvus import MilvusException

from dmu_migrate.errors import InputError, StoreError
from dmu_migrate.stores.base import TAG_FIELDS, TAG_VERSION, Batch, VectorStore
from dmu_migrate.stores.opener import open_store

N, DIM, NEW_DIM = 60, 8, 4
TAGS = {"dmu_version": "v2", "dmu_from": "v1", "dmu_origin": "evolved"}


def unit(x: np.ndarray) -> np.ndarray:
    """Unit rows: Qdrant normalises cosine vectors on write, so seed them normalised."""
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def label_filter(backend: Backend, label: int) -> str:
    if backend.is_qdrant:
        return json.dumps({"must": [{"key": "label", "match": {"value": label}}]})
    return f"label == {label}"  # Milvus expressions; the Parquet store reads the same subset


class Seeded:
    """A seeded source collection: rows inserted in shuffled order, an alias in front."""

    def __init__(self, backend: Backend, string_ids: bool = False, n: int = N) -> None:
        rng = np.random.default_rng(7)
        ids = backend.string_ids(n) if string_ids else [int(i) for i in np.arange(n) * 3 + 5]
        self.ids = np.asarray(ids, dtype=object if string_ids else np.int64)  # ascending
        self.vectors = unit(rng.normal(size=(n, DIM)))
        self.labels = [i % 4 for i in range(n)]
        self.names = [f"item-{i}" for i in range(n)]
        self.name = backend.unique("src")
        self.alias = backend.unique("gallery")
        order = rng.permutation(n)
        backend.seed(
            self.name,
            [ids[i] for i in order],
            self.vectors[order],
            {"label": [self.labels[i] for i in order], "name": [self.names[i] for i in order]},
            alias=self.alias,
        )


@pytest.fixture
def src(backend: Backend) -> Seeded:
    """The read-only int-id source (seeded once on the Milvus server, per test elsewhere)."""
    return backend.shared("src", lambda: Seeded(backend))


@pytest.fixture
def str_src(backend: Backend) -> Seeded:
    return backend.shared("str_src", lambda: Seeded(backend, string_ids=True, n=40))


def seed_two_vectors(
    backend: Backend, name: str, vectors: dict[str, np.ndarray], **kw: Any
) -> bool:
    """Seed two vector fields; False on the Milvus 2.3 server, which refuses them (asserted)."""
    if backend.kind == "milvus-server":
        with pytest.raises(MilvusException, match="multiple vector fields"):
            backend.seed(name, [1], {k: v[:1] for k, v in vectors.items()})
        return False
    backend.seed(name, list(range(1, len(next(iter(vectors.values()))) + 1)), vectors, **kw)
    return True


def batches(store: VectorStore, name: str, size: int, **kw: Any) -> list[Batch]:
    return list(store.iter_batches(store.describe(name), size, **kw))


def ids_of(parts: list[Batch]) -> list[Any]:
    return [i for b in parts for i in b.ids.tolist()]


def evolve_into(store: VectorStore, src: Seeded, target: str, batch_size: int = 16) -> None:
    """create_like + write_rows with a stand-in adapter (the first NEW_DIM dims, renormalised)."""
    info = store.describe(src.name)
    store.create_like(info, target, NEW_DIM)
    for batch in store.iter_batches(info, batch_size):
        evolved = Batch(batch.ids, unit(batch.vectors[:, :NEW_DIM]), batch.fields)
        store.write_rows(info, target, evolved, TAGS)


# -- discovery -----------------------------------------------------------------------


def test_describe_reports_schema_and_resolves_alias(backend: Backend, src: Seeded) -> None:
    store = backend.open_store()
    info = store.describe(src.alias)
    assert (info.requested, info.name, info.alias) == (src.alias, src.name, src.alias)
    assert (info.pk_field, info.vector_field, info.dim) == ("id", backend.vector_name, DIM)
    assert (info.metric, info.count) == ("COSINE", N)
    assert info.vector_fields == {backend.vector_name: DIM}
    assert store.describe(src.name).alias is None
    assert store.has_collection(src.name)
    assert not store.has_collection(backend.unique("absent"))


def test_describe_reports_each_metric(backend: Backend) -> None:
    rng = np.random.default_rng(1)
    store_names = {}
    for metric in ("IP", "L2"):
        store_names[metric] = backend.unique(metric.lower())
        backend.seed(store_names[metric], [1, 2], rng.normal(size=(2, 3)), metric=metric)
    store = backend.open_store()
    assert {m: store.describe(n).metric for m, n in store_names.items()} == {"IP": "IP", "L2": "L2"}


def test_describe_missing_collection_is_a_store_error(backend: Backend) -> None:
    store = backend.open_store()
    missing = backend.unique("nowhere")
    with pytest.raises(StoreError, match=missing):
        store.describe(missing)


def test_describe_refuses_an_ambiguous_vector_field(backend: Backend) -> None:
    rng = np.random.default_rng(2)
    name = backend.unique("two")
    two = {"face": rng.normal(size=(3, 6)), "body": rng.normal(size=(3, 5))}
    if not seed_two_vectors(backend, name, two):
        return
    store = backend.open_store()
    with pytest.raises(InputError, match="face"):
        store.describe(name)
    info = store.describe(name, vector_field="body")
    assert (info.vector_field, info.dim, info.vector_fields) == ("body", 5, {"face": 6, "body": 5})
    with pytest.raises(InputError, match="nose"):
        store.describe(name, vector_field="nose")


def test_count_with_and_without_filter(backend: Backend, src: Seeded) -> None:
    store = backend.open_store()
    assert store.count(src.name) == N
    assert store.count(src.name, label_filter(backend, 2)) == src.labels.count(2)
    assert store.count(src.name, label_filter(backend, 9)) == 0


def test_a_malformed_filter_is_refused(backend: Backend, src: Seeded) -> None:
    store = backend.open_store()
    with pytest.raises((InputError, StoreError)):
        store.count(src.name, "label === ((")


# -- reading ---------------------------------------------------------------------------


def test_iter_batches_is_complete_and_id_ordered(backend: Backend, src: Seeded) -> None:
    store = backend.open_store()
    parts = batches(store, src.alias, 7)
    assert all(0 < len(b) <= 7 for b in parts)
    assert ids_of(parts) == src.ids.tolist()
    vectors = np.concatenate([b.vectors for b in parts])
    assert vectors.dtype == np.float32 and vectors.shape == (N, DIM)
    np.testing.assert_allclose(vectors, src.vectors, atol=1e-6)
    assert [x for b in parts for x in b.fields["label"]] == src.labels
    assert [x for b in parts for x in b.fields["name"]] == src.names


def test_reads_see_rows_written_just_before(backend: Backend) -> None:
    """Counts are exact and reads complete right after a write (a server's default
    consistency may lag by seconds: verification would then see rows go missing)."""
    name = backend.unique("fresh")
    backend.seed(name, [3, 1, 2], unit(np.eye(3, DIM)))
    store = backend.open_store()
    assert store.count(name) == 3
    assert ids_of(batches(store, name, 2)) == [1, 2, 3]
    assert np.concatenate(list(store.iter_ids(name, 2))).tolist() == [1, 2, 3]


def test_after_cursor_resumes_exactly(backend: Backend, src: Seeded) -> None:
    store = backend.open_store()
    info = store.describe(src.name)
    first = []
    for batch in store.iter_batches(info, 9):
        first.append(batch)
        if len(first) == 2:
            break  # a crash after two acknowledged batches
    cursor = first[-1].ids[-1]  # a numpy scalar, as a pipeline holds it
    rest = list(store.iter_batches(info, 9, after=cursor))
    assert ids_of(first) + ids_of(rest) == src.ids.tolist()
    # A cursor that is no longer (or never was) a row still resumes after it.
    between = int(src.ids[10]) + 1
    assert ids_of(list(store.iter_batches(info, 9, after=between))) == src.ids[11:].tolist()
    assert list(store.iter_batches(info, 9, after=src.ids.tolist()[-1])) == []


def test_until_bounds_a_shard_of_the_id_space(backend: Backend, src: Seeded) -> None:
    store = backend.open_store()
    info = store.describe(src.name)
    ids = src.ids.tolist()
    cuts = [ids[9], ids[25]]  # shards (-inf, 9th], (9th, 25th], (25th, +inf)
    shards = [
        ids_of(list(store.iter_batches(info, 4, after=lo, until=hi)))
        for lo, hi in zip([None, *cuts], [*cuts, None], strict=True)
    ]
    assert shards == [ids[:10], ids[10:26], ids[26:]]
    # A bound that is not a row still splits exactly; filters and bounds combine.
    between = int(ids[10]) + 1
    assert ids_of(list(store.iter_batches(info, 4, until=between))) == ids[:11]
    label_1 = ids_of(
        list(store.iter_batches(info, 4, filter=label_filter(backend, 1), until=cuts[1]))
    )
    assert label_1 == [i for i, lab in zip(ids[:26], src.labels, strict=False) if lab == 1]


def test_string_ids_split_into_shards(backend: Backend, str_src: Seeded) -> None:
    store = backend.open_store()
    info = store.describe(str_src.name)
    ids = str_src.ids.tolist()
    first = ids_of(list(store.iter_batches(info, 6, until=ids[14])))
    rest = ids_of(list(store.iter_batches(info, 6, after=ids[14])))
    assert (first, rest) == (ids[:15], ids[15:])


def test_iter_batches_with_filter(backend: Backend, src: Seeded) -> None:
    store = backend.open_store()
    parts = batches(store, src.name, 4, filter=label_filter(backend, 1))
    expected = [i for i, label in zip(src.ids.tolist(), src.labels, strict=True) if label == 1]
    assert ids_of(parts) == expected
    assert {x for b in parts for x in b.fields["label"]} == {1}


def test_iter_ids_streams_ids_in_order(backend: Backend, src: Seeded) -> None:
    store = backend.open_store()
    chunks = list(store.iter_ids(src.name, 8))
    assert all(isinstance(c, np.ndarray) and 0 < len(c) <= 8 for c in chunks)
    assert np.concatenate(chunks).tolist() == src.ids.tolist()
    only_3 = np.concatenate(list(store.iter_ids(src.name, 8, filter=label_filter(backend, 3))))
    assert only_3.tolist() == [
        i for i, lab in zip(src.ids.tolist(), src.labels, strict=True) if lab == 3
    ]


def test_fetch_keeps_the_given_order_and_refuses_missing_ids(backend: Backend, src: Seeded) -> None:
    store = backend.open_store()
    info = store.describe(src.name)
    wanted = src.ids[[30, 2, 17]]
    got = store.fetch(info, wanted, info.vector_field)
    assert got.ids.tolist() == wanted.tolist()
    np.testing.assert_allclose(got.vectors, src.vectors[[30, 2, 17]], atol=1e-6)
    assert got.fields["name"] == [src.names[i] for i in (30, 2, 17)]
    with pytest.raises(StoreError, match="4"):
        store.fetch(info, np.asarray([int(src.ids[0]), 4]), info.vector_field)


def test_string_ids_read_in_order_and_write_back(backend: Backend, str_src: Seeded) -> None:
    src = str_src
    store = backend.open_store()
    parts = batches(store, src.name, 6)
    assert ids_of(parts) == sorted(src.ids.tolist()) == src.ids.tolist()
    resumed = batches(store, src.name, 6, after=src.ids[19])
    assert ids_of(resumed) == src.ids[20:].tolist()
    info = store.describe(src.name)
    assert (
        store.fetch(info, src.ids[[5, 1]], info.vector_field).ids.tolist()
        == src.ids[[5, 1]].tolist()
    )
    target = backend.unique("evolved")
    evolve_into(store, src, target)
    assert sorted(backend.read_all(target)) == src.ids.tolist()


# -- writing ---------------------------------------------------------------------------


def test_create_like_and_idempotent_write_rows(backend: Backend, src: Seeded) -> None:
    store = backend.open_store()
    info = store.describe(src.alias)
    target = backend.unique("evolved")
    evolve_into(store, src, target)
    assert store.target_problem(info, target, NEW_DIM) is None
    assert store.target_problem(info, target, NEW_DIM + 1) is not None
    assert store.describe(target).dim == NEW_DIM and store.describe(target).metric == "COSINE"
    # A batch written again (a crash before its cursor advanced) leaves one row per id.
    again = next(store.iter_batches(info, 16))
    store.write_rows(
        info, target, Batch(again.ids, unit(again.vectors[:, :NEW_DIM]), again.fields), TAGS
    )
    store.flush(target)
    rows = backend.read_all(target)
    assert sorted(rows) == src.ids.tolist()
    assert store.count(target) == N
    for i, row_id in enumerate(src.ids.tolist()):
        row = rows[row_id]
        assert (row["label"], row["name"]) == (src.labels[i], src.names[i])
        assert {t: row[t] for t in TAG_FIELDS} == TAGS
        np.testing.assert_allclose(
            row[backend.vector_name], unit(src.vectors[i : i + 1, :NEW_DIM])[0], atol=1e-6
        )
    assert (
        len(backend.read_all(src.name)[src.ids[0]][backend.vector_name]) == DIM
    )  # source untouched


def test_tag_filter_counts_rows_at_a_version(backend: Backend, src: Seeded) -> None:
    store = backend.open_store()
    target = backend.unique("evolved")
    evolve_into(store, src, target)
    assert store.count(target, store.tag_filter(TAG_VERSION, "v2")) == N
    assert store.count(target, store.tag_filter(TAG_VERSION, "v3")) == 0


def test_write_rows_keeps_the_other_vector_fields(backend: Backend) -> None:
    rng = np.random.default_rng(3)
    src_ids = [1, 2, 3, 4, 5]
    face, body = unit(rng.normal(size=(5, DIM))), unit(rng.normal(size=(5, 5)))
    name, target = backend.unique("two"), backend.unique("evolved")
    if not seed_two_vectors(backend, name, {"face": face, "body": body}, fields={"label": src_ids}):
        return
    store = backend.open_store()
    info = store.describe(name, vector_field="face")
    store.create_like(info, target, NEW_DIM)
    for batch in store.iter_batches(info, 2):
        store.write_rows(
            info, target, Batch(batch.ids, unit(batch.vectors[:, :NEW_DIM]), batch.fields), TAGS
        )
    store.flush(target)
    assert store.describe(target, vector_field="body").dim == 5
    by_body = list(store.iter_batches(info, 10, vector_field="body"))
    np.testing.assert_allclose(by_body[0].vectors, body, atol=1e-6)
    rows = backend.read_all(target)
    np.testing.assert_allclose([rows[i]["body"] for i in src_ids], body, atol=1e-6)
    np.testing.assert_allclose(
        [rows[i]["face"] for i in src_ids], unit(face[:, :NEW_DIM]), atol=1e-6
    )


def test_write_vectors_keeps_everything_else(backend: Backend, src: Seeded) -> None:
    store = backend.open_store()
    target = backend.unique("evolved")
    evolve_into(store, src, target)
    info = store.describe(target)
    chosen = src.ids[[3, 4, 20]]
    fresh = unit(np.random.default_rng(4).normal(size=(3, NEW_DIM)))
    tags = {"dmu_version": "v3", "dmu_from": "v2", "dmu_origin": "native"}
    store.write_vectors(info, info.vector_field, chosen, fresh, tags)
    store.flush(target)
    rows = backend.read_all(target)
    assert len(rows) == N
    for i, row_id in enumerate(src.ids.tolist()):
        row = rows[row_id]
        assert (row["label"], row["name"]) == (src.labels[i], src.names[i])
        k = chosen.tolist().index(row_id) if row_id in chosen.tolist() else None
        expected = fresh[k] if k is not None else unit(src.vectors[i : i + 1, :NEW_DIM])[0]
        np.testing.assert_allclose(row[backend.vector_name], expected, atol=1e-6)
        assert {t: row[t] for t in TAG_FIELDS} == (tags if k is not None else TAGS)


def test_delete_ids(backend: Backend) -> None:
    src = Seeded(backend, n=20)
    store = backend.open_store()
    store.delete_ids(src.name, src.ids[[0, 7]])
    assert store.count(src.name) == 18
    assert (
        np.concatenate(list(store.iter_ids(src.name, 50))).tolist()
        == np.delete(src.ids, [0, 7]).tolist()
    )


def test_add_vector_field(backend: Backend) -> None:
    src = Seeded(backend, n=12)
    store = backend.open_store()
    info = store.describe(src.name)
    if backend.is_milvus:
        # Neither Milvus Lite nor the 2.3 server can add a vector field to a collection.
        with pytest.raises(StoreError, match=src.name):
            store.add_vector_field(info, "v2", NEW_DIM)
        return
    store.add_vector_field(info, "v2", NEW_DIM)
    store.add_vector_field(info, "v2", NEW_DIM)  # a resumed run finds it there
    with pytest.raises(StoreError, match="v2"):
        store.add_vector_field(info, "v2", NEW_DIM + 1)
    assert store.describe(src.name, vector_field="v2").vector_fields == {
        backend.vector_name: DIM,
        "v2": NEW_DIM,
    }
    fresh = unit(np.random.default_rng(5).normal(size=(12, NEW_DIM)))
    store.write_vectors(info, "v2", src.ids, fresh, TAGS)
    got = store.fetch(info, src.ids[[4, 0]], "v2")
    np.testing.assert_allclose(got.vectors, fresh[[4, 0]], atol=1e-6)
    rows = backend.read_all(src.name)
    np.testing.assert_allclose(
        [rows[i][backend.vector_name] for i in src.ids.tolist()], src.vectors, atol=1e-6
    )
    assert [rows[i]["name"] for i in src.ids.tolist()] == src.names


# -- aliases and ledger -------------------------------------------------------------


def test_alias_is_created_then_moved(backend: Backend, src: Seeded) -> None:
    first, second = src.name, backend.unique("c2")
    backend.seed(second, [1], np.random.default_rng(6).normal(size=(1, 3)))
    store = backend.open_store()
    alias = backend.unique("live")
    assert store.alias_target(alias) is None
    store.point_alias(alias, first)
    assert store.alias_target(alias) == first
    assert store.describe(alias).name == first
    store.point_alias(alias, second)  # moved, not duplicated: readers switch at once
    assert store.alias_target(alias) == second
    assert store.describe(alias).name == second
    assert store.alias_target(src.alias) == first  # other aliases are left alone


def test_ledger_round_trip(backend: Backend) -> None:
    store = backend.open_store()
    assert store.ledger_get("faces:v1->v2") is None
    assert store.ledger_list() == []
    running = {"key": "faces:v1->v2", "status": "running", "cursor": 41, "rows": 42}
    store.ledger_put("faces:v1->v2", running)
    store.ledger_put("items:v1->v2", {"key": "items:v1->v2", "status": "done", "cursor": "x"})
    done = dict(running, status="done", cursor=99)
    store.ledger_put("faces:v1->v2", done)
    assert store.ledger_get("faces:v1->v2") == done
    listed = store.ledger_list()
    assert sorted(r["key"] for r in listed) == ["faces:v1->v2", "items:v1->v2"]
    assert done in listed
    # The state survives a reopen (it lives in the store, not the process).
    backend.close_stores()
    assert backend.open_store().ledger_get("faces:v1->v2") == done


# -- store-specific behaviour the contract leaves open -------------------------------


def test_qdrant_unreachable_server_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="qdrant://127.0.0.1:9"):
        open_store("qdrant://127.0.0.1:9")


def test_qdrant_local_directory_is_released_on_close(tmp_path: Path) -> None:
    first = open_store(f"qdrant:{tmp_path}")
    with pytest.raises(StoreError, match="another process"):
        open_store(f"qdrant:{tmp_path}")
    first.close()
    open_store(f"qdrant:{tmp_path}").close()


def test_qdrant_filter_must_be_filter_json(tmp_path: Path) -> None:
    store = open_store(f"qdrant:{tmp_path}")
    try:
        with pytest.raises(InputError, match="--filter"):
            store.count("anything", '{"must": [{"key": "label", "match": 3}]}')
    finally:
        store.close()


def test_parquet_filters_treat_untagged_rows_as_not_at_a_version(tmp_path: Path) -> None:
    backend = Backend("parquet", f"parquet:{tmp_path / 'parquet'}", tmp_path)
    backend.seed("g", [1, 2, 3, 4], np.eye(4), {"label": [1, 2, 3, 4], "name": list("abcd")})
    store = backend.open_store()
    info = store.describe("g")
    store.add_vector_field(info, "v2", 2)
    store.write_vectors(info, "v2", np.asarray([2, 3]), np.ones((2, 2)), TAGS)
    assert store.count("g", 'dmu_version != "v2"') == 2  # rows 1 and 4 carry no tag yet
    assert store.count("g", "label in [1, 3] and name != 'c'") == 1
    assert store.count("g", 'label >= 2 and label < 4 and dmu_version == "v2"') == 2
    for bad in ("label = 1", "label == 1 or label == 2", "name > 3"):
        with pytest.raises(InputError, match="--filter"):
            store.count("g", bad)
    backend.close_stores()


def test_parquet_rewritten_batch_replaces_its_part_file(tmp_path: Path) -> None:
    backend = Backend("parquet", f"parquet:{tmp_path / 'parquet'}", tmp_path)
    backend.seed("g", [1, 2, 3, 4], unit(np.eye(4)), {"label": [1, 2, 3, 4]})
    store = backend.open_store()
    info = store.describe("g")
    store.create_like(info, "g2", 2)
    parts = list(store.iter_batches(info, 2))
    for batch in (*parts, parts[0]):  # the first batch again, as after a crash
        store.write_rows(info, "g2", Batch(batch.ids, batch.vectors[:, :2], batch.fields), TAGS)
    files = sorted(p.name for p in (tmp_path / "parquet" / "g2").iterdir())
    assert len(files) == 3 and not [f for f in files if f.endswith(".tmp")]  # schema + 2 parts
    assert store.count("g2") == 4


@pytest.mark.integration
def test_milvus_target_keeps_the_source_shard_count(milvus_server: str, tmp_path: Path) -> None:
    """A source laid out for parallel writes (several DML channels) keeps that layout."""
    from pymilvus import DataType, MilvusClient

    backend = Backend("milvus-server", milvus_server, tmp_path)
    name, target = backend.unique("wide"), backend.unique("wide_v2")
    client = MilvusClient(milvus_server)
    try:
        schema = MilvusClient.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=8)
        index = client.prepare_index_params()
        index.add_index(field_name="vector", index_type="FLAT", metric_type="COSINE")
        client.create_collection(name, schema=schema, index_params=index, num_shards=3)
        store = backend.open_store()
        store.create_like(store.describe(name), target, 16)
        assert client.describe_collection(target)["num_shards"] == 3
    finally:
        backend.close_stores()
        for collection in (name, target):
            client.drop_collection(collection)
        client.close()
