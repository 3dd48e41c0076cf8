"""Training and evaluation tables: Parquet columns -> numpy arrays.

A table has one row per item: a ``label`` (identity/class), the stored ``old``
embedding, the new model's input ``x``, for adapter-only training a
precomputed ``new`` embedding, and for evaluation an optional ``role``
(``query`` or ``gallery``). Column names are the caller's to choose.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dmu_migrate.errors import InputError


@dataclass(frozen=True)
class Columns:
    label: str = "label"
    old: str = "old"
    x: str = "x"
    role: str = "role"
    new: str = "new"


@dataclass(frozen=True)
class Table:
    """A table as arrays; ``labels`` are integer codes of ``classes``."""

    path: Path
    labels: np.ndarray  # (n,) int64 codes
    classes: np.ndarray  # (c,) original label values
    old: np.ndarray  # (n, d_old) float32
    x: np.ndarray  # (n, d_x) float32
    role: np.ndarray | None  # (n,) str, or None when the table has no role column
    fingerprint: str  # sha256 of the file, recorded in the artifact manifest
    new: np.ndarray | None = None  # (n, d_new) float32 when the table has a new column
    # False when labels were optional and the table has none: then every row
    # is its own identity (labels = row numbers), so paired retrieval still works.
    labelled: bool = True

    def __len__(self) -> int:
        return len(self.labels)


def vector_column(table: pa.Table, name: str, source: str) -> np.ndarray:
    """A list-of-float column as a (n, d) float32 array; refuses ragged or non-finite rows."""
    if name not in table.column_names:
        raise InputError(
            f"table '{source}' has no column '{name}' (columns: {', '.join(table.column_names)}); "
            f"rename it or pass the matching --*-col option"
        )
    col = table.column(name).combine_chunks()
    is_list = (
        pa.types.is_list(col.type)
        or pa.types.is_large_list(col.type)
        or pa.types.is_fixed_size_list(col.type)
    )
    numeric = is_list and (
        pa.types.is_floating(col.type.value_type) or pa.types.is_integer(col.type.value_type)
    )
    if not numeric:
        raise InputError(
            f"column '{name}' of '{source}' is {col.type}, not a list of floats; "
            f"store each vector as one list<float> cell"
        )
    if col.null_count:
        raise InputError(
            f"column '{name}' of '{source}' has {col.null_count} empty rows; drop them"
        )
    if pa.types.is_fixed_size_list(col.type):
        dim = col.type.list_size
    else:
        lengths = np.diff(np.asarray(col.offsets))
        dim = int(lengths[0]) if len(lengths) else 0
        if len(lengths) and not np.all(lengths == dim):
            bad = int(np.argmax(lengths != dim))
            raise InputError(
                f"column '{name}' of '{source}' has vectors of different lengths "
                f"(row 0: {dim}, row {bad}: {int(lengths[bad])}); every row needs the same dimension"
            )
    if dim == 0:
        raise InputError(f"column '{name}' of '{source}' holds empty vectors; store the embeddings")
    flat = col.flatten()
    if flat.null_count:
        raise InputError(
            f"column '{name}' of '{source}' has {flat.null_count} null numbers inside vectors; "
            f"clean them"
        )
    values = np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float32)
    arr = values.reshape(len(col), dim)
    if not np.isfinite(arr).all():
        row = int(np.argmax(~np.isfinite(arr).all(axis=1)))
        raise InputError(
            f"column '{name}' of '{source}' has NaN or inf (first at row {row}); clean it"
        )
    return arr


def read_table(
    path: str | Path,
    columns: Columns = Columns(),
    need_x: bool = True,
    need_new: bool = False,
    need_labels: bool = True,
) -> Table:
    """Read a table; ``new`` is read when the column exists (required with ``need_new``)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"table '{path}' does not exist; give the path of a Parquet file")
    try:
        raw = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(
            f"table '{path}' is not readable Parquet ({exc}); write it with pyarrow"
        ) from exc
    if raw.num_rows == 0:
        raise InputError(f"table '{path}' has no rows; give a table with data")
    if columns.label not in raw.column_names and not need_labels:
        return _unlabelled(raw, path, columns, need_x, need_new)
    if columns.label not in raw.column_names:
        raise InputError(
            f"table '{path}' has no column '{columns.label}' (columns: {', '.join(raw.column_names)}); "
            f"pass --label-col"
        )
    label_column = raw.column(columns.label)
    if label_column.null_count:
        raise InputError(
            f"column '{columns.label}' of '{path}' has {label_column.null_count} empty labels; "
            f"drop those rows or label them"
        )
    label_values = label_column.to_numpy(zero_copy_only=False)
    classes, codes = np.unique(label_values, return_inverse=True)
    old = vector_column(raw, columns.old, str(path))
    x = vector_column(raw, columns.x, str(path)) if need_x else np.zeros((len(old), 0), np.float32)
    role = None
    if columns.role in raw.column_names:
        role = np.asarray(raw.column(columns.role).to_pylist(), dtype=object)
        unknown = set(role) - {"query", "gallery"}
        if unknown:
            raise InputError(
                f"column '{columns.role}' of '{path}' has values {sorted(map(str, unknown))}; "
                f"use only 'query' and 'gallery'"
            )
    new = _new_column(raw, path, columns, need_new)
    return Table(
        path, codes.astype(np.int64), classes, old, x, role, file_sha256(path), new, labelled=True
    )


def _new_column(raw: pa.Table, path: Path, columns: Columns, need_new: bool) -> np.ndarray | None:
    if columns.new not in raw.column_names and not need_new:
        return None
    if columns.new not in raw.column_names:
        raise InputError(
            f"table '{path}' has no column '{columns.new}' with new-model embeddings "
            f"(columns: {', '.join(raw.column_names)}); add it or pass --new-col"
        )
    return vector_column(raw, columns.new, str(path))


def _unlabelled(raw: pa.Table, path: Path, columns: Columns, need_x: bool, need_new: bool) -> Table:
    old = vector_column(raw, columns.old, str(path))
    x = vector_column(raw, columns.x, str(path)) if need_x else np.zeros((len(old), 0), np.float32)
    ids = np.arange(len(old), dtype=np.int64)
    new = _new_column(raw, path, columns, need_new)
    return Table(path, ids, ids, old, x, None, file_sha256(path), new, labelled=False)


def write_table(path: str | Path, data: Mapping[str, Any]) -> None:
    """Write arrays as a Parquet table; 2-D arrays become fixed-size list columns."""
    arrays = {}
    for name, values in data.items():
        arr = np.asarray(values)
        if arr.ndim == 2:
            flat = pa.array(arr.astype(np.float32).ravel())
            arrays[name] = pa.FixedSizeListArray.from_arrays(flat, arr.shape[1])
        else:
            arrays[name] = pa.array(arr.tolist() if arr.dtype == object else arr)
    pq.write_table(pa.table(arrays), path)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
