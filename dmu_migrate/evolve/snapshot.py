"""Parquet snapshots of vectors about to be overwritten (in-place strategy).

Each batch's old vectors go to one part file, written atomically and read
back before the store is touched; the part doubles as a write-ahead log: a
run that dies between snapshot and overwrite replays the part on resume
instead of re-reading (possibly already evolved) vectors from the store.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dmu_migrate.errors import VerificationError
from dmu_migrate.stores.base import id_array
from dmu_migrate.stores.client_errors import Client, maps_errors

# The snapshot directory is a small store of its own: its disk's and pyarrow's failures
# leave as StoreError, here.
SNAPSHOT = Client("the in-place snapshot", (pa.ArrowException, OSError))


def part_path(directory: Path, seq: int) -> Path:
    return directory / f"part-{seq:08d}.parquet"


@maps_errors(SNAPSHOT, "writing a part")
def write_part(path: Path, ids: np.ndarray, vectors: np.ndarray) -> None:
    """Write, fsync, rename, then read back: a snapshot that cannot restore is no snapshot."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel())
    table = pa.table(
        {
            "id": pa.array(ids.tolist()),
            "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),
        }
    )
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    tmp.replace(path)
    got_ids, got = read_part(path)
    if got_ids.tolist() != ids.tolist() or not np.array_equal(got, vectors.astype(np.float32)):
        raise VerificationError(
            f"snapshot part '{path}' does not read back as written; check the disk"
        )


@maps_errors(SNAPSHOT, "reading a part")
def read_part(path: Path) -> tuple[np.ndarray, np.ndarray]:
    table = pq.read_table(path)
    ids = id_array(table.column("id").to_pylist())
    col = table.column("vector").combine_chunks()
    vectors = np.asarray(col.flatten().to_numpy(), dtype=np.float32).reshape(len(ids), -1)
    return ids, vectors


@maps_errors(SNAPSHOT, "reading the parts")
def iter_parts(directory: Path) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for path in sorted(directory.glob("part-*.parquet")):
        yield read_part(path)
