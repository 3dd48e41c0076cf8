"""``dmu-migrate evolve``: stream old vectors through the adapter into a new collection.

    source (old vectors) --read batch--> adapter.onnx --upsert--> <base>__<to_version>
    verify counts + a sample of vectors, then move the alias users query

The source collection is never written. Writes are upserts keyed by the
source id, so re-running after an interruption converges to the same state.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from dmu_migrate.artifact import Artifact
from dmu_migrate.errors import InputError, StoreError, VerificationError
from dmu_migrate.evolve.transform import OnnxModel
from dmu_migrate.stores.base import TAG_FROM, TAG_ORIGIN, TAG_VERSION, CollectionInfo, VectorStore

VERIFY_SAMPLE = 256
VERIFY_TOLERANCE = 1e-5

ProgressCallback = Callable[[int, int], None]  # (rows done, rows total)


@dataclass(frozen=True)
class EvolveResult:
    source: str
    target: str
    alias: str
    rows: int
    seconds: float
    max_abs_error: float  # largest |stored - adapter(old)| over the verified sample

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def target_name(source: str, from_version: str, to_version: str) -> str:
    """``faces__v1`` -> ``faces__v2``; ``faces`` -> ``faces__v2``."""
    suffix = f"__{from_version}"
    base = source[: -len(suffix)] if source.endswith(suffix) else source
    return f"{base}__{to_version}"


def resolve_alias(store: VectorStore, info: CollectionInfo, alias: str | None) -> str:
    """The alias to move at the end: the one the user queried through, or --alias."""
    alias = alias or info.alias
    if alias is None:
        raise InputError(
            f"'{info.requested}' is a collection, not an alias, so there is nothing to re-point; "
            f"pass --alias NAME to create the alias your queries will use"
        )
    if store.alias_target(alias) is None and store.has_collection(alias):
        raise InputError(
            f"--alias '{alias}' is the name of a collection, not an alias; choose another name"
        )
    return alias


def evolve(
    store: VectorStore,
    collection: str,
    artifact: Artifact,
    alias: str | None = None,
    vector_field: str | None = None,
    batch_size: int = 4096,
    threads: int = 0,
    on_progress: ProgressCallback | None = None,
) -> EvolveResult:
    start = time.perf_counter()
    m = artifact.manifest
    if batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {batch_size}")
    info = store.describe(collection, vector_field)
    if info.dim != m.old_dim:
        raise InputError(
            f"collection '{collection}' has {info.dim}-d vectors in '{info.vector_field}' but "
            f"adapter '{m.name}' expects {m.old_dim}-d; use the adapter trained for this collection"
        )
    if info.count == 0:
        raise InputError(f"collection '{collection}' is empty; there is nothing to evolve")
    alias = resolve_alias(store, info, alias)
    target = target_name(info.name, m.from_version, m.to_version)
    if target == info.name:
        raise InputError(
            f"collection '{info.name}' already holds version '{m.to_version}'; nothing to evolve"
        )
    adapter = OnnxModel(artifact.adapter_path, threads)

    if store.has_collection(target):
        problem = store.target_matches(info, target, m.new_dim)
        if problem:
            raise StoreError(
                f"target collection '{target}' exists but {problem}; drop or rename it, "
                f"then run evolve again"
            )
    else:
        store.create_evolved(info, target, m.new_dim)

    tags = {TAG_VERSION: m.to_version, TAG_FROM: m.from_version, TAG_ORIGIN: "evolved"}
    done = 0
    sample = Reservoir(VERIFY_SAMPLE)
    for batch in store.iter_batches(info, batch_size):
        store.upsert(info, target, replace(batch, vectors=adapter(batch.vectors)), tags)
        sample.add(batch.ids)
        done += len(batch)
        if on_progress is not None:
            on_progress(done, info.count)
    store.flush(target)

    error = verify(store, info, target, adapter, sample.ids())
    store.point_alias(alias, target)
    return EvolveResult(info.name, target, alias, done, time.perf_counter() - start, error)


def verify(
    store: VectorStore, source: CollectionInfo, target: str, adapter: OnnxModel, ids: np.ndarray
) -> float:
    """Counts must match, and a random sample of stored vectors must equal adapter(old).

    ``ids`` is the sample to re-read. Raises before the alias moves, so readers
    never see an unverified collection.
    """
    source_count, target_count = store.count(source.name), store.count(target)
    if source_count != target_count:
        raise VerificationError(
            f"collection '{target}' has {target_count} rows but source '{source.name}' has "
            f"{source_count}; the alias was not moved, run evolve again to finish"
        )
    expected = adapter(store.fetch_vectors(source.name, source.vector_field, ids))
    stored = store.fetch_vectors(target, source.vector_field, ids)
    error = float(np.abs(expected - stored).max()) if len(ids) else 0.0
    if not error <= VERIFY_TOLERANCE:
        raise VerificationError(
            f"evolved vectors in '{target}' differ from the adapter output by {error:.2e} "
            f"(limit {VERIFY_TOLERANCE:.0e}); the alias was not moved"
        )
    return error


class Reservoir:
    """A uniform random sample of k ids from a stream (Algorithm R), seeded for repeatability."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.seen = 0
        self.chosen: list[object] = []
        self.rng = np.random.default_rng(0)

    def add(self, ids: np.ndarray) -> None:
        for row_id in ids.tolist():
            self.seen += 1
            if len(self.chosen) < self.k:
                self.chosen.append(row_id)
            else:
                j = int(self.rng.integers(self.seen))
                if j < self.k:
                    self.chosen[j] = row_id

    def ids(self) -> np.ndarray:
        return np.asarray(self.chosen)
