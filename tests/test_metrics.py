"""retrieval_scores / l2_normalize on 2-D cases small enough to rank by eye."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import dmu_migrate.metrics as metrics
from dmu_migrate.metrics import derived_figures, l2_normalize, retrieval_scores, tar_at_far

A, B, C, D = 0, 1, 2, 3

# Gallery on the unit circle (g4, g5 deliberately not unit length).
GALLERY = np.array(
    [
        [1.0, 0.0],  # g0 A
        [0.0, 1.0],  # g1 B
        [-1.0, 0.0],  # g2 A
        [0.0, -1.0],  # g3 D
        [1.0, 1.0],  # g4 B
        [-1.0, -1.0],  # g5 C
    ]
)
GALLERY_LABELS = np.array([A, B, A, D, B, C])

# Cosine rankings, worked out by hand:
# q0 [1, .1]  A: g0 .995, g4 .778, g1 .100, g3 -.100, g5 -.778, g2 -.995
#     relevant (A) at ranks 1, 6: R@1 1, R@5 1, AP (1/1 + 2/6) / 2 = 2/3
# q1 [.1, 1]  B: g1 .995, g4 .778, g0 .100, g2 -.100, g5 -.778, g3 -.995
#     relevant (B) at ranks 1, 2: R@1 1, R@5 1, AP (1/1 + 2/2) / 2 = 1
# q2 [1, 1.2] C: g4 .996, g1 .768, g0 .640, g2 -.640, g3 -.768, g5 -.996
#     relevant (C) at rank 6:     R@1 0, R@5 0, AP 1/6
# q3 [1, 1.2] A: same ranking, relevant (A) at ranks 3, 4:
#                                R@1 0, R@5 1, AP (1/3 + 2/4) / 2 = 5/12
QUERIES = np.array([[1.0, 0.1], [0.1, 1.0], [1.0, 1.2], [1.0, 1.2]])
QUERY_LABELS = np.array([A, B, C, A])
# R@1 = 2/4, R@5 = 3/4, mAP = (8/12 + 12/12 + 2/12 + 5/12) / 4 = 27/48
EXPECTED = {"R@1": 0.5, "R@5": 0.75, "mAP": 27 / 48}


def test_l2_normalize_scales_rows_to_unit_length_and_keeps_zero_rows() -> None:
    out = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0]]))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0], [0.0, -1.0]], rtol=1e-6)


def test_hand_computed_recall_and_map() -> None:
    scores = retrieval_scores(QUERIES, QUERY_LABELS, GALLERY, GALLERY_LABELS)
    assert scores.queries == 4
    assert scores.recall == pytest.approx({1: 0.5, 5: 0.75})
    assert scores.mean_ap == pytest.approx(27 / 48)
    assert scores.as_dict() == pytest.approx(EXPECTED)


def test_each_query_alone() -> None:
    per_query = [(1.0, 1.0, 2 / 3), (1.0, 1.0, 1.0), (0.0, 0.0, 1 / 6), (0.0, 1.0, 5 / 12)]
    for i, (r1, r5, ap) in enumerate(per_query):
        s = retrieval_scores(QUERIES[i : i + 1], QUERY_LABELS[i : i + 1], GALLERY, GALLERY_LABELS)
        assert (s.recall[1], s.recall[5]) == (r1, r5), i
        assert s.mean_ap == pytest.approx(ap), i


def test_custom_ks() -> None:
    # q3 finds its first A at rank 3; q2 only at rank 6.
    s = retrieval_scores(QUERIES, QUERY_LABELS, GALLERY, GALLERY_LABELS, ks=(2, 3, 6))
    assert s.recall == pytest.approx({2: 0.5, 3: 0.75, 6: 1.0})


def test_queries_without_relevant_items_are_left_out() -> None:
    queries = np.vstack([QUERIES, [[0.5, 0.5]]])
    labels = np.append(QUERY_LABELS, 99)  # no gallery item has label 99
    s = retrieval_scores(queries, labels, GALLERY, GALLERY_LABELS)
    assert s.queries == 4
    assert s.as_dict() == pytest.approx(EXPECTED)


def test_no_query_with_a_relevant_item_gives_nan() -> None:
    s = retrieval_scores(QUERIES, np.full(4, 99), GALLERY, GALLERY_LABELS)
    assert s.queries == 0
    assert math.isnan(s.mean_ap) and math.isnan(s.recall[1]) and math.isnan(s.recall[5])


# Leave-one-out set: two A's on the axes, two B's close to them, one lone C.
# Without itself, each A's nearest item is the B beside it:
#   i0 [1,0] A:    i2 .994 B, i3 .110 B, i1 0 A  -> A at rank 3, AP 1/3
#   i1 [0,1] A:    i3 .994 B, i2 .110 B, i0 0 A  -> A at rank 3, AP 1/3
#   i2 [.9,.1] B:  i0 .994 A, i3 .220 B, i1 .110 A -> B at rank 2, AP 1/2
#   i3 [.1,.9] B:  i1 .994 A, i2 .220 B, i0 .110 A -> B at rank 2, AP 1/2
#   i4 [-1,-1] C: no other C -> left out (and it ranks last for everyone)
# R@1 0, R@5 1, mAP (1/3 + 1/3 + 1/2 + 1/2) / 4 = 5/12
LOO = np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9], [-1.0, -1.0]])
LOO_LABELS = np.array([A, A, B, B, C])


def test_leave_one_out_skips_self() -> None:
    s = retrieval_scores(LOO, LOO_LABELS, LOO, LOO_LABELS, leave_one_out=True)
    assert s.queries == 4
    assert s.recall == pytest.approx({1: 0.0, 5: 1.0})
    assert s.mean_ap == pytest.approx(5 / 12)


def test_without_leave_one_out_every_item_finds_itself() -> None:
    s = retrieval_scores(LOO, LOO_LABELS, LOO, LOO_LABELS)
    assert s.queries == 5
    assert s.recall[1] == 1.0


def test_leave_one_out_needs_matching_sizes() -> None:
    with pytest.raises(ValueError, match="leave-one-out"):
        retrieval_scores(LOO[:3], LOO_LABELS[:3], LOO, LOO_LABELS, leave_one_out=True)


@pytest.mark.parametrize("leave_one_out", [False, True])
def test_chunking_does_not_change_results(
    monkeypatch: pytest.MonkeyPatch, leave_one_out: bool
) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 3))  # 7 rows: chunks of 2, 2, 2, 1
    labels = rng.integers(0, 3, size=7)
    whole = retrieval_scores(x, labels, x, labels, ks=(1, 2, 5), leave_one_out=leave_one_out)
    monkeypatch.setattr(metrics, "_CHUNK", 2)
    chunked = retrieval_scores(x, labels, x, labels, ks=(1, 2, 5), leave_one_out=leave_one_out)
    assert chunked.queries == whole.queries
    assert chunked.as_dict() == pytest.approx(whole.as_dict())


def test_chunked_leave_one_out_matches_hand_values(monkeypatch: pytest.MonkeyPatch) -> None:
    # Chunk offsets must be applied when blanking the diagonal (rows 2-3 live in chunk 2).
    monkeypatch.setattr(metrics, "_CHUNK", 2)
    s = retrieval_scores(LOO, LOO_LABELS, LOO, LOO_LABELS, leave_one_out=True)
    assert s.queries == 4
    assert s.recall == pytest.approx({1: 0.0, 5: 1.0})
    assert s.mean_ap == pytest.approx(5 / 12)


# Small integer coordinates (exact in float32) and power-of-two scale factors keep
# the normalised vectors bit-identical, so ties rank the same after scaling.
_ints = st.integers(min_value=-4, max_value=4)


@st.composite
def retrieval_case(draw: st.DrawFn) -> dict[str, np.ndarray]:
    dim = draw(st.integers(1, 3))
    n_q = draw(st.integers(1, 6))
    n_g = draw(st.integers(1, 8))
    return {
        "q": draw(arrays(np.float32, (n_q, dim), elements=_ints)),
        "ql": draw(arrays(np.int64, n_q, elements=st.integers(0, 2))),
        "g": draw(arrays(np.float32, (n_g, dim), elements=_ints)),
        "gl": draw(arrays(np.int64, n_g, elements=st.integers(0, 2))),
        "q_scale": draw(arrays(np.int64, n_q, elements=st.integers(-6, 6))),
        "g_scale": draw(arrays(np.int64, n_g, elements=st.integers(-6, 6))),
    }


@settings(max_examples=150, deadline=None)
@given(case=retrieval_case())
def test_properties_on_random_data(case: dict[str, np.ndarray]) -> None:
    s = retrieval_scores(case["q"], case["ql"], case["g"], case["gl"])
    if s.queries == 0:
        assert math.isnan(s.mean_ap)
        return
    assert 1 <= s.queries <= len(case["q"])
    assert 0.0 <= s.recall[1] <= s.recall[5] <= 1.0
    assert 0.0 <= s.mean_ap <= 1.0
    # Positive per-row factors 2^k.
    q_scaled = case["q"] * np.exp2(case["q_scale"])[:, None].astype(np.float32)
    g_scaled = case["g"] * np.exp2(case["g_scale"])[:, None].astype(np.float32)
    scaled = retrieval_scores(q_scaled, case["ql"], g_scaled, case["gl"])
    assert scaled.queries == s.queries
    assert scaled.as_dict() == pytest.approx(s.as_dict())


def _full_sort_scores(
    q: np.ndarray, ql: np.ndarray, g: np.ndarray, gl: np.ndarray, ks: tuple[int, ...]
) -> tuple[dict[int, float], float, int]:
    """The definition, written plainly: rank the whole gallery per query (stable sort).

    The scores come from the same query chunks as retrieval_scores': a BLAS product of
    a chunk and of the whole matrix may round differently, and this test compares the
    rankings, not the products.
    """
    chunks = metrics._similarity_chunks(l2_normalize(q), ql, l2_normalize(g), gl, False)
    sims = np.vstack([chunk for chunk, _, _ in chunks])
    hits, ap, counted = dict.fromkeys(ks, 0), 0.0, 0
    for row, label in zip(sims, ql, strict=True):
        ranked = (gl == label)[np.argsort(-row, kind="stable")]
        if not ranked.any():
            continue
        counted += 1
        for k in ks:
            hits[k] += bool(ranked[:k].any())
        ranks = np.flatnonzero(ranked) + 1
        ap += float(np.mean(np.arange(1, len(ranks) + 1) / ranks))
    if counted == 0:
        return {}, math.nan, 0
    return {k: v / counted for k, v in hits.items()}, ap / counted, counted


@settings(max_examples=100, deadline=None)
@given(case=retrieval_case(), pairs=st.integers(1, 40))
def test_sorting_only_the_head_equals_sorting_the_whole_gallery(
    case: dict[str, np.ndarray], pairs: int
) -> None:
    # Integer coordinates make many exact ties; a tiny score budget makes one-row chunks.
    # Both implementations take their scores from the same chunks, so the scores are
    # bit-identical and any difference is the ranking's.
    old_pairs = metrics._PAIRS
    metrics._PAIRS = pairs
    try:
        recall, mean_ap, counted = _full_sort_scores(
            case["q"], case["ql"], case["g"], case["gl"], (1, 3)
        )
        s = retrieval_scores(case["q"], case["ql"], case["g"], case["gl"], ks=(1, 3))
    finally:
        metrics._PAIRS = old_pairs
    assert s.queries == counted
    if counted:
        assert s.recall == pytest.approx(recall)
        assert s.mean_ap == pytest.approx(mean_ap)


def test_chunks_shrink_so_a_large_gallery_stays_within_the_score_budget() -> None:
    assert metrics._chunk_rows(1_000) == metrics._CHUNK
    rows = metrics._chunk_rows(10_000_000)
    assert rows >= 1 and rows * 10_000_000 <= max(metrics._PAIRS, 10_000_000)


def test_scaling_invariance_with_arbitrary_factors() -> None:
    factors_q = np.array([0.37, 12.5, 3.0, 1e-3])[:, None]
    factors_g = np.array([7.1, 0.2, 55.0, 1.5, 0.9, 1e3])[:, None]
    s = retrieval_scores(QUERIES * factors_q, QUERY_LABELS, GALLERY * factors_g, GALLERY_LABELS)
    assert s.as_dict() == pytest.approx(EXPECTED)


# TAR@FAR by hand. Queries q0 = [1, 0] (A), q1 = [0, 1] (B); cosines per gallery item:
#            g0 A [1,0]  g1 A [.6,.8]  g2 B [.8,.6]  g3 B [-1,0]  g4 C [0,-1]
#   q0 (A)     1.0 gen     .6 gen        .8 imp       -1 imp       0 imp
#   q1 (B)     0   imp     .8 imp        .6 gen        0 gen      -1 imp
# Genuine: 1.0, .6, .6, 0 (4). Impostors, high to low: .8, .8, 0, 0, -1, -1 (6).
# FAR .2 -> k = floor(1.2) = 1: threshold = 2nd highest impostor .8; genuine > .8: 1 of 4.
# FAR .5 -> k = 3: threshold = 4th highest impostor 0; genuine > 0: 3 of 4.
# FAR .1 -> k = 0: fewer impostors than 1 / FAR, not measurable.
TAR_Q = np.array([[1.0, 0.0], [0.0, 1.0]])
TAR_QL = np.array([A, B])
TAR_G = np.array([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6], [-1.0, 0.0], [0.0, -1.0]])
TAR_GL = np.array([A, A, B, B, C])


def test_tar_at_far_hand_computed() -> None:
    tar = tar_at_far(TAR_Q, TAR_QL, TAR_G, TAR_GL, fars=(0.2, 0.5, 0.1))
    assert tar[0.2] == pytest.approx(0.25)
    assert tar[0.5] == pytest.approx(0.75)
    assert math.isnan(tar[0.1])


def test_tar_at_far_without_genuine_pairs_is_nan() -> None:
    tar = tar_at_far(TAR_Q, np.array([C, C]), TAR_G[:4], TAR_GL[:4], fars=(0.5,))
    assert math.isnan(tar[0.5])


def brute_force_tar(q, ql, g, gl, far, leave_one_out):
    """Every pair's score in one matrix: the definition, without the memory bound."""
    sims = l2_normalize(q) @ l2_normalize(g).T
    genuine = ql[:, None] == gl[None, :]
    valid = np.ones_like(genuine)
    if leave_one_out:
        np.fill_diagonal(valid, False)
    impostor = np.sort(sims[valid & ~genuine])[::-1]
    k = math.floor(far * len(impostor))
    return float((sims[valid & genuine] > impostor[k]).mean())


@pytest.mark.parametrize("leave_one_out", [False, True])
def test_tar_at_far_chunked_matches_brute_force(
    monkeypatch: pytest.MonkeyPatch, leave_one_out: bool
) -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 6, size=300)
    x = rng.normal(size=(300, 8)) + 2.0 * np.eye(8)[labels % 8]
    monkeypatch.setattr(metrics, "_CHUNK", 64)  # several chunks, one short
    fars = (1e-3, 1e-2, 0.1)
    tar = tar_at_far(x, labels, x, labels, fars, leave_one_out=leave_one_out)
    for far in fars:
        expected = brute_force_tar(x, labels, x, labels, far, leave_one_out)
        assert tar[far] == pytest.approx(expected), far
    assert 0.0 < tar[1e-3] < tar[0.1] < 1.0


def test_scores_carry_tar_under_one_name() -> None:
    s = metrics.RetrievalScores({1: 0.5}, 0.4, 2, {1e-3: 0.3, 1e-4: 0.1})
    assert s.as_dict() == {"R@1": 0.5, "mAP": 0.4, "TAR@FAR=1e-03": 0.3, "TAR@FAR=1e-04": 0.1}


def _scores(r1: float) -> metrics.RetrievalScores:
    return metrics.RetrievalScores({1: r1}, r1 / 2, 10)


def test_derived_figures_by_hand() -> None:
    scores = {
        "old->old": _scores(0.50),
        "new->old": _scores(0.55),
        "new->evolved": _scores(0.65),
        "new->new": _scores(0.78),
    }
    d = derived_figures(scores, reference=_scores(0.80))
    assert d.compatible == {"R@1": True, "mAP": True}
    # (0.65 - 0.50) / (0.80 - 0.50) = 0.5, for mAP the same ratio of halves.
    assert d.gain_captured["new->evolved"] == pytest.approx({"R@1": 0.5, "mAP": 0.5})
    assert "new->mixed" not in d.gain_captured
    assert d.degradation == pytest.approx({"R@1": 0.02, "mAP": 0.01})


def test_derived_figures_without_reference_and_without_gain() -> None:
    scores = {"old->old": _scores(0.5), "new->old": _scores(0.4), "new->new": _scores(0.7)}
    d = derived_figures(scores)
    assert d.compatible == {"R@1": False, "mAP": False}
    assert d.gain_captured == {} and d.degradation == {}
    flat = derived_figures({**scores, "new->evolved": _scores(0.6)}, reference=_scores(0.5))
    assert math.isnan(flat.gain_captured["new->evolved"]["R@1"])  # backfill gains nothing
