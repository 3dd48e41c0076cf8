"""A uniform random sample of a collection's stored old vectors: the old half of a training table.

``train`` reads a table with the stored old embedding (column ``old``), a label
(``label``) and the new model's input (``x``; see data.py). The store holds the
first two, never the third, so ``sample`` writes ``id``, ``old`` and, from a
field or payload key, ``label``; the user joins their raw inputs by ``id``.

Sampling is by a hash of each id under the seed (its "priority", uniform in
[0, 1)): ``--fraction F`` keeps the rows whose priority is below F (a Bernoulli
sample, written as it streams, memory one batch), ``--limit N`` keeps the N
lowest priorities (exactly N rows, memory at most 2N rows). Either is one pass
in id order, the same seed picks the same ids on every store and every run,
and a smaller sample is a subset of a larger one with the same seed. Rows are
written in id order to a temporary file that is renamed at the end, so a
failure leaves no output behind.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dmu_migrate.data import Columns
from dmu_migrate.errors import InputError
from dmu_migrate.stores.base import Batch, CollectionInfo, VectorStore, id_value

ID_COLUMN = "id"
OLD_COLUMN = Columns().old  # the names train reads by default: no --old-col/--label-col needed
LABEL_COLUMN = Columns().label
_LABEL_TYPES = (int, float, str, bool, np.integer, np.floating)


@dataclass(frozen=True)
class SampleResult:
    collection: str  # the concrete collection read
    requested: str  # the name given (may be an alias)
    vector_field: str
    dim: int
    rows_read: int
    rows: int  # rows written
    limit: int | None
    fraction: float | None
    seed: int
    label_field: str | None
    labels: int | None  # distinct labels in the sample
    output: str
    columns: list[str]
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def priorities(ids: np.ndarray, seed: int) -> np.ndarray:
    """Each id's priority in [0, 1) under ``seed``: a fixed pseudo-random draw per id."""
    if ids.dtype == np.int64:
        return _unit(_splitmix(ids.view(np.uint64) ^ _splitmix(np.asarray([seed], np.uint64))[0]))
    key = str(seed).encode()
    draws = [
        int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=8, key=key).digest(), "little")
        for i in ids.tolist()
    ]
    return _unit(np.asarray(draws, dtype=np.uint64))


def _splitmix(x: np.ndarray) -> np.ndarray:
    # SplitMix64's finaliser: every input bit moves every output bit, so consecutive
    # ids (the usual primary keys) get independent-looking priorities.
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _unit(z: np.ndarray) -> np.ndarray:
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


class _LowestPriorities:
    """The ``keep`` rows of lowest priority seen so far (ties: the earlier row)."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self.held = 0
        self.seen = 0

    def add(self, prio: np.ndarray, ids: np.ndarray, vectors: np.ndarray, labels: Any) -> None:
        seq = np.arange(self.seen, self.seen + len(ids), dtype=np.int64)
        self.seen += len(ids)
        self.parts.append((prio, seq, ids, vectors, _objects(labels, len(ids))))
        self.held += len(ids)
        if self.held > 2 * max(self.keep, 1024):
            self.parts = [self._best()]  # amortised: each trim halves what is held
            self.held = len(self.parts[0][0])

    def _best(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        prio, seq, ids, vectors, labels = (np.concatenate(c) for c in zip(*self.parts, strict=True))
        order = np.lexsort((seq, prio))[: self.keep]
        return prio[order], seq[order], ids[order], vectors[order], labels[order]

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """ids, vectors, labels of the kept rows, back in stream (id) order."""
        if not self.parts:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32), np.zeros(0, object)
        _, seq, ids, vectors, labels = self._best()
        order = np.argsort(seq, kind="stable")
        return ids[order], vectors[order], labels[order]


def _objects(values: Any, n: int) -> np.ndarray:
    out = np.empty(n, dtype=object)
    if values is not None:
        out[:] = values
    return out


def sample_collection(
    store: VectorStore,
    collection: str,
    output: Path,
    *,
    limit: int | None = None,
    fraction: float | None = None,
    label_field: str | None = None,
    filter: str | None = None,
    vector_field: str | None = None,
    seed: int = 0,
    batch_size: int = 8192,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SampleResult:
    """Stream ``collection`` once and write a seeded uniform sample of its rows to ``output``."""
    if (limit is None) == (fraction is None):
        raise InputError("give the sample size: --limit N (rows) or --fraction F (0 < F <= 1)")
    if fraction is not None and not 0 < fraction <= 1:
        raise InputError(f"--fraction must be above 0 and at most 1, got {fraction:g}")
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be at least 1, got {limit}")
    if output.exists() and not overwrite:
        raise InputError(f"output '{output}' exists; pass --overwrite or choose another --output")
    started = time.monotonic()
    info = store.describe(collection, vector_field)
    total = store.count(info.name, filter)
    if total == 0:
        where = f" matches --filter '{filter}'" if filter else ""
        fix = "loosen --filter" if filter else "sample the collection that holds the old vectors"
        raise InputError(f"no row of collection '{info.name}'{where}; nothing to sample ({fix})")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    try:
        writer = _Writer(tmp, info, label_field)
        lowest = _LowestPriorities(limit) if limit is not None else None
        read = _stream(
            store, info, writer, lowest, fraction, filter, seed, batch_size, total, progress
        )
        rows = writer.close()
        if rows == 0:
            raise InputError(
                f"the sample of collection '{info.name}' is empty (--fraction {fraction:g} of "
                f"{read} rows); raise --fraction"
            )
        tmp.replace(output)  # a reader never sees half a table
    finally:
        tmp.unlink(missing_ok=True)
    return SampleResult(
        info.name,
        info.requested,
        info.vector_field,
        info.dim,
        read,
        rows,
        limit,
        fraction,
        seed,
        label_field,
        len(writer.label_values) if label_field else None,
        str(output),
        writer.columns,
        time.monotonic() - started,
    )


def _stream(
    store: VectorStore,
    info: CollectionInfo,
    writer: _Writer,
    lowest: _LowestPriorities | None,
    fraction: float | None,
    filter: str | None,
    seed: int,
    batch_size: int,
    total: int,
    progress: Callable[[int, int], None] | None,
) -> int:
    """Read every (matching) row once; write the sample. Returns the rows read."""
    read = 0
    for batch in store.iter_batches(info, batch_size, filter=filter):
        labels = _labels(batch, info, writer.label_field, first=read == 0)
        prio = priorities(batch.ids, seed)
        read += len(batch)
        if lowest is not None:
            lowest.add(prio, batch.ids, batch.vectors, labels)
        else:
            keep = np.flatnonzero(prio < fraction)
            kept = None if labels is None else [labels[k] for k in keep]
            writer.write(batch.ids[keep], batch.vectors[keep], kept)
        if progress is not None:
            progress(read, max(total, read))
    if lowest is not None:
        ids, vectors, kept_labels = lowest.result()
        writer.write(ids, vectors, None if writer.label_field is None else kept_labels.tolist())
    return read


def _labels(
    batch: Batch, info: CollectionInfo, label_field: str | None, first: bool
) -> list[Any] | None:
    if label_field is None:
        return None
    if label_field not in batch.fields:
        shown = ", ".join(k for k in batch.fields if not k.startswith("__")) or "none"
        if first:
            raise InputError(
                f"collection '{info.name}' has no field '{label_field}' (fields: {shown}); "
                f"fix --label-field"
            )
        raise InputError(
            f"rows of collection '{info.name}' from id {id_value(batch.ids[0])!r} on "
            f"have no '{label_field}'; label them, or leave them out with --filter"
        )
    return batch.fields[label_field]


class _Writer:
    """Parquet rows ``id``, ``old``, ``label`` appended batch by batch to ``path``."""

    def __init__(self, path: Path, info: CollectionInfo, label_field: str | None) -> None:
        self.path, self.info, self.label_field = path, info, label_field
        self.writer: pq.ParquetWriter | None = None
        self.rows = 0
        self.label_values: set[Any] = set()
        self.columns = [ID_COLUMN, OLD_COLUMN] + ([LABEL_COLUMN] if label_field else [])

    def write(self, ids: np.ndarray, vectors: np.ndarray, labels: list[Any] | None) -> None:
        if not len(ids):
            return
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel())
        arrays: dict[str, pa.Array] = {
            ID_COLUMN: pa.array(ids.tolist()),
            OLD_COLUMN: pa.FixedSizeListArray.from_arrays(flat, self.info.dim),
        }
        if labels is not None:
            arrays[LABEL_COLUMN] = self._label_array(ids, labels)
        table = pa.table(arrays)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, table.schema)
        elif table.schema != self.writer.schema:
            table = self._cast(table, self.writer.schema)
        self.writer.write_table(table)
        self.rows += len(ids)

    def _label_array(self, ids: np.ndarray, labels: list[Any]) -> pa.Array:
        for i, value in enumerate(labels):
            if value is None:
                raise InputError(
                    f"row {id_value(ids[i])!r} of collection '{self.info.name}' has no '{self.label_field}'; "
                    f"label it, or leave unlabelled rows out with --filter"
                )
            if not isinstance(value, _LABEL_TYPES):
                raise InputError(
                    f"'{self.label_field}' of row {id_value(ids[i])!r} in collection '{self.info.name}' is "
                    f"a {type(value).__name__}, not a label; name a scalar field (int or string) "
                    f"with --label-field"
                )
        self.label_values.update(labels)
        try:
            return pa.array(labels)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise self._mixed(exc) from exc

    def _cast(self, table: pa.Table, schema: pa.Schema) -> pa.Table:
        try:
            return table.cast(schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise self._mixed(exc) from exc

    def _mixed(self, exc: Exception) -> InputError:
        return InputError(
            f"'{self.label_field}' of collection '{self.info.name}' holds labels of different "
            f"types ({' '.join(str(exc).split())[:120]}); store one type (int or string) in it"
        )

    def close(self) -> int:
        if self.writer is not None:
            self.writer.close()
        return self.rows
