"""Distractors: stored old vectors that join a held-out gallery, so that the gate judges
an upgrade at the size of the gallery it deploys to.

A held-out gallery of a hundred items can promise a gain that vanishes among the
thousands a collection holds. old->old, new->old and new->evolved need only the
stored old vectors of the other items (evolved ones are psi of them), so any
number of them can join the gallery without raw data: by default the training
table's rows that were not held out, or (``--distractors``) a Parquet of stored
old vectors such as ``sample`` writes, or a collection itself. new->new and
new->mixed would need the raw items, so they keep the held-out gallery alone.

A distractor is never a correct match. Two rules keep it so (docs/method.md,
"The gate's distractors"): an item that is one of the held-out items (the same
id, or the same stored vector) is dropped from the pool, and one whose label
equals a query's label is left out of that query's ranking (metrics.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dmu_migrate.api.store import opened
from dmu_migrate.data import Columns, Table, vector_column
from dmu_migrate.errors import InputError
from dmu_migrate.metrics import l2_normalize

TRAINING = "training"  # the default: the training table's rows that were not held out
NONE = "none"  # the held-out gallery alone
ID_COLUMN = "id"  # as sample writes it
NO_LABEL = -1  # a label the held-out table does not have: never equal to a query's code
# Where the pool joins the gallery: settings whose gallery is built from stored old vectors
# (fused: [o ; psi(o)]; ceiling: the oracle map of o, ceiling.py).
GALLERIES = ("old", "evolved")
ALSO = ("fused", "ceiling")
NOTE = "new->new and new->mixed have no distractors: they would need the raw items"


@dataclass(frozen=True)
class Distractors:
    """Stored old vectors no held-out query should find, with what is known of them."""

    old: np.ndarray  # (m, d_old) float32
    labels: np.ndarray | None  # (m,) label values as the source spells them, or None
    ids: np.ndarray | None  # (m,) item ids, or None
    source: str  # what reports name


@dataclass(frozen=True)
class Pool:
    """Distractors ready to score: held-out items dropped, labels as the table's codes."""

    old: np.ndarray
    labels: np.ndarray  # int64 codes of the held-out table's classes; NO_LABEL: none of them
    source: str
    excluded: int  # dropped as held-out items (same id or same stored vector)
    evolved: np.ndarray | None = None  # psi(old), once an adapter has run over them

    @property
    def count(self) -> int:
        return len(self.old)

    def evolve(self, adapter: Callable[[np.ndarray], np.ndarray]) -> Pool:
        return replace(self, evolved=adapter(self.old) if self.count else self.old)

    def gallery(self, kind: str) -> np.ndarray | None:
        """The pool's vectors for a gallery of ``kind`` ("old", "evolved"), else None."""
        if not self.count:
            return None
        if kind == "old":
            return self.old
        if kind == "evolved":
            return self.evolved
        return None

    def describe(self, settings: list[str]) -> dict[str, Any]:
        """What the report says: how many distractors each setting's figure saw."""
        per = {s: self.count if takes_pool(s) else 0 for s in settings}
        return {
            "source": self.source,
            "count": self.count,
            "excluded_as_held_out": self.excluded,
            "sharing_a_query_label": int((self.labels != NO_LABEL).sum()),
            "settings": per,
            "note": NOTE,
        }


def takes_pool(setting: str) -> bool:
    return setting in ALSO or setting.split("->")[-1] in GALLERIES


# The pool of a held-out split: (training rows, held-out rows) -> Pool.
PoolFor = Callable[[np.ndarray, np.ndarray], Pool]


def describe(pool: Pool | None, settings: list[str], source: str = NONE) -> dict[str, Any]:
    """What a report records of the pool its figures saw (none: zero everywhere)."""
    if pool is not None:
        return pool.describe(settings)
    return {
        "source": source,
        "count": 0,
        "excluded_as_held_out": 0,
        "sharing_a_query_label": 0,
        "settings": dict.fromkeys(settings, 0),
        "note": NOTE,
    }


def _keys(vectors: np.ndarray) -> list[bytes]:
    """A stored vector's identity: its direction to 5 decimals (a copy read back from
    another store may differ in the last float bits, never in that)."""
    rounded = np.round(l2_normalize(vectors), 5) + 0.0  # + 0.0: -0.0 and 0.0 are one key
    return [row.tobytes() for row in rounded]


def _id_keys(ids: np.ndarray) -> set[str]:
    return {str(i) for i in ids.tolist()}


def pool(
    distractors: Distractors,
    held_old: np.ndarray,
    held_ids: np.ndarray | None,
    classes: np.ndarray | None,
) -> Pool:
    """The distractors less the held-out items, labels coded like the held-out table.

    ``classes`` are the held-out table's label values (code i = classes[i]); None for
    an unlabelled table, whose rows are their own identities. Labels compare as text,
    so 3 and "3" are one label: a collision can only hide a distractor, never make one
    a hit.
    """
    d = distractors
    if d.old.shape[1] != held_old.shape[1]:
        raise InputError(
            f"distractors from {d.source} are {d.old.shape[1]}-d but the held-out old vectors "
            f"are {held_old.shape[1]}-d; give the stored vectors of the same old model"
        )
    held_keys = set(_keys(held_old))
    keep = np.array([k not in held_keys for k in _keys(d.old)], dtype=bool)
    if held_ids is not None and d.ids is not None:
        held = _id_keys(held_ids)
        keep &= np.array([str(i) not in held for i in d.ids.tolist()], dtype=bool)
    codes = np.full(len(d.old), NO_LABEL, dtype=np.int64)
    if classes is not None and d.labels is not None:
        index = {str(v): i for i, v in enumerate(classes.tolist())}
        codes = np.array([index.get(str(v), NO_LABEL) for v in d.labels.tolist()], np.int64)
    rows = np.flatnonzero(keep)
    return Pool(d.old[rows], codes[rows], d.source, int((~keep).sum()))


def table_ids(path: str | Path) -> np.ndarray | None:
    """The ``id`` column of a table, when it has one."""
    schema = pq.read_schema(path)
    if ID_COLUMN not in schema.names:
        return None
    return np.asarray(pq.read_table(path, columns=[ID_COLUMN]).column(0).to_pylist(), dtype=object)


def from_parquet(path: str | Path, columns: Columns = Columns()) -> Distractors:
    """Stored old vectors in a Parquet table (``sample`` writes id, old and label)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"--distractors '{path}' is not a file; give a Parquet of stored old vectors (as "
            f"'dmu-migrate sample' writes), a collection with --distractors-uri, or 'none'"
        )
    try:
        raw = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(
            f"--distractors '{path}' is not readable Parquet ({exc}); write it with "
            f"'dmu-migrate sample'"
        ) from exc
    old = vector_column(raw, columns.old, str(path))
    labels = ids = None
    if columns.label in raw.column_names:
        labels = np.asarray(raw.column(columns.label).to_pylist(), dtype=object)
    if ID_COLUMN in raw.column_names:
        ids = np.asarray(raw.column(ID_COLUMN).to_pylist(), dtype=object)
    return Distractors(old, labels, ids, f"'{path}'")


def from_collection(
    uri: str,
    collection: str,
    token: str | None = None,
    label_field: str | None = None,
    vector_field: str | None = None,
    batch_size: int = 8192,
) -> Distractors:
    """Every stored old vector of a collection, with its id and, where a row has the field
    ``label_field``, its label (a row without one can only be an impostor)."""
    vectors: list[np.ndarray] = []
    ids: list[Any] = []
    labels: list[Any] = []
    with opened(uri, token) as store:
        info = store.describe(collection, vector_field)
        for batch in store.iter_batches(info, batch_size):
            vectors.append(np.asarray(batch.vectors, dtype=np.float32))
            ids.extend(batch.ids.tolist())
            found = batch.fields.get(label_field) if label_field is not None else None
            labels.extend(found if found is not None else [None] * len(batch))
    if not vectors:
        raise InputError(
            f"collection '{info.name}' at '{uri}' holds no vectors; give --distractors a "
            f"collection with the stored old vectors, or 'none'"
        )
    known = any(v is not None for v in labels)
    return Distractors(
        np.vstack(vectors),
        np.asarray(labels, dtype=object) if known else None,
        np.asarray(ids, dtype=object),
        f"collection '{info.name}'",
    )


def load(
    spec: str | Path | Distractors | None,
    columns: Columns = Columns(),
    uri: str | None = None,
    token: str | None = None,
) -> Distractors | str:
    """``--distractors`` as given: TRAINING, NONE, a Parquet path, or (with ``uri``) a
    collection, whose label field is read under the table's label column name when rows
    have it. TRAINING stays a name: which rows it means depends on the held-out split."""
    if isinstance(spec, Distractors):
        return spec
    name = TRAINING if spec is None else str(spec)
    if uri is None:
        return name if name in (TRAINING, NONE) else from_parquet(name, columns)
    if name in (TRAINING, NONE):
        raise InputError(
            f"--distractors-uri '{uri}' needs --distractors COLLECTION: the collection whose "
            f"stored old vectors join the held-out gallery"
        )
    return from_collection(uri, name, token, label_field=columns.label)


def for_table(
    spec: Distractors | str, training_table: str | None, table: Table, columns: Columns
) -> tuple[Pool | None, str]:
    """The distractors of an evaluation table and the source the report names: by default
    the artifact's training table (when it is still where the manifest says); every row
    of ``table``, query or gallery, is a held-out item to leave out."""
    if spec == NONE:
        return None, NONE
    given = spec
    if not isinstance(given, Distractors):  # TRAINING
        path = training_table
        if path is None or not Path(path).is_file():
            return None, f"none: the training table {path and repr(path)} is not here"
        if Path(path).resolve() == Path(table.path).resolve():
            return None, "none: the table evaluated is the training table"
        try:
            read = from_parquet(path, columns)
        except InputError as exc:
            raise InputError(
                f"the training table '{path}' cannot serve as distractors ({exc}); pass "
                f"--distractors with stored old vectors, or --distractors none"
            ) from exc
        given = Distractors(read.old, read.labels, read.ids, "the training table")
    classes = table.classes if table.labelled else None
    found = pool(given, table.old, table_ids(table.path), classes)
    return found, found.source
