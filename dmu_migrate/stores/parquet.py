"""A store over a directory of Parquet files (``parquet:path/to/dir``): offline evolve, snapshots.

Layout, one writer at a time::

    dir/aliases.json               {alias: collection}
    dir/ledger.json                {key: record}
    dir/<collection>/schema.json   {"format": 1, "pk": "id", "metric": "COSINE",
                                    "vector_fields": {"vector": 128}}
    dir/<collection>/part-<h>.parquet   whole rows (pk, vector columns as fixed-size
                                        float32 lists, scalar fields, tags)
    dir/<collection>/del-<h>.parquet    tombstones (pk column only)

Every file is written to a temporary name and renamed, so a reader never sees half a
file. ``<h>`` is a hash of the batch's ids, so writing the same batch again replaces
its file instead of adding one; each file records a write sequence number in its
metadata (``dmu_seq``) and reads keep, per id, the row of the latest file.

Filters use a subset of the Milvus expression syntax, so that one filter text reads
the same on both: clauses ``field op value`` joined by ``and``, with ``==``, ``!=``,
``<``, ``<=``, ``>``, ``>=``, ``in [...]``, ``not in [...]`` and JSON values
(``dmu_version != "v2" and label in [1, 2]``). A row without the field matches only
``!=`` and ``not in`` (a row not yet tagged is "not at version v2").
Other vector fields travel in ``Batch.fields`` as in the Qdrant store
(``VECTOR_KEY_PREFIX + name``), so snapshots of either store round-trip.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dmu_migrate.errors import InputError, StoreError
from dmu_migrate.stores import parquet_parts
from dmu_migrate.stores.base import (
    RANK_FIELD,
    TAG_FIX,
    TAG_ORIGIN,
    VECTOR_KEY_PREFIX,
    Batch,
    CollectionInfo,
    Hits,
    Id,
    VectorStore,
    choose_vector_field,
    id_array,
)
from dmu_migrate.stores.client_errors import Client, store_boundary
from dmu_migrate.stores.parquet_filter import milvus_style_mask

_SEQ = b"dmu_seq"
_QUERY_ROWS = 64  # queries scored at once by search


def _cosine(q: np.ndarray, g: np.ndarray) -> np.ndarray:
    unit = np.maximum(np.linalg.norm(g, axis=1), 1e-12)
    return (q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)) @ g.T / unit


def _squared_l2(q: np.ndarray, g: np.ndarray) -> np.ndarray:
    return np.maximum((q * q).sum(1)[:, None] - 2 * q @ g.T + (g * g).sum(1)[None, :], 0.0)


# search's score per metric, and whether higher is nearer (Milvus's conventions: L2 squared).
_SCORES = {
    "COSINE": (_cosine, True),
    "IP": (lambda q, g: q @ g.T, True),
    "L2": (_squared_l2, False),
}


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _vector_column(rows: list[Any], dim: int) -> pa.Array:
    """Fixed-size float32 lists; None rows (a point without this vector) stay null."""
    flat = np.zeros((len(rows), dim), dtype=np.float32)
    present = np.ones(len(rows), dtype=bool)
    for i, row in enumerate(rows):
        if row is None:
            present[i] = False
        else:
            flat[i] = np.asarray(row, dtype=np.float32)
    values = pa.array(flat.reshape(-1), type=pa.float32())
    return pa.FixedSizeListArray.from_arrays(values, dim, mask=pa.array(~present))


def _column(collection: str, key: str, values: list[Any]) -> pa.Array:
    """One field's values as an Arrow column; one line naming the field when they cannot be."""
    try:
        return pa.array([v.tolist() if isinstance(v, np.ndarray) else v for v in values])
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        detail = " ".join(str(exc).split())[:160]
        raise StoreError(
            f"field '{key}' of the rows written to '{collection}' holds values of mixed types "
            f"that one Parquet column cannot hold ({detail}); write them to a Milvus or Qdrant "
            f"store, or make the field's values one type"
        ) from exc


# pyarrow's errors and the disk's: every public method maps them into the error tree here.
@store_boundary(Client("Parquet", (pa.ArrowException, OSError)))
class ParquetStore:
    def __init__(self, root: Path, uri: str) -> None:
        self.root = root
        self.uri = uri
        self.shared = False  # files rewritten in place: one writer at a time
        # Per part file: (mtime_ns, size) -> table, so a read after a write loads only new files.
        self._parts: dict[Path, tuple[tuple[int, int, int], int, pa.Table]] = {}
        self._merged: dict[Path, tuple[tuple[Any, ...], pa.Table]] = {}  # per collection
        self._last_seq = 0
        self._types = parquet_parts.ColumnTypes()  # what each column merges to, for writes

    @classmethod
    def connect(cls, uri: str, token: str | None = None) -> ParquetStore:
        path = uri.removeprefix("parquet:")
        if not path:
            raise InputError(
                f"Parquet store URI '{uri}' names no directory; use parquet:path/to/dir"
            )
        root = Path(path)
        if root.exists() and not root.is_dir():
            raise StoreError(f"Parquet store '{root}' is a file, not a directory; fix --uri")
        root.mkdir(parents=True, exist_ok=True)
        return cls(root, uri)

    def close(self) -> None:
        self._parts.clear()
        self._merged.clear()

    # -- layout -------------------------------------------------------------------
    def _read_json(self, path: Path, shape: str, fix: str) -> Any:
        """A metadata file's JSON, or one line naming the file, its expected shape and the fix."""
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "it is not valid JSON"
            raise self._bad_shape(path, str(reason), shape, fix) from None

    def _bad_shape(self, path: Path, what: str, shape: str, fix: str) -> StoreError:
        return StoreError(
            f"{path} in Parquet store '{self.uri}' is damaged: {what}, where it should hold "
            f"{shape}; {fix}"
        )

    def _read_object(self, path: Path, shape: str, fix: str) -> dict[str, Any]:
        """A metadata file's JSON object; anything else is named with its shape and fix."""
        raw = self._read_json(path, shape, fix)
        if not isinstance(raw, dict):
            raise self._bad_shape(path, f"it holds {type(raw).__name__}", shape, fix)
        return raw

    def _aliases(self) -> dict[str, str]:
        path = self.root / "aliases.json"
        if not path.exists():
            return {}
        shape = 'an object of alias -> collection names ({"docs": "docs__v2"})'
        fix = (
            "restore it from a backup or write it again in that shape (or delete it: the "
            "collections stay, the aliases are gone)"
        )
        raw = self._read_object(path, shape, fix)
        for alias, target in raw.items():
            if not isinstance(target, str) or not target:
                raise self._bad_shape(
                    path, f"alias '{alias}' maps to {json.dumps(target)}", shape, fix
                )
        return dict(raw)

    def _concrete(self, name: str) -> str:
        concrete = self._aliases().get(name, name)
        if not (self.root / concrete / "schema.json").exists():
            present = sorted(p.parent.name for p in self.root.glob("*/schema.json"))
            raise StoreError(
                f"collection '{name}' does not exist in '{self.uri}'; check --collection "
                f"(present: {', '.join(present) or 'none'})"
            )
        return concrete

    def _schema(self, name: str) -> dict[str, Any]:
        path = self.root / self._concrete(name) / "schema.json"
        shape = (
            'an object such as {"format": 1, "pk": "id", "metric": "COSINE", '
            '"vector_fields": {"vector": 128}}'
        )
        fix = "restore it from a backup or write it again in that shape"
        raw = self._read_object(path, shape, fix)
        for key in ("pk", "metric"):
            if not isinstance(raw.get(key), str) or not raw[key]:
                raise self._bad_shape(path, f"'{key}' is {json.dumps(raw.get(key))}", shape, fix)
        vectors = raw.get("vector_fields")
        if (
            not isinstance(vectors, dict)
            or not vectors
            or not all(
                isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in vectors.values()
            )
        ):
            raise self._bad_shape(path, f"'vector_fields' is {json.dumps(vectors)}", shape, fix)
        return dict(raw)

    def _next_seq(self) -> int:
        # Strictly increasing within a process even when the clock does not move.
        self._last_seq = max(time.time_ns(), self._last_seq + 1)
        return self._last_seq

    def _table(self, name: str) -> pa.Table:
        """The collection's live rows: latest write per id, tombstones applied, id-ordered."""
        directory = self.root / self._concrete(name)
        pk = self._schema(name)["pk"]
        tables = []
        listing = []
        for path in sorted(directory.glob("*.parquet")):
            stat = path.stat()
            key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)  # a rename makes a new inode
            listing.append((path.name, key))
            cached = self._parts.get(path)
            if cached is None or cached[0] != key:
                table = parquet_parts.read_part(path)
                seq = int((table.schema.metadata or {}).get(_SEQ, b"0"))
                deleted = path.name.startswith("del-")
                table = table.replace_schema_metadata(None).append_column(
                    "__deleted", pa.array(np.full(len(table), deleted))
                )
                cached = (key, seq, table)
                self._parts[path] = cached
            tables.append((cached[1], path.name, cached[2]))
        signature = tuple(listing)
        merged_cache = self._merged.get(directory)
        if merged_cache is not None and merged_cache[0] == signature:
            return merged_cache[1]  # describe, count and iterate without re-merging
        parquet_parts.check_parts(
            self._schema(name), [(directory / part, t) for _, part, t in tables]
        )
        if not tables:
            return pa.table({pk: pa.array([], pa.int64())})
        ordered = [t for _, _, t in sorted(tables, key=lambda t: (t[0], t[1]))]
        merged = pa.concat_tables(ordered, promote_options="permissive")
        merged = merged.append_column("__order", pa.array(np.arange(len(merged))))
        latest = merged.group_by(pk).aggregate([("__order", "max")])["__order_max"]
        merged = merged.filter(pc.is_in(merged["__order"], value_set=latest))
        merged = merged.filter(pc.invert(merged["__deleted"]))
        live = merged.drop_columns(["__order", "__deleted"]).sort_by(pk)
        self._merged[directory] = (signature, live)
        return live

    # -- discovery -------------------------------------------------------------------
    def has_collection(self, name: str) -> bool:
        target = self._aliases().get(name, name)
        return (self.root / target / "schema.json").exists()

    def describe(self, name: str, vector_field: str | None = None) -> CollectionInfo:
        concrete = self._concrete(name)
        schema = self._schema(concrete)
        vectors: dict[str, int] = {k: int(v) for k, v in schema["vector_fields"].items()}
        vector_field = choose_vector_field(name, vectors, vector_field)
        return CollectionInfo(
            requested=name,
            name=concrete,
            alias=name if concrete != name else None,
            pk_field=schema["pk"],
            vector_field=vector_field,
            dim=vectors[vector_field],
            metric=schema["metric"],
            count=self.count(concrete),
            vector_fields=vectors,
            schema=schema,
        )

    def count(self, name: str, filter: str | None = None) -> int:
        table = self._table(name)
        return len(table.filter(milvus_style_mask(table, filter))) if filter else len(table)

    # -- reading -------------------------------------------------------------------
    def _selected(
        self, name: str, after: Id | None, filter: str | None, until: Id | None = None
    ) -> pa.Table:
        table = self._table(name)
        if filter:
            table = table.filter(milvus_style_mask(table, filter))
        pk = self._schema(name)["pk"]
        if after is not None:
            table = table.filter(pc.greater(table[pk], pa.scalar(after)))
        if until is not None:
            table = table.filter(pc.less_equal(table[pk], pa.scalar(until)))
        return table

    def iter_batches(
        self,
        info: CollectionInfo,
        batch_size: int,
        after: Id | None = None,
        filter: str | None = None,
        vector_field: str | None = None,
        until: Id | None = None,
    ) -> Iterator[Batch]:
        table = self._selected(info.name, after, filter, until)
        field = info.vector_field if vector_field is None else vector_field
        for start in range(0, len(table), batch_size):
            yield self._to_batch(info.name, table.slice(start, batch_size), field)

    def iter_ids(
        self, name: str, batch_size: int, filter: str | None = None
    ) -> Iterator[np.ndarray]:
        pk = self._schema(name)["pk"]
        ids = self._selected(name, None, filter)[pk]
        for start in range(0, len(ids), batch_size):
            yield self._ids(ids.slice(start, batch_size))

    @staticmethod
    def _ids(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
        if pa.types.is_integer(column.type):
            return np.asarray(column.to_numpy(), dtype=np.int64)
        return id_array(column.to_pylist())

    def _to_batch(self, name: str, table: pa.Table, field: str) -> Batch:
        schema = self._schema(name)
        pk, vector_fields = schema["pk"], schema["vector_fields"]
        if field not in table.column_names or table[field].null_count:
            raise StoreError(
                f"collection '{name}' has rows without vector '{field}'; "
                f"write it first or choose another --vector-field"
            )
        column = table[field].combine_chunks()
        vectors = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
        fields: dict[str, list[Any]] = {}
        for cname in table.column_names:
            if cname in (pk, field):
                continue
            values = table[cname].to_pylist()
            if cname in vector_fields:
                fields[VECTOR_KEY_PREFIX + cname] = [
                    None if v is None else np.asarray(v, dtype=np.float32) for v in values
                ]
            else:
                fields[cname] = values
        dim = int(vector_fields[field])
        return Batch(self._ids(table[pk]), vectors.reshape(len(table), dim), fields)

    def fetch(self, info: CollectionInfo, ids: np.ndarray, vector_field: str) -> Batch:
        return self._to_batch(info.name, self._rows(info.name, ids), vector_field)

    def search(
        self, name: str, vector_field: str, queries: np.ndarray, k: int, widen: int = 1
    ) -> Hits:
        """Exact search by the collection's metric: Parquet has no index, so every row is
        scored (``widen`` has nothing to widen)."""
        info = self.describe(name, vector_field)
        batch = self._to_batch(info.name, self._table(info.name), vector_field)
        score, higher = _SCORES.get(info.metric, _SCORES["COSINE"])
        gallery = batch.vectors
        k = min(k, len(gallery))
        ids: list[list[Id]] = []
        scores: list[list[float]] = []
        # Some queries at a time: a score matrix of every query by every row can be GBs.
        for start in range(0, len(queries), _QUERY_ROWS):
            chunk = score(queries[start : start + _QUERY_ROWS], gallery)
            ranked = chunk if higher else -chunk
            top = np.argpartition(-ranked, k - 1, axis=1)[:, :k] if k else ranked[:, :0]
            for row, cols, raw in zip(ranked, top, chunk, strict=True):
                order = cols[np.argsort(-row[cols], kind="stable")]
                ids.append(batch.ids[order].tolist())
                scores.append(raw[order].tolist())
        return Hits(ids, scores, info.metric if info.metric in _SCORES else "COSINE", "exact", True)

    def _rows(self, name: str, ids: np.ndarray) -> pa.Table:
        table = self._table(name)
        pk = self._schema(name)["pk"]
        wanted = pa.array(ids.tolist())
        positions = pc.index_in(wanted, value_set=table[pk])
        if positions.null_count:
            missing = [
                i for i, p in zip(ids.tolist(), positions.to_pylist(), strict=True) if p is None
            ]
            raise StoreError(
                f"collection '{name}' lacks ids {missing[:5]} ({len(missing)} missing); "
                f"re-run the migration to write them"
            )
        return table.take(positions)

    # -- writing -------------------------------------------------------------------
    def _write_part(self, name: str, prefix: str, table: pa.Table) -> None:
        pk = self._schema(name)["pk"]
        digest = hashlib.sha1("\n".join(map(str, table[pk].to_pylist())).encode()).hexdigest()
        path = self.root / self._concrete(name) / f"{prefix}-{digest[:20]}.parquet"
        tmp = path.with_name(path.name + ".tmp")
        table = table.replace_schema_metadata({_SEQ: str(self._next_seq())})
        pq.write_table(table, tmp)
        os.replace(tmp, path)  # whole file or nothing, and a rewrite replaces it

    def read_setup_from(self, source: VectorStore) -> None:
        """Nothing to read: a Parquet collection's setup is all in its CollectionInfo."""

    def create_like(self, source: CollectionInfo, target: str, new_dim: int) -> None:
        if self.has_collection(target):
            raise StoreError(
                f"collection '{target}' already exists in '{self.uri}'; drop it or choose another target"
            )
        vectors = dict(source.vector_fields) or {source.vector_field: source.dim}
        vectors[source.vector_field] = new_dim
        directory = self.root / target
        directory.mkdir(parents=True)
        schema = {
            "format": 1,
            "pk": source.pk_field,
            "metric": source.metric,
            "vector_fields": vectors,
        }
        _write_json(directory / "schema.json", schema)

    def target_problem(self, source: CollectionInfo, target: str, new_dim: int) -> str | None:
        if not self.has_collection(target):
            return f"collection '{target}' does not exist"
        schema = self._schema(target)
        dim = schema["vector_fields"].get(source.vector_field)
        if dim != new_dim:
            return f"its vector field '{source.vector_field}' is not {new_dim}-d"
        if schema["metric"] != source.metric:
            return f"its metric is {schema['metric']}, not {source.metric}"
        if schema["pk"] != source.pk_field:
            return f"its primary key is '{schema['pk']}', not '{source.pk_field}'"
        return None

    def add_vector_field(self, info: CollectionInfo, name: str, dim: int) -> None:
        schema = self._schema(info.name)
        have = schema["vector_fields"].get(name)
        if have == dim:
            return  # a resumed run: the field is already there
        if have is not None or name == schema["pk"]:
            raise StoreError(
                f"collection '{info.name}' already has a field '{name}'; choose another --vector-field name"
            )
        schema["vector_fields"][name] = dim
        _write_json(self.root / info.name / "schema.json", schema)

    def write_rows(
        self, source: CollectionInfo, target: str, batch: Batch, tags: dict[str, str]
    ) -> None:
        schema = self._schema(target)
        dims = schema["vector_fields"]
        columns: dict[str, Any] = {schema["pk"]: pa.array(batch.ids.tolist())}
        columns[source.vector_field] = _vector_column(list(batch.vectors), batch.vectors.shape[1])
        for key, values in batch.fields.items():
            vname = key.removeprefix(VECTOR_KEY_PREFIX)
            if key.startswith(VECTOR_KEY_PREFIX) or vname in dims:
                dim = dims.get(vname) or next(len(v) for v in values if v is not None)
                columns[vname] = _vector_column(values, int(dim))
            else:
                columns[key] = _column(target, key, values)
        columns.update({k: pa.array([v] * len(batch), pa.string()) for k, v in tags.items()})
        table = pa.table(columns)
        directory = self.root / self._concrete(target)
        clash = self._types.conflict(directory, table)
        if clash is not None:
            # Written, this part would make every later read of the collection fail.
            key, now, before = clash
            first, last = batch.ids[[0, -1]].tolist()
            raise StoreError(
                f"field '{key}' of the rows written to '{target}' holds {now} values in this "
                f"batch (ids {first!r} to {last!r}) but {before} in rows "
                f"written before, which one Parquet column cannot hold; this batch was not "
                f"written and '{target}' stays readable; make the field's values one type in "
                f"the source, or write to a Milvus or Qdrant store"
            )
        self._write_part(target, "part", table)
        self._types.wrote(directory, table)

    def write_vectors(
        self,
        info: CollectionInfo,
        field: str,
        ids: np.ndarray,
        vectors: np.ndarray,
        tags: dict[str, str],
    ) -> None:
        dims = self._schema(info.name)["vector_fields"]
        if field not in dims:
            raise StoreError(
                f"collection '{info.name}' has no vector field '{field}'; add it first (add_vector_field)"
            )
        rows = self._rows(info.name, ids)  # whole rows: a part file replaces rows, not cells
        updates = {field: _vector_column(list(vectors), int(dims[field]))}
        updates.update({k: pa.array([v] * len(rows), pa.string()) for k, v in tags.items()})
        for cname, column in updates.items():
            if cname in rows.column_names:
                rows = rows.set_column(rows.column_names.index(cname), cname, column)
            else:
                rows = rows.append_column(cname, column)
        self._write_part(info.name, "part", rows)

    def delete_ids(self, name: str, ids: np.ndarray) -> None:
        pk = self._schema(name)["pk"]
        self._write_part(name, "del", pa.table({pk: pa.array(ids.tolist())}))

    def tag_filter(self, tag: str, value: str) -> str:
        return f"{tag} == {json.dumps(value)}"

    def source_problem(self, name: str, allowed: dict[str, list[str] | None]) -> str | None:
        table = self._table(name)
        for tag, values in allowed.items():
            if tag not in table.column_names:
                continue
            column = table[tag]
            if not (pa.types.is_string(column.type) or pa.types.is_null(column.type)):
                return f"has its own column '{tag}' ({column.type}), {TAG_FIX}"
            if values is None:
                origin = TAG_ORIGIN
                lone = pc.is_valid(column)
                if origin in table.column_names:
                    lone = pc.and_(lone, pc.is_null(table[origin]))
                hits = table.filter(lone)[tag]
            else:
                theirs = pc.and_(pc.is_valid(column), pc.invert(pc.is_in(column, pa.array(values))))
                hits = table.filter(pc.fill_null(theirs, False))[tag]
            if len(hits):
                return f"has its own values in column '{tag}' (e.g. {hits[0].as_py()!r}), {TAG_FIX}"
        return None

    def rank_problem(self, name: str) -> str | None:
        # A rank column would change the files' schema, which evolve compares with the source's.
        return (
            "is in a Parquet store, which does not update one column of rows in place; read "
            "the ranks from plan-backfill --output (rank, id) and join them on id instead"
        )

    def write_ranks(self, name: str, ids: np.ndarray, ranks: np.ndarray | None) -> int:
        raise StoreError(f"collection '{name}' {self.rank_problem(name)}")

    def rank_filter(self) -> str:
        return f"{RANK_FIELD} >= 1"

    def flush(self, name: str) -> None:
        """Every write is a renamed file; nothing is buffered."""

    def drop_collection(self, name: str) -> None:
        shutil.rmtree(self.root / self._concrete(name))

    # -- aliases -------------------------------------------------------------------
    def alias_target(self, alias: str) -> str | None:
        return self._aliases().get(alias)

    def point_alias(self, alias: str, target: str) -> None:
        if not (self.root / target / "schema.json").exists():
            raise StoreError(
                f"cannot point alias '{alias}' at missing collection '{target}'; create it first"
            )
        aliases = self._aliases()
        aliases[alias] = target
        _write_json(self.root / "aliases.json", aliases)  # one rename: readers see old or new

    # -- ledger --------------------------------------------------------------------
    def _ledger(self) -> dict[str, Any]:
        path = self.root / "ledger.json"
        if not path.exists():
            return {}
        shape = "an object of migration key -> record object"
        fix = (
            "restore it from a backup, or move it aside: the collections and aliases stay, "
            "but the migrations' records are lost and the next evolve starts over"
        )
        raw = self._read_object(path, shape, fix)
        for key, record in raw.items():
            if not isinstance(record, dict):
                raise self._bad_shape(
                    path, f"entry '{key}' is {json.dumps(record)[:40]}", shape, fix
                )
        return dict(raw)

    def ledger_get(self, key: str) -> dict[str, Any] | None:
        return self._ledger().get(key)

    def ledger_put(self, key: str, record: dict[str, Any]) -> None:
        ledger = self._ledger()
        ledger[key] = record
        _write_json(self.root / "ledger.json", ledger)

    def ledger_list(self) -> list[dict[str, Any]]:
        return [record for _, record in sorted(self._ledger().items())]
