"""Where natively re-embedded vectors come from: a Parquet table, or a callable.

``VectorTable``: a Parquet file with an id column and a vector column; the whole
file is checked (ids known to the target, no repeats, the target's dimension,
finite numbers) before the first row is written, so a bad file writes nothing.

``EmbedCall``: ``pkg.module:embed`` called as ``embed(ids, fields)`` on each batch
of rows read from the target (``fields``: the stored payload/scalar fields, column
by column, as in the store) and returning an ``(n, d)`` array. The ids come from a
Parquet file (the output of ``plan-backfill``); they are checked before anything
is written, the vectors of each batch before that batch is written.

Both read in bounded batches and can start at a row offset (a resumed run).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dmu_migrate.data import file_sha256
from dmu_migrate.errors import InputError, StoreError
from dmu_migrate.evolve.progress import Meter
from dmu_migrate.stores.base import CollectionInfo, VectorStore, id_array, id_value

Pair = tuple[np.ndarray, np.ndarray]  # (ids, vectors)


def open_table(path: Path, columns: list[str], what: str) -> pq.ParquetFile:
    if not path.is_file():
        raise InputError(f"{what} '{path}' does not exist; check the path")
    try:
        table = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(
            f"{what} '{path}' is not a Parquet file ({exc}); write it with pyarrow"
        ) from None
    names = table.schema_arrow.names
    for column, flag in zip(columns, ("--id-column", "--vector-column"), strict=False):
        if column not in names:
            raise InputError(
                f"{what} '{path}' has no column '{column}' (columns: {', '.join(names)}); "
                f"pass {flag}"
            )
    return table


def read_ids(column: pa.Array, path: Path, name: str) -> np.ndarray:
    if column.null_count:
        raise InputError(f"'{path}' has empty ids in column '{name}'; every row needs its id")
    return id_array(column.to_pylist())


def read_vectors(column: pa.Array, ids: np.ndarray, dim: int, path: Path) -> np.ndarray:
    """The vectors of one record batch as float32 (n, dim); refuses nulls and other sizes."""
    if not pa.types.is_list(column.type) and not pa.types.is_fixed_size_list(column.type):
        raise InputError(
            f"column of '{path}' holds {column.type}, not vectors (lists of floats); fix the table"
        )
    lengths = pc.fill_null(pc.list_value_length(column), -1).to_numpy(zero_copy_only=False)
    wrong = np.flatnonzero(lengths != dim)
    if len(wrong):
        k = int(wrong[0])
        size = "no" if lengths[k] < 0 else f"a {lengths[k]}-d"
        raise InputError(
            f"'{path}' gives id {id_value(ids[k])!r} {size} vector but the evolved collection holds "
            f"{dim}-d vectors ({len(wrong)} such rows); embed with the migration's new model"
        )
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return check_finite(np.asarray(flat, dtype=np.float32).reshape(len(ids), dim), ids, str(path))


def check_finite(vectors: np.ndarray, ids: np.ndarray, what: str) -> np.ndarray:
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        first = ids[bad].tolist()[:3]
        raise InputError(
            f"{what} has NaN or inf in the vectors of {int(bad.sum())} rows (first ids: "
            f"{first}); re-embed them"
        )
    # A zero vector has no direction: cosine and IP score it 0 against every query, so the
    # row would vanish from search (evolve refuses such stored vectors too).
    zero = ~vectors.any(axis=1)
    if zero.any():
        first = ids[zero].tolist()[:3]
        raise InputError(
            f"{what} has all-zero vectors in {int(zero.sum())} rows (first ids: {first}); "
            f"a zero vector matches no query, re-embed them"
        )
    return vectors


def check_known(store: VectorStore, target: CollectionInfo, ids: np.ndarray, what: str) -> None:
    """Every id must already be a row of the target: backfill replaces rows, never adds."""
    try:
        store.fetch(target, ids, target.vector_field)
    except StoreError as exc:
        if " lacks " not in str(exc):
            raise
        raise InputError(
            f"{what} names ids that are not rows of '{target.name}' ({exc}); backfill only "
            f"replaces rows the migration wrote, so remove those ids"
        ) from None


class Seen:
    """Ids met so far in one input: a repeat would write one row twice with two vectors."""

    def __init__(self, what: str) -> None:
        self.ids: set[Any] = set()
        self.what = what

    def add(self, ids: np.ndarray) -> None:
        for i in ids.tolist():
            if i in self.ids:
                raise InputError(f"{self.what} gives id {i!r} more than once; keep one row each")
            self.ids.add(i)


def id_set(path: Path, column: str) -> set[Any]:
    """Every id of a Parquet ids table (a plan-backfill --output file)."""
    table = open_table(path, [column], "ids table")
    seen = Seen(f"ids table '{path}'")
    for part in table.iter_batches(65536, columns=[column]):
        seen.add(read_ids(part.column(0), path, column))
    if not seen.ids:
        raise InputError(f"ids table '{path}' has no rows; nothing to write")
    return seen.ids


class VectorTable:
    """Native vectors in a Parquet table: ``id_column`` and ``vector_column``.

    With ``only`` (an ids table, e.g. a plan), just the rows whose id it lists; every
    id it lists must have its row here.
    """

    def __init__(
        self,
        path: Path,
        id_column: str = "id",
        vector_column: str = "vector",
        only: Path | None = None,
    ) -> None:
        self.path, self.id_column, self.vector_column = path, id_column, vector_column
        self.file = open_table(path, [id_column, vector_column], "backfill table")
        self.label = str(path) if only is None else f"{path} (rows of {only})"
        self.fingerprint = f"{file_sha256(path)}:{id_column}:{vector_column}"
        self.only = id_set(only, id_column) if only is not None else None
        if only is not None and self.only is not None:
            self.fingerprint += f":{file_sha256(only)}"
            found: set[Any] = set()
            for part in self.file.iter_batches(65536, columns=[id_column]):
                found.update(i for i in part.column(0).to_pylist() if i in self.only)
            lacking = self.only - found
            if lacking:
                first = sorted(lacking, key=str)[:3]
                raise InputError(
                    f"backfill table '{path}' has no row for {len(lacking)} ids of '{only}' "
                    f"(first: {first}); re-embed them or drop them from the ids table"
                )
            self.rows = len(self.only)
        else:
            self.rows = self.file.metadata.num_rows
        if self.rows == 0:
            raise InputError(f"backfill table '{path}' has no rows; nothing to write")

    def _pairs(self, batch_size: int, dim: int) -> Iterator[Pair]:
        columns = [self.id_column, self.vector_column]
        for part in self.file.iter_batches(batch_size, columns=columns):
            if self.only is not None:
                keep = [i in self.only for i in part.column(0).to_pylist()]
                part = part.filter(pa.array(keep, pa.bool_()))
                if not part.num_rows:
                    continue
            ids = read_ids(part.column(0), self.path, self.id_column)
            yield ids, read_vectors(part.column(1), ids, dim, self.path)

    def check(
        self, store: VectorStore, target: CollectionInfo, batch_size: int, meter: Meter
    ) -> None:
        """The whole file, before anything is written; ``meter`` counts the rows checked."""
        seen = Seen(f"backfill table '{self.path}'")
        for ids, _ in self._pairs(batch_size, target.dim):
            seen.add(ids)
            check_known(store, target, ids, f"backfill table '{self.path}'")
            meter.add(len(ids))

    def batches(
        self, store: VectorStore, target: CollectionInfo, batch_size: int, skip: int
    ) -> Iterator[Pair]:
        done = 0
        for ids, vectors in self._pairs(batch_size, target.dim):
            if done + len(ids) > skip:
                cut = max(skip - done, 0)
                yield ids[cut:], vectors[cut:]
            done += len(ids)


def load_callable(spec: str) -> Callable[..., Any]:
    """'package.module:function' -> the function, with one-line errors for each failure."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise InputError(f"--embed '{spec}' is not 'package.module:function'; e.g. mypkg.enc:embed")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(
            f"--embed '{spec}': cannot import '{module_name}' ({exc}); install it or fix PYTHONPATH"
        ) from None
    function = getattr(module, attr, None)
    if not callable(function):
        raise InputError(f"--embed '{spec}': '{module_name}' has no callable '{attr}'; check it")
    return function


class EmbedCall:
    """Native vectors computed by ``embed(ids, fields)`` for the ids of a Parquet file."""

    def __init__(self, spec: str, ids_path: Path, id_column: str = "id") -> None:
        self.spec, self.path, self.id_column = spec, ids_path, id_column
        self.embed = load_callable(spec)
        self.file = open_table(ids_path, [id_column], "ids table")
        self.rows = self.file.metadata.num_rows
        self.label = f"{spec} on {ids_path}"
        self.fingerprint = f"{file_sha256(ids_path)}:{id_column}:{spec}"
        if self.rows == 0:
            raise InputError(f"ids table '{ids_path}' has no rows; nothing to write")

    def _ids(self, batch_size: int) -> Iterator[np.ndarray]:
        for part in self.file.iter_batches(batch_size, columns=[self.id_column]):
            yield read_ids(part.column(0), self.path, self.id_column)

    def check(
        self, store: VectorStore, target: CollectionInfo, batch_size: int, meter: Meter
    ) -> None:
        seen = Seen(f"ids table '{self.path}'")
        for ids in self._ids(batch_size):
            seen.add(ids)
            check_known(store, target, ids, f"ids table '{self.path}'")
            meter.add(len(ids))

    def batches(
        self, store: VectorStore, target: CollectionInfo, batch_size: int, skip: int
    ) -> Iterator[Pair]:
        done = 0
        for ids in self._ids(batch_size):
            if done + len(ids) > skip:
                todo = ids[max(skip - done, 0) :]
                yield todo, self._call(store, target, todo)
            done += len(ids)

    def _call(self, store: VectorStore, target: CollectionInfo, ids: np.ndarray) -> np.ndarray:
        rows = store.fetch(target, ids, target.vector_field)
        fields = {k: v for k, v in rows.fields.items() if not k.startswith("__")}
        try:
            out = self.embed(ids, fields)
        except Exception as exc:  # the user's code: its failure is theirs to fix
            raise InputError(
                f"--embed '{self.spec}' failed on ids {ids.tolist()[:3]}...: "
                f"{type(exc).__name__}: {exc}; fix it and run backfill again (it resumes)"
            ) from exc
        vectors = np.asarray(out, dtype=np.float32)
        if vectors.shape != (len(ids), target.dim):
            raise InputError(
                f"--embed '{self.spec}' returned shape {vectors.shape} for {len(ids)} rows, but "
                f"'{target.name}' holds {target.dim}-d vectors; return an (n, {target.dim}) array"
            )
        return check_finite(vectors, ids, f"--embed '{self.spec}'")
