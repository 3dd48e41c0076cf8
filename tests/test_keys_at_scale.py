"""String and UUID keys past every internal sample and page size, on every path.

The other key tests hold fewer rows than the verification sample (256) and one id
page, so nothing in them crossed a page, a sample slot past the 256th or a repair
batch. Here a source of more rows than the sample, read in batches of 32 with id
pages and repair batches of 64 (``small_pages``), goes through the main pass,
verification, a cron re-run with inserts (between existing keys and after the
last), updates and deletes, and is compared with the target row by row.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from backends import Backend
from galleries import Digits
from limits import limit
from milvus_sources import seed as seed_milvus
from pymilvus import DataType

from dmu_migrate.api import migrate
from dmu_migrate.artifact import Artifact
from dmu_migrate.errors import StoreError
from dmu_migrate.evolve import admin
from dmu_migrate.evolve.ledger import Ledger
from dmu_migrate.evolve.pipeline import EvolveOptions, evolve
from dmu_migrate.evolve.plan import make_plan
from dmu_migrate.evolve.run import EvolveResult, Outcome
from dmu_migrate.evolve.transform import AdapterChain
from dmu_migrate.evolve.verify import VERIFY_SAMPLE, Reservoir
from dmu_migrate.stores.base import VECTOR_KEY_PREFIX, Batch, VectorStore, id_array

ROWS = 300  # more than VERIFY_SAMPLE
BATCH = 32  # rows per main-pass batch
PAGE = 64  # ids per id page, rows per page of a full read, ids per repair batch
# Internal sizes that tests shrink so that a few hundred rows cross several of each.
PAGE_SIZES = ("ID_BATCH", "WRITE_BATCH", "CATCH_UP_BATCH")
EMBEDDED = ["milvus-lite", "qdrant-local", "parquet"]
SERVER = pytest.param("milvus-server", marks=pytest.mark.integration)


def small_pages(monkeypatch: pytest.MonkeyPatch, size: int = PAGE) -> None:
    """Every module of the package that holds one of PAGE_SIZES gets ``size`` instead."""
    import sys

    for name, module in list(sys.modules.items()):
        if name.startswith("dmu_migrate"):
            for attr in PAGE_SIZES:
                if isinstance(getattr(module, attr, None), int):
                    monkeypatch.setattr(module, attr, size)


def keys_for(backend: Backend, n: int, seed: int = 0) -> list[str]:
    """``n`` distinct keys in no particular order: random UUIDs on Qdrant, else text keys
    whose order is not their number's (k10 < k9), with a few that need quoting."""
    rng = random.Random(seed)
    if backend.is_qdrant:
        return [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(n)]
    # numpy's fixed-width strings would drop the trailing NUL: ids must stay Python str.
    odd = ['quote"d', "it's", "back\\slash", "é-accent", "日本", "sp ace", "nul-end\x00"]
    keys = [f"k{i}" for i in range(seed * 10_000, seed * 10_000 + n - len(odd))] + [
        f"{seed}-{o}" for o in odd
    ]
    rng.shuffle(keys)
    return keys


class Source:
    """The source's rows as the test last wrote them, to compare the target with."""

    def __init__(self, backend: Backend, digits: Digits, keys: list[str]) -> None:
        self.backend = backend
        self.pool = digits.old_te  # real old-model vectors; rows are drawn from it in turn
        self.used = 0
        self.name, self.alias = backend.unique("keys"), backend.unique("live")
        self.rows: dict[str, tuple[np.ndarray, str]] = {}
        vectors = self._draw(len(keys))
        names = [f"n{i}" for i in range(len(keys))]
        for k, v, n in zip(keys, vectors, names, strict=True):
            self.rows[k] = (v, n)
        if not backend.is_milvus:
            backend.seed(self.name, keys, vectors, {"name": names}, alias=self.alias)
            return

        def build(schema: Any) -> None:
            # Room for long keys: Milvus counts VARCHAR length in bytes.
            schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=512)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=vectors.shape[1])
            schema.add_field("name", DataType.VARCHAR, max_length=64)

        rows = [
            {"id": k, "vector": v.tolist(), "name": n}
            for k, v, n in zip(keys, vectors, names, strict=True)
        ]
        index = {"field_name": "vector", "index_type": "FLAT", "metric_type": "COSINE"}
        seed_milvus(backend, self.name, build, rows, [index], self.alias)

    def _draw(self, n: int) -> np.ndarray:
        picked = np.arange(self.used, self.used + n) % len(self.pool)
        self.used += n
        # A small shift keeps rows distinct when the pool wraps around.
        return (self.pool[picked] + 1e-3 * (self.used // len(self.pool))).astype(np.float32)

    def upsert(self, store: VectorStore, keys: list[str], named: str | None = None) -> None:
        """Insert or overwrite rows; ``named``: a named vector beside the unnamed one on
        Qdrant, which then takes points only in the named form (the named one left out)."""
        info = store.describe(self.name, self.backend.vector_name)
        vectors = self._draw(len(keys))
        names = [f"n{self.used - len(keys) + j}" for j in range(len(keys))]
        fields: dict[str, list[Any]] = {"name": names}
        if named is not None:
            fields[VECTOR_KEY_PREFIX + named] = [None] * len(keys)
        batch = Batch(id_array(keys), vectors, fields)
        store.write_rows(info, self.name, batch, {})
        for k, v, n in zip(keys, vectors, names, strict=True):
            self.rows[k] = (v, n)

    def delete(self, store: VectorStore, keys: list[str]) -> None:
        store.delete_ids(self.name, id_array(keys))
        for k in keys:
            del self.rows[k]

    def assert_target(
        self,
        target: str,
        chain: AdapterChain,
        where: Backend | None = None,
        field: str = "",
        tags: bool = True,
    ) -> None:
        """The target (in ``where``, default the source's store) holds exactly the source's
        keys, each with adapter(its vector) in ``field`` (default the store's vector name),
        its name and the migration's tags."""
        where = where or self.backend
        got = where.read_all(target)
        assert sorted(got) == sorted(self.rows)
        keys = sorted(self.rows)
        expected = chain(np.stack([self.rows[k][0] for k in keys]))
        vector = field or ("vector" if where.kind != self.backend.kind else where.vector_name)
        for key, want in zip(keys, expected, strict=True):
            row = got[key]
            np.testing.assert_allclose(row[vector], want, atol=1e-5)
            assert row["name"] == self.rows[key][1]
            if tags:
                assert row["dmu_origin"] == "evolved" and row["dmu_version"] == chain.to_version


PLAN_SETTINGS = ("strategy", "yes_overwrite", "vector_field")


def run(store: VectorStore, alias: str, chain: AdapterChain, **settings: Any) -> EvolveResult:
    """evolve in batches of BATCH; ``settings`` go to the plan or the options."""
    planned = {k: settings.pop(k) for k in PLAN_SETTINGS if k in settings}
    plan = make_plan(store, alias, chain, **planned)
    return evolve(store, plan, EvolveOptions(batch_size=BATCH, **settings))


def harness(kind: str, root: Path) -> Backend:
    """An embedded store of ``kind`` under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    uri = {
        "milvus-lite": str(root / "store.db"),
        "qdrant-local": f"qdrant:{root / 'qdrant'}",
        "parquet": f"parquet:{root / 'parquet'}",
    }[kind]
    return Backend(kind, uri, root)


@pytest.fixture
def memory_root(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Where a store of a kind goes: in memory where the machine has it, else tmp_path.

    Qdrant's local mode commits every point to SQLite: on a busy disk here that is
    about 30 ms a point, 20 s for the writes of one test, against milliseconds in memory.
    Milvus Lite stays in tmp_path: its files are written after its client closes, so a
    directory removed at teardown would come back.
    """
    shm = Path("/dev/shm")
    memory = None
    if shm.is_dir() and os.access(shm, os.W_OK):
        memory = Path(tempfile.mkdtemp(prefix="dmu-keys-", dir=shm))

    def root(kind: str) -> Path:
        base = tmp_path if memory is None or kind.startswith("milvus") else memory
        return base / kind

    try:
        yield root
    finally:
        if memory is not None:
            shutil.rmtree(memory, ignore_errors=True)


@pytest.fixture
def backend(
    kind: str, memory_root: Callable[[str], Path], request: pytest.FixtureRequest
) -> Iterator[Backend]:
    """This module's stores: embedded ones (in memory but Lite), the session's Milvus server."""
    if kind != "milvus-server":
        harnessed = harness(kind, memory_root(kind))
        yield harnessed
        harnessed.close_stores()
        return
    server = Backend(kind, request.getfixturevalue("milvus_server"), memory_root(kind))
    before = server.list_collections()
    try:
        yield server
    finally:
        server.close_stores()
        server.drop_created(server.created_since(before))


def churn(source: Source, store: VectorStore, seed: int) -> tuple[int, int, int]:
    """Inserts between existing keys and past the last, updates and deletes, each more than
    a repair batch; returns their counts."""
    rng = random.Random(seed)
    present = sorted(source.rows)
    new = [k for k in keys_for(source.backend, PAGE + 20, seed=seed) if k not in source.rows]
    updated = rng.sample(present, PAGE + 10)
    deleted = rng.sample([k for k in present if k not in updated], PAGE + 5)
    source.upsert(store, new + updated)
    source.delete(store, deleted)
    store.flush(source.name)
    return len(new), len(updated), len(deleted)


@pytest.mark.parametrize("kind", [*EMBEDDED, SERVER])
@limit(300)
def test_string_keys_through_pass_verify_and_cron_reruns(
    backend: Backend, digits: Digits, artifact: Artifact, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_pages(monkeypatch)
    source = Source(backend, digits, keys_for(backend, ROWS))
    store = backend.open_store()
    chain = AdapterChain([artifact])

    # A first run stopped after one batch leaves a string cursor; the next one resumes.
    stopped = run(store, source.alias, chain, max_seconds=0)
    assert stopped.outcome == Outcome.REMAINING
    first = run(store, source.alias, chain)
    assert first.outcome == Outcome.DONE and first.resumed
    assert first.verify is not None and first.verify.sampled == VERIFY_SAMPLE
    source.assert_target(first.target, chain)
    assert store.alias_target(source.alias) == first.target
    record = Ledger(store).load(first.migration)
    assert record is not None and record.rows_done == ROWS

    for seed in (1, 2):  # two cron re-runs, each with its own changes
        added, updated, deleted = churn(source, store, seed)
        again = run(store, source.alias, chain)
        assert again.outcome == Outcome.DONE
        assert (again.caught_up, again.updated, again.deleted) == (added, updated, deleted)
        assert again.verify is not None and again.verify.sampled == VERIFY_SAMPLE
        source.assert_target(again.target, chain)
        record = Ledger(store).load(again.migration)
        assert record is not None and record.rows_done == len(source.rows)

    # With the full diff forced, an up-to-date target needs nothing.
    last = run(store, source.alias, chain, full_verify=True)
    assert (last.caught_up, last.updated, last.deleted, last.rows_written) == (0, 0, 0, 0)
    # `verify` draws its own sample from the id scan.
    backend.close_stores()  # embedded stores open in one client at a time
    checked = migrate.verify(source.name, artifact.path, uri=backend.uri, alias=source.alias)
    assert checked.missing == 0 and checked.sampled == VERIFY_SAMPLE


@pytest.mark.parametrize("kind", EMBEDDED)
@limit(300)
def test_string_keys_in_shards_through_a_cron_rerun(
    backend: Backend, digits: Digits, artifact: Artifact, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--shard 0/3 alone, then --shards 3 for the rest: cut points, shard cursors and the
    shards' verification samples (kept in the ledger) are string keys."""
    small_pages(monkeypatch)
    source = Source(backend, digits, keys_for(backend, ROWS))
    chain = AdapterChain([artifact])

    def sharded(**settings: Any) -> EvolveResult:
        done = migrate.evolve(
            source.alias, artifact.path, uri=backend.uri, batch_size=BATCH, **settings
        )
        assert isinstance(done, EvolveResult)
        return done

    first = sharded(shard="0/3")
    assert first.outcome == Outcome.SHARD_DONE and 0 < first.rows_written < ROWS
    done = sharded(shards=3)
    assert done.outcome == Outcome.DONE and done.rows_written == ROWS - first.rows_written
    assert done.verify is not None and done.verify.sampled == VERIFY_SAMPLE
    source.assert_target(done.target, chain)

    store = backend.open_store()
    added, updated, deleted = churn(source, store, 1)
    backend.close_stores()
    again = sharded(shards=3)
    assert (again.caught_up, again.updated, again.deleted) == (added, updated, deleted)
    source.assert_target(again.target, chain)


CROSS = [
    ("milvus-lite", "parquet"),
    ("parquet", "milvus-lite"),
    ("qdrant-local", "milvus-lite"),
    ("qdrant-local", "parquet"),
    ("qdrant-local", "qdrant-local"),
]


@pytest.mark.parametrize(("src_kind", "dst_kind"), CROSS, ids=[f"{a}-to-{b}" for a, b in CROSS])
@limit(300)
def test_string_keys_into_another_store_through_a_cron_rerun(
    memory_root: Callable[[str], Path],
    digits: Digits,
    artifact: Artifact,
    monkeypatch: pytest.MonkeyPatch,
    src_kind: str,
    dst_kind: str,
) -> None:
    """--target-uri: source and target list string keys in the same order, so the id join
    across two stores sorts them as one store's would."""
    small_pages(monkeypatch)
    src = harness(src_kind, memory_root(src_kind) / "src")
    dst = harness(dst_kind, memory_root(dst_kind) / "dst")
    source = Source(src, digits, keys_for(src, ROWS))
    chain = AdapterChain([artifact])

    def across(**settings: Any) -> EvolveResult:
        done = migrate.evolve(
            source.alias, artifact.path, uri=src.uri, target_uri=dst.uri, batch_size=BATCH,
            **settings,
        )  # fmt: skip
        assert isinstance(done, EvolveResult)
        return done

    first = across(full_verify=True)
    assert first.outcome == Outcome.DONE and first.rows_written == ROWS
    assert first.verify is not None and first.verify.sampled == VERIFY_SAMPLE
    field = dst.vector_name if src_kind == dst_kind else "vector"
    source.assert_target(first.target, chain, dst, field)
    store = src.open_store()
    added, updated, deleted = churn(source, store, 1)
    src.close_stores()
    again = across()
    assert (again.caught_up, again.updated, again.deleted) == (added, updated, deleted)
    source.assert_target(again.target, chain, dst, field)


@pytest.mark.parametrize("kind", ["qdrant-local", "parquet"])
@limit(300)
def test_string_keys_into_a_new_field_with_catch_up(
    backend: Backend, digits: Digits, artifact: Artifact, monkeypatch: pytest.MonkeyPatch
) -> None:
    """new-field: the ids at the new version are listed by tag and joined with the source's."""
    small_pages(monkeypatch)
    source = Source(backend, digits, keys_for(backend, ROWS))
    store = backend.open_store()
    chain = AdapterChain([artifact])
    first = run(store, source.name, chain, strategy="new-field")
    assert first.outcome == Outcome.DONE and first.rows_written == ROWS
    assert first.verify is not None and first.verify.sampled == VERIFY_SAMPLE
    new = [k for k in keys_for(backend, PAGE + 20, seed=1) if k not in source.rows]
    source.upsert(store, new, first.target_field if backend.is_qdrant else None)
    store.flush(source.name)
    vector = {"vector_field": backend.vector_name}
    again = run(store, source.name, chain, strategy="new-field", **vector)
    assert again.caught_up == len(new)
    rows = backend.read_all(source.name)
    assert sorted(rows) == sorted(source.rows)
    keys = sorted(source.rows)
    expected = chain(np.stack([source.rows[k][0] for k in keys]))
    for key, want in zip(keys, expected, strict=True):
        np.testing.assert_allclose(rows[key][first.target_field], want, atol=1e-5)


@pytest.mark.parametrize("kind", EMBEDDED)
@limit(300)
def test_string_keys_in_place_snapshot_and_rollback(
    backend: Backend,
    digits: Digits,
    artifact: Artifact,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """in-place: snapshot parts keep string keys (a trailing NUL too) and restore them."""
    small_pages(monkeypatch)
    source = Source(backend, digits, keys_for(backend, ROWS))
    before = backend.read_all(source.name)
    store = backend.open_store()
    chain = AdapterChain([artifact])
    done = run(
        store, source.name, chain, strategy="in-place", yes_overwrite=True,
        snapshot_root=tmp_path / "snap",
    )  # fmt: skip
    assert done.outcome == Outcome.DONE and done.rows_written == ROWS
    assert done.verify is not None and done.verify.sampled == VERIFY_SAMPLE
    source.assert_target(source.name, chain, tags=False)  # no tag fields in a Milvus source
    admin.rollback(store, source.name)
    after = backend.read_all(source.name)
    assert sorted(after) == sorted(before)
    for key, row in before.items():
        # Qdrant normalizes Cosine vectors as it stores them: the restored ones again.
        np.testing.assert_allclose(
            after[key][backend.vector_name], row[backend.vector_name], atol=1e-6
        )


@pytest.mark.parametrize("kind", ["milvus-lite"])
@limit(300)
def test_long_string_keys_in_shards_fit_the_ledger(
    backend: Backend, digits: Digits, artifact: Artifact, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each shard keeps its verification sample in its ledger record, which Milvus caps at
    65,535 bytes: the 150 keys of 480 bytes each shard draws would not fit, so it keeps what does."""
    small_pages(monkeypatch)
    keys = [f"{'x' * 470}-{k}" for k in keys_for(backend, ROWS)]
    source = Source(backend, digits, keys)
    done = migrate.evolve(source.alias, artifact.path, uri=backend.uri, batch_size=BATCH, shards=2)
    assert isinstance(done, EvolveResult) and done.outcome == Outcome.DONE
    assert done.verify is not None and 0 < done.verify.sampled < VERIFY_SAMPLE
    source.assert_target(done.target, AdapterChain([artifact]))


@pytest.mark.parametrize("kind", ["parquet"])
@limit(300)
def test_a_failure_after_a_written_batch_counts_its_rows_once(
    backend: Backend, digits: Digits, artifact: Artifact, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that fails after a batch is written (the string-key crash did, in the sample)
    records the batch with its cursor, so the next run neither counts it nor the rows
    before it again ('rows 800/400')."""
    source = Source(backend, digits, keys_for(backend, ROWS))
    store = backend.open_store()
    chain = AdapterChain([artifact])
    calls = {"n": 0}
    add = Reservoir.add

    def fail_third(self: Reservoir, ids: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("failed after the third batch was written")
        add(self, ids)

    monkeypatch.setattr(Reservoir, "add", fail_third)
    with pytest.raises(RuntimeError, match="after the third batch"):
        run(store, source.alias, chain)
    monkeypatch.setattr(Reservoir, "add", add)
    record = Ledger(store).load(make_plan(store, source.alias, chain).key)
    assert record is not None and record.status == "failed"
    assert record.rows_done == 3 * BATCH and record.cursor == sorted(source.rows)[3 * BATCH - 1]
    done = run(store, source.alias, chain)
    assert done.outcome == Outcome.DONE and done.rows_written == ROWS - 3 * BATCH
    record = Ledger(store).load(done.migration)
    assert record is not None and record.rows_done == ROWS


@pytest.mark.integration
@limit(600)
def test_string_keys_through_bulk_import_and_a_cron_rerun(
    digits: Digits,
    artifact: Artifact,
    monkeypatch: pytest.MonkeyPatch,
    milvus_server: str,
    tmp_path: Path,
) -> None:
    """--write-path bulk on the server: string keys in the import files, then a re-run's
    sync by upserts; a key ending in NUL, which NumPy files cannot hold, is refused."""
    from dmu_migrate.evolve import bulk_pass

    small_pages(monkeypatch)
    chain = AdapterChain([artifact])
    monkeypatch.setattr(bulk_pass, "PART_BYTES", 100 * 4 * chain.out_dim)  # three parts
    server = Backend("milvus-server", milvus_server, tmp_path)
    before = server.list_collections()
    files = tmp_path / "bulk"
    files.mkdir()
    try:
        keys = [k for k in keys_for(server, ROWS) if not k.endswith("\x00")]
        source = Source(server, digits, keys)
        store = server.open_store()
        first = run(store, source.alias, chain, write_path="bulk", bulk_storage=str(files))
        assert first.outcome == Outcome.DONE and first.rows_written == len(keys)
        assert first.verify is not None and first.verify.sampled == VERIFY_SAMPLE
        source.assert_target(first.target, chain)
        added, updated, deleted = churn(source, store, 1)
        again = run(store, source.alias, chain)
        assert (again.caught_up, again.updated, again.deleted) == (added, updated, deleted)
        source.assert_target(again.target, chain)

        nul = Source(server, digits, [*keys_for(server, 40, seed=3)])
        with pytest.raises(StoreError, match="ends in a NUL character"):
            run(store, nul.alias, chain, write_path="bulk", bulk_storage=str(files))
    finally:
        server.close_stores()
        server.drop_created(server.created_since(before))
