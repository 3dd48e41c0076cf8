"""Re-runs bring the target in step on every store: inserts, updates, deletes, native rows."""

from __future__ import annotations

import numpy as np
import pytest
from backends import Backend
from galleries import Digits, seed_gallery
from migrations import run

from dmu_migrate.artifact import Artifact
from dmu_migrate.errors import VerificationError
from dmu_migrate.evolve.plan import make_plan
from dmu_migrate.evolve.strategies import make_strategy
from dmu_migrate.evolve.transform import AdapterChain
from dmu_migrate.evolve.verify import Reservoir, verify
from dmu_migrate.stores.base import Batch

pytestmark = pytest.mark.timeout(600)


def test_rerun_syncs_inserts_updates_deletes_and_keeps_native_rows(
    backend: Backend, digits: Digits, artifact: Artifact
) -> None:
    source, alias, ids = seed_gallery(backend, digits)
    store = backend.open_store()
    first = run(store, alias, [artifact])
    info = store.describe(source)
    chain = AdapterChain([artifact])

    deleted, updated, inserted = ids[:3], ids[3:6], np.array([1, 2])
    fresh = digits.old_te[200:205]
    store.delete_ids(source, deleted)
    rows = np.concatenate([updated, inserted])
    names = [f"changed-{i}" for i in rows.tolist()]
    store.write_rows(info, source, Batch(rows, fresh, {"label": [1] * 5, "name": names}), {})
    # The application writes a new-model row through the alias, over an id the source has.
    native_id = ids[10:11]
    target = store.describe(first.target)
    vector = np.ones((1, chain.out_dim), np.float32) / np.sqrt(chain.out_dim)
    native_tags = {"dmu_version": "v2", "dmu_from": "", "dmu_origin": "native"}
    store.write_rows(
        target, first.target, Batch(native_id, vector, {"label": [0], "name": ["app"]}), native_tags
    )
    store.flush(source)
    store.flush(first.target)

    plan = make_plan(store, alias, chain)
    stale = make_strategy(store, plan, backend.root / "snap")
    with pytest.raises(VerificationError, match="no longer in"):
        verify(store, plan, stale, np.asarray([]))

    again = run(store, alias, [artifact])
    assert (again.caught_up, again.updated, again.deleted, again.native) == (2, 3, 3, 1)
    after = backend.read_all(first.target)
    expected = set(ids.tolist()) - set(deleted.tolist()) | set(inserted.tolist())
    assert set(after) == expected
    evolved = chain(fresh)
    for k, row_id in enumerate(rows.tolist()):
        np.testing.assert_allclose(after[row_id][backend.vector_name], evolved[k], atol=1e-5)
        assert after[row_id]["name"] == f"changed-{row_id}"
    kept = after[int(native_id[0])]
    assert kept["dmu_origin"] == "native" and kept["name"] == "app"
    np.testing.assert_allclose(kept[backend.vector_name], vector[0], atol=1e-6)
    sample = Reservoir(256)
    for chunk in store.iter_ids(source, 1000):
        sample.add(chunk)
    report = verify(store, plan, stale, sample.ids())
    assert report.missing == 0 and report.sampled == len(expected) - 1  # not the native row
    idle = run(store, alias, [artifact])
    assert (idle.rows_written, idle.caught_up, idle.updated, idle.deleted) == (0, 0, 0, 0)
