"""Sharded evolve: the same final state as one process, on every store and every engine.

Two copies of the same real gallery (digits old-model embeddings) are evolved,
one by a single-process run and one split into shards; the two targets must
hold exactly the same rows, vectors, fields and tags, and the alias must move
only once every shard is done.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from backends import Backend, embedded_only
from faults import Proxy
from galleries import Digits

from dmu_migrate.artifact import Artifact
from dmu_migrate.errors import InputError, StoreError
from dmu_migrate.evolve import fanout
from dmu_migrate.evolve import ledger as ledger_module
from dmu_migrate.evolve.ledger import DONE, Ledger
from dmu_migrate.evolve.pipeline import EvolveOptions, EvolveResult, evolve
from dmu_migrate.evolve.plan import Plan, make_plan
from dmu_migrate.evolve.retry import Retrier
from dmu_migrate.evolve.run import Outcome, Run
from dmu_migrate.evolve.shards import (
    cut_points,
    evolve_one_shard,
    evolve_split,
    finish_if_last,
    load_shards,
    parse_shard,
    run_shard,
)
from dmu_migrate.evolve.transform import AdapterChain
from dmu_migrate.stores.base import VectorStore
from dmu_migrate.stores.opener import open_store

ROWS = 150
OPTIONS = EvolveOptions(batch_size=16)


def seed(backend: Backend, digits: Digits, rows: int = ROWS) -> tuple[str, str, np.ndarray]:
    source, alias = backend.unique("gal"), backend.unique("live")
    ids = np.arange(10, 10 + rows) * 7  # sparse, ordered keys
    fields: dict[str, list[Any]] = {
        "label": [int(v) for v in digits.y_te[:rows]],
        "name": [f"n{i}" for i in ids],
    }
    backend.seed(source, ids, digits.old_te[:rows], fields, alias=alias)
    return source, alias, ids


def plan_for(store: VectorStore, alias: str, artifact: Artifact) -> Plan:
    # One onnxruntime thread everywhere, so that both runs compute bit-identical vectors.
    return make_plan(store, alias, AdapterChain([artifact], threads=1))


def job_for(backend: Backend, alias: str, artifact: Artifact, count: int) -> fanout.ShardJob:
    return fanout.ShardJob(
        backend.uri,
        None,
        alias,
        (str(artifact.path),),
        1,
        (),
        OPTIONS,
        count,
        fanout.new_owner(),
    )


def single_and_sharded(
    backend: Backend, digits: Digits, artifact: Artifact
) -> tuple[VectorStore, EvolveResult, str, str]:
    """Evolve one copy unsharded; return the store, that result, and the other copy's alias."""
    _, alias_a, _ = seed(backend, digits)
    _, alias_b, _ = seed(backend, digits)
    store = backend.open_store()
    single = evolve(store, plan_for(store, alias_a, artifact), OPTIONS)
    assert single.outcome == Outcome.DONE
    return store, single, alias_a, alias_b


def assert_same_rows(backend: Backend, a: str, b: str) -> None:
    rows_a, rows_b = backend.read_all(a), backend.read_all(b)
    assert sorted(rows_a) == sorted(rows_b) and len(rows_a) == ROWS
    for key, row in rows_a.items():
        assert row == rows_b[key]  # vectors compared exactly, tags and fields too


def test_in_process_shards_equal_one_process(
    backend: Backend, digits: Digits, artifact: Artifact
) -> None:
    store, single, _, alias = single_and_sharded(backend, digits, artifact)
    plan = plan_for(store, alias, artifact)
    job = job_for(backend, alias, artifact, 3)
    result = evolve_split(store, plan, 3, OPTIONS, fanout.in_process(store, plan, job), job.owner)
    assert result.outcome == Outcome.DONE and result.rows_written == ROWS
    assert [s["rows_written"] for s in result.shards] == [50, 50, 50]
    assert result.id_check == "counts" and result.verify is not None
    assert result.verify.sampled > 0 and result.verify.max_abs_error <= 1e-5
    assert_same_rows(backend, single.target, result.target)
    assert store.alias_target(alias) == result.target
    ledger = Ledger(store)
    record = ledger.load(plan.key)
    assert record is not None and record.status == DONE and record.rows_done == ROWS
    shards = load_shards(ledger, record)
    assert all(s is not None and s.main_pass_done and s.lease_owner is None for s in shards)
    # Shard records are parts of their migration, not migrations of their own.
    assert [r.key for r in ledger.history()].count(plan.key) == 1
    assert not any("#shard-" in r.key for r in ledger.history())

    # A cron re-run with the same flags finds nothing to write and stays verified.
    again = evolve_split(store, plan, 3, OPTIONS, fanout.in_process(store, plan, job), job.owner)
    assert again.outcome == Outcome.DONE and again.rows_written == 0 and again.caught_up == 0


def test_cut_points_make_equal_disjoint_shards(
    backend: Backend, digits: Digits, artifact: Artifact
) -> None:
    _, alias, ids = seed(backend, digits, rows=100)
    store = backend.open_store()
    plan = plan_for(store, alias, artifact)
    assert cut_points(store, plan, 4) == ids[[24, 49, 74]].tolist()
    assert cut_points(store, plan, 1) == []
    with pytest.raises(InputError, match="--shards 101 is more than the 100 rows"):
        cut_points(store, plan, 101)


def test_shards_run_one_by_one_with_shard_flag(
    backend: Backend, digits: Digits, artifact: Artifact
) -> None:
    """--shard i/N: each shard alone; the alias moves with the last one, not before."""
    store, single, _, alias = single_and_sharded(backend, digits, artifact)
    plan = plan_for(store, alias, artifact)
    first = evolve_one_shard(store, plan, 1, 3, OPTIONS)
    assert first.outcome == Outcome.SHARD_DONE and first.rows_written == 50
    assert "1 of 3 shards done" in first.notes[0]
    assert store.alias_target(alias) != first.target  # not cut over: two shards are missing
    assert evolve_one_shard(store, plan, 0, 3, OPTIONS).outcome == Outcome.SHARD_DONE
    last = evolve_one_shard(store, plan, 2, 3, OPTIONS)
    assert last.outcome == Outcome.DONE and last.verify is not None
    assert store.alias_target(alias) == last.target
    assert_same_rows(backend, single.target, last.target)
    # Run again (cron), any shard: the migration stays done and nothing is rewritten.
    again = evolve_one_shard(store, plan, 0, 3, OPTIONS)
    assert again.outcome == Outcome.DONE and again.rows_written == 0 and again.caught_up == 0


def test_a_stopped_shard_resumes_alone(
    backend: Backend, digits: Digits, artifact: Artifact
) -> None:
    store, single, _, alias = single_and_sharded(backend, digits, artifact)
    plan = plan_for(store, alias, artifact)
    evolve_one_shard(store, plan, 0, 2, OPTIONS)
    stopped = evolve_one_shard(store, plan, 1, 2, EvolveOptions(batch_size=16, max_seconds=0))
    assert stopped.outcome == Outcome.REMAINING and 0 < stopped.rows_written < 75
    ledger = Ledger(store)
    record = ledger.load(plan.key)
    assert record is not None
    shard0, shard1 = load_shards(ledger, record)
    assert shard0 is not None and shard0.main_pass_done and shard0.rows_done == 75
    before = shard0.updated_at
    resumed = evolve_one_shard(store, plan, 1, 2, OPTIONS)
    assert resumed.outcome == Outcome.DONE
    assert resumed.rows_written == 75 - stopped.rows_written  # from its cursor, not from 0
    shard0_after = load_shards(ledger, record)[0]
    assert shard0_after is not None and shard0_after.updated_at == before  # left alone
    assert resumed.id_check == "full diff"  # a resumed shard: counts do not prove enough
    assert_same_rows(backend, single.target, resumed.target)


@embedded_only()  # flags and the ledger's split: refused before any shard reads the store
def test_bad_shard_flags_are_refused(backend: Backend, digits: Digits, artifact: Artifact) -> None:
    _, alias, _ = seed(backend, digits, rows=40)
    store = backend.open_store()
    plan = plan_for(store, alias, artifact)
    for text in ("3/3", "1", "a/b", "-1/2"):
        with pytest.raises(InputError, match="is not INDEX/COUNT"):
            parse_shard(text)
    evolve_one_shard(store, plan, 0, 2, OPTIONS)  # split in two
    with pytest.raises(InputError, match="split into 2 shards; pass --shards 2"):
        evolve_one_shard(store, plan, 0, 4, OPTIONS)
    with pytest.raises(InputError, match="split into 2 shards; run it with --shards 2"):
        evolve(store, plan, OPTIONS)
    with pytest.raises(InputError, match="--restart resets every shard"):
        evolve_one_shard(store, plan, 1, 2, EvolveOptions(restart=True))


@pytest.mark.integration
def test_local_worker_processes_equal_one_process(
    milvus_server: str, tmp_path: Any, digits: Digits, artifact: Artifact
) -> None:
    backend = Backend("milvus-server", milvus_server, tmp_path)
    before = backend.list_collections()
    try:
        store, single, _, alias = single_and_sharded(backend, digits, artifact)
        plan = plan_for(store, alias, artifact)
        job = job_for(backend, alias, artifact, 4)
        runner = fanout.local_processes(job, workers=2)
        result = evolve_split(store, plan, 4, OPTIONS, runner, job.owner)
        assert result.outcome == Outcome.DONE and result.rows_written == ROWS
        assert sorted(s["index"] for s in result.shards) == [0, 1, 2, 3]
        assert_same_rows(backend, single.target, result.target)
        assert store.alias_target(alias) == result.target
    finally:
        backend.close_stores()
        backend.drop_created(backend.created_since(before))


@pytest.mark.integration
def test_a_failing_shard_is_reported_and_the_others_are_kept(
    milvus_server: str, tmp_path: Any, digits: Digits, artifact: Artifact
) -> None:
    backend = Backend("milvus-server", milvus_server, tmp_path)
    before = backend.list_collections()
    try:
        _, alias, _ = seed(backend, digits)
        store = backend.open_store()
        plan = plan_for(store, alias, artifact)
        job = job_for(backend, alias, artifact, 3)
        broken = fanout.ShardJob(**{**job.__dict__, "adapters": ("/nonexistent/adapter",)})
        runner = fanout.local_processes(broken, workers=2)

        def some_fail(indexes: list[int], tick: Any) -> list[fanout.ShardOutcome]:
            # Shard 1 gets an artifact path that does not exist; 0 and 2 run normally.
            good = fanout.local_processes(job, workers=2)([i for i in indexes if i != 1], tick)
            return good + runner([1], tick)

        with pytest.raises(Exception, match=r"1 of 3 shards .* failed \(shard 1/3:") as err:
            evolve_split(store, plan, 3, OPTIONS, some_fail, job.owner)
        assert not isinstance(err.value, StoreError) or "cursor" in str(err.value)
        ledger = Ledger(store)
        record = ledger.load(plan.key)
        assert record is not None and record.status == "failed"
        done = [s is not None and s.main_pass_done for s in load_shards(ledger, record)]
        assert done == [True, False, True]
        assert store.alias_target(alias) != plan.target  # nothing cut over
        # Fixed, the same command finishes: only shard 1 is run.
        result = evolve_split(store, plan, 3, OPTIONS, fanout.in_process(store, plan, job))
        assert result.outcome == Outcome.DONE and [s["index"] for s in result.shards] == [1]
        assert result.rows_written == 50 and store.alias_target(alias) == plan.target
    finally:
        backend.close_stores()
        backend.drop_created(backend.created_since(before))


@pytest.mark.integration
@pytest.mark.usefixtures("real_lease_settle")
def test_the_last_shard_on_a_store_too_slow_for_the_lease_says_so(
    milvus_server: str,
    tmp_path: Any,
    digits: Digits,
    artifact: Artifact,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A loaded server, made deterministic: the finishing lease cannot be taken safely.

    The last shard then fails with "run evolve again" and leaves no lease behind; it
    used to take the failure for a rival holding the lease and report "another shard's
    process is verifying and cutting over" when no process was.
    """
    backend = Backend("milvus-server", milvus_server, tmp_path)
    before = backend.list_collections()
    proxy = Proxy(int(urlsplit(milvus_server).port or 19530))
    try:
        _, alias, _ = seed(backend, digits)
        store = backend.open_store()
        plan = plan_for(store, alias, artifact)
        assert evolve_one_shard(store, plan, 0, 2, OPTIONS).outcome == Outcome.SHARD_DONE
        assert run_shard(store, plan, 1, 2, OPTIONS).finished  # its pass alone: none finished
        # Every chunk held 0.5 s each way: reading and writing the lease take over SETTLE / 2
        # (1 s) whatever the machine's load, so every try is too slow to be safe.
        proxy.delay = 0.5
        slow = open_store(f"http://127.0.0.1:{proxy.port}")
        monkeypatch.setattr(ledger_module, "LEASE_TRIES_SECONDS", 3.0)  # two tries, not 60 s
        try:
            ledger = Ledger(slow, owner="slow-host:1")
            record = ledger.load(plan.key)
            assert record is not None
            with pytest.raises(StoreError, match="answered too slowly"):
                result = EvolveResult.begin(plan, record, resumed=False)
                retry = Retrier(OPTIONS.retry)
                finish_if_last(Run(slow, plan, OPTIONS, ledger, retry, record, result), 2)
        finally:
            slow.close()
        stored = Ledger(store).load(plan.key)
        assert stored is not None and stored.lease_owner is None  # withdrawn, no --take-over
        assert store.alias_target(alias) != plan.target
        # The next run of any shard finishes the migration.
        last = evolve_one_shard(store, plan, 1, 2, OPTIONS)
        assert last.outcome == Outcome.DONE and store.alias_target(alias) == plan.target
    finally:
        proxy.close()
        backend.close_stores()
        backend.drop_created(backend.created_since(before))
