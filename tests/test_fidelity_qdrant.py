"""Qdrant sources with sparse vectors beside the dense one (local mode: the only Qdrant
these machines have; a server run also carries HNSW, optimizer, WAL and quantization
settings and payload indexes, which local mode does not keep)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from galleries import Digits
from limits import limit
from qdrant_client import QdrantClient, models

from dmu_migrate.artifact import Artifact
from dmu_migrate.evolve.pipeline import EvolveOptions, evolve
from dmu_migrate.evolve.plan import make_plan
from dmu_migrate.evolve.run import Outcome
from dmu_migrate.evolve.transform import AdapterChain
from dmu_migrate.stores.base import TAG_FIELDS, TAG_SOURCE
from dmu_migrate.stores.opener import open_store

ROWS = 30


def sparse(i: int) -> models.SparseVector:
    return models.SparseVector(indices=[i, i + 7, 100 + i], values=[0.5, 0.25, float(i)])


@limit(300)
@pytest.mark.parametrize("dense_name", ["", "dense"], ids=["unnamed-dense", "named-dense"])
def test_sparse_vectors_are_carried_point_by_point(
    tmp_path: Path, digits: Digits, artifact: Artifact, dense_name: str
) -> None:
    path = tmp_path / "q"
    client = QdrantClient(path=str(path))
    dim = digits.old_te.shape[1]
    dense = models.VectorParams(size=dim, distance=models.Distance.COSINE)
    client.create_collection(
        "docs__v1",
        vectors_config=dense if dense_name == "" else {dense_name: dense},
        sparse_vectors_config={"bm25": models.SparseVectorParams(modifier=models.Modifier.IDF)},
    )
    points = []
    for i in range(ROWS):
        vector: dict[str, Any] = {dense_name: digits.old_te[i].tolist()}
        if i % 3:  # some points have no sparse vector: they must stay without one
            vector["bm25"] = sparse(i)
        points.append(models.PointStruct(id=i + 1, vector=vector, payload={"n": i}))
    client.upsert("docs__v1", points)
    alias = models.CreateAlias(collection_name="docs__v1", alias_name="docs")
    client.update_collection_aliases([models.CreateAliasOperation(create_alias=alias)])
    client.close()

    store = open_store(f"qdrant:{path}")
    try:
        plan = make_plan(store, "docs", AdapterChain([artifact]))
        result = evolve(store, plan, EvolveOptions(batch_size=8))
        assert result.outcome == Outcome.DONE
        client = store.client  # type: ignore[attr-defined]
        source_config = client.get_collection("docs__v1").config.params
        target_config = client.get_collection(result.target).config.params
        assert target_config.sparse_vectors == source_config.sparse_vectors
        before = {p.id: p for p in client.scroll("docs__v1", limit=100, with_vectors=True)[0]}
        after = {p.id: p for p in client.scroll(result.target, limit=100, with_vectors=True)[0]}
    finally:
        store.close()
    assert sorted(after) == sorted(before)
    evolved = AdapterChain([artifact])(digits.old_te[:ROWS])

    def vectors(point: Any) -> dict[str, Any]:  # local mode lists a lone unnamed vector
        return point.vector if isinstance(point.vector, dict) else {"": point.vector}

    for pid, point in before.items():
        got = after[pid]
        assert vectors(got).get("bm25") == vectors(point).get("bm25"), pid
        assert ("bm25" in vectors(got)) == bool((pid - 1) % 3)
        assert {
            k: v for k, v in got.payload.items() if k not in (*TAG_FIELDS, TAG_SOURCE)
        } == point.payload
        np.testing.assert_allclose(vectors(got)[dense_name], evolved[pid - 1], atol=1e-5)
