"""Milvus backend (Milvus Lite files and Milvus servers) over ``MilvusClient``."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
from pymilvus import DataType, MilvusClient, MilvusException
from pymilvus.client.types import LoadState

from dmu_migrate.errors import AccessDenied, InputError, StoreError, StoreUnavailable
from dmu_migrate.stores import (
    access,
    lite_lock,
    milvus_columns,
    milvus_partitions,
    milvus_rank,
    milvus_schema,
    milvus_search,
)
from dmu_migrate.stores.base import (
    LEDGER_COLLECTION,
    PARTITION_KEY,
    RANK_FIELD,
    RESERVED_NAMES,
    TAG_SOURCE,
    Batch,
    CollectionInfo,
    ForeignSchema,
    Hits,
    Id,
    VectorStore,
    choose_vector_field,
    id_array,
    redact,
)
from dmu_migrate.stores.client_errors import store_boundary, store_error
from dmu_migrate.stores.milvus_errors import MILVUS

log = logging.getLogger(__name__)

_VECTOR_TYPES = {DataType.FLOAT_VECTOR}
_LEDGER_MAX_LENGTH = 65535
_GET_CHUNK = 1000  # ids per get(): keeps the filter expression within server limits
# A migration reads what it just wrote (ledger, counts, verification); a server's
# default "Bounded" consistency may not show those writes yet.
STRONG = "Strong"


def _one_line(text: str) -> str:
    """Server messages can span lines (a parser's caret diagram); errors are one line."""
    return " ".join(str(text).split())


_literal = milvus_columns.literal


def _open_failure(uri: str, token: str | None, exc: Exception) -> StoreError:
    """Why a store did not open, named: a Lite file in use, credentials, or the address."""
    where = redact(uri)
    if uri.endswith(".db") and lite_lock.locked(uri):
        return StoreError(lite_lock.in_use(uri, where))
    # pymilvus also takes user:password from the URI (http://user:password@host:19530).
    given = bool(token) or "@" in uri.split("://", 1)[-1].split("/", 1)[0]
    denied = access.access_error(exc, f"Milvus at '{where}'", token_given=given)
    if denied is not None:
        return denied
    text = redact(_one_line(exc.message if isinstance(exc, MilvusException) else str(exc)))
    return StoreError(f"cannot open Milvus at '{where}' ({text}); check --uri")


def _and(*exprs: str | None) -> str:
    parts = [f"({e})" for e in exprs if e]
    return " and ".join(parts)


# Every public method maps pymilvus's exceptions into the error tree, here and only here.
@store_boundary(MILVUS)
class MilvusStore:
    def __init__(self, client: MilvusClient, uri: str) -> None:
        self.client = client
        self.uri = redact(uri)  # for messages; the client holds the real one
        self.shared = not uri.endswith(".db")  # a Lite file is locked to one process
        self._loaded: set[str] = set()
        self._columnar = milvus_columns.available(client)
        self._schemas: dict[str, dict[str, Any]] = {}  # write targets, described once
        self._partitions: dict[str, set[str]] = {}  # partitions known to exist, per write target
        # The ledger collection, once seen (or made) and loaded, is not looked up again: a
        # lease is taken by a read and a write that must lie within SETTLE / 2 of each other
        # (evolve/ledger.py), and on a loaded server each extra call costs a good part of that.
        self._ledger_ready = False
        # Where create_like and target_problem read the source collection's indexes and
        # partitions: this store, or another Milvus (evolve --target-uri, read_setup_from).
        self._origin, self._origin_shared = client, self.shared

    @classmethod
    def connect(cls, uri: str, token: str | None = None) -> MilvusStore:
        if uri.endswith(".db"):
            # Milvus Lite has no MVCC snapshot and pymilvus warns about it on every
            # iterator; migrations verify counts and id sets instead of relying on one.
            quiet = logging.getLogger("pymilvus")
            if quiet.level < logging.ERROR:  # never louder than the command line asked
                quiet.setLevel(logging.ERROR)
            # A Lite file that fails to open is reported below in one line, not as
            # milvus_lite's own logged traceback.
            lite = logging.getLogger("milvus_lite")
            if lite.level < logging.CRITICAL:
                lite.setLevel(logging.CRITICAL)
        try:
            client = MilvusClient(uri=uri, token=token or "")
        except Exception as exc:  # connection errors surface as many types
            raise _open_failure(uri, token, exc) from exc
        return cls(client, uri)

    def close(self) -> None:
        self.client.close()

    # -- discovery ---------------------------------------------------------
    def has_collection(self, name: str) -> bool:
        return bool(self.client.has_collection(name))

    def _ensure_loaded(self, name: str) -> None:
        """Queries need a loaded collection; Milvus Lite starts every process with none loaded."""
        if name in self._loaded:
            return
        if self.client.get_load_state(name)["state"] != LoadState.Loaded:
            # Lite builds the vector index of any segment that lacks one here, in this
            # call: minutes for a large collection last written by a process that had it
            # released. Said before and after, so a long silence has a name.
            log.info("loading collection '%s'", name)
            clock = time.perf_counter()
            self.client.load_collection(name)
            log.info("loaded collection '%s' in %.1f s", name, time.perf_counter() - clock)
        self._loaded.add(name)

    def describe(self, name: str, vector_field: str | None = None) -> CollectionInfo:
        if not self.client.has_collection(name):
            present = [c for c in self.client.list_collections() if c != LEDGER_COLLECTION]
            raise StoreError(
                f"collection '{name}' does not exist in '{self.uri}'; check --collection "
                f"(present: {', '.join(present) or 'none'})"
            )
        desc = self.client.describe_collection(name)
        concrete = desc["collection_name"]
        vectors = {
            f["name"]: int(f["params"]["dim"]) for f in desc["fields"] if f["type"] in _VECTOR_TYPES
        }
        vector_field = choose_vector_field(name, vectors, vector_field)
        pk = next(f for f in desc["fields"] if f.get("is_primary"))
        specs = milvus_schema.read_indexes(self.client, concrete)
        bare = milvus_schema.unindexed_vectors(desc, specs, _VECTOR_TYPES)
        if bare and self.shared:
            # A server loads a collection for reading only when every vector field has an index.
            raise StoreError(
                f"collection '{concrete}' has no index on vector field '{bare[0]}', so Milvus "
                f"cannot load it for reading; create one (e.g. AUTOINDEX with the collection's "
                f"metric) and run evolve again"
            )
        index = next((s for s in specs if s.field == vector_field), None)
        return CollectionInfo(
            requested=name,
            name=concrete,
            alias=name if concrete != name else None,
            pk_field=pk["name"],
            vector_field=vector_field,
            dim=vectors[vector_field],
            # Without an index (Milvus Lite) nothing states a metric; COSINE is Milvus's default.
            metric=(index.metric or "COSINE") if index else "COSINE",
            count=self.count(concrete),
            vector_fields=vectors,
            schema=desc,
        )

    def count(self, name: str, filter: str | None = None) -> int:
        self._ensure_loaded(name)
        try:
            rows = self.client.query(
                name, filter=filter or "", output_fields=["count(*)"], consistency_level=STRONG
            )
        except MilvusException as exc:
            if not filter:
                raise  # not the filter's fault: the boundary maps it
            raise InputError(
                f"filter '{filter}' is not valid for '{name}' ({_one_line(exc.message)}); fix --filter"
            ) from exc
        return int(rows[0]["count(*)"])

    # -- reading -------------------------------------------------------------
    def _iterate(
        self, name: str, batch_size: int, expr: str, fields: list[str]
    ) -> Iterator[list[dict[str, Any]]]:
        self._ensure_loaded(name)
        # pymilvus 3 iterators on a 2.x server read at a client-side timestamp and can
        # miss rows not yet flushed; a Strong query first makes the server catch up.
        self.client.query(name, filter="", output_fields=["count(*)"], consistency_level=STRONG)
        # query_iterator walks the collection in primary-key order; hand-rolled
        # "id > last" paging with plain query() skips rows on Milvus Lite.
        iterator = self.client.query_iterator(
            name, batch_size=batch_size, filter=expr, output_fields=fields, consistency_level=STRONG
        )
        try:
            while rows := iterator.next():
                yield rows
        finally:
            iterator.close()

    def iter_batches(
        self,
        info: CollectionInfo,
        batch_size: int,
        after: Id | None = None,
        filter: str | None = None,
        vector_field: str | None = None,
        until: Id | None = None,
    ) -> Iterator[Batch]:
        field = vector_field or info.vector_field
        cursor = None if after is None else f"{info.pk_field} > {_literal(after)}"
        upper = None if until is None else f"{info.pk_field} <= {_literal(until)}"
        expr = _and(filter, cursor, upper)
        partitions = milvus_partitions.named(self.client, info.name)
        for batch in self._read_pages(info, field, batch_size, expr):
            if partitions:
                placed = milvus_partitions.locate(
                    self.client, info.name, info.pk_field, batch.ids, partitions, expr, True
                )
                batch = replace(batch, fields={**batch.fields, PARTITION_KEY: placed})
            yield batch

    def _read_pages(
        self, info: CollectionInfo, field: str, batch_size: int, expr: str
    ) -> Iterator[Batch]:
        if self._columnar:
            self._ensure_loaded(info.name)
            dim = info.vector_fields.get(field, info.dim)
            for ids, vectors, columns in milvus_columns.pages(
                self.client, info.name, info.pk_field, field, dim, batch_size, expr, ["*"]
            ):
                assert vectors is not None  # a vector field was asked for
                yield Batch(ids, vectors, columns)
            return
        for rows in self._iterate(info.name, batch_size, expr, ["*"]):
            yield self._to_batch(rows, info.pk_field, field)

    def iter_ids(
        self, name: str, batch_size: int, filter: str | None = None
    ) -> Iterator[np.ndarray]:
        pk = self._pk(name)
        if self._columnar:
            self._ensure_loaded(name)
            for ids, _, _ in milvus_columns.pages(
                self.client, name, pk, None, 0, batch_size, filter or "", [pk]
            ):
                yield ids
            return
        for rows in self._iterate(name, batch_size, filter or "", [pk]):
            yield id_array([r[pk] for r in rows])

    @staticmethod
    def _to_batch(rows: list[dict[str, Any]], pk: str, field: str) -> Batch:
        ids = id_array([r[pk] for r in rows])
        vectors = np.asarray([r[field] for r in rows], dtype=np.float32)
        other = [k for k in milvus_columns.row_keys(rows) if k not in (pk, field)]
        return Batch(ids, vectors, {k: [r.get(k) for r in rows] for k in other})

    def fetch(self, info: CollectionInfo, ids: np.ndarray, vector_field: str) -> Batch:
        self._ensure_loaded(info.name)
        pk = self._pk(info.name)
        by_id: dict[Any, dict[str, Any]] = {}
        wanted = ids.tolist()
        for start in range(0, len(wanted), _GET_CHUNK):
            chunk = wanted[start : start + _GET_CHUNK]
            for row in self.client.query(
                info.name,
                filter=milvus_columns.in_list(pk, chunk),
                output_fields=["*"],
                consistency_level=STRONG,
                timeout=milvus_schema.TIMEOUT,
            ):
                by_id[row[pk]] = row
        missing = [i for i in wanted if i not in by_id]
        if missing:
            raise StoreError(
                f"collection '{info.name}' lacks {len(missing)} expected ids (first: {missing[:3]})"
            )
        batch = self._to_batch([by_id[i] for i in wanted], pk, vector_field)
        partitions = milvus_partitions.named(self.client, info.name)
        if partitions:
            placed = milvus_partitions.locate(self.client, info.name, pk, batch.ids, partitions)
            batch = replace(batch, fields={**batch.fields, PARTITION_KEY: placed})
        return batch

    def search(
        self, name: str, vector_field: str, queries: np.ndarray, k: int, widen: int = 1
    ) -> Hits:
        self._ensure_loaded(name)
        concrete = self.client.describe_collection(name)["collection_name"]
        specs = milvus_schema.read_indexes(self.client, concrete)
        index = next((s for s in specs if s.field == vector_field), None)
        params, said = milvus_search.fitted(index, k, lite=not self.shared, widen=widen)
        metric = (index.metric if index else None) or "COSINE"  # Milvus's default metric
        hits = self.client.search(
            name,
            data=list(queries),
            limit=k,
            anns_field=vector_field,
            search_params={"metric_type": metric, "params": params},
            output_fields=[],
            consistency_level=STRONG,
        )
        pk = self._pk(name)  # hits are keyed by the primary key's name, not always "id"
        return Hits(
            [[h[pk] if pk in h else h["id"] for h in row] for row in hits],
            [[float(h["distance"]) for h in row] for row in hits],
            metric,
            said,
            exact=index is None or index.index_type.upper() in ("FLAT", "BIN_FLAT"),
        )

    def _pk(self, name: str) -> str:
        fields = self.client.describe_collection(name)["fields"]
        return str(next(f["name"] for f in fields if f.get("is_primary")))

    # -- writing -------------------------------------------------------------
    def read_setup_from(self, source: VectorStore) -> None:
        if not isinstance(source, MilvusStore):
            raise InputError(f"'{source.uri}' is not a Milvus store; no setup to read from it")
        self._origin, self._origin_shared = source.client, source.shared

    def create_like(self, source: CollectionInfo, target: str, new_dim: int) -> None:
        self._schemas.pop(target, None)
        self._partitions.pop(target, None)
        if isinstance(source.schema, ForeignSchema):  # a source in another store kind
            milvus_schema.create_foreign(self.client, source, target, new_dim)
            return
        desc = source.schema
        schema = milvus_schema.build_schema(desc, source.vector_field, new_dim)
        specs = milvus_schema.read_indexes(self._origin, source.name)
        for bare in milvus_schema.unindexed_vectors(desc, specs, _VECTOR_TYPES):
            log.info("'%s' has no index on '%s'; '%s' gets none either", source.name, bare, target)
        lite = (not self._origin_shared, not self.shared)
        milvus_schema.create_with_indexes(
            self.client,
            desc,
            target,
            {"schema": schema, **milvus_schema.create_options(desc, lite[0])},
            specs,
            skip=source.vector_field,
            partitions=milvus_partitions.named(self._origin, source.name),
            lite=lite,
        )

    def target_problem(self, source: CollectionInfo, target: str, new_dim: int) -> str | None:
        desc = self.client.describe_collection(target)
        if isinstance(source.schema, ForeignSchema):
            return milvus_schema.foreign_problem(desc, source, new_dim)
        fields = {f["name"]: f for f in desc["fields"]}
        missing = [t for t in RESERVED_NAMES if t not in fields]
        if missing:
            return f"it has no tag fields {missing}"
        nullable = milvus_schema.lost_nullable(source.schema, desc)
        if nullable is not None:
            return f"its field '{nullable}' cannot hold null, unlike in '{source.name}'"
        vf = fields.get(source.vector_field)
        if vf is None or int(vf["params"].get("dim", -1)) != new_dim:
            return f"its field '{source.vector_field}' is not a {new_dim}-d float vector"
        expected = {f["name"] for f in source.schema["fields"]} | set(RESERVED_NAMES)
        # A rank field the user added for plan-backfill --tag is theirs: evolve leaves it be.
        if set(fields) - ({RANK_FIELD} - expected) != expected:
            return f"its fields {sorted(fields)} differ from the source's plus tags"
        built = {i.field: i for i in milvus_schema.read_indexes(self.client, target)}
        for spec in milvus_schema.read_indexes(self._origin, source.name):
            have = built.get(spec.field)
            if have is None or not have.same_build(spec):
                got = have.describe() if have else "no index"
                return f"its index on '{spec.field}' is {got}, not {spec.describe()} as in '{source.name}'"
        return None

    def add_vector_field(self, info: CollectionInfo, name: str, dim: int) -> None:
        try:
            self.client.add_collection_field(
                info.name, field_name=name, data_type=DataType.FLOAT_VECTOR, dim=dim, nullable=True
            )
        except Exception as exc:  # Lite raises UNIMPLEMENTED, 2.x servers a schema error
            raise StoreError(
                f"Milvus at '{self.uri}' cannot add a vector field to collection '{info.name}' "
                f"(needs Milvus >= 3.0); use --strategy new-collection"
            ) from exc

    def write_rows(
        self, source: CollectionInfo, target: str, batch: Batch, tags: dict[str, str]
    ) -> None:
        fields = dict(batch.fields)
        placed = fields.pop(PARTITION_KEY, None)
        for output in milvus_schema.function_outputs(self._described(target)):
            fields.pop(output, None)  # Milvus computes these from their input fields
        if TAG_SOURCE not in fields and TAG_SOURCE in self._field_names(target):
            # Every field must be supplied; "" reads as "checksum unknown" (evolve/sync.py).
            fields[TAG_SOURCE] = [""] * len(batch)
        batch = Batch(batch.ids, batch.vectors, fields)
        if placed is None:
            self._upsert(source, target, batch, tags, None)
            return
        groups = milvus_partitions.groups(placed)
        known = self._partitions.setdefault(target, set())
        milvus_partitions.ensure(self.client, target, set(groups), known)
        for partition, rows in groups.items():
            # Each row goes back into the partition it was read from.
            part = batch if len(rows) == len(batch) else _take(batch, rows)
            name = None if partition == milvus_partitions.DEFAULT else partition
            self._upsert(source, target, part, tags, name)

    def _upsert(
        self,
        source: CollectionInfo,
        target: str,
        batch: Batch,
        tags: dict[str, str],
        partition: str | None,
    ) -> None:
        pk, vf = source.pk_field, source.vector_field
        # Upsert keyed by the source id: a batch written twice (after a crash
        # or a re-run) leaves one row, never a duplicate.
        schema = self._write_schema(target)
        if schema is not None:
            columns: dict[str, Any] = {**batch.fields, pk: batch.ids}
            columns.update({k: [v] * len(batch) for k, v in tags.items()})
            if all(f["name"] in columns or f["name"] == vf for f in schema["fields"]):
                milvus_columns.upsert(
                    self.client, target, schema, columns, vf, batch.vectors, partition
                )
                return
        # A key outside the schema is a dynamic field: None there means the row lacks the
        # key (reads fill absent keys with None), so it stays absent rather than null.
        declared = self._field_names(target)
        rows = []
        for i, row_id in enumerate(batch.ids.tolist()):
            row: dict[str, Any] = {
                k: v[i] for k, v in batch.fields.items() if v[i] is not None or k in declared
            }
            row[pk] = row_id
            row[vf] = batch.vectors[i]
            row.update(tags)
            rows.append(row)
        self.client.upsert(target, rows, partition_name=partition or "")

    def _described(self, name: str) -> dict[str, Any]:
        """A write target's schema, described once per store."""
        if name not in self._schemas:
            self._schemas[name] = self.client.describe_collection(name)
        return self._schemas[name]

    def _field_names(self, name: str) -> set[str]:
        return {f["name"] for f in self._described(name)["fields"]}

    def _write_schema(self, name: str) -> dict[str, Any] | None:
        """The target's schema when the columnar path can write it, else None."""
        if not self._columnar:
            return None
        schema = self._described(name)
        return schema if milvus_columns.write_supported(schema) else None

    def write_vectors(
        self,
        info: CollectionInfo,
        field: str,
        ids: np.ndarray,
        vectors: np.ndarray,
        tags: dict[str, str],
    ) -> None:
        # Milvus upsert overwrites whole rows, so the other fields are read back first.
        current = self.fetch(info, ids, field)
        columns = {f["name"] for f in self.client.describe_collection(info.name)["fields"]}
        dynamic = bool(info.schema.get("enable_dynamic_field", False)) if info.schema else False
        keep_tags = {k: v for k, v in tags.items() if k in columns or dynamic}
        replaced = Batch(current.ids, vectors, current.fields)
        self.write_rows(_with_vector_field(info, field), info.name, replaced, keep_tags)

    def delete_ids(self, name: str, ids: np.ndarray) -> None:
        if len(ids):
            pk = self._pk(name)
            wanted = ids.tolist()
            for start in range(0, len(wanted), _GET_CHUNK):
                chunk = wanted[start : start + _GET_CHUNK]
                self.client.delete(
                    name, filter=milvus_columns.in_list(pk, chunk), timeout=milvus_schema.TIMEOUT
                )

    def tag_filter(self, tag: str, value: str) -> str:
        return f"{tag} == {_literal(value)}"

    def source_problem(self, name: str, allowed: dict[str, list[str] | None]) -> str | None:
        self._ensure_loaded(name)
        return milvus_schema.source_problem(self.client, name, allowed, server=self.shared)

    def rank_problem(self, name: str) -> str | None:
        return milvus_rank.problem(self.client, name, server=self.shared)

    def write_ranks(self, name: str, ids: np.ndarray, ranks: np.ndarray | None) -> int:
        self._ensure_loaded(name)
        return milvus_rank.write(self.client, name, self._pk(name), ids, ranks)

    def rank_filter(self) -> str:
        return milvus_rank.rank_filter()

    def flush(self, name: str) -> None:
        self.client.flush(name)

    def drop_collection(self, name: str) -> None:
        self.client.drop_collection(name)
        if name == LEDGER_COLLECTION:
            self._ledger_ready = False
        self._loaded.discard(name)
        self._schemas.pop(name, None)
        self._partitions.pop(name, None)

    # -- aliases -------------------------------------------------------------
    def alias_target(self, alias: str) -> str | None:
        try:
            return str(self.client.describe_alias(alias)["collection_name"])
        except MilvusException as exc:
            if isinstance(
                store_error(exc, MILVUS, self.uri, "alias"), AccessDenied | StoreUnavailable
            ):
                raise  # the boundary maps it: the server was down or refused, not the alias absent
            return None

    def point_alias(self, alias: str, target: str) -> None:
        if self.alias_target(alias) is not None:
            self.client.alter_alias(target, alias)  # one atomic switch for readers
        else:
            self.client.create_alias(target, alias)

    # -- ledger --------------------------------------------------------------
    def _ledger(self) -> str:
        if self._ledger_ready:
            return LEDGER_COLLECTION
        if not self.client.has_collection(LEDGER_COLLECTION, timeout=milvus_schema.TIMEOUT):
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=512)
            schema.add_field("record", DataType.VARCHAR, max_length=_LEDGER_MAX_LENGTH)
            # Milvus requires a vector field in every collection; this one is unused.
            schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)
            index = self.client.prepare_index_params()
            index.add_index(field_name="unused", index_type="AUTOINDEX", metric_type="L2")
            self.client.create_collection(
                LEDGER_COLLECTION,
                schema=schema,
                index_params=index,
                consistency_level=STRONG,
                timeout=milvus_schema.TIMEOUT,
            )
        self._ensure_loaded(LEDGER_COLLECTION)
        self._ledger_ready = True
        return LEDGER_COLLECTION

    def ledger_get(self, key: str) -> dict[str, Any] | None:
        if not self._ledger_ready and not self.client.has_collection(
            LEDGER_COLLECTION, timeout=milvus_schema.TIMEOUT
        ):
            return None  # reading must not create the ledger in a store never migrated
        rows = self.client.get(
            self._ledger(),
            ids=[key],
            output_fields=["record"],
            consistency_level=STRONG,
            timeout=milvus_schema.TIMEOUT,
        )
        return json.loads(rows[0]["record"]) if rows else None

    def ledger_put(self, key: str, record: dict[str, Any]) -> None:
        # Non-ASCII cursors stay as they are, not \uXXXX: a VARCHAR limit counts bytes, and a
        # JSON escape takes up to 12 of them for a 4-byte character.
        text = json.dumps(record, sort_keys=True, default=str, ensure_ascii=False)
        size = len(text.encode())
        if size > _LEDGER_MAX_LENGTH:
            raise StoreError(
                f"ledger record '{key}' is {size} bytes, over Milvus's limit of "
                f"{_LEDGER_MAX_LENGTH}; the cursor or the skipped ids are too long for it"
            )
        row = {"key": key, "record": text, "unused": [0.0, 0.0]}
        self.client.upsert(self._ledger(), [row], timeout=milvus_schema.TIMEOUT)

    def ledger_list(self) -> list[dict[str, Any]]:
        if not self.client.has_collection(LEDGER_COLLECTION):
            return []
        records: list[dict[str, Any]] = []
        for rows in self._iterate(self._ledger(), 1000, "", ["record"]):
            records.extend(json.loads(r["record"]) for r in rows)
        return records


def _take(batch: Batch, rows: list[int]) -> Batch:
    """The rows at positions ``rows`` of a batch."""
    return Batch(
        batch.ids[rows],
        batch.vectors[rows],
        {k: [v[i] for i in rows] for k, v in batch.fields.items()},
    )


def _with_vector_field(info: CollectionInfo, field: str) -> CollectionInfo:
    """The same collection, seen with ``field`` as the vector being written."""
    return replace(info, vector_field=field)
