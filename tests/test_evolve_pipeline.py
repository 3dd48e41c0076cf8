"""The evolve pipeline against every store: strategies, resume, cron catch-up, lease, admin.

What differs between stores (the end-to-end run, strategies, rollback, bad vectors) runs
on each kind in the fast suite; the store-independent scenarios run there once
(``fast_on``) and on every kind in the integration suite.

Data: the old-model embeddings of the real digits gallery (tests/galleries.py) and
an adapter trained on them, so vectors and tags are checked on real outputs.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from backends import Backend, fast_on
from galleries import ROWS, Digits, seed_gallery
from helpers import InsertsBehindCursor
from migrations import run

from dmu_migrate.artifact import Artifact
from dmu_migrate.errors import InputError, LeaseLost, NothingToDo, StoreError
from dmu_migrate.evolve import admin
from dmu_migrate.evolve.ledger import DONE, Ledger
from dmu_migrate.evolve.pipeline import EvolveOptions, evolve
from dmu_migrate.evolve.plan import make_plan
from dmu_migrate.evolve.run import Outcome
from dmu_migrate.evolve.transform import AdapterChain
from dmu_migrate.onnx_model import OnnxModel
from dmu_migrate.stores.base import Batch, VectorStore


def assert_evolved(
    backend: Backend,
    target: str,
    ids: np.ndarray,
    old: np.ndarray,
    chain: AdapterChain,
    field: str | None = None,
) -> None:
    rows = backend.read_all(target)
    assert sorted(rows) == sorted(ids.tolist())
    expected = chain(old)
    field = backend.vector_name if field is None else field
    for i, row_id in enumerate(ids.tolist()):
        np.testing.assert_allclose(rows[row_id][field], expected[i], atol=1e-5)
        assert rows[row_id]["name"] == f"n{row_id}"
        assert rows[row_id]["dmu_version"] == chain.to_version
        assert rows[row_id]["dmu_origin"] == "evolved"


def test_new_collection_end_to_end(backend: Backend, digits: Digits, artifact: Artifact) -> None:
    source, alias, ids = seed_gallery(backend, digits)
    before = backend.read_all(source)
    store = backend.open_store()
    result = run(store, alias, [artifact])
    assert result.outcome == Outcome.DONE and result.rows_written == ROWS
    assert result.verify is not None and result.verify.max_abs_error <= 1e-5
    assert result.id_check == "counts"  # one whole pass whose counts add up
    assert_evolved(backend, result.target, ids, digits.old_te[:ROWS], AdapterChain([artifact]))
    assert store.alias_target(alias) == result.target
    after = backend.read_all(source)
    assert after.keys() == before.keys()
    for key, row in before.items():
        np.testing.assert_array_equal(after[key][backend.vector_name], row[backend.vector_name])
    record = Ledger(store).load(result.migration)
    assert record is not None and record.status == DONE and record.lease_owner is None

    # A second run finds nothing to do and changes nothing.
    again = run(store, alias, [artifact])
    assert again.rows_written == 0 and again.caught_up == 0 and again.outcome == Outcome.DONE


@fast_on("milvus-lite")
def test_rows_added_behind_the_cursor_mid_pass_are_caught_up(
    backend: Backend, digits: Digits, artifact: Artifact
) -> None:
    """The counts stop adding up, so the run falls back to the full id diff."""
    source, alias, ids = seed_gallery(backend, digits)
    store = backend.open_store()
    late = Batch(np.array([3]), digits.old_te[ROWS : ROWS + 1], {"label": [1], "name": ["n3"]})
    result = run(InsertsBehindCursor(store, late), alias, [artifact])
    assert result.id_check == "full diff" and result.caught_up == 1
    all_ids = np.concatenate([ids, [3]])
    assert_evolved(
        backend, result.target, all_ids, digits.old_te[: ROWS + 1], AdapterChain([artifact])
    )


@fast_on("qdrant-local")
def test_full_verify_diffs_every_id(backend: Backend, digits: Digits, artifact: Artifact) -> None:
    _, alias, _ = seed_gallery(backend, digits)
    store = backend.open_store()
    options = EvolveOptions(batch_size=32, full_verify=True, read_ahead=0)
    result = run(store, alias, [artifact], options=options)
    assert result.id_check == "full diff" and "sync" in result.phases
    assert result.verify is not None and result.verify.missing == 0


@fast_on("parquet")
def test_resume_after_stop_matches_uninterrupted_run(
    backend: Backend, digits: Digits, artifact: Artifact
) -> None:
    source, alias, ids = seed_gallery(backend, digits)
    store = backend.open_store()
    stopped = run(store, alias, [artifact], options=EvolveOptions(batch_size=32, max_seconds=0))
    assert stopped.outcome == Outcome.REMAINING and stopped.rows_written == 32
    assert store.alias_target(alias) == source  # nothing cut over yet
    record = Ledger(store).load(stopped.migration)
    assert record is not None and record.cursor == ids[31].item()

    resumed = run(store, alias, [artifact])
    assert resumed.resumed and resumed.rows_written == ROWS - 32 and resumed.caught_up == 0
    assert_evolved(backend, resumed.target, ids, digits.old_te[:ROWS], AdapterChain([artifact]))
    assert store.alias_target(alias) == resumed.target


@fast_on("milvus-lite")
def test_cron_run_evolves_exactly_the_new_rows(
    backend: Backend, digits: Digits, artifact: Artifact
) -> None:
    source, alias, ids = seed_gallery(backend, digits)
    store = backend.open_store()
    first = run(store, alias, [artifact])
    # Rows inserted into the old collection after the pass (some with ids below the cursor).
    new_ids = np.array([1, 2, 50_000])
    new_vectors = digits.old_te[ROWS : ROWS + 3]
    info = store.describe(source)
    fields: dict[str, list[Any]] = {"label": [1, 2, 3], "name": [f"n{i}" for i in new_ids]}
    store.write_rows(info, source, Batch(new_ids, new_vectors, fields), {})
    second = run(store, alias, [artifact])
    assert second.rows_written == 0 and second.caught_up == 3
    all_ids = np.concatenate([ids, new_ids])
    all_old = np.concatenate([digits.old_te[:ROWS], new_vectors])
    assert_evolved(backend, first.target, all_ids, all_old, AdapterChain([artifact]))


@fast_on("qdrant-local")
def test_live_lease_refuses_second_run(
    backend: Backend, digits: Digits, artifact: Artifact
) -> None:
    source, alias, _ = seed_gallery(backend, digits)
    store = backend.open_store()
    plan = make_plan(store, alias, AdapterChain([artifact]))
    record = plan.new_record()
    record.lease_owner, record.lease_expires = "otherhost:4242", time.time() + 600
    store.ledger_put(record.key, record.to_dict())
    with pytest.raises(StoreError, match=r"being run by otherhost:4242.*--take-over"):
        evolve(store, plan)
    assert not store.has_collection(plan.target)
    result = evolve(store, plan, EvolveOptions(take_over=True))
    assert result.outcome == Outcome.DONE


class TakenMidRun:
    """The real store; at the second batch written, a rival run takes the lease (as a
    --take-over does, or a rival's slow write landing after this run's read-back)."""

    def __init__(self, store: VectorStore, key: str) -> None:
        self._store, self._key, self._writes = store, key, 0
        self.rival = Ledger(store, owner="rival:4242")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def write_rows(self, *args: Any, **kwargs: Any) -> None:
        self._writes += 1
        if self._writes == 2:
            taken = self.rival.load(self._key)
            assert taken is not None
            self.rival.acquire(taken, take_over=True)
        self._store.write_rows(*args, **kwargs)


@fast_on("parquet")
def test_a_run_whose_lease_is_taken_stops_and_leaves_the_record_to_the_taker(
    backend: Backend, digits: Digits, artifact: Artifact
) -> None:
    source, alias, _ = seed_gallery(backend, digits)
    store = backend.open_store()
    plan = make_plan(store, alias, AdapterChain([artifact]))
    taken = TakenMidRun(store, plan.key)
    with pytest.raises(LeaseLost, match="taken by rival:4242"):
        evolve(taken, plan, EvolveOptions(batch_size=32, read_ahead=0))
    record = Ledger(store).load(plan.key)
    assert record is not None
    # The taker's lease and record stand: the loser neither released nor overwrote them.
    assert record.lease_owner == "rival:4242" and record.status != "failed"
    assert store.alias_target(alias) == source  # no cut-over by a run that lost its lease


def test_rollback_and_prune(backend: Backend, digits: Digits, artifact: Artifact) -> None:
    source, alias, _ = seed_gallery(backend, digits)
    store = backend.open_store()
    result = run(store, alias, [artifact])
    key, message = admin.rollback(store, alias)
    assert key == result.migration and store.alias_target(alias) == source
    with pytest.raises(InputError, match="was rolled back"):
        admin.prune_plan(store, source)  # rolled back: the old data is live again
    with pytest.raises(NothingToDo, match="--reapply"):
        run(store, alias, [artifact])  # a scheduled run keeps the rollback
    assert store.alias_target(alias) == source
    # Evolve again, told to (a no-op sync that re-points the alias), then prune the old data.
    run(store, alias, [artifact], options=EvolveOptions(reapply=True))
    assert store.alias_target(alias) == result.target
    record, what = admin.prune_plan(store, source)
    assert source in what
    admin.prune(store, record)
    assert not store.has_collection(source)
    assert store.has_collection(result.target)


@fast_on("milvus-lite")
def test_chained_adapters_go_straight_to_v3(
    backend: Backend, digits: Digits, artifact: Artifact, artifact_v3: Artifact
) -> None:
    source, alias, ids = seed_gallery(backend, digits)
    store = backend.open_store()
    chain = AdapterChain([artifact, artifact_v3])
    result = run(store, alias, [artifact, artifact_v3])
    assert result.target.endswith("__v3")
    assert_evolved(backend, result.target, ids, digits.old_te[:ROWS], chain)
    two_steps = OnnxModel(artifact_v3.adapter_path)(
        OnnxModel(artifact.adapter_path)(digits.old_te[:3])
    )
    np.testing.assert_allclose(chain(digits.old_te[:3]), two_steps, atol=1e-6)
    with pytest.raises(InputError, match="do not chain"):
        AdapterChain([artifact_v3, artifact])


def test_new_field_where_supported(backend: Backend, digits: Digits, artifact: Artifact) -> None:
    source, _, ids = seed_gallery(backend, digits)
    store = backend.open_store()
    if backend.is_milvus:
        with pytest.raises(StoreError, match="cannot add a vector field"):
            run(store, source, [artifact], strategy="new-field", target_field="v2vec")
        return
    result = run(store, source, [artifact], strategy="new-field", target_field="v2vec")
    assert result.outcome == Outcome.DONE and result.rows_written == ROWS
    assert_evolved(backend, source, ids, digits.old_te[:ROWS], AdapterChain([artifact]), "v2vec")
    rows = backend.read_all(source)
    np.testing.assert_array_equal(  # the old vector is untouched
        np.asarray([rows[i][backend.vector_name] for i in ids.tolist()], np.float32),
        digits.old_te[:ROWS],
    )


def test_in_place_snapshot_and_restore(
    backend: Backend, digits: Digits, artifact: Artifact, tmp_path: Any
) -> None:
    source, _, ids = seed_gallery(backend, digits)
    store = backend.open_store()
    with pytest.raises(InputError, match="--yes-overwrite"):
        make_plan(store, source, AdapterChain([artifact]), strategy="in-place")
    options = EvolveOptions(batch_size=50, snapshot_root=tmp_path / "snap")
    result = run(
        store, source, [artifact], strategy="in-place", yes_overwrite=True, options=options
    )
    assert result.outcome == Outcome.DONE
    rows = backend.read_all(source)
    evolved = AdapterChain([artifact])(digits.old_te[:ROWS])
    got = np.asarray([rows[i][backend.vector_name] for i in ids.tolist()], np.float32)
    np.testing.assert_allclose(got, evolved, atol=1e-5)
    assert len(list((tmp_path / "snap").rglob("part-*.parquet"))) == 3

    _, message = admin.rollback(store, source)
    assert f"restored {ROWS} vectors" in message
    rows = backend.read_all(source)
    restored = np.asarray([rows[i][backend.vector_name] for i in ids.tolist()], np.float32)
    # Qdrant re-normalises vectors of Cosine collections on every write: last-bit changes.
    np.testing.assert_allclose(restored, digits.old_te[:ROWS], atol=1e-6, rtol=0)


def test_bad_vectors_refused_or_skipped_never_written(
    backend: Backend, digits: Digits, artifact: Artifact
) -> None:
    source, alias = backend.unique("bad"), backend.unique("live")
    ids = np.arange(1, 61)
    vectors = digits.old_te[:60].copy()
    vectors[40] = 0.0  # no direction: every store accepts it
    bad = [41]
    if backend.kind in ("milvus-lite", "parquet"):  # stores that accept NaN as data
        vectors[50, 3] = np.nan
        bad.append(51)
    backend.seed(source, ids, vectors, {"name": [f"n{i}" for i in ids]}, alias=alias)
    store = backend.open_store()
    with pytest.raises(InputError, match=r"NaN, inf or all-zero vectors .*first ids: \[41"):
        run(store, alias, [artifact])
    assert store.alias_target(alias) == source
    plan = make_plan(store, alias, AdapterChain([artifact]))
    written = backend.read_all(plan.target)
    assert sorted(written) == list(range(1, 33))  # the batch holding id 41 was not written

    options = EvolveOptions(batch_size=32, skip_bad_vectors=True)
    result = run(store, alias, [artifact], options=options)
    assert result.outcome == Outcome.DONE and any("left out" in n for n in result.notes)
    rows = backend.read_all(result.target)
    assert sorted(rows) == [i for i in ids.tolist() if i not in bad]
    assert all(np.isfinite(row[backend.vector_name]).all() for row in rows.values())
    record = Ledger(store).load(result.migration)
    assert record is not None and record.skipped == bad
    again = run(store, alias, [artifact], options=options)  # cron: nothing new, still verified
    assert again.caught_up == 0 and again.verify is not None
