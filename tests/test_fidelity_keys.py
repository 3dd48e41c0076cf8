"""Keys of every kind read, resume, write, verify and catch up on every store kind.

String primary keys with quotes, backslashes, control characters, non-ASCII and
emoji (Milvus, Parquet) and UUID point ids (Qdrant) go through the cursor kept in
the ledger, the filter expressions built from it, fetch-by-id and delete-by-id.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from backends import Backend
from galleries import Digits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from limits import limit
from milvus_sources import seed as seed_milvus
from pymilvus import DataType

from dmu_migrate.artifact import Artifact
from dmu_migrate.errors import StoreError
from dmu_migrate.evolve.ledger import Ledger
from dmu_migrate.evolve.pipeline import EvolveOptions, evolve
from dmu_migrate.evolve.plan import make_plan
from dmu_migrate.evolve.run import Outcome
from dmu_migrate.evolve.transform import AdapterChain
from dmu_migrate.stores.base import VectorStore, id_array

NASTY = [
    "plain",
    "é",
    "naïve café",
    "😀 emoji",
    'double"quote',
    "single'quote",
    "back\\slash",
    "trailing\\",
    "new\nline",
    "carriage\rreturn",
    "tab\tkey",
    "ctrl\x01key",
    "nul\x00inside",
    "\\u00e9 written out",
    "日本語のキー",
    "x" * 300,
    "",
]


def keys_for(backend: Backend, n: int) -> list[str]:
    if backend.is_qdrant:  # Qdrant's string ids are UUIDs
        return [str(uuid.UUID(int=(i + 1) * 0x9E3779B97F4A7C15 % (1 << 128))) for i in range(n)]
    return NASTY[:n]


def seed_keys(
    backend: Backend, name: str, keys: list[str], vectors: np.ndarray, alias: str | None = None
) -> None:
    """A collection keyed by ``keys`` with a scalar field naming each row."""
    names = [f"n{i}" for i in range(len(keys))]
    if not backend.is_milvus:
        backend.seed(name, keys, vectors, {"name": names}, alias=alias)
        return

    def build(schema: Any) -> None:
        # Room for 300 four-byte characters: Milvus counts VARCHAR length in bytes.
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=4096)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=vectors.shape[1])
        schema.add_field("name", DataType.VARCHAR, max_length=64)

    rows = [
        {"id": k, "vector": v.tolist(), "name": n}
        for k, v, n in zip(keys, vectors, names, strict=True)
    ]
    index = {"field_name": "vector", "index_type": "FLAT", "metric_type": "COSINE"}
    seed_milvus(backend, name, build, rows, [index], alias)


def read_ids(store: VectorStore, name: str, batch_size: int, after: Any = None) -> list[Any]:
    info = store.describe(name)
    return [i for b in store.iter_batches(info, batch_size, after=after) for i in b.ids.tolist()]


@limit(900)
def test_generated_keys_read_resume_and_fetch_in_order(backend: Backend) -> None:
    """Property: for any set of keys and any cursor among them, a read from the cursor kept
    in the ledger yields exactly the keys after it, in order, and fetch returns them by id."""
    store = backend.open_store()
    if backend.is_qdrant:
        keys_strategy = st.sets(st.uuids().map(str), min_size=1, max_size=25)
    else:
        chars = st.characters(exclude_categories=["Cs"])  # lone surrogates are not UTF-8
        text = st.text(chars, min_size=0, max_size=40)
        long_text = st.text(chars, min_size=200, max_size=300)
        keys_strategy = st.sets(text | long_text, min_size=1, max_size=25)
    examples = 6 if backend.kind == "milvus-server" else 12

    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(keys=keys_strategy, batch_size=st.integers(1, 7), data=st.data())
    def check(keys: set[str], batch_size: int, data: st.DataObject) -> None:
        ordered = sorted(keys)
        name = backend.unique("keys")
        vectors = np.random.default_rng(0).normal(size=(len(ordered), 4)).astype(np.float32)
        seed_keys(backend, name, ordered[::-1], vectors[::-1])  # inserted out of order
        try:
            assert read_ids(store, name, batch_size) == ordered
            cursor = ordered[data.draw(st.integers(0, len(ordered) - 1))]
            store.ledger_put(f"cursor-{name}", {"cursor": cursor})
            kept = store.ledger_get(f"cursor-{name}")
            assert kept is not None and kept["cursor"] == cursor
            after = read_ids(store, name, batch_size, after=kept["cursor"])
            assert after == [k for k in ordered if k > cursor]
            wanted = data.draw(st.permutations(ordered))
            info = store.describe(name)
            fetched = store.fetch(info, id_array(wanted), info.vector_field)
            assert fetched.ids.tolist() == wanted
            position = {k: i for i, k in enumerate(ordered)}
            assert [fetched.fields["name"][j] for j in range(len(wanted))] == [
                f"n{len(ordered) - 1 - position[k]}" for k in wanted
            ]
        finally:
            store.drop_collection(name)

    check()


@limit(600)
def test_string_keys_and_uuids_evolve_resume_and_catch_up(
    backend: Backend, digits: Digits, artifact: Artifact
) -> None:
    """A run stopped after its first batch leaves a nasty key as the cursor; the next run
    resumes from it; rows deleted from the target are caught up by id."""
    keys = keys_for(backend, len(NASTY))
    source, alias = backend.unique("strk"), backend.unique("live")
    vectors = digits.old_te[: len(keys)]
    seed_keys(backend, source, keys, vectors, alias)
    store = backend.open_store()
    chain = AdapterChain([artifact])

    first = evolve(store, make_plan(store, alias, chain), EvolveOptions(3, max_seconds=0))
    assert first.outcome == Outcome.REMAINING
    record = Ledger(store).load(first.migration)
    assert record is not None and record.cursor == sorted(keys)[2]

    second = evolve(store, make_plan(store, alias, chain), EvolveOptions(3))
    assert second.outcome == Outcome.DONE and second.resumed
    assert second.verify is not None
    rows = backend.read_all(second.target)
    assert sorted(rows) == sorted(keys)
    expected = chain(vectors)
    for i, key in enumerate(keys):
        np.testing.assert_allclose(rows[key][backend.vector_name], expected[i], atol=1e-5)
        assert rows[key]["name"] == f"n{i}"

    lost = [sorted(keys)[0], sorted(keys)[-1]]
    store.delete_ids(second.target, id_array(lost))
    store.flush(second.target)
    third = evolve(store, make_plan(store, alias, chain), EvolveOptions(3))
    assert third.outcome == Outcome.DONE and third.caught_up == 2
    assert sorted(backend.read_all(third.target)) == sorted(keys)


@limit(120)
def test_qdrant_integer_and_uuid_ids_in_one_collection_are_refused(tmp_path: Path) -> None:
    from qdrant_client import QdrantClient, models

    from dmu_migrate.stores.opener import open_store

    client = QdrantClient(path=str(tmp_path / "q"))
    client.create_collection("mixed", models.VectorParams(size=4, distance=models.Distance.DOT))
    points = [models.PointStruct(id=7, vector=[1.0, 0, 0, 0])]
    points.append(models.PointStruct(id=str(uuid.UUID(int=5)), vector=[0, 1.0, 0, 0]))
    client.upsert("mixed", points)
    client.close()
    store = open_store(f"qdrant:{tmp_path / 'q'}")
    try:
        with pytest.raises(StoreError, match="mixes integer and UUID point ids"):
            read_ids(store, "mixed", 10)
    finally:
        store.close()
