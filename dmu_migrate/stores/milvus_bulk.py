"""Milvus bulk import: write rows as per-field NumPy files, import them as sealed segments.

The server reads the files itself, so they must lie on storage it shares: with
local storage (the standalone server's ``localStorage``) a directory on its own
file system, named by absolute path; with MinIO or S3, its bucket
(stores/bulk_storage.py). Milvus 2.3 imports NumPy files
one per field (``<field>.npy``), JSON row files and, from 2.3.4 on, Parquet;
NumPy is the one that needs no per-row encoding, so a part's vectors stream
to disk batch by batch and never sit in memory whole.

The files follow the layout pymilvus' ``LocalBulkWriter`` writes for
``BulkFileType.NUMPY``; that writer is not used because it takes rows one dict
at a time and needs the ``pymilvus[bulk_writer]`` extras (minio, azure), which
the evolve image does not carry.

An import is not idempotent (the server appends, it never upserts), so the
caller records a part's files before submitting it and, after a crash, asks
``find_job`` whether the server already took them.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
from pymilvus import DataType, MilvusClient, MilvusException

from dmu_migrate.errors import InputError, StoreError, StoreUnavailable
from dmu_migrate.stores.bulk_storage import Storage
from dmu_migrate.stores.client_errors import Client, maps_errors, store_boundary
from dmu_migrate.stores.milvus_errors import MILVUS

log = logging.getLogger(__name__)

TIMEOUT = 60  # seconds for one import call (submit, state, list)
WAIT_SECONDS = 3600.0  # an import job that has not finished by then is reported
POLL_SECONDS = 0.5
DONE_STATES = {"Completed"}  # 2.3 says Completed once the segments are indexed and served
FAILED_STATES = {"Failed", "Failed and cleaned"}
_HEADER_BYTES = 128  # room for any 2-d float32 shape; NumPy pads headers to 64-byte blocks


class VectorFile:
    """A 2-d float32 ``.npy`` written batch by batch; the header gets the row count at close."""

    def __init__(self, path: Path, dim: int) -> None:
        self.path, self.dim, self.rows = path, dim, 0
        self._out: IO[bytes] = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._out.write(self._header(0))

    def _header(self, rows: int) -> bytes:
        text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {self.dim}), }}"
        pad = _HEADER_BYTES - 10 - len(text) - 1
        # Format 1.0: magic, version, little-endian header length, padded dict, newline.
        return (
            b"\x93NUMPY\x01\x00"
            + (_HEADER_BYTES - 10).to_bytes(2, "little")
            + (text + " " * pad + "\n").encode("latin1")
        )

    def append(self, vectors: np.ndarray) -> None:
        self._out.write(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
        self.rows += len(vectors)

    def close(self) -> None:
        self._out.seek(0)
        self._out.write(self._header(self.rows))
        self._out.close()


def _column(values: list[Any], dtype: int, name: str = "") -> np.ndarray:
    """A scalar column as the NumPy dtype Milvus 2.3's NumPy importer reads for that type."""
    kinds = {
        DataType.BOOL: np.bool_,
        DataType.INT8: np.int8,
        DataType.INT16: np.int16,
        DataType.INT32: np.int32,
        DataType.INT64: np.int64,
        DataType.FLOAT: np.float32,
        DataType.DOUBLE: np.float64,
    }
    if dtype in kinds:
        return np.asarray(values, dtype=kinds[DataType(dtype)])
    if dtype == DataType.VARCHAR:
        texts = [str(v) for v in values]
        # NumPy's fixed-width strings drop trailing NUL characters: such a key would be
        # imported as another key (and other text changed), so it is refused instead.
        cut = next((t for t in texts if t.endswith("\x00")), None)
        if cut is not None:
            raise StoreError(
                f"bulk import cannot carry field '{name}' value {cut[:40]!r}, which ends in a "
                f"NUL character (NumPy files drop it); evolve with --write-path insert"
            )
        return np.asarray(texts, dtype=np.str_)
    raise StoreError(f"bulk import cannot write a field of type {DataType(dtype).name}")


def unsupported(schema: dict[str, Any], vector_field: str) -> str | None:
    """Why a collection of this schema cannot take a NumPy import, or None."""
    if schema.get("enable_dynamic_field"):
        return "it has a dynamic field"
    for f in schema["fields"]:
        if f["name"] == vector_field:
            if f["type"] != DataType.FLOAT_VECTOR:
                return f"its vector field '{vector_field}' is not a float vector"
        elif f["type"] not in (
            DataType.BOOL,
            DataType.INT8,
            DataType.INT16,
            DataType.INT32,
            DataType.INT64,
            DataType.FLOAT,
            DataType.DOUBLE,
            DataType.VARCHAR,
        ):
            return f"its field '{f['name']}' is a {DataType(f['type']).name}"
        if f.get("auto_id") or f.get("nullable") or f.get("is_function_output"):
            return f"its field '{f['name']}' is generated or nullable"
    return None


# A part's files on this machine's disk (space, permissions), before any storage sees them.
@store_boundary(Client("the bulk import's part files", (OSError,)))
class Part:
    """One import's rows: vectors streamed to disk, the other columns kept until close."""

    def __init__(self, directory: Path, schema: dict[str, Any], vector_field: str, dim: int):
        directory.mkdir(parents=True, exist_ok=False)
        self.directory, self.schema, self.vector_field = directory, schema, vector_field
        self.vectors = VectorFile(directory / f"{vector_field}.npy", dim)
        self.columns: dict[str, list[Any]] = {
            f["name"]: [] for f in schema["fields"] if f["name"] != vector_field
        }

    @property
    def rows(self) -> int:
        return self.vectors.rows

    def append(self, columns: dict[str, Any], vectors: np.ndarray) -> None:
        for name, values in self.columns.items():
            got = columns[name]
            values.extend(got.tolist() if isinstance(got, np.ndarray) else got)
        self.vectors.append(vectors)

    def close(self) -> list[str]:
        """Write the scalar columns; the absolute paths of every file."""
        self.vectors.close()
        files = [str(self.vectors.path)]
        types = {f["name"]: f["type"] for f in self.schema["fields"]}
        for name, values in self.columns.items():
            path = self.directory / f"{name}.npy"
            np.save(path, _column(values, types[name], name))
            files.append(str(path))
        self.columns = {}
        return files


def _handler(client: MilvusClient) -> Any:
    return client._get_connection()  # the same handler MilvusClient's own calls use


@maps_errors(MILVUS, "describing the target")
def describe(client: MilvusClient, collection: str) -> dict[str, Any]:
    """The target collection's schema as the importer writes files for it."""
    return client.describe_collection(collection)


@maps_errors(MILVUS, "submitting an import job")
def submit(client: MilvusClient, collection: str, files: list[str]) -> int:
    try:
        return int(_handler(client).do_bulk_insert(collection, "", files, timeout=TIMEOUT))
    except MilvusException as exc:
        raise StoreError(
            f"Milvus refused the bulk import into '{collection}': {exc.message}; use "
            "--write-path insert"
        ) from None


@maps_errors(MILVUS, "listing import jobs")
def find_job(client: MilvusClient, collection: str, files: list[str]) -> int | None:
    """The server's job for exactly these files, if a previous run submitted it."""
    tasks = _handler(client).list_bulk_insert_tasks(0, collection, timeout=TIMEOUT)
    for task in tasks:
        if task.files == ",".join(files) and task.state_name not in FAILED_STATES:
            return int(task.task_id)
    return None


@maps_errors(MILVUS, "reading an import job")
def state_of(client: MilvusClient, job: int) -> str:
    return str(_handler(client).get_bulk_insert_state(job, timeout=TIMEOUT).state_name)


@maps_errors(MILVUS, "waiting for an import job")
def wait(
    client: MilvusClient,
    job: int,
    collection: str,
    on_state: Callable[[str, int], None] | None = None,
    timeout: float = WAIT_SECONDS,
) -> int:
    """Poll a job until it completes; its row count. A failed job raises with its reason."""
    deadline = time.monotonic() + timeout
    while True:
        state = _handler(client).get_bulk_insert_state(job, timeout=TIMEOUT)
        if on_state is not None:
            on_state(state.state_name, state.row_count)
        if state.state_name in DONE_STATES:
            return int(state.row_count)
        if state.state_name in FAILED_STATES:
            raise StoreError(
                f"bulk import job {job} into '{collection}' failed: "
                f"{state.failed_reason.splitlines()[0] if state.failed_reason else 'no reason'}"
                f"{hint(state.failed_reason)}"
            )
        if time.monotonic() > deadline:
            raise StoreError(
                f"bulk import job {job} into '{collection}' is still '{state.state_name}' after "
                f"{timeout:.0f} s; run evolve again to keep waiting for it"
            )
        time.sleep(POLL_SECONDS)


@maps_errors(MILVUS, "counting imported rows")
def wait_visible(client: MilvusClient, collection: str, rows: int, timeout: float = 600) -> bool:
    """Wait until a count sees ``rows``: a completed job's segments reach the query nodes a
    little later, and verification (and the cut-over) must not run before they do."""
    import contextlib

    with contextlib.suppress(MilvusException):  # a refresh hint; older servers lack it
        client.load_collection(collection, timeout=TIMEOUT, _refresh=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = client.query(
            collection,
            filter="",
            output_fields=["count(*)"],
            consistency_level="Strong",
            timeout=TIMEOUT,
        )
        if int(got[0]["count(*)"]) >= rows:
            return True
        time.sleep(POLL_SECONDS)
    return False


def hint(reason: str) -> str:
    if "no such file" in reason:
        return (
            "; the server cannot see the files: give --bulk-storage a directory the Milvus "
            "server shares, or use --write-path insert"
        )
    if "NoSuchKey" in reason or "does not exist" in reason:
        return (
            "; the server cannot see the files: give --bulk-storage the bucket the Milvus "
            "server keeps its data in (s3://BUCKET/PREFIX), or use --write-path insert"
        )
    return ""


@maps_errors(MILVUS, "probing --bulk-storage")
def probe(client: MilvusClient, storage: Storage) -> None:
    """Import one row into a throw-away collection: proves the server reads ``storage``.

    Run before anything is written for the migration, so that storage the server
    does not share fails the run with nothing created in the target.
    """
    name = f"dmu_bulk_probe_{uuid.uuid4().hex[:10]}"
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("v", DataType.FLOAT_VECTOR, dim=2)
    try:
        part = Part(
            storage.scratch(name), {"fields": [{"name": "id", "type": DataType.INT64}]}, "v", 2
        )
        part.append({"id": [0]}, np.zeros((1, 2), dtype=np.float32))
        files = storage.publish(name, part.close())
        client.create_collection(name, schema=schema, timeout=TIMEOUT)
        try:
            wait(client, submit(client, name, files), name, timeout=300)
        except StoreUnavailable:
            raise  # the server, not the storage: retried as any passing failure
        except StoreError as exc:
            raise InputError(f"--bulk-storage '{storage.uri}': {exc}") from None
        finally:
            client.drop_collection(name, timeout=TIMEOUT)
    finally:
        storage.drop(name)
