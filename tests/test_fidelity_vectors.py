"""Stored vectors too large for the adapter's float32 arithmetic are screened like NaN."""

from __future__ import annotations

import numpy as np
import pytest
from backends import Backend
from galleries import Digits
from limits import limit

from dmu_migrate.artifact import Artifact
from dmu_migrate.errors import InputError
from dmu_migrate.evolve.pipeline import EvolveOptions, evolve
from dmu_migrate.evolve.plan import make_plan
from dmu_migrate.evolve.run import Outcome
from dmu_migrate.evolve.transform import AdapterChain


@limit(300)
def test_vectors_that_overflow_float32_are_refused_or_skipped(
    backend: Backend, digits: Digits, artifact: Artifact
) -> None:
    source, alias = backend.unique("huge"), backend.unique("live")
    ids = np.arange(1, 41)
    vectors = digits.old_te[:40].copy()
    # Norm 2e19: finite in float32, but its square (4e38) is not, so the adapter would
    # turn it into the same vector as every other such row.
    vectors[20] = vectors[20] / np.linalg.norm(vectors[20]) * np.float32(2e19)
    # L2: a Cosine collection in Qdrant would normalise the row on insert.
    backend.seed(source, ids, vectors, {"name": [f"n{i}" for i in ids]}, "L2", alias=alias)
    store = backend.open_store()
    chain = AdapterChain([artifact])
    with pytest.raises(InputError, match=r"overflow float32.*first ids: \[21\]"):
        evolve(store, make_plan(store, alias, chain), EvolveOptions(batch_size=16))
    assert store.alias_target(alias) == source

    skip = EvolveOptions(batch_size=16, skip_bad_vectors=True)
    result = evolve(store, make_plan(store, alias, chain), skip)
    assert result.outcome == Outcome.DONE
    rows = backend.read_all(result.target)
    assert sorted(rows) == [i for i in ids.tolist() if i != 21]
    evolved = np.asarray([rows[i][backend.vector_name] for i in sorted(rows)], np.float32)
    assert np.isfinite(evolved).all()


@limit(300)
def test_an_ip_or_l2_collection_of_other_norms_is_refused_unless_asked(
    backend: Backend, digits: Digits, artifact: Artifact
) -> None:
    # Unit vectors under L2 keep their meaning: L2 is a function of cosine there.
    unit, scaled = backend.unique("unit"), backend.unique("scaled")
    ids = np.arange(1, 31)
    backend.seed(unit, ids, digits.old_te[:30], metric="L2", alias=backend.unique("u"))
    alias = backend.unique("s")
    backend.seed(scaled, ids, 5.0 * digits.old_te[:30], metric="IP", alias=alias)
    store = backend.open_store()
    chain = AdapterChain([artifact])
    make_plan(store, unit, chain, alias=backend.unique("a"))
    with pytest.raises(InputError, match=r"scores by IP .* median norm 5, .*--across-metric"):
        make_plan(store, alias, chain)
    assert not store.has_collection(f"{scaled}__v2")
    result = evolve(store, make_plan(store, alias, chain, across_metric=True), EvolveOptions())
    assert result.outcome == Outcome.DONE and len(backend.read_all(result.target)) == 30
