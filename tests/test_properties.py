"""Properties of the pieces every evolve run leans on, over many generated inputs.

diff_sorted decides which rows a cron run catches up and whether verification
passes; Reservoir draws the rows verification compares; bad_rows decides which
stored vectors are never written; redact keeps passwords out of every message.
"""

from __future__ import annotations

import string
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dmu_migrate.evolve.screen import bad_rows
from dmu_migrate.evolve.verify import Reservoir, diff_sorted
from dmu_migrate.stores.base import redact

FAST = settings(max_examples=200, deadline=None)


@st.composite
def chunked(draw: st.DrawFn, ids: list[Any]) -> list[np.ndarray]:
    """``ids`` cut at random places into chunks (some empty), as a store's batches come."""
    cuts = sorted(draw(st.lists(st.integers(0, len(ids)), max_size=6)))
    bounds = [0, *cuts, len(ids)]
    return [np.asarray(ids[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]


id_sets = st.sets(st.integers(-(2**40), 2**40), max_size=60)


@FAST
@given(data=st.data(), left=id_sets, right=id_sets)
def test_diff_sorted_is_the_two_set_differences_in_order(
    data: st.DataObject, left: set[int], right: set[int]
) -> None:
    a, b = sorted(left), sorted(right)
    only_left, only_right = diff_sorted(data.draw(chunked(a)), data.draw(chunked(b)))
    assert only_left == sorted(left - right)
    assert only_right == sorted(right - left)


@FAST
@given(data=st.data(), left=st.sets(st.integers(0, 10_000), max_size=60))
def test_diff_sorted_with_string_keys_and_without_a_right_side(
    data: st.DataObject, left: set[int]
) -> None:
    keys = [f"key-{i:05d}" for i in sorted(left)]  # the string keys stores sort this way
    half = set(keys[::2])
    only_left, only_right = diff_sorted(data.draw(chunked(keys)), data.draw(chunked(sorted(half))))
    assert only_left == [k for k in keys if k not in half] and only_right == []
    assert diff_sorted(data.draw(chunked(keys)), None) == (keys, [])


def fill(k: int, chunks: list[np.ndarray]) -> Reservoir:
    sample = Reservoir(k)
    for _ in sample.tee(iter(chunks)):
        pass
    return sample


@FAST
@given(
    data=st.data(),
    k=st.integers(1, 20),
    ids=st.lists(st.integers(0, 10**9), unique=True, max_size=120),
)
def test_reservoir_bounds_membership_and_determinism(
    data: st.DataObject, k: int, ids: list[int]
) -> None:
    sample = fill(k, data.draw(chunked(ids)))
    chosen = sample.ids().tolist()
    assert len(chosen) == min(k, len(ids))
    assert len(set(chosen)) == len(chosen)  # each seen id at most once
    assert set(chosen) <= set(ids)
    assert sample.seen == len(ids)
    # Same seed, same stream, any batching: the same sample (verify is repeatable).
    assert fill(k, data.draw(chunked(ids))).ids().tolist() == chosen
    if len(ids) <= k:
        assert chosen == ids  # fewer than k: every id, in stream order


@settings(max_examples=20, deadline=None)
@given(k=st.integers(64, 256))
def test_reservoir_spreads_over_the_whole_stream(k: int) -> None:
    """A sample that kept the first k ids would verify only the first batch."""
    chosen = fill(k, list(np.array_split(np.arange(5000), 7))).ids()
    assert 0.25 < float(np.mean(chosen >= 2500)) < 0.75


# Elements either exactly zero, non-finite, or clearly non-zero: the screen treats
# a row whose norm is below 1e-12 as "no direction", so tinier values are left out here.
elements = st.one_of(
    st.just(0.0),
    st.sampled_from([float("nan"), float("inf"), float("-inf")]),
    st.floats(1e-6, 1e6) | st.floats(-1e6, -1e-6),
    # Around the float32 overflow of a squared norm (~1.8e19): stored fine, evolved to inf.
    st.floats(1e18, 3e38) | st.floats(-3e38, -1e18),
)


@FAST
@given(
    rows=st.integers(1, 12).flatmap(
        lambda d: st.lists(st.lists(elements, min_size=d, max_size=d), min_size=0, max_size=12)
    ),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_bad_rows_flags_exactly_non_finite_all_zero_and_overflowing_rows(
    rows: list[list[float]], dtype: type
) -> None:
    vectors: np.ndarray = np.asarray(rows, dtype=dtype).reshape(len(rows), -1 if rows else 4)
    cast = vectors.astype(np.float64).tolist()  # the values as stored, exactly
    largest = float(np.finfo(np.float32).max)
    expected = [
        any(not np.isfinite(v) for v in row)
        or all(v == 0 for v in row)
        or sum(v * v for v in row) >= largest
        for row in cast
    ]
    flagged = bad_rows(vectors)
    assert flagged.shape == (len(rows),)
    assert flagged.tolist() == expected


# Characters RFC 3986 allows unencoded in userinfo, except "'" (see below), plus %XX.
USERINFO = string.ascii_letters + string.digits + "-._~!$&()*+,;="
hosts = st.lists(st.integers(0, 255), min_size=4, max_size=4).map(lambda p: ".".join(map(str, p)))


@FAST
@given(
    scheme=st.sampled_from(["http", "https", "tcp", "grpc", "qdrant", "qdrants", "ftp"]),
    user=st.text(string.ascii_lowercase, min_size=1, max_size=8),
    secret=st.text(USERINFO + "%", min_size=1, max_size=20),
    host=hosts,
    port=st.integers(1, 65535),
    template=st.sampled_from(
        [
            "{url}",
            "cannot reach Milvus at '{url}'; check --uri",
            'Qdrant at "{url}/collections" failed: timeout',
            "retrying {url} (attempt 2) and {url} again",
        ]
    ),
)
def test_redact_never_leaves_a_password(
    scheme: str, user: str, secret: str, host: str, port: int, template: str
) -> None:
    password = "Pw" + secret  # "Pw" cannot occur in the templates, hosts or schemes
    url = f"{scheme}://{user}:{password}@{host}:{port}"
    masked = redact(template.format(url=url))
    assert password not in masked
    assert f"{scheme}://***@{host}:{port}" in masked  # the rest of the address stays readable
    assert redact(masked) == masked
