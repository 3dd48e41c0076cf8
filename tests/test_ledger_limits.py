"""The ledger within every store's limits, and leases two aligned processes cannot share."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from backends import clear_ledger
from galleries import Gallery
from helpers import assert_clean_error
from pymilvus import DataType, MilvusClient, MilvusException
from typer.testing import CliRunner

from dmu_migrate.artifact import Artifact
from dmu_migrate.cli import app
from dmu_migrate.errors import InputError, StoreError
from dmu_migrate.evolve import ledger as ledger_module
from dmu_migrate.evolve.ledger import Ledger, Record
from dmu_migrate.evolve.pipeline import EvolveOptions, evolve_collection
from dmu_migrate.evolve.retry import RetryPolicy
from dmu_migrate.stores.base import VectorStore
from dmu_migrate.stores.client_errors import store_error
from dmu_migrate.stores.milvus_errors import MILVUS
from dmu_migrate.stores.opener import open_store

pytestmark = pytest.mark.timeout(600)


def record(key: str) -> Record:
    return Record(key, "a", "b", "new-collection", None, "vector", "vector", ["x"], "c", "v1", "v2")


def test_thousands_of_skipped_ids_and_long_keys_fit_milvus(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    MilvusClient(str(db)).close()
    store = open_store(str(db))
    try:
        ledger = Ledger(store)
        long_key = "c" * 700 + "->" + "c" * 700 + "#shard-3-of-16"
        for key, ids in (("faces->faces__v2", list(range(100_000, 107_000))), (long_key, [])):
            rec = record(key)
            rec.skipped = list(ids)
            ledger.save(rec)
            rec.skipped.extend([1, 2, 3])  # a later batch adds a few: only the tail is rewritten
            ledger.save(rec)
            back = Ledger(store).load(key)
            assert back is not None and back.key == key and back.skipped == rec.skipped
        listed = {r.key: r for r in Ledger(store).records()}
        assert set(listed) == {"faces->faces__v2", long_key}
        assert len(listed["faces->faces__v2"].skipped) == 7003
    finally:
        store.close()


def test_a_foreign_ledger_entry_is_one_clear_error(tmp_path: Path) -> None:
    store = open_store(f"parquet:{tmp_path}")
    store.ledger_put("faces:v1->v2", {"key": "faces:v1->v2", "status": "done", "cursor": 9})
    with pytest.raises(StoreError, match="ledger entry 'faces:v1->v2' lacks source, target"):
        Ledger(store).records()


def test_skip_bad_vectors_with_6500_bad_rows_finishes(tmp_path: Path, artifact: Artifact) -> None:
    db = tmp_path / "bad.db"
    dim = artifact.manifest.old_dim
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(7000, dim)).astype(np.float32)
    vectors[500:] = 0.0  # 6,500 rows no adapter can evolve
    client = MilvusClient(str(db))
    try:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        index = client.prepare_index_params()
        index.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="COSINE")
        client.create_collection("bad__v1", schema=schema, index_params=index)
        client.insert("bad__v1", [{"id": i, "vector": v} for i, v in enumerate(vectors)])
        client.create_alias("bad__v1", "bad")
    finally:
        client.close()
    args = ["evolve", "--collection", "bad", "--adapter", str(artifact.path), "--uri", str(db)]
    result = CliRunner().invoke(app, [*args, "--skip-bad-vectors"])
    assert result.exit_code == 0, result.output
    assert "6500 rows with NaN, inf or all-zero vectors were left out" in result.output
    again = CliRunner().invoke(app, args)  # the next run skips exactly those rows
    assert again.exit_code == 0 and "up to date" in again.output, again.output
    status = json.loads(CliRunner().invoke(app, ["status", "--uri", str(db), "--json"]).output)
    assert [(s["status"], len(s["skipped"])) for s in status] == [("done", 6500)]


RACER = textwrap.dedent(
    """
    import sys, time
    from dmu_migrate.errors import StoreError
    from dmu_migrate.evolve.ledger import Ledger, Record
    from dmu_migrate.stores.opener import open_store

    uri, start, trials = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    store = open_store(uri)
    for trial in range(trials):
        rec = Record(f"race-{start}-{trial}", "a", "b", "new-collection", None, "v", "v",
                     ["x"], "c", "v1", "v2")
        time.sleep(max(0.0, start + 3 * trial - time.time()))  # the barrier: one instant
        try:
            Ledger(store).acquire(rec)
            print("won", flush=True)
        except StoreError as exc:
            print("lost", exc, flush=True)
    store.close()
    """
)


@pytest.mark.integration
@pytest.mark.usefixtures("real_lease_settle")
def test_two_aligned_processes_never_both_take_a_lease(milvus_server: str) -> None:
    """Both read the lease free within the same millisecond; only one may run."""
    trials = 4
    start = time.time() + 8  # time for both interpreters to start and connect
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, milvus_server, str(start), str(trials)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = []
    for racer in racers:
        stdout, stderr = racer.communicate(timeout=240)
        assert racer.returncode == 0, stderr[-2000:]
        outputs.append(stdout.splitlines())
    for trial in range(trials):
        verdicts = sorted(out[trial].split()[0] for out in outputs)
        assert verdicts == ["lost", "won"], outputs
    clear_ledger(milvus_server)  # later tests start with an empty ledger


class CrashesOnSecondWrite:
    """The real store, with a bug (not a store error) raised on the second batch written."""

    def __init__(self, store: VectorStore) -> None:
        self._store, self._writes = store, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def write_rows(self, *args: Any, **kwargs: Any) -> None:
        self._writes += 1
        if self._writes == 2:
            raise RuntimeError("a bug in the writer")
        self._store.write_rows(*args, **kwargs)


def test_a_crash_that_is_not_a_store_error_leaves_the_record_failed(
    gallery: Gallery, artifact: Artifact
) -> None:
    store = open_store(str(gallery.db))
    try:
        faulty = CrashesOnSecondWrite(store)
        options = EvolveOptions(batch_size=100, read_ahead=0)
        with pytest.raises(RuntimeError):
            evolve_collection(faulty, "digits", [artifact], options=options)
        rec = Ledger(store).load("digits__v1->digits__v2")
        assert (
            rec is not None
            and rec.status == "failed"
            and "a bug in the writer" in (rec.error or "")
        )
        assert rec.lease_owner is None  # released: the next run need not wait or --take-over
        again = evolve_collection(store, "digits", [artifact], options=options)
        assert again.outcome == "done" and again.resumed
    finally:
        store.close()


class DropsTargetAfterFirstWrite:
    """The real store; after the first batch the target collection is dropped under the run."""

    def __init__(self, store: VectorStore) -> None:
        self._store, self._writes = store, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def write_rows(self, source: Any, target: str, *args: Any, **kwargs: Any) -> None:
        self._store.write_rows(source, target, *args, **kwargs)
        self._writes += 1
        if self._writes == 1:
            self._store.drop_collection(target)


def test_a_client_error_on_the_write_side_is_one_store_error(
    gallery: Gallery, artifact: Artifact
) -> None:
    store = open_store(str(gallery.db))
    try:
        faulty = DropsTargetAfterFirstWrite(store)
        options = EvolveOptions(batch_size=100, read_ahead=0, retry=RetryPolicy(max_retries=0))
        with pytest.raises(StoreError) as caught:
            evolve_collection(faulty, "digits", [artifact], options=options)
        message = str(caught.value)
        assert message.startswith("Milvus at ") and "write rows failed:" in message, message
        assert "\n" not in message
        rec = Ledger(store).load("digits__v1->digits__v2")
        assert rec is not None and rec.status == "failed" and rec.lease_owner is None
    finally:
        store.close()


def test_client_errors_map_to_store_errors_and_bugs_do_not() -> None:
    milvus = MilvusException(code=1100, message="collection not found[x]\nsecond line")
    disk = OSError(28, "No space left on device")
    for exc in (milvus, disk):
        mapped = store_error(exc, MILVUS, "gallery.db", "writing")
        assert isinstance(mapped, StoreError) and "\n" not in str(mapped)
    assert store_error(RuntimeError("bug"), MILVUS, "gallery.db", "writing") is None


@pytest.mark.integration
def test_an_alias_name_the_server_refuses_is_one_line(
    milvus_server: str, artifact: Artifact
) -> None:
    name = f"onel_{uuid.uuid4().hex[:8]}"
    dim = artifact.manifest.old_dim
    client = MilvusClient(milvus_server, timeout=60)
    try:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        index = client.prepare_index_params()
        index.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="COSINE")
        client.create_collection(name, schema=schema, index_params=index, timeout=60)
        vectors = np.random.default_rng(1).normal(size=(50, dim)).astype(np.float32)
        client.insert(name, [{"id": i, "vector": v} for i, v in enumerate(vectors)], timeout=60)
        args = ["evolve", "--collection", name, "--adapter", str(artifact.path)]
        result = CliRunner().invoke(app, [*args, "--uri", milvus_server, "--alias", "my alias"])
        assert_clean_error(result, 2, "--alias 'my alias' is not a name")
        assert not client.has_collection(f"{name}__v2", timeout=60)
    finally:
        for collection in (name, f"{name}__v2"):
            client.drop_collection(collection, timeout=60)
        client.close()


def test_the_lease_settle_time_is_a_setting_and_a_bad_one_is_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ledger_module.SETTLE_ENV, raising=False)
    assert ledger_module.settle() == ledger_module.SETTLE == 2.0
    monkeypatch.setenv(ledger_module.SETTLE_ENV, "0.25")
    assert ledger_module.settle() == 0.25
    for bad in ("soon", "0", "-1", "600"):
        monkeypatch.setenv(ledger_module.SETTLE_ENV, bad)
        with pytest.raises(InputError, match=rf"DMU_LEASE_SETTLE='{bad}' is not a number"):
            ledger_module.settle()
