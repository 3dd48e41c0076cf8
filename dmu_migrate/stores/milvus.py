"""Milvus backend (Milvus Lite files and Milvus servers) over ``MilvusClient``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
from pymilvus import DataType, MilvusClient, MilvusException
from pymilvus.client.types import LoadState

from dmu_migrate.errors import InputError, StoreError
from dmu_migrate.stores.base import TAG_FIELDS, Batch, CollectionInfo

_VECTOR_TYPES = {DataType.FLOAT_VECTOR}
_TAG_MAX_LENGTH = 64


class MilvusStore:
    def __init__(self, client: MilvusClient, uri: str) -> None:
        self.client = client
        self.uri = uri
        self._loaded: set[str] = set()

    def _ensure_loaded(self, name: str) -> None:
        """Queries need a loaded collection; Milvus Lite starts every process with none loaded."""
        if name in self._loaded:
            return
        state = self.client.get_load_state(name)["state"]
        if state != LoadState.Loaded:
            self.client.load_collection(name)
        self._loaded.add(name)

    @classmethod
    def connect(cls, uri: str, token: str | None = None) -> MilvusStore:
        if uri.endswith(".db"):
            # Milvus Lite has no MVCC snapshot and pymilvus warns about it on every
            # iterator; evolve verifies counts instead of relying on a snapshot.
            logging.getLogger("pymilvus").setLevel(logging.ERROR)
        try:
            client = MilvusClient(uri=uri, token=token or "")
        except MilvusException as exc:
            raise StoreError(f"cannot open Milvus at '{uri}' ({exc.message}); check --uri") from exc
        except Exception as exc:  # connection errors surface as many types
            raise StoreError(f"cannot open Milvus at '{uri}' ({exc}); check --uri") from exc
        return cls(client, uri)

    def close(self) -> None:
        self.client.close()

    def has_collection(self, name: str) -> bool:
        return bool(self.client.has_collection(name))

    def describe(self, name: str, vector_field: str | None = None) -> CollectionInfo:
        if not self.client.has_collection(name):
            raise StoreError(
                f"collection '{name}' does not exist in '{self.uri}'; check --collection "
                f"(present: {', '.join(self.client.list_collections()) or 'none'})"
            )
        desc = self.client.describe_collection(name)
        concrete = desc["collection_name"]
        fields = desc["fields"]
        vectors = [f for f in fields if f["type"] in _VECTOR_TYPES]
        if vector_field is None:
            if len(vectors) != 1:
                names = ", ".join(f["name"] for f in vectors) or "none"
                raise InputError(
                    f"collection '{name}' has float vector fields [{names}]; "
                    f"name the one to evolve with --vector-field"
                )
            vf = vectors[0]
        else:
            matches = [f for f in vectors if f["name"] == vector_field]
            if not matches:
                raise InputError(
                    f"collection '{name}' has no float vector field '{vector_field}' (float vector "
                    f"fields: {', '.join(f['name'] for f in vectors) or 'none'}); fix --vector-field"
                )
            vf = matches[0]
        pk = next(f for f in fields if f.get("is_primary"))
        return CollectionInfo(
            requested=name,
            name=concrete,
            alias=name if concrete != name else None,
            pk_field=pk["name"],
            vector_field=vf["name"],
            dim=int(vf["params"]["dim"]),
            metric=self._metric(concrete, vf["name"]),
            count=self.count(concrete),
            schema=desc,
        )

    def _metric(self, collection: str, vector_field: str) -> str:
        index = self._index_params(collection, vector_field)
        return str(index.get("metric_type", "COSINE")) if index else "COSINE"

    def _index_params(self, collection: str, vector_field: str) -> dict[str, Any] | None:
        for index_name in self.client.list_indexes(collection, field_name=vector_field):
            return dict(self.client.describe_index(collection, index_name))
        return None

    def count(self, name: str) -> int:
        self._ensure_loaded(name)
        rows = self.client.query(
            name, filter="", output_fields=["count(*)"], consistency_level="Strong"
        )
        return int(rows[0]["count(*)"])

    def iter_batches(self, info: CollectionInfo, batch_size: int) -> Iterator[Batch]:
        self._ensure_loaded(info.name)
        # query_iterator walks the collection in primary-key order; hand-rolled
        # "id > last" paging skips rows on Milvus Lite.
        iterator = self.client.query_iterator(
            info.name, batch_size=batch_size, filter="", output_fields=["*"]
        )
        try:
            while rows := iterator.next():
                yield self._to_batch(rows, info)
        finally:
            iterator.close()

    @staticmethod
    def _to_batch(rows: list[dict[str, Any]], info: CollectionInfo) -> Batch:
        pk, vf = info.pk_field, info.vector_field
        ids = np.asarray([r[pk] for r in rows])
        vectors = np.asarray([r[vf] for r in rows], dtype=np.float32)
        other = [k for k in rows[0] if k not in (pk, vf)]
        return Batch(ids, vectors, {k: [r.get(k) for r in rows] for k in other})

    def create_evolved(self, source: CollectionInfo, target: str, new_dim: int) -> None:
        """A collection with the source's schema, the vector resized, and the tag fields."""
        desc = source.schema
        schema = MilvusClient.create_schema(
            auto_id=False,  # evolved rows keep their source ids
            enable_dynamic_field=bool(desc.get("enable_dynamic_field", False)),
        )
        for f in desc["fields"]:
            params = dict(f.get("params") or {})
            if f["name"] == source.vector_field:
                params["dim"] = new_dim
            schema.add_field(f["name"], f["type"], is_primary=bool(f.get("is_primary")), **params)
        present = {f["name"] for f in desc["fields"]}
        for tag in TAG_FIELDS:
            if tag not in present:
                schema.add_field(tag, DataType.VARCHAR, max_length=_TAG_MAX_LENGTH)
        index = self._index_params(source.name, source.vector_field) or {}
        index_params = self.client.prepare_index_params()
        extra = {
            k: v
            for k, v in index.items()
            if k
            not in (
                "index_type",
                "metric_type",
                "field_name",
                "index_name",
                "total_rows",
                "indexed_rows",
                "pending_index_rows",
                "state",
            )
        }
        index_params.add_index(
            field_name=source.vector_field,
            index_type=index.get("index_type", "AUTOINDEX"),
            metric_type=index.get("metric_type", "COSINE"),
            params=extra.get("params", {}) if isinstance(extra.get("params"), dict) else {},
        )
        try:
            self.client.create_collection(target, schema=schema, index_params=index_params)
        except MilvusException as exc:
            raise StoreError(f"cannot create collection '{target}' ({exc.message})") from exc

    def target_matches(self, source: CollectionInfo, target: str, new_dim: int) -> str | None:
        """None when ``target`` can receive evolved rows of ``source``, else the reason."""
        desc = self.client.describe_collection(target)
        fields = {f["name"]: f for f in desc["fields"]}
        missing = [t for t in TAG_FIELDS if t not in fields]
        if missing:
            return f"it has no tag fields {missing}"
        vf = fields.get(source.vector_field)
        if vf is None or int(vf["params"].get("dim", -1)) != new_dim:
            return f"its field '{source.vector_field}' is not a {new_dim}-d float vector"
        expected = {f["name"] for f in source.schema["fields"]} | set(TAG_FIELDS)
        if set(fields) != expected:
            return f"its fields {sorted(fields)} differ from the source's plus tags"
        return None

    def upsert(
        self, source: CollectionInfo, target: str, batch: Batch, tags: dict[str, str]
    ) -> None:
        pk, vf = source.pk_field, source.vector_field
        rows = []
        for i, row_id in enumerate(batch.ids.tolist()):
            row: dict[str, Any] = {k: v[i] for k, v in batch.fields.items()}
            row[pk] = row_id
            row[vf] = batch.vectors[i]
            row.update(tags)
            rows.append(row)
        # Upsert keyed by the source id: a batch written twice (after a crash
        # or a re-run) leaves one row, never a duplicate.
        self.client.upsert(target, rows)

    def flush(self, name: str) -> None:
        self.client.flush(name)

    def fetch_vectors(self, name: str, vector_field: str, ids: np.ndarray) -> np.ndarray:
        self._ensure_loaded(name)
        rows = self.client.get(name, ids=ids.tolist(), output_fields=[vector_field])
        by_id = {r[self._pk_name(name)]: r[vector_field] for r in rows}
        missing = [i for i in ids.tolist() if i not in by_id]
        if missing:
            raise StoreError(f"collection '{name}' lacks ids {missing[:5]} that were just written")
        return np.asarray([by_id[i] for i in ids.tolist()], dtype=np.float32)

    def _pk_name(self, name: str) -> str:
        fields = self.client.describe_collection(name)["fields"]
        return str(next(f["name"] for f in fields if f.get("is_primary")))

    def alias_target(self, alias: str) -> str | None:
        try:
            return str(self.client.describe_alias(alias)["collection_name"])
        except MilvusException:
            return None

    def point_alias(self, alias: str, target: str) -> None:
        if self.alias_target(alias) is not None:
            self.client.alter_alias(target, alias)  # one atomic switch for readers
        else:
            self.client.create_alias(target, alias)
