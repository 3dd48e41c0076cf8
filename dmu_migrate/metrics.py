"""Retrieval metrics on numpy arrays: Recall@k, mAP and TAR@FAR by exact cosine search.

Vectors are L2-normalised here, so inner product is cosine similarity. Queries
are scored in chunks of at most ``_PAIRS`` query-gallery scores, so memory is
bounded whatever the gallery's size, plus, for TAR@FAR, the highest
``FAR x impostor pairs`` impostor scores.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

_CHUNK = 1024  # queries per chunk at most
_PAIRS = 1 << 25  # query-gallery scores held at once (128 MiB of float32), for any gallery


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
    tar: dict[float, float] = field(default_factory=dict)  # FAR -> TAR, when computed

    def as_dict(self) -> dict[str, float]:
        out = {f"R@{k}": v for k, v in self.recall.items()}
        out["mAP"] = self.mean_ap
        out.update({far_name(far): v for far, v in self.tar.items()})
        return out


def far_name(far: float) -> str:
    """``1e-3`` -> ``TAR@FAR=1e-03``: one spelling for tables, JSON and charts."""
    return f"TAR@FAR={far:.0e}"


def retrieval_scores(
    queries: np.ndarray,
    query_labels: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    ks: Sequence[int] = (1, 5),
    leave_one_out: bool = False,
    distractors: np.ndarray | None = None,
    distractor_labels: np.ndarray | None = None,
) -> RetrievalScores:
    """Score exact retrieval of ``queries`` against ``gallery``.

    With ``leave_one_out`` the query set is the gallery itself and each query
    skips its own row. Queries without any relevant gallery item carry no
    information about ranking and are left out of every figure.

    ``distractors`` join the gallery as items that are never relevant: they can
    only push relevant items down. One whose entry in ``distractor_labels``
    equals the query's label is left out of that query's ranking, neither a hit
    nor a miss, since a shared label may name the same identity (see
    docs/method.md, "The gate's distractors").
    """
    q = l2_normalize(queries)
    g = l2_normalize(gallery)
    query_labels = np.asarray(query_labels)
    gallery_labels = np.asarray(gallery_labels)
    if leave_one_out and len(q) != len(g):
        raise ValueError("leave-one-out needs the query set to be the gallery")
    extra = None
    if distractors is not None and len(distractors):
        labels = np.full(len(distractors), -1) if distractor_labels is None else distractor_labels
        extra = (l2_normalize(distractors), np.asarray(labels))

    hits = {k: 0 for k in ks}
    ap_sum = 0.0
    counted = 0
    chunks = _similarity_chunks(q, query_labels, g, gallery_labels, leave_one_out, extra)
    for sims, relevant, valid in chunks:
        # A query never retrieves itself, nor a distractor that may share its identity.
        sims[~valid] = -np.inf
        for row, rel in zip(sims, relevant, strict=True):
            ranked = _ranked_head(row, rel)
            if ranked is None:
                continue
            counted += 1
            for k in ks:
                hits[k] += bool(ranked[:k].any())
            positions = np.flatnonzero(ranked) + 1  # 1-based ranks of the relevant items
            ap_sum += float((np.arange(1, len(positions) + 1) / positions).mean())

    if counted == 0:
        return RetrievalScores({k: float("nan") for k in ks}, float("nan"), 0)
    return RetrievalScores({k: hits[k] / counted for k in ks}, ap_sum / counted, counted)


def _ranked_head(row: np.ndarray, relevant: np.ndarray) -> np.ndarray | None:
    """Relevance of the gallery in ranked order, down to the last relevant item.

    The full ranking orders every item by score, ties by gallery position (a
    stable sort). Items scoring below the lowest relevant one can only follow
    every relevant item, so sorting the items at or above it gives the same
    head: Recall@k and AP read nothing else. That sorts a handful of items per
    query instead of the whole gallery. None when nothing is relevant.
    """
    scores = row[relevant]
    if len(scores) == 0:
        return None
    head = np.flatnonzero(row >= scores.min())  # in gallery order, so ties stay stable
    order = head[np.argsort(-row[head], kind="stable")]
    return relevant[order]


def _chunk_rows(n_gallery: int) -> int:
    """Queries scored at once: chunk x gallery scores stay within _PAIRS whatever the gallery."""
    return max(1, min(_CHUNK, _PAIRS // max(n_gallery, 1)))


def _similarity_chunks(
    q: np.ndarray,
    ql: np.ndarray,
    g: np.ndarray,
    gl: np.ndarray,
    leave_one_out: bool,
    extra: tuple[np.ndarray, np.ndarray] | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(scores, genuine mask, pair mask) per query chunk; the pair mask drops self-pairs.

    ``extra`` (distractor vectors, labels) adds columns after the gallery's that are
    never genuine; the pair mask drops those that share the query's label.
    """
    step = _chunk_rows(len(g) + (0 if extra is None else len(extra[0])))
    for start in range(0, len(q), step):
        stop = min(start + step, len(q))
        sims = q[start:stop] @ g.T
        genuine = ql[start:stop, None] == gl[None, :]
        valid = np.ones_like(genuine)
        if leave_one_out:
            rows = np.arange(stop - start)
            valid[rows, rows + start] = False
        if extra is not None:
            d, dl = extra
            sims = np.hstack([sims, q[start:stop] @ d.T])
            valid = np.hstack([valid, ql[start:stop, None] != dl[None, :]])
            genuine = np.hstack([genuine, np.zeros((stop - start, len(d)), dtype=bool)])
        yield sims, genuine & valid, valid


def tar_at_far(
    queries: np.ndarray,
    query_labels: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    fars: Sequence[float] = (1e-3, 1e-4),
    leave_one_out: bool = False,
    distractors: np.ndarray | None = None,
    distractor_labels: np.ndarray | None = None,
) -> dict[float, float]:
    """True accept rate at a false accept rate, over every query-gallery pair.

    Genuine pairs share a label, every other pair is an impostor. For each FAR
    the threshold is the (k+1)-th highest impostor score with k = floor(FAR x
    impostors), so at most k impostors score strictly above it; TAR is the share
    of genuine pairs strictly above. Two passes over the similarity chunks keep
    memory at one chunk plus the top k+1 impostor scores, never all pairs. A FAR
    below 1 / impostors cannot be measured on this data and gives NaN, as does a
    table without genuine pairs. ``distractors`` add impostor pairs only, less those
    that share the query's label (as in retrieval_scores).
    """
    q, g = l2_normalize(queries), l2_normalize(gallery)
    ql, gl = np.asarray(query_labels), np.asarray(gallery_labels)
    if leave_one_out and len(q) != len(g):
        raise ValueError("leave-one-out needs the query set to be the gallery")
    # Pair counts from label frequencies, so the top-k size is known before scanning.
    labels, q_counts = np.unique(ql, return_counts=True)
    g_counts = np.array([int((gl == label).sum()) for label in labels])
    n_genuine = int((q_counts * g_counts).sum()) - (len(q) if leave_one_out else 0)
    n_pairs = len(q) * len(g) - (len(q) if leave_one_out else 0)
    extra = None
    if distractors is not None and len(distractors):
        dl = np.full(len(distractors), -1) if distractor_labels is None else distractor_labels
        extra = (l2_normalize(distractors), np.asarray(dl))
        shared = np.array([int((extra[1] == label).sum()) for label in labels])
        n_pairs += len(q) * len(distractors) - int((q_counts * shared).sum())
    n_impostor = n_pairs - n_genuine
    ks = {far: math.floor(far * n_impostor) for far in fars}
    out = {far: float("nan") for far in fars}
    measurable = [far for far in fars if ks[far] >= 1]
    if n_genuine == 0 or not measurable:
        return out

    keep = max(ks[far] for far in measurable) + 1
    top = np.empty(0, np.float32)
    for sims, genuine, valid in _similarity_chunks(q, ql, g, gl, leave_one_out, extra):
        impostor = sims[valid & ~genuine]
        merged = np.concatenate([top, impostor])
        if len(merged) > keep:
            merged = np.partition(merged, len(merged) - keep)[-keep:]
        top = merged
    top = np.sort(top)[::-1]
    thresholds = {far: top[ks[far]] for far in measurable}
    accepted = dict.fromkeys(measurable, 0)
    for sims, genuine, _ in _similarity_chunks(q, ql, g, gl, leave_one_out, extra):
        scores = sims[genuine]
        for far in measurable:
            accepted[far] += int((scores > thresholds[far]).sum())
    out.update({far: accepted[far] / n_genuine for far in measurable})
    return out


@dataclass(frozen=True)
class Derived:
    """The figures of method.md, per metric name (``R@1``, ``mAP``, ...).

    ``gain_captured`` and ``degradation`` need the full-backfill reference
    (an independently trained new model's new->new); they are empty without it.
    """

    compatible: dict[str, bool]  # M(new->old) > M(old->old)
    gain_captured: dict[str, dict[str, float]]  # setting -> metric -> share of the backfill gain
    degradation: dict[str, float]  # M(new*->new*) - M(new->new)

    def as_dict(self) -> dict[str, object]:
        return {
            "compatible": self.compatible,
            "gain_captured": self.gain_captured,
            "new_to_new_degradation": self.degradation,
        }


def derived_figures(
    scores: Mapping[str, RetrievalScores],
    reference: RetrievalScores | None = None,
    gain_settings: Sequence[str] = ("new->evolved", "new->mixed"),
) -> Derived:
    """Compatibility, share of the full-backfill gain captured, new-to-new degradation.

    ``scores`` maps settings (``old->old``, ``new->old``, ``new->new`` and those in
    ``gain_settings``) to their scores; ``reference`` is M(new*->new*). A gain
    share is NaN when the backfill gains nothing over the old system (no scale).
    """
    old, new_old = scores["old->old"].as_dict(), scores["new->old"].as_dict()
    compatible = {m: bool(new_old[m] > old[m]) for m in old if not math.isnan(old[m])}
    gain: dict[str, dict[str, float]] = {}
    degradation: dict[str, float] = {}
    if reference is not None:
        ref = reference.as_dict()
        for setting in gain_settings:
            if setting not in scores:
                continue
            got = scores[setting].as_dict()
            gain[setting] = {
                m: (got[m] - old[m]) / (ref[m] - old[m]) if ref[m] != old[m] else float("nan")
                for m in old
            }
        new_new = scores["new->new"].as_dict()
        degradation = {m: ref[m] - new_new[m] for m in old}
    return Derived(compatible, gain, degradation)
