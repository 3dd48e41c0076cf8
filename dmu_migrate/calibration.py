"""Calibrated origins: one score offset that puts evolved and native items on one scale.

After the cut-over a gallery is mixed: evolved items hold psi(o), items re-embedded
by ``backfill`` or inserted later hold the new model's f(x). A new query's cosine to
its own item is lower when that item is evolved than when it is native (psi carries
o only so far), so in a mixed gallery native items of other identities win the top
spot and re-embedding a share of the gallery can make search worse. Adding one
constant ``offset`` to every evolved item's score corrects the scale without
touching the order among evolved items, nor among native ones.

``fit_offset`` picks the offset at training, on identities held out of training, by
the mean R@1 of mixed galleries at several native shares (random draws); the
manifest records it (``Manifest.calibration``; none recorded means offset 0).

A store applies it inside one ANN search through one extra dimension (docs/method.md,
"Calibrated origins"): queries [q ; 1], native items [f ; 0], evolved items
[psi(o) ; k], with k from ``stored_constant`` for the collection's metric. An offset
of 0 adds no dimension: such an upgrade stores and searches exactly as before.

Numpy only: ``evaluate`` and the stores' side run it without torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dmu_migrate.errors import InputError
from dmu_migrate.metrics import l2_normalize

SHARES = (0.05, 0.1, 0.2, 0.3)  # native shares the offset is fitted over
DRAWS = 3  # random draws of the native items per share
OFFSETS = tuple(round(0.01 * i, 2) for i in range(31))  # the grid: 0 to 0.3
METRICS = ("cosine", "ip", "l2")
_CHUNK = 512  # queries scored at once


@dataclass(frozen=True)
class Calibration:
    """The fitted offset, and the mean R@1 of the mixed galleries it was fitted on."""

    offset: float
    before: float  # mean R@1 over shares and draws with no offset
    after: float  # the same with the offset
    shares: tuple[float, ...] = SHARES
    draws: int = DRAWS
    queries: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "offset": self.offset,
            "shares": list(self.shares),
            "draws": self.draws,
            "queries": self.queries,
            "R@1": {"uncalibrated": self.before, "calibrated": self.after},
        }


def stored_constant(offset: float, metric: str = "cosine") -> float:
    """The extra coordinate k of an evolved item, [psi(o) ; k] (psi(o) unit-norm), such
    that against a query [q ; 1] (q unit-norm) it scores ``offset`` above a native item
    [f ; 0] of the same cosine, under ``metric``:

    ip      q.psi + k: k = offset, exactly.
    l2      |q' - g'|^2 = 3 + k^2 - 2 (q.psi + k): k - k^2/2 = offset, exactly.
    cosine  (q.psi + k) / sqrt(1 + k^2) (the query's norm is the same for every item):
            k = offset / sqrt(1 - offset^2) gives exactly q.psi * sqrt(1 - offset^2) + offset,
            the evolved scores shrunk by a factor within offset^2 / 2 of 1.
    """
    if metric not in METRICS:
        raise InputError(f"metric '{metric}' has no calibrated encoding; use one of {METRICS}")
    if not 0.0 <= offset < 0.5:
        raise InputError(
            f"calibration offset {offset} is outside [0, 0.5); the manifest was edited or "
            f"damaged: re-export the artifact with train"
        )
    if metric == "ip":
        return offset
    if metric == "l2":
        return 1.0 - math.sqrt(1.0 - 2.0 * offset)
    return offset / math.sqrt(1.0 - offset * offset)


def queries(vectors: np.ndarray, offset: float) -> np.ndarray:
    """[q ; 1] per unit-norm query; the vectors as they are when ``offset`` is 0."""
    if offset == 0.0:
        return vectors
    return _append(l2_normalize(vectors), 1.0)


def gallery(
    evolved: np.ndarray,
    new: np.ndarray,
    native: np.ndarray,
    offset: float,
    metric: str = "cosine",
) -> np.ndarray:
    """A mixed gallery as a store holds it: rows in ``native`` (indices or a mask) are
    [f ; 0], the others [psi(o) ; k]; plain rows, today's dimension, when ``offset`` is 0."""
    mixed = np.array(evolved, dtype=np.float32, copy=True)
    mixed[native] = new[native]
    if offset == 0.0:
        return mixed
    is_native = np.zeros(len(mixed), dtype=bool)
    is_native[native] = True
    extra = np.where(is_native, 0.0, stored_constant(offset, metric)).astype(np.float32)
    return np.hstack([l2_normalize(mixed), extra[:, None]])


def fit_offset(
    query_vectors: np.ndarray,
    q_labels: np.ndarray,
    evolved: np.ndarray,
    new: np.ndarray,
    g_labels: np.ndarray,
    leave_one_out: bool,
    seed: int = 0,
    shares: Sequence[float] = SHARES,
    draws: int = DRAWS,
    offsets: Sequence[float] = OFFSETS,
) -> Calibration:
    """The offset of ``offsets`` with the best mean R@1 of new queries against mixed
    galleries (each share of ``shares`` natively new, ``draws`` seeded random draws);
    ties go to the smallest offset, the one nearest the uncalibrated search.

    The score of an evolved item is cos + offset exactly (the ip encoding); the cosine
    encoding differs from it by less than offset^2 / 2 (stored_constant).
    """
    rng = np.random.default_rng(seed)
    masks = []
    for share in shares:
        for _ in range(draws):
            mask = np.zeros(len(g_labels), dtype=bool)
            mask[rng.permutation(len(g_labels))[: round(share * len(g_labels))]] = True
            masks.append(mask)
    grid = np.asarray(sorted({0.0, *offsets}), dtype=np.float64)  # 0 first: the baseline
    hits = np.zeros((len(masks), len(grid)))
    counted = 0
    q, e, n = l2_normalize(query_vectors), l2_normalize(evolved), l2_normalize(new)
    q_labels, g_labels = np.asarray(q_labels), np.asarray(g_labels)
    for start in range(0, len(q), _CHUNK):
        stop = min(start + _CHUNK, len(q))
        to_evolved, to_new = q[start:stop] @ e.T, q[start:stop] @ n.T
        if leave_one_out:
            rows = np.arange(stop - start)
            to_evolved[rows, rows + start] = -np.inf
            to_new[rows, rows + start] = -np.inf
        genuine = q_labels[start:stop, None] == g_labels[None, :]
        if leave_one_out:
            genuine[np.arange(stop - start), np.arange(start, stop)] = False
        answerable = genuine.any(axis=1)
        counted += int(answerable.sum())
        for i, mask in enumerate(masks):
            best_e, hit_e = _top(to_evolved, ~mask, genuine)
            best_n, hit_n = _top(to_new, mask, genuine)
            # The native top item wins where it scores above the evolved one plus the offset.
            native_wins = best_n[:, None] > best_e[:, None] + grid[None, :]
            won = np.where(native_wins, hit_n[:, None], hit_e[:, None])
            hits[i] += (won & answerable[:, None]).sum(axis=0)
    if counted == 0:
        raise InputError("no held-out query has another item of its identity; hold out more rows")
    r1 = hits.mean(axis=0) / counted
    best = int(np.argmax(r1))  # the first of the best: the smallest offset
    return Calibration(
        float(grid[best]), float(r1[0]), float(r1[best]), tuple(shares), draws, counted
    )


def _top(scores: np.ndarray, columns: np.ndarray, genuine: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per query row: the best score among ``columns`` and whether that item is genuine."""
    if not columns.any():
        return np.full(len(scores), -np.inf), np.zeros(len(scores), dtype=bool)
    sub = scores[:, columns]
    at = np.argmax(sub, axis=1)
    rows = np.arange(len(sub))
    return sub[rows, at], genuine[:, columns][rows, at]


def _append(vectors: np.ndarray, value: float | np.ndarray) -> np.ndarray:
    column = np.broadcast_to(np.asarray(value, dtype=np.float32), (len(vectors),))
    return np.hstack([np.asarray(vectors, dtype=np.float32), column[:, None]])
