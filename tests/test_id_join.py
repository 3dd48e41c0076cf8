"""The windowed merge-join against sets, on any page split, and the reservoir built on it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmu_migrate.evolve.id_join import Page, pages_of, windows
from dmu_migrate.evolve.verify import Reservoir, diff_sorted


def paged(ids: list[int], cuts: list[int], as_str: bool) -> list[Page]:
    """Ascending ``ids`` cut into pages (some empty), each id carried with a column."""
    values = sorted(ids)
    array: np.ndarray = np.array([f"id-{v:05d}" for v in values] if as_str else values)
    bounds = sorted({0, len(values), *(c % (len(values) + 1) for c in cuts)})
    pages: list[Page] = []
    for start, stop in zip(bounds, [*bounds[1:], len(values)], strict=True):
        chunk = array[start:stop]
        pages.append((chunk, (np.array([f"v{x}" for x in chunk.tolist()], dtype=object),)))
    return pages


side = st.sets(st.integers(0, 400), max_size=120)
cuts = st.lists(st.integers(0, 500), max_size=8)


@settings(max_examples=200, deadline=None)
@given(left=side, right=side, left_cuts=cuts, right_cuts=cuts, as_str=st.booleans())
def test_windows_partition_both_sides_as_sets_do(
    left: set[int], right: set[int], left_cuts: list[int], right_cuts: list[int], as_str: bool
) -> None:
    a, b = paged(list(left), left_cuts, as_str), paged(list(right), right_cuts, as_str)
    only_left: list[object] = []
    only_right: list[object] = []
    both: list[tuple[object, object]] = []
    for w in windows(a, b, widths=(1, 1)):
        ids, (carried,) = w.left
        other, (other_carried,) = w.right
        only_left += ids[w.left_only].tolist()
        only_right += other[w.right_only].tolist()
        assert (ids[w.left_both] == other[w.right_both]).all()
        # Columns travel with their ids through the buffering.
        assert carried[w.left_both].tolist() == other_carried[w.right_both].tolist()
        both += list(zip(ids[w.left_both].tolist(), carried[w.left_both].tolist(), strict=True))
    name = (lambda v: f"id-{v:05d}") if as_str else (lambda v: v)
    assert only_left == [name(v) for v in sorted(left - right)]
    assert only_right == [name(v) for v in sorted(right - left)]
    assert [i for i, _ in both] == [name(v) for v in sorted(left & right)]
    assert all(c == f"v{i}" for i, c in both)


@pytest.mark.timeout(60)
def test_diff_sorted_handles_a_missing_or_empty_side() -> None:
    chunks = [np.array([1, 2, 5]), np.array([], np.int64), np.array([9])]
    assert diff_sorted(chunks, None) == ([1, 2, 5, 9], [])
    assert diff_sorted([], [np.array([3, 4])]) == ([], [3, 4])
    assert diff_sorted(chunks, [np.array([2, 3]), np.array([9, 10])]) == ([1, 5], [3, 10])
    assert list(windows(pages_of([]), pages_of([]))) == []


@pytest.mark.timeout(60)
def test_the_reservoir_keeps_k_ids_drawn_uniformly() -> None:
    # 2,000 draws of 4 from 20 ids in pages of 3: each id kept with probability 1/5.
    kept = np.zeros(20)
    for seed in range(2000):
        r = Reservoir(4)
        r.rng = np.random.default_rng(seed)
        for start in range(0, 20, 3):
            r.add(np.arange(start, min(start + 3, 20)))
        assert r.seen == 20 and len(set(r.chosen)) == 4
        kept[r.ids()] += 1
    share = kept / 2000
    assert np.all(np.abs(share - 0.2) < 0.045), share  # about 5 standard errors
    small = Reservoir(10)
    small.add(np.array([7, 8]))
    assert small.chosen == [7, 8] and small.seen == 2
