"""retrieval_scores / l2_normalize on 2-D cases small enough to rank by eye."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import dmu_migrate.metrics as metrics
from dmu_migrate.metrics import l2_normalize, retrieval_scores

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


def test_scaling_invariance_with_arbitrary_factors() -> None:
    factors_q = np.array([0.37, 12.5, 3.0, 1e-3])[:, None]
    factors_g = np.array([7.1, 0.2, 55.0, 1.5, 0.9, 1e3])[:, None]
    s = retrieval_scores(QUERIES * factors_q, QUERY_LABELS, GALLERY * factors_g, GALLERY_LABELS)
    assert s.as_dict() == pytest.approx(EXPECTED)
