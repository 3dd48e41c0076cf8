"""Stored vectors no adapter can evolve: found, refused or left out, and recorded."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

import numpy as np

from dmu_migrate.errors import InputError
from dmu_migrate.stores.base import Batch, Id, VectorStore

if TYPE_CHECKING:  # plan.py reads bad_rows from here
    from dmu_migrate.evolve.ledger import Record
    from dmu_migrate.evolve.plan import Plan

FETCH_BATCH = 4096  # ids per fetch when left-out rows are read again
MAX_SKIPPED = 100_000  # skipped ids live in the ledger record, which must stay small
# The adapter runs in float32: a row whose squared norm passes float32's largest value
# (norm >= ~1.8e19) becomes inf inside it, and every such row comes out as one vector.
MAX_SQUARED_NORM = float(np.finfo(np.float32).max)


def bad_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows no adapter can evolve: NaN or inf anywhere, all zero (no direction), or so
    large that float32 arithmetic on them overflows."""
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():  # rare: only then pay for a cleaned copy
        vectors = np.where(np.isfinite(vectors), vectors, 0.0)
    # float64 sums: the squares of float32 values this large do not overflow here.
    squares = np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64)  # no batch-size temporary
    return ~finite | (squares < 1e-24) | ~(squares < MAX_SQUARED_NORM)


def screen(
    batch: Batch, plan: Plan, skip: bool, known: Collection[Id] = frozenset()
) -> tuple[Batch, list[Id]]:
    """Refuse a batch with bad vectors, or, with --skip-bad-vectors, drop them.

    Never written either way: an evolved NaN would poison every search that
    touches it, and a zero vector has no direction to evolve. Returns the
    good rows and the ids left out. ``known``: ids an earlier run left out with
    --skip-bad-vectors; a re-run screens them again (they may have been fixed) and
    leaves them out again if not, with or without the flag.
    """
    bad = bad_rows(batch.vectors)
    if not bad.any():
        return batch, []
    ids = batch.ids[bad].tolist()
    new = [] if skip else [i for i in ids if i not in known]
    if new:
        raise InputError(
            f"collection '{plan.source.name}' has {len(new)} NaN, inf or all-zero vectors (or "
            f"vectors of norm >= 1.8e19, which overflow float32) in "
            f"'{plan.source.vector_field or 'default'}' (first ids: {new[:5]}); fix or delete "
            f"them, or pass --skip-bad-vectors to leave them out and report them"
        )
    keep = np.flatnonzero(~bad)
    kept = Batch(
        batch.ids[keep],
        batch.vectors[keep],
        {k: [v[i] for i in keep] for k, v in batch.fields.items()},
    )
    return kept, ids


def clear_skipped(record: Record, written: np.ndarray) -> None:
    """Rows an earlier run left out that are now written: their vectors were fixed."""
    if not record.skipped or not len(written):
        return
    done = set(written.tolist())
    record.skipped = [i for i in record.skipped if i not in done]


def still_bad(store: VectorStore, plan: Plan, ids: list[Id]) -> set[Id]:
    """The ids among these (left out earlier) whose source vector is still bad; a fixed
    one is a row the target lacks. Read in pages: the ledger holds up to MAX_SKIPPED."""
    bad: set[Id] = set()
    for start in range(0, len(ids), FETCH_BATCH):
        chunk = np.asarray(ids[start : start + FETCH_BATCH])
        batch = store.fetch(plan.source, chunk, plan.source.vector_field)
        bad.update(batch.ids[bad_rows(batch.vectors)].tolist())
    return bad


def add_skipped(record: Record, plan: Plan, ids: list[Id]) -> None:
    """Record skipped ids once each; the ledger record that holds them must stay small."""
    if not ids:
        return
    known = set(record.skipped)
    record.skipped.extend(i for i in ids if i not in known)
    if len(record.skipped) > MAX_SKIPPED:
        raise InputError(
            f"more than {MAX_SKIPPED} bad vectors in '{plan.source.name}'; clean the collection "
            f"before evolving it"
        )
