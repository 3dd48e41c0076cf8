"""Where evolved vectors go: a new collection, a new vector field, or in place.

Each strategy knows how to prepare its target, write a batch, list the ids it
has written (for catch-up and verification), read vectors back, cut over and
roll back. The pipeline drives them all the same way.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from dmu_migrate.errors import InputError, StoreError
from dmu_migrate.evolve import snapshot
from dmu_migrate.evolve.aliases import record_move
from dmu_migrate.evolve.id_diff import ID_BATCH, diff_sorted
from dmu_migrate.evolve.ledger import Record
from dmu_migrate.evolve.plan import IN_PLACE, NEW_COLLECTION, NEW_FIELD, Plan
from dmu_migrate.evolve.sync import EVOLVED, checksums, target_info
from dmu_migrate.stores.base import (
    PARTITION_KEY,
    TAG_FROM,
    TAG_ORIGIN,
    TAG_SOURCE,
    TAG_VERSION,
    Batch,
    VectorStore,
    id_array,
    id_value,
)

log = logging.getLogger(__name__)

# How a strategy brings its target in step with a source that kept changing after
# (or during) the main pass; evolve/finish.py runs the step the strategy names.
SYNC = "sync"  # rows added, rows re-evolved after their source vector changed, rows deleted
MISSING = "missing"  # rows the target lacks are added; nothing else is compared
NO_CATCH_UP = ""  # in place: the source is the target


class Strategy:
    in_step: ClassVar[str] = NO_CATCH_UP
    # Reads and overwrites touch the same rows: no read-ahead, and each batch's snapshot
    # goes on record (write returns it) before apply overwrites.
    overwrites_source: ClassVar[bool] = False

    def __init__(self, store: VectorStore, plan: Plan) -> None:
        self.store = store
        self.plan = plan

    def prepare(self, record: Record) -> None:
        raise NotImplementedError

    def write(self, record: Record, batch: Batch, evolved: np.ndarray) -> dict[str, Any] | None:
        """Write one batch; may return a pending marker the pipeline must persist first."""
        raise NotImplementedError

    def apply(self, pending: dict[str, Any]) -> None:
        """Carry out a write that returned ``pending``, once that is on record."""
        raise NotImplementedError(f"{type(self).__name__} writes nothing pending")

    def find_native(self) -> None:
        """Learn which target rows the application wrote, before a main pass; by default
        the target holds no rows but the migration's."""

    def written_ids(self) -> Iterator[np.ndarray] | None:
        """Ids already at the target version, in id order; None when the store cannot tell."""
        raise NotImplementedError

    def read_back(self, ids: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def evolved_only(self, ids: np.ndarray) -> np.ndarray:
        """The ids among these whose stored row the migration owns (all, unless overridden)."""
        return ids

    def misplaced(self, ids: np.ndarray) -> list[Any]:
        """The ids among these whose evolved row is in another partition than its source
        row; none where rows never leave their collection."""
        return []

    def expected(self, ids: np.ndarray) -> np.ndarray:
        """adapter(old vectors) of these ids: what read_back must return."""
        return self.plan.chain(
            self.store.fetch(self.plan.source, ids, self.plan.source.vector_field).vectors
        )

    def cut_over(self, record: Record) -> str:
        """Make the evolved vectors the live ones; returns a sentence for the user."""
        raise NotImplementedError

    @staticmethod
    def rollback(store: VectorStore, record: Record, alias: str | None = None) -> str:
        """Undo the cut-over of a finished migration (of ``alias``, where it moved aliases);
        needs no adapter."""
        raise NotImplementedError


class NewCollection(Strategy):
    """Copy every row into ``<base>__<version>`` and move the alias at the end."""

    in_step = SYNC

    def __init__(self, store: VectorStore, plan: Plan) -> None:
        super().__init__(store, plan)
        self.native: set[Any] = set()  # see find_native

    def prepare(self, record: Record) -> None:
        plan, store = self.plan, self.store
        if store.has_collection(plan.target):
            problem = store.target_problem(plan.source, plan.target, plan.chain.out_dim)
            if problem is None:
                if not record.main_pass_done:
                    self.find_native()
                return
            if not record.created_target or store.count(plan.target):
                raise StoreError(
                    f"target collection '{plan.target}' exists but {problem}; drop or rename "
                    f"it, then run evolve again"
                )
            # This migration made it and no row ever reached it (its first batch failed,
            # then the source or the adapters changed): nothing to keep, and made anew it
            # is no blocker.
            log.warning("target '%s' is empty but %s; created again", plan.target, problem)
            store.drop_collection(plan.target)
        store.create_like(plan.source, plan.target, plan.chain.out_dim)
        record.created_target = True

    def write(self, record: Record, batch: Batch, evolved: np.ndarray) -> None:
        if self.native:  # rows the application wrote into the target are never overwritten
            keep = np.asarray([i not in self.native for i in batch.ids.tolist()], dtype=bool)
            batch = Batch(
                batch.ids[keep],
                batch.vectors[keep],
                {
                    k: [v for v, kept in zip(vs, keep, strict=True) if kept]
                    for k, vs in batch.fields.items()
                },
            )
            evolved = evolved[keep]
            if not len(batch):
                return
        # Each row remembers which source vector it came from, so re-runs see updates.
        fields = {**batch.fields, TAG_SOURCE: checksums(batch.vectors)}
        self.store.write_rows(
            self.plan.source,
            self.plan.target,
            Batch(batch.ids, evolved, fields),
            self.plan.tags,
        )

    def find_native(self) -> None:
        """Ids of rows the application wrote into an existing target (dmu_origin not 'evolved').

        Only a main pass needs them in memory: it writes batches blind, while
        re-runs compare row by row (evolve/sync.py) and skip native rows there.
        """
        plan, store = self.plan, self.store
        total = store.count(plan.target)
        evolved = store.tag_filter(TAG_ORIGIN, EVOLVED)
        if total == 0 or store.count(plan.target, evolved) == total:
            return
        native, _ = diff_sorted(
            store.iter_ids(plan.target, ID_BATCH), store.iter_ids(plan.target, ID_BATCH, evolved)
        )
        self.native = set(native)

    def evolved_only(self, ids: np.ndarray) -> np.ndarray:
        """The ids among these whose target row is evolved, not written by the application."""
        if not len(ids):
            return ids
        rows = self.store.fetch(
            target_info(self.store, self.plan), ids, self.plan.source.vector_field
        )
        origins = rows.fields.get(TAG_ORIGIN) or [EVOLVED] * len(ids)
        return id_array([i for i, o in zip(ids.tolist(), origins, strict=True) if o == EVOLVED])

    def written_ids(self) -> Iterator[np.ndarray]:
        return self.store.iter_ids(self.plan.target, ID_BATCH, self.plan.filter)

    def misplaced(self, ids: np.ndarray) -> list[Any]:
        if not len(ids):
            return []
        field = self.plan.source.vector_field
        source = self.store.fetch(self.plan.source, ids, field).fields.get(PARTITION_KEY)
        if source is None:
            return []  # the source has no named partitions (or the store has none at all)
        target = self.store.fetch(target_info(self.store, self.plan), ids, field).fields
        placed = target.get(PARTITION_KEY) or [None] * len(ids)
        return [i for i, a, b in zip(ids.tolist(), source, placed, strict=True) if a != b]

    def read_back(self, ids: np.ndarray) -> np.ndarray:
        target = replace(self.plan.source, name=self.plan.target)
        return self.store.fetch(target, ids, self.plan.source.vector_field).vectors

    def cut_over(self, record: Record) -> str:
        plan = self.plan
        if plan.filter:
            return (
                f"a --filter run does not move alias '{plan.alias}'; run evolve without "
                f"--filter to cut over"
            )
        if plan.alias is None:
            return f"'{plan.target}' is ready"
        record_move(record, plan.alias, self.store.alias_target(plan.alias))
        self.store.point_alias(plan.alias, plan.target)
        return f"alias '{plan.alias}' -> '{plan.target}'"

    @staticmethod
    def rollback(store: VectorStore, record: Record, alias: str | None = None) -> str:
        moved = record.moved_aliases.get(alias or "")
        if alias is None or moved is None:
            raise InputError(
                f"migration '{record.key}' moved no alias"
                + (f" '{alias}'" if alias else "")
                + "; there is nothing to roll back"
            )
        back = moved.get("previous") or record.source
        if record.source_uri and back == record.source:
            raise InputError(
                f"migration '{record.key}' evolved '{record.source}' of '{record.source_uri}' "
                f"into this store, where alias '{alias}' named no collection before; "
                f"there is nothing here to point it back to: point your application back at "
                f"'{record.source_uri}', whose '{record.source}' is unchanged"
            )
        store.point_alias(alias, back)
        return f"alias '{alias}' -> '{back}' (evolved collection '{record.target}' kept)"


class NewField(Strategy):
    """Write the evolved vector into a new vector field beside the old one."""

    in_step = MISSING

    def prepare(self, record: Record) -> None:
        plan = self.plan
        if plan.target_field not in plan.source.vector_fields:
            self.store.add_vector_field(plan.source, plan.target_field, plan.chain.out_dim)

    def write(self, record: Record, batch: Batch, evolved: np.ndarray) -> None:
        self.store.write_vectors(
            self.plan.source, self.plan.target_field, batch.ids, evolved, self.plan.tags
        )

    def written_ids(self) -> Iterator[np.ndarray]:
        tag = self.store.tag_filter(TAG_VERSION, self.plan.chain.to_version)
        return self.store.iter_ids(self.plan.source.name, ID_BATCH, tag)

    def read_back(self, ids: np.ndarray) -> np.ndarray:
        return self.store.fetch(self.plan.source, ids, self.plan.target_field).vectors

    def cut_over(self, record: Record) -> str:
        return (
            f"vector field '{self.plan.target_field}' of '{self.plan.source.name}' holds "
            f"the evolved vectors; point your queries at it"
        )

    @staticmethod
    def rollback(store: VectorStore, record: Record, alias: str | None = None) -> str:
        return (
            f"vector field '{record.vector_field}' of '{record.source}' was never changed; "
            f"point your queries back at it"
        )


class InPlace(Strategy):
    """Overwrite the stored vectors, after snapshotting each batch to Parquet."""

    overwrites_source = True

    def __init__(self, store: VectorStore, plan: Plan, snapshot_root: Path) -> None:
        super().__init__(store, plan)
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", plan.key)
        self.directory = snapshot_root / safe

    def prepare(self, record: Record) -> None:
        if record.snapshot is None:
            record.snapshot = str(self.directory.resolve())
        self.directory = Path(record.snapshot)
        self.directory.mkdir(parents=True, exist_ok=True)

    def write(self, record: Record, batch: Batch, evolved: np.ndarray) -> dict[str, Any]:
        seq = len(list(self.directory.glob("part-*.parquet")))
        path = snapshot.part_path(self.directory, seq)
        snapshot.write_part(path, batch.ids, batch.vectors)
        return {"part": str(path), "last_id": id_value(batch.ids[-1]), "rows": len(batch)}

    def apply(self, pending: dict[str, Any]) -> None:
        """Overwrite from a snapshot part: the part, not the store, holds the old vectors."""
        ids, old = snapshot.read_part(Path(pending["part"]))
        self.store.write_vectors(
            self.plan.source,
            self.plan.source.vector_field,
            ids,
            self.plan.chain(old),
            self.plan.tags,
        )

    def written_ids(self) -> Iterator[np.ndarray]:
        for ids, _ in snapshot.iter_parts(self.directory):
            yield ids

    def expected(self, ids: np.ndarray) -> np.ndarray:
        wanted = {i: n for n, i in enumerate(ids.tolist())}
        out = np.zeros((len(ids), self.plan.chain.out_dim), np.float32)
        for part_ids, old in snapshot.iter_parts(self.directory):
            rows = [k for k, i in enumerate(part_ids.tolist()) if i in wanted]
            if rows:
                evolved = self.plan.chain(old[rows])
                for k, row in zip(rows, evolved, strict=True):
                    out[wanted[id_value(part_ids[k])]] = row
        return out

    def read_back(self, ids: np.ndarray) -> np.ndarray:
        return self.store.fetch(self.plan.source, ids, self.plan.source.vector_field).vectors

    def cut_over(self, record: Record) -> str:
        return f"vectors of '{self.plan.source.name}' were replaced; snapshot in {self.directory}"

    @staticmethod
    def rollback(store: VectorStore, record: Record, alias: str | None = None) -> str:
        if not record.snapshot or not Path(record.snapshot).is_dir():
            raise InputError(
                f"snapshot of '{record.key}' is missing ({record.snapshot}); cannot restore"
            )
        tags = {TAG_VERSION: record.from_version, TAG_FROM: "", TAG_ORIGIN: "restored"}
        info = store.describe(record.source, record.vector_field)
        rows = 0
        for ids, old in snapshot.iter_parts(Path(record.snapshot)):
            store.write_vectors(info, record.vector_field, ids, old, tags)
            rows += len(ids)
        return f"restored {rows} vectors of '{record.source}' from {record.snapshot}"


STRATEGY_CLASSES: dict[str, type[Strategy]] = {
    NEW_COLLECTION: NewCollection,
    NEW_FIELD: NewField,
    IN_PLACE: InPlace,
}


def make_strategy(store: VectorStore, plan: Plan, snapshot_root: Path) -> Strategy:
    if plan.strategy == IN_PLACE:
        return InPlace(store, plan, snapshot_root)
    return STRATEGY_CLASSES[plan.strategy](store, plan)
