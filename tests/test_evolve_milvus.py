"""Evolve end to end on Milvus Lite with a trained artifact on real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from galleries import Digits, Gallery, create_gallery, read_all
from pymilvus import DataType, MilvusClient

from dmu_migrate.artifact import Artifact
from dmu_migrate.demo import search_check
from dmu_migrate.errors import InputError, StoreError
from dmu_migrate.evolve.pipeline import EvolveOptions, EvolveResult, evolve_collection
from dmu_migrate.evolve.plan import target_name
from dmu_migrate.onnx_model import OnnxModel
from dmu_migrate.stores.opener import open_store


def run_evolve(
    db: Path, collection: str, artifact: Artifact, alias: str | None = None, batch_size: int = 4096
) -> EvolveResult:
    store = open_store(str(db))
    try:
        return evolve_collection(store, collection, [artifact], alias, EvolveOptions(batch_size))
    finally:
        store.close()


def test_evolve_writes_adapter_output_and_moves_alias(
    gallery: Gallery, artifact: Artifact, digits: Digits
) -> None:
    before = read_all(gallery.db, "digits__v1")
    result = run_evolve(gallery.db, "digits", artifact, batch_size=100)

    assert result.target == "digits__v2"
    assert result.rows_written == len(gallery.ids)
    after_old = read_all(gallery.db, "digits__v1")
    assert after_old.keys() == before.keys()
    for row_id, row in before.items():
        np.testing.assert_array_equal(after_old[row_id]["vector"], row["vector"])
        assert after_old[row_id]["name"] == row["name"]

    evolved = read_all(gallery.db, "digits__v2")
    assert sorted(evolved) == sorted(int(i) for i in gallery.ids)
    adapter = OnnxModel(artifact.adapter_path)
    expected = adapter(gallery.vectors)
    for i, row_id in enumerate(gallery.ids.tolist()):
        row = evolved[row_id]
        np.testing.assert_allclose(row["vector"], expected[i], atol=1e-5)
        assert row["label"] == gallery.labels[i]
        assert row["name"] == gallery.names[i]
        assert (row["dmu_version"], row["dmu_from"], row["dmu_origin"]) == ("v2", "v1", "evolved")

    client = MilvusClient(str(gallery.db))
    try:
        assert client.describe_alias("digits")["collection_name"] == "digits__v2"
        v2_only = client.query("digits", filter='dmu_version == "v2"', output_fields=["count(*)"])
        assert v2_only[0]["count(*)"] == len(gallery.ids)
    finally:
        client.close()

    # What users get: new-model queries find the right digit more often among the
    # top 10 through the alias (evolved gallery) than in the untouched old collection.
    assert artifact.new_model_path is not None
    queries = OnnxModel(artifact.new_model_path)(digits.x_te[digits.is_query])
    check = search_check(gallery.db, queries, digits.y_te[digits.is_query])
    assert check.evolved_hits > check.old_hits


def test_rerun_converges_without_duplicates(gallery: Gallery, artifact: Artifact) -> None:
    first = run_evolve(gallery.db, "digits", artifact, batch_size=128)
    # The alias now points at v2; evolving v1 again by its own name with the same
    # alias re-writes the same rows by id and leaves exactly one copy of each.
    second = run_evolve(gallery.db, "digits__v1", artifact, alias="digits", batch_size=64)
    assert second.target == first.target
    rows = read_all(gallery.db, "digits__v2")
    assert len(rows) == len(gallery.ids)


def test_wrong_dims_refused_before_any_write(
    tmp_path: Path, gallery: Gallery, artifact: Artifact
) -> None:
    client = MilvusClient(str(gallery.db))
    schema = MilvusClient.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=8)
    client.create_collection("small", schema=schema)
    client.insert("small", [{"id": 1, "vector": [0.1] * 8}])
    client.close()
    with pytest.raises(InputError, match=r"collection 'small' has 8-d vectors .* expects 32-d"):
        run_evolve(gallery.db, "small", artifact, alias="small_live")
    store = open_store(str(gallery.db))
    assert not store.has_collection("small__v2")
    store.close()


def test_missing_collection_and_missing_alias_are_clear(
    gallery: Gallery, artifact: Artifact
) -> None:
    with pytest.raises(StoreError, match=r"collection 'faces' does not exist"):
        run_evolve(gallery.db, "faces", artifact)
    with pytest.raises(InputError, match=r"not an alias.*--alias"):
        run_evolve(gallery.db, "digits__v1", artifact)


def test_existing_target_with_other_schema_is_refused(
    tmp_path: Path, digits: Digits, artifact: Artifact
) -> None:
    db = tmp_path / "g.db"
    create_gallery(db, digits)
    client = MilvusClient(str(db))
    schema = MilvusClient.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=32)
    client.create_collection("digits__v2", schema=schema)
    client.close()
    with pytest.raises(StoreError, match=r"target collection 'digits__v2' exists but"):
        run_evolve(db, "digits", artifact)
    client = MilvusClient(str(db))
    assert client.describe_alias("digits")["collection_name"] == "digits__v1"
    client.close()


def test_string_primary_keys(tmp_path: Path, digits: Digits, artifact: Artifact) -> None:
    db = tmp_path / "s.db"
    client = MilvusClient(str(db))
    schema = MilvusClient.create_schema(auto_id=False)
    schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=16)
    schema.add_field("emb", DataType.FLOAT_VECTOR, dim=32)
    index = client.prepare_index_params()
    index.add_index(field_name="emb", index_type="AUTOINDEX", metric_type="IP")
    client.create_collection("docs", schema=schema, index_params=index)
    client.insert("docs", [{"key": f"k{i}", "emb": v} for i, v in enumerate(digits.old_te[:50])])
    client.close()
    result = run_evolve(db, "docs", artifact, alias="docs_live")
    assert result.target == "docs__v2" and result.rows_written == 50
    client = MilvusClient(str(db))
    client.load_collection("docs__v2")
    got = client.get("docs__v2", ids=["k7"], output_fields=["emb"])
    client.close()
    expected = OnnxModel(artifact.adapter_path)(digits.old_te[7:8])[0]
    np.testing.assert_allclose(got[0]["emb"], expected, atol=1e-5)


def test_target_name() -> None:
    assert target_name("faces__v1", "v1", "v2") == "faces__v2"
    assert target_name("faces", "v1", "v2") == "faces__v2"
