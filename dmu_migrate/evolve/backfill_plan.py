"""Rank a collection's stored old vectors by the artifact's backfill score.

``backfill_score.onnx`` (training/backfill_score.py) predicts, from the old
vector alone, how far the adapter's output lands from the item's own new
embedding: what re-embedding the item repairs. This module streams the stored
old vectors in id order through it and keeps the highest scores. With a budget
(``--budget``/``--limit``) memory holds at most twice the budget of (id, score)
pairs; without one, every id and score (16 bytes a row) are kept to sort them.

Ties keep id order (a stable sort over the stream), as in backfill.order_by_score.
Rows already natively re-embedded in the migration's target are left out: a plan
made after a partial backfill ranks only what is still evolved.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dmu_migrate.artifact import BACKFILL_SCORE, Artifact
from dmu_migrate.errors import ArtifactError, InputError
from dmu_migrate.evolve.backfill_target import NATIVE, find_migration, native_ids
from dmu_migrate.evolve.ledger import PRUNED
from dmu_migrate.evolve.progress import NATIVE_IDS, SCORE, Meter, Report, quiet
from dmu_migrate.onnx_model import OnnxModel
from dmu_migrate.stores.base import TAG_ORIGIN, CollectionInfo, VectorStore, id_array

if TYPE_CHECKING:
    from dmu_migrate.evolve.backfill_tag import TagReport

_BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%?)\s*$")


@dataclass(frozen=True)
class Budget:
    """How many rows to plan: a share of the collection or a row count."""

    share: float | None = None  # 0..1
    rows: int | None = None

    def of(self, total: int) -> int:
        if self.rows is not None:
            return min(self.rows, total)
        # Rounded as evaluate's curve rounds its budgets (backfill.curve).
        return min(total, round((self.share or 0.0) * total))


def parse_budget(text: str) -> Budget:
    """'10%' -> a share; '500' -> a row count; anything else is one clear error."""
    match = _BUDGET.match(text)
    if not match:
        raise InputError(
            f"--budget '{text}' is neither a percentage nor a row count; e.g. --budget 10% "
            f"or --budget 5000"
        )
    value, percent = float(match.group(1)), match.group(2)
    if percent:
        if not 0 < value <= 100:
            raise InputError(f"--budget {text} must be above 0% and at most 100%")
        return Budget(share=value / 100)
    if value != int(value) or value < 1:
        raise InputError(f"--budget {text} must be a whole number of rows (at least 1) or a %")
    return Budget(rows=int(value))


@dataclass(frozen=True)
class RankedIds:
    """The plan: ids from the highest score down, with the scores (float32, the model's)."""

    collection: str  # the collection of old vectors that was scored
    migration: str | None  # the migration whose target the plan is for, if recorded
    target: str | None  # that migration's evolved collection
    artifact: str
    rows_scored: int
    native_left_out: int
    ids: np.ndarray
    scores: np.ndarray
    tagged: TagReport | None = None  # what plan-backfill --tag wrote into the target

    def table(self) -> pa.Table:
        ids = self.ids.tolist()
        return pa.table(
            {
                "rank": pa.array(np.arange(1, len(ids) + 1, dtype=np.int64)),
                "id": pa.array(ids),
                "score": pa.array(self.scores.astype(np.float32)),
            }
        )

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        pq.write_table(self.table(), tmp)
        tmp.replace(path)  # a reader never sees half a plan
        return path

    def as_dict(self) -> dict[str, object]:
        return {
            "collection": self.collection,
            "migration": self.migration,
            "target": self.target,
            "artifact": self.artifact,
            "rows_scored": self.rows_scored,
            "native_left_out": self.native_left_out,
            "selected": len(self.ids),
            "tagged": self.tagged.as_dict() if self.tagged else None,
            "ranked": [
                {"rank": k + 1, "id": i, "score": float(s)}
                for k, (i, s) in enumerate(zip(self.ids.tolist(), self.scores, strict=True))
            ],
        }


def score_model(artifact: Artifact) -> OnnxModel:
    path = artifact.backfill_score_path
    if path is None:
        raise ArtifactError(
            f"artifact '{artifact.path}' has no {BACKFILL_SCORE} (it was trained before "
            f"backfill ranking existed); re-train it with this version of dmu-migrate train"
        )
    return OnnxModel(path)


class TopScores:
    """The ``keep`` highest scores of a stream (all when None), ties in stream order."""

    def __init__(self, keep: int | None) -> None:
        self.keep = keep
        self.ids: list[np.ndarray] = []
        self.scores: list[np.ndarray] = []
        self.seq: list[np.ndarray] = []
        self.seen = 0
        self.held = 0

    def add(self, ids: np.ndarray, scores: np.ndarray) -> None:
        self.ids.append(ids)
        self.scores.append(scores)
        self.seq.append(np.arange(self.seen, self.seen + len(ids), dtype=np.int64))
        self.seen += len(ids)
        self.held += len(ids)
        if self.keep is not None and self.held > 2 * max(self.keep, 1024):
            self._trim()  # amortised: each trim halves what is held

    def _trim(self) -> None:
        ids, scores, seq = self.result(with_seq=True)
        self.ids, self.scores, self.seq = [ids], [scores], [seq]
        self.held = len(ids)

    def result(self, with_seq: bool = False) -> tuple[np.ndarray, ...]:
        if not self.ids:
            empty = (np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64))
            return empty if with_seq else empty[:2]
        ids = np.concatenate(self.ids) if len(self.ids) > 1 else self.ids[0]
        scores = np.concatenate(self.scores) if len(self.scores) > 1 else self.scores[0]
        seq = np.concatenate(self.seq) if len(self.seq) > 1 else self.seq[0]
        order = np.lexsort((seq, -scores.astype(np.float64)))  # last key first: score, then seq
        if self.keep is not None:
            order = order[: self.keep]
        out = (ids[order], scores[order], seq[order])
        return out if with_seq else out[:2]


def resolve_source(
    store: VectorStore, collection: str, artifact: Artifact, vector_field: str | None
) -> tuple[CollectionInfo, str | None, str | None]:
    """(old vectors to score, migration key, its target) for the name the user gave."""
    record = find_migration(store, collection)
    if record is None:
        return store.describe(collection, vector_field), None, None
    if record.status == PRUNED:
        raise InputError(
            f"the old vectors of '{record.source}' were pruned after migration '{record.key}', "
            f"so there is nothing to score; plan before pruning"
        )
    if record.from_version != artifact.manifest.from_version:
        raise InputError(
            f"migration '{record.key}' stores {record.from_version} vectors but artifact "
            f"{artifact.label} scores {artifact.manifest.from_version} ones; pass the artifact "
            f"of this migration with --adapter"
        )
    info = store.describe(record.source, vector_field or record.vector_field)
    return info, record.key, record.target


def read_native(store: VectorStore, target: str, report: Report) -> set[object]:
    """Ids of ``target``'s natively re-embedded rows, as the native ids phase."""
    if not store.has_collection(target):
        return set()
    native: set[object] = set()
    meter = Meter(report, NATIVE_IDS, store.count(target, store.tag_filter(TAG_ORIGIN, NATIVE)))
    for chunk in meter.start().pages(native_ids(store, target), len):
        native.update(chunk.tolist())
    meter.end()
    return native


def plan_backfill(
    store: VectorStore,
    collection: str,
    artifact: Artifact,
    budget: Budget | None = None,
    limit: int | None = None,
    vector_field: str | None = None,
    batch_size: int = 8192,
    report: Report = quiet,
) -> RankedIds:
    """Every stored old vector of ``collection`` scored, the ``budget``/``limit`` best kept.

    ``report`` hears the native ids read (when the migration has a target) and the score
    phase (evolve/progress.py)."""
    model = score_model(artifact)
    info, migration, target = resolve_source(store, collection, artifact, vector_field)
    if model.input_dim is not None and info.dim != model.input_dim:
        raise InputError(
            f"collection '{info.name}' has {info.dim}-d vectors but {BACKFILL_SCORE} of "
            f"{artifact.label} scores {model.input_dim}-d ones; pass the artifact trained for it"
        )
    native = read_native(store, target, report) if target else set()
    rows = store.count(info.name)
    total = max(rows - len(native), 0)
    keep = [k for k in (budget.of(total) if budget else None, limit) if k is not None]
    top = TopScores(min(keep) if keep else None)
    scored = 0
    meter = Meter(report, SCORE, rows).start()
    for batch in store.iter_batches(info, batch_size):
        meter.add(len(batch))  # read is what takes the time, scored or skipped
        ids, vectors = batch.ids, batch.vectors
        if native:
            mask = np.asarray([i not in native for i in ids.tolist()], dtype=bool)
            ids, vectors = ids[mask], vectors[mask]
        if not len(ids):
            continue
        scores = model(vectors)[:, 0]
        if not np.all(np.isfinite(scores)):
            bad = id_array(ids[~np.isfinite(scores)].tolist()[:3])
            raise InputError(
                f"collection '{info.name}' holds vectors the score model cannot score (ids "
                f"{bad.tolist()} give NaN or inf: NaN or inf in the stored vector); repair them"
            )
        top.add(ids, scores)
        scored += len(ids)
    meter.end()
    ids, scores = top.result()
    return RankedIds(
        info.name,
        migration,
        target,
        artifact.manifest.name,
        scored,
        len(native),
        ids,
        np.asarray(scores, dtype=np.float32),
    )
