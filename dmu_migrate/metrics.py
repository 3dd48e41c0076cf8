"""Retrieval metrics on numpy arrays: Recall@k and mAP by exact cosine search.

Vectors are L2-normalised here, so inner product is cosine similarity. Queries
are scored in chunks so that memory stays at ``chunk x gallery`` floats.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_CHUNK = 1024


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, eps)


@dataclass(frozen=True)
class RetrievalScores:
    """Recall@k (share of queries with a relevant item in the top k) and mAP."""

    recall: dict[int, float]
    mean_ap: float
    queries: int  # queries that have at least one relevant gallery item

    def as_dict(self) -> dict[str, float]:
        out = {f"R@{k}": v for k, v in self.recall.items()}
        out["mAP"] = self.mean_ap
        return out


def retrieval_scores(
    queries: np.ndarray,
    query_labels: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    ks: Sequence[int] = (1, 5),
    leave_one_out: bool = False,
) -> RetrievalScores:
    """Score exact retrieval of ``queries`` against ``gallery``.

    With ``leave_one_out`` the query set is the gallery itself and each query
    skips its own row. Queries without any relevant gallery item carry no
    information about ranking and are left out of every figure.
    """
    q = l2_normalize(queries)
    g = l2_normalize(gallery)
    query_labels = np.asarray(query_labels)
    gallery_labels = np.asarray(gallery_labels)
    if leave_one_out and len(q) != len(g):
        raise ValueError("leave-one-out needs the query set to be the gallery")

    hits = {k: 0 for k in ks}
    ap_sum = 0.0
    counted = 0
    for start in range(0, len(q), _CHUNK):
        stop = min(start + _CHUNK, len(q))
        sims = q[start:stop] @ g.T
        relevant = query_labels[start:stop, None] == gallery_labels[None, :]
        if leave_one_out:
            rows = np.arange(stop - start)
            sims[rows, rows + start] = -np.inf
            relevant[rows, rows + start] = False
        # Stable sort so that ties are broken by gallery position, reproducibly.
        order = np.argsort(-sims, axis=1, kind="stable")
        ranked = np.take_along_axis(relevant, order, axis=1)
        n_rel = ranked.sum(axis=1)
        keep = n_rel > 0
        ranked, n_rel = ranked[keep], n_rel[keep]
        counted += len(ranked)
        for k in ks:
            hits[k] += int(ranked[:, :k].any(axis=1).sum())
        cum = np.cumsum(ranked, axis=1)
        positions = np.arange(1, ranked.shape[1] + 1)
        precision_at_hits = np.where(ranked, cum / positions, 0.0)
        ap_sum += float((precision_at_hits.sum(axis=1) / n_rel).sum())

    if counted == 0:
        return RetrievalScores({k: float("nan") for k in ks}, float("nan"), 0)
    return RetrievalScores({k: hits[k] / counted for k in ks}, ap_sum / counted, counted)
