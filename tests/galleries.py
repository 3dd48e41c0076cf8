"""The digits test data and the galleries built from it.

``Digits`` is what the session's ``digits`` fixture (tests/conftest.py) gives: the
real scikit-learn digits split into train/eval tables with old-model embeddings.
``create_gallery`` lays its held-out gallery rows into a Milvus Lite file behind the
alias 'digits'; ``seed_gallery`` seeds the first ``ROWS`` of them into any store kind
through a tests/backends.py ``Backend``; ``read_all`` reads a Lite collection back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from backends import Backend
from pymilvus import DataType, MilvusClient

ROWS = 120  # seed_gallery's rows: enough for several batches of 32, quick on every store


@dataclass(frozen=True)
class Digits:
    train_path: Path
    eval_path: Path
    x_te: np.ndarray
    y_te: np.ndarray
    old_te: np.ndarray
    is_query: np.ndarray


@dataclass(frozen=True)
class Gallery:
    db: Path
    ids: np.ndarray
    vectors: np.ndarray
    labels: np.ndarray
    names: list[str]


def create_gallery(db: Path, digits: Digits, collection: str = "digits__v1") -> Gallery:
    """Old vectors of the held-out gallery rows, with scalar fields, behind alias 'digits'."""
    gallery = ~digits.is_query
    vectors, labels = digits.old_te[gallery], digits.y_te[gallery]
    ids = np.arange(1000, 1000 + len(labels))
    names = [f"item-{i}" for i in ids]
    client = MilvusClient(str(db))
    try:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=vectors.shape[1])
        schema.add_field("label", DataType.INT64)
        schema.add_field("name", DataType.VARCHAR, max_length=32)
        index = client.prepare_index_params()
        index.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="COSINE")
        client.create_collection(collection, schema=schema, index_params=index)
        rows = [
            {"id": int(i), "vector": v, "label": int(c), "name": n}
            for i, v, c, n in zip(ids, vectors, labels, names, strict=True)
        ]
        client.insert(collection, rows)
        client.create_alias(collection, "digits")
    finally:
        client.close()
    return Gallery(db, ids, vectors, labels, names)


def read_all(db: Path, collection: str) -> dict[int, dict]:
    """Every row of a collection by id (query_iterator: complete and pk-ordered)."""
    client = MilvusClient(str(db))
    try:
        client.load_collection(collection)
        it = client.query_iterator(collection, batch_size=1000, filter="", output_fields=["*"])
        rows: dict[int, dict] = {}
        while batch := it.next():
            for row in batch:
                assert row["id"] not in rows, "duplicate primary key"
                rows[row["id"]] = row
        it.close()
        return rows
    finally:
        client.close()


def seed_gallery(backend: Backend, digits: Digits, rows: int = ROWS) -> tuple[str, str, np.ndarray]:
    """A source of the first ``rows`` digits behind a fresh alias: (source, alias, ids)."""
    source, alias = backend.unique("gal"), backend.unique("live")
    ids = np.arange(10, 10 + rows) * 3  # sparse, ordered keys
    vectors = digits.old_te[:rows]
    fields: dict[str, list[Any]] = {
        "label": [int(v) for v in digits.y_te[:rows]],
        "name": [f"n{i}" for i in ids],
    }
    backend.seed(source, ids, vectors, fields, alias=alias)
    return source, alias, ids
