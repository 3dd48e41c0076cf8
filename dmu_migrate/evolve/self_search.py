"""Search the target with a sample of its own vectors: can its index serve them?

Catches a target that holds the right numbers but cannot serve them (no index
or a broken one, the wrong vector field, scores that do not follow the
metric) before readers see it. Correct data must pass, so a row counts as
found when its own id is among the k hits, or when the k-th hit scores at
least as well as the row's own vector would:

    tied        exact duplicates (boilerplate paragraphs, repeated images) score
                alike, and an index may return any k of them
    outranked   by inner product, rows of a larger norm can outscore a vector's own

A row is missed when the index returned a hit its own vector beats: a search
that ranked every row exactly would have returned the row. Graph and cluster
indexes miss a few by design, so the sample passes at MIN_RECALL, not on every
row; stores search with parameters fitted to their index (VectorStore.search)
to keep misses rare, and say which. The rows a first search missed get a second
look with a budget WIDER times larger: a row the index serves at a larger ef is
served, and an index's build is random (a sparse graph on the 2.3.5 server
missed 14 of 256 own rows at ef 256 in one build and none in another), so a
check at one budget would fail some correct targets and pass their rebuilds. Below MIN_RECALL the target still passes
when it finds MIN_RECALL of what the source's index finds, searched the same way
with its own vectors. Measured on Milvus Lite (FAISS HNSW, M 16): of 320 rows,
276 of them copies of one vector, the source's index missed 24 of 256 sampled
rows and the evolved target's 26, and ef 256 instead of 64 found one more of 40
in a like collection. The migration made nothing worse; failing it would fail
every run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from dmu_migrate.errors import VerificationError
from dmu_migrate.stores.base import WIDER, Hits, VectorStore

log = logging.getLogger(__name__)

SEARCH_K = 10  # hits per query
MIN_RECALL = 0.95  # share of the sampled rows that must be found
# Scores of equal vectors differ by float32 rounding (about 1e-7 of the score's scale).
SCORE_TOLERANCE = 1e-4
SIMILARITIES = ("COSINE", "IP")  # higher is nearer; other metrics are distances


@dataclass(frozen=True)
class Miss:
    id: Any
    own: float  # the score the row's own vector gets against itself
    kth: float | None  # the k-th (farthest) hit's score; None when fewer than k came back

    def __str__(self) -> str:
        kth = "fewer hits" if self.kth is None else f"{SEARCH_K}th hit {self.kth:.4f}"
        return f"{self.id} (own {self.own:.4f}, {kth})"


@dataclass(frozen=True)
class SelfSearch:
    params: str  # how the index was searched, as the store says
    metric: str
    queries: int
    exact: bool = False  # the search scored every row (Hits.exact)
    found: int = 0  # own id among the hits
    tied: int = 0
    outranked: int = 0
    missed: list[Miss] = field(default_factory=list)
    # Hits that score better than a vector's own can under a cosine or distance metric:
    # the scores do not follow the metric the store states.
    impossible: list[Miss] = field(default_factory=list)
    # Found of the same rows by the source's index, searched with its own vectors; set when
    # the target passed below MIN_RECALL by finding about as many.
    source: int | None = None
    # Rows the first search missed and a second, wider one found (counted in ``found``).
    widened: int = 0

    @property
    def counted(self) -> int:
        return self.found + self.tied + self.outranked

    @property
    def recall(self) -> float:
        return self.counted / self.queries if self.queries else 1.0

    def describe(self) -> str:
        """One phrase for reports and logs: how it searched and what it found."""
        parts = [f"{self.counted} of {self.queries} found"]
        if self.tied:
            parts.append(f"{self.tied} of them by a tie with equal vectors (duplicates)")
        if self.widened:
            parts.append(f"{self.widened} of them only by a {WIDER}x wider search")
        if self.outranked:
            parts.append(f"{self.outranked} below rows of a larger inner product")
        if self.missed or self.impossible:
            parts.append(f"{len(self.missed) + len(self.impossible)} missed")
        if self.source is not None:
            parts.append(f"the source's own index finds {self.source} of the same rows")
        return f"{', '.join(parts)} ({self.params}, {self.metric}, top {SEARCH_K})"

    def failure(self, name: str, source: SelfSearch | None = None) -> str:
        """Why the sample failed, one cause per clause, with ids and scores."""
        causes = []
        if self.missed and self.exact:
            causes.append(
                f"{len(self.missed)} not returned though the search scored every row "
                f"({_first(self.missed)}): the search reads other vectors than the ones "
                f"stored for these ids (a stale index, or another vector field); rebuild the "
                f"index of '{name}' and run evolve again"
            )
        elif self.missed:
            causes.append(
                f"{len(self.missed)} missed by the index, which returned rows their own vector "
                f"outscores also when searched with a {WIDER}x wider budget "
                f"({_first(self.missed)}): its recall is too low, so rebuild it with "
                f"larger build parameters (HNSW M and efConstruction, IVF nlist)"
            )
        if self.impossible:
            causes.append(
                f"{len(self.impossible)} behind hits that score better than a vector's own can "
                f"under {self.metric} ({_first(self.impossible)}): the index ranks by another "
                f"metric, so recreate it with {self.metric}"
            )
        if self.tied:
            causes.append(f"{self.tied} counted found by a tie with equal vectors (duplicates)")
        if source is not None:
            causes.append(f"the source's own index finds {source.counted} of the same rows")
        return (
            f"searching '{name}' with {self.queries} of its own evolved vectors ({self.params}, "
            f"{self.metric}) found {self.counted} ({self.recall:.1%}, needs {MIN_RECALL:.0%}): "
            f"{'; '.join(causes)}; nothing was cut over, and rows written stay for the next "
            f"run, which checks again"
        )


def _first(misses: list[Miss]) -> str:
    return "ids " + ", ".join(str(m) for m in misses[:3])


def own_scores(queries: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(each vector's score against itself, the tolerance of an equal score) under ``metric``."""
    squared = (queries.astype(np.float64) ** 2).sum(axis=1)
    if metric == "COSINE":
        return (squared > 0).astype(np.float64), np.full(len(queries), SCORE_TOLERANCE)
    absolute = np.abs(queries.astype(np.float64)).sum(axis=1)
    scale = np.maximum(1.0, np.maximum(squared, absolute))
    own = squared if metric == "IP" else np.zeros(len(queries))
    return own, SCORE_TOLERANCE * scale


def judge(ids: list[Any], queries: np.ndarray, hits: Hits, k: int = SEARCH_K) -> SelfSearch:
    """Sort each sampled row into found, tied, outranked, missed or impossible (see above)."""
    own, tolerance = own_scores(queries, hits.metric)
    higher = hits.metric in SIMILARITIES
    found = tied = outranked = 0
    missed: list[Miss] = []
    impossible: list[Miss] = []
    for row, own_score, tol, got, scores in zip(
        ids, own.tolist(), tolerance.tolist(), hits.ids, hits.scores, strict=True
    ):
        if row in got:
            found += 1
            continue
        if len(scores) < k:
            missed.append(Miss(row, own_score, None))
            continue
        kth = min(scores) if higher else max(scores)
        beats = kth - own_score if higher else own_score - kth  # > 0: the hit is nearer
        if abs(beats) <= tol:
            tied += 1
        elif beats < 0:
            missed.append(Miss(row, own_score, kth))
        elif hits.metric == "IP":
            outranked += 1
        else:
            impossible.append(Miss(row, own_score, kth))
    return SelfSearch(
        hits.params, hits.metric, len(ids), hits.exact, found, tied, outranked, missed, impossible
    )


def self_search(
    store: VectorStore,
    name: str,
    vector_field: str,
    ids: np.ndarray,
    vectors: np.ndarray,
    baseline: Callable[[], SelfSearch] | None = None,
) -> SelfSearch:
    """Search ``name`` with ``vectors`` (the stored vectors of ``ids``); raises
    VerificationError when fewer than MIN_RECALL of them are found.

    ``baseline``, if given, searches the source the same way with its own vectors of
    the same ids: a target whose index finds MIN_RECALL of what the source's finds
    passes even below MIN_RECALL (a graph index over many exact duplicates cannot
    reach some rows in either), with a note in its report.
    """
    if not len(ids):
        return SelfSearch("nothing searched", "", 0)
    hits = store.search(name, vector_field, vectors, SEARCH_K)
    result = second_look(
        store, name, vector_field, judge(ids.tolist(), vectors, hits), vectors, ids
    )
    log.info("searched '%s' with its own vectors: %s", name, result.describe())
    if result.recall >= MIN_RECALL:
        return result
    source = baseline() if baseline else None
    # Held to MIN_RECALL of what the source finds: with a source that finds every row,
    # that is MIN_RECALL itself.
    if source is not None and result.recall >= MIN_RECALL * source.recall:
        log.info("the source, searched the same way, finds %s", source.describe())
        return replace(result, source=source.counted)
    raise VerificationError(result.failure(name, source))


def second_look(
    store: VectorStore,
    name: str,
    vector_field: str,
    first: SelfSearch,
    vectors: np.ndarray,
    ids: np.ndarray,
) -> SelfSearch:
    """``first`` with its missed rows searched again at a WIDER budget; those found then
    count as found. An exact search has nothing wider to try."""
    if first.exact or not first.missed:
        return first
    missed = {m.id for m in first.missed}
    rows = [i for i, row in enumerate(ids.tolist()) if row in missed]
    again = judge(
        [ids.tolist()[i] for i in rows],
        vectors[rows],
        store.search(name, vector_field, vectors[rows], SEARCH_K, widen=WIDER),
    )
    log.info("searched %d missed rows of '%s' again: %s", len(rows), name, again.describe())
    widened = again.counted
    return replace(
        first,
        found=first.found + again.found,
        tied=first.tied + again.tied,
        outranked=first.outranked + again.outranked,
        missed=again.missed,
        impossible=first.impossible + again.impossible,
        widened=widened,
    )
