"""Milvus sources shaped like users' collections, seeded with the native MilvusClient.

``milvus`` (a fixture in the test modules that import it) is a tests/backends.py
Backend over Milvus Lite or the session's Milvus server; ``seed`` creates a
collection from a field list, index list and rows, with an alias in front;
``build_params`` puts index build parameters in the form each Milvus kind keeps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from backends import Backend, kind_params
from pymilvus import MilvusClient

from dmu_migrate.stores.base import LEDGER_COLLECTION
from dmu_migrate.stores.milvus_schema import TIMEOUT


def milvus_fixture() -> Callable[..., Iterator[Backend]]:
    """A fixture over Milvus Lite and the Milvus server; server collections are dropped after."""

    @pytest.fixture(params=kind_params("milvus-lite", "milvus-server"))
    def milvus(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
        kind = request.param
        if kind == "milvus-lite":
            uri = str(tmp_path / "store.db")
        else:
            uri = request.getfixturevalue("milvus_server")
        harness = Backend(kind, uri, tmp_path)
        before = harness.list_collections()
        try:
            yield harness
        finally:
            harness.close_stores()
            if kind == "milvus-server":
                harness.drop_created(sorted(harness.list_collections() - before))

    return milvus


def seed(
    backend: Backend,
    name: str,
    build: Callable[[Any], None],
    rows: list[dict[str, Any]],
    indexes: list[dict[str, Any]],
    alias: str | None = None,
    **create: Any,
) -> None:
    """``build(schema)`` adds the fields; ``indexes`` are add_index keyword sets."""
    client = MilvusClient(backend.uri)
    try:
        schema = MilvusClient.create_schema(
            auto_id=create.pop("auto_id", False),
            enable_dynamic_field=create.pop("enable_dynamic_field", False),
            **{k: create.pop(k) for k in ("partition_key_field", "description") if k in create},
        )
        build(schema)
        params = client.prepare_index_params()
        for index in indexes:
            params.add_index(**index)
        client.create_collection(
            name,
            schema=schema,
            index_params=params if indexes else None,
            timeout=TIMEOUT,
            **create,
        )
        for start in range(0, len(rows), 1000):
            client.insert(name, rows[start : start + 1000], timeout=TIMEOUT)
        if alias:
            client.create_alias(name, alias, timeout=TIMEOUT)
    finally:
        client.close()


def native(backend: Backend) -> MilvusClient:
    return MilvusClient(backend.uri)


def ledger_rows(backend: Backend) -> int:
    """Records in the store's ledger: 0 without one (the session's server keeps an empty
    ledger collection between tests, backends.clear_ledger)."""
    client = native(backend)
    try:
        if not client.has_collection(LEDGER_COLLECTION):
            return 0
        rows = client.query(LEDGER_COLLECTION, filter="", output_fields=["key"], limit=10)
        return len(rows)
    finally:
        client.close()


def build_params(backend: Backend, params: dict[str, Any]) -> dict[str, Any]:
    """add_index params as a user of this store gets them kept (Lite keeps the nested form)."""
    return {"params": params} if backend.kind == "milvus-lite" else params
