"""Columnar Milvus reads and writes: vectors cross the client as numpy arrays.

pymilvus hands query results back as one dict per row holding the vector as
a Python list, and packs inserts by flattening those lists float by float.
At 512-d that client-side work costs as much as the server's own (measured
on Milvus Lite, 4096 x 512-d: 0.35 s to turn a page into row dicts next to a
0.39 s query; 0.35 s to pack an upsert request). Here a page's vectors are
copied out of the response in one call, and an upsert request's vector
payload is built from the array's bytes.

Both paths keep to pymilvus's own request and result types through the
connection handler that ``MilvusClient`` itself uses; when a client lacks
them, or a schema needs what only the row path handles (dynamic fields,
function outputs, nullable vectors), callers fall back to the row path.
tests/test_milvus_columns.py checks both paths give the same rows.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from pymilvus import DataType, MilvusClient

from dmu_migrate.errors import StoreError
from dmu_migrate.stores.base import id_array, id_value

try:  # the handler-level API that MilvusClient is built on
    from pymilvus.client import entity_helper
    from pymilvus.grpc_gen import milvus_pb2
except ImportError:  # pragma: no cover - older or newer client layouts
    entity_helper = None

STRONG = "Strong"
SESSION_TS = "iterator_session_ts"  # the snapshot a query ran at, in its extra info


def available(client: MilvusClient) -> bool:
    return entity_helper is not None and hasattr(client, "_get_connection")


def _handler(client: MilvusClient) -> Any:
    return client._get_connection()  # the handler MilvusClient.query/upsert call


def write_supported(schema: dict[str, Any]) -> bool:
    """Schemas whose every column this module can pack without the row path's help."""
    if schema.get("enable_dynamic_field") or schema.get("struct_array_fields"):
        return False
    return not any(
        f.get("is_function_output") or f.get("auto_id") or f.get("nullable")
        for f in schema["fields"]
    )


# -- reading ---------------------------------------------------------------
def pages(
    client: MilvusClient,
    name: str,
    pk: str,
    vector_field: str | None,
    dim: int,
    batch_size: int,
    expr: str,
    output_fields: list[str],
) -> Iterator[tuple[np.ndarray, np.ndarray | None, dict[str, list[Any]]]]:
    """Yield (ids, vectors, other columns) pages in primary-key order after ``expr``.

    Each page asks for the next ``batch_size`` rows with a primary key above
    the last one seen, with the iterator flag that makes Milvus return them in
    key order (plain paged queries are not ordered on Milvus Lite). Ordering
    is checked, so a server that broke it fails loudly instead of skipping rows.
    Like pymilvus's query_iterator, later pages read at the first page's
    snapshot timestamp, so the walk sees one consistent state.
    """
    handler = _handler(client)
    # The iterator flag makes a query use the collection's default consistency, which
    # on a server may lag fresh writes; a Strong query first makes the server catch up.
    client.query(name, filter="", output_fields=["count(*)"], consistency_level=STRONG)
    last: Any = None
    # Servers that report no snapshot of their own read at the client's clock, as
    # query_iterator does: every write acknowledged before the walk is visible.
    snapshot = {"guarantee_timestamp": _client_ts()}
    reported = False
    while True:
        cursor = None if last is None else f"{pk} > {literal(last)}"
        page_expr = " and ".join(f"({e})" for e in (expr, cursor) if e)
        result = handler.query(
            name,
            expr=page_expr,
            output_fields=output_fields,
            limit=batch_size,
            iterator="True",
            reduce_stop_for_best="True",
            **snapshot,
        )
        if not len(result):
            return
        session_ts = int(getattr(result, "extra", {}).get(SESSION_TS, 0) or 0)
        if not reported and session_ts > 0:
            snapshot, reported = {"guarantee_timestamp": session_ts}, True
        vectors = _take_vectors(result, vector_field, dim) if vector_field else None
        rows = list(result)  # scalars only now: the vector column was taken out above
        ids = id_array([r[pk] for r in rows])
        if vectors is None and vector_field:
            vectors = np.asarray([r.pop(vector_field) for r in rows], dtype=np.float32)
        _check_order(name, ids, last)
        columns = {
            k: [r.get(k) for r in rows] for k in row_keys(rows) if k not in (pk, vector_field)
        }
        del result, rows  # the response message is as big as the page: free it before waiting
        yield ids, vectors, columns
        # A short page is not the end: with reduce_stop_for_best a page may stop at a
        # segment boundary. Only an empty page ends the walk.
        last = id_value(ids[-1])


def row_keys(rows: list[dict[str, Any]]) -> list[str]:
    """Every key of every row, in first-seen order: dynamic-field keys differ from row to row."""
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    return list(keys)


def _client_ts() -> int:
    """A hybrid timestamp (physical milliseconds << 18) as query_iterator builds its fallback."""
    return (int(time.time() * 1000) + 1000) << 18  # a second ahead, as pymilvus does


def _take_vectors(result: Any, field: str, dim: int) -> np.ndarray | None:
    """Copy a page's float vectors out of the response and drop them from its rows."""
    lazy = getattr(result, "_lazy_field_data", None)
    if lazy is None:
        return None  # a client that materialises rows itself: take them from the rows
    for data in lazy:
        if data.field_name == field and data.type == DataType.FLOAT_VECTOR:
            if len(data.valid_data):
                return None  # nullable vectors are stored sparsely; leave them to the rows
            vectors = np.array(data.vectors.float_vector.data, dtype=np.float32)
            result._lazy_field_data = [d for d in lazy if d is not data]
            return vectors.reshape(-1, dim)
    return None


def _check_order(name: str, ids: np.ndarray, last: Any) -> None:
    ordered = bool(np.all(ids[1:] > ids[:-1])) if len(ids) > 1 else True
    if not ordered or (last is not None and not ids[0] > last):
        raise StoreError(
            f"Milvus returned collection '{name}' out of primary-key order; paging would "
            f"skip rows, so the read stopped (upgrade the server, or report this)"
        )


# Escapes both Milvus parsers read (Milvus Lite knows only \\ \" \' \n \r \t; a server
# reads those too). JSON's \uXXXX (json.dumps of any non-ASCII key) fails on both ("unknown
# escape sequence \u"), so every other character, emoji and controls included, goes in raw.
_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def literal(value: Any) -> str:
    """A primary key (or tag value) as a Milvus expression literal that reads back as itself."""
    if isinstance(value, str):  # numpy string scalars included
        return '"' + value.translate(_ESCAPES) + '"'
    return str(int(value))


def in_list(field: str, values: list[Any]) -> str:
    """``field in [...]``: pymilvus's get/delete by ids quote string keys without escaping."""
    return f"{field} in [{', '.join(literal(v) for v in values)}]"


# -- writing ---------------------------------------------------------------
def upsert(
    client: MilvusClient,
    name: str,
    schema: dict[str, Any],
    columns: dict[str, Any],
    vector_field: str,
    vectors: np.ndarray,
    partition_name: str | None = None,
) -> None:
    """Upsert one batch given as columns; the vector payload is the array's bytes.

    ``columns`` holds every other field of ``schema`` as a list or array of
    equal length. Upsert keys on the primary key, so a replayed batch
    leaves one row per id.
    """
    count = len(vectors)
    request = milvus_pb2.UpsertRequest(collection_name=name, num_rows=count)
    if partition_name:
        request.partition_name = partition_name
    for info in schema["fields"]:
        field = info["name"]
        if field == vector_field:
            _add_vectors(request.fields_data.add(), field, vectors)
        else:
            values = columns[field]
            values = values.tolist() if isinstance(values, np.ndarray) else list(values)
            entity = {"name": field, "type": info["type"], "values": values}
            request.fields_data.append(entity_helper.entity_to_field_data(entity, info, count))
    _handler(client).upsert(name, [], upsert_param=request, schema=schema)


_SLICE_ROWS = 1024  # rows per parsed slice: bounds the temporary copies to a few MB


def _add_vectors(data: Any, field: str, vectors: np.ndarray) -> None:
    """Fill a FloatVector FieldData from the packed wire form, slice by slice.

    Parsing a packed repeated float is one memcpy in the protobuf runtime, and
    parsing several packed chunks of one field appends them, so no full-size
    copy of the batch is made besides the message itself.
    """
    data.type = DataType.FLOAT_VECTOR
    data.field_name = field
    data.vectors.dim = int(vectors.shape[1])
    floats = data.vectors.float_vector
    for start in range(0, len(vectors), _SLICE_ROWS):
        raw = np.ascontiguousarray(vectors[start : start + _SLICE_ROWS], dtype="<f4").tobytes()
        floats.MergeFromString(b"\x0a" + _varint(len(raw)) + raw)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if not value:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)
