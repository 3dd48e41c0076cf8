"""Comparing and sampling id streams: what the writers (strategies.py), the re-runs
(sync.py) and the verification (verify.py) share, below all three."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from dmu_migrate.evolve.id_join import pages_of, windows
from dmu_migrate.stores.base import id_array

VERIFY_SAMPLE = 256
ID_BATCH = 16384  # ids per page of an id scan: Milvus's largest query window


class Reservoir:
    """A uniform random sample of k ids from a stream (Algorithm R), seeded for repeatability."""

    def __init__(self, k: int, skip: frozenset[Any] = frozenset()) -> None:
        self.k = k
        self.skip = skip  # ids never drawn (rows left out as bad): the sample stays k strong
        self.seen = 0
        self.chosen: list[Any] = []
        self.rng = np.random.default_rng(0)

    def add(self, batch: np.ndarray | list[Any]) -> None:
        ids = batch if isinstance(batch, np.ndarray) else id_array(list(batch))
        if self.skip:
            ids = ids[np.fromiter((i not in self.skip for i in ids.tolist()), bool, len(ids))]
        fill = min(max(self.k - len(self.chosen), 0), len(ids))
        self.chosen += ids[:fill].tolist()
        rest = len(ids) - fill
        if rest:
            # The i-th of the rest is the (seen + fill + i + 1)-th id: it replaces slot j,
            # drawn from [0, that position), when j < k. One draw per id, made at once.
            drawn = self.rng.integers(self.seen + fill + 1 + np.arange(rest))
            kept = np.flatnonzero(drawn < self.k)  # in stream order
            # tolist() gives plain Python ids of any key kind (int, str, UUID string);
            # an object array of strings has no .item() per element.
            for slot, value in zip(drawn[kept].tolist(), ids[fill + kept].tolist(), strict=True):
                self.chosen[slot] = value
        self.seen += len(ids)

    def tee(self, chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for chunk in chunks:
            self.add(chunk)
            yield chunk

    def ids(self) -> np.ndarray:
        return id_array(self.chosen)


def diff_sorted(
    left: Iterable[np.ndarray], right: Iterable[np.ndarray] | None
) -> tuple[list[Any], list[Any]]:
    """Ids only in ``left`` and ids only in ``right``; both streams ascending and unique."""
    only_left: list[Any] = []
    only_right: list[Any] = []
    for w in windows(pages_of(left), pages_of(right or [])):
        only_left += w.left[0][w.left_only].tolist()
        only_right += w.right[0][w.right_only].tolist()
    return only_left, only_right
