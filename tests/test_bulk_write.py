"""``evolve --write-path bulk``: Milvus server import jobs instead of upserts.

The real Milvus 2.3.5 server from the `milvus` package uses local storage, so a
directory on this machine is storage it shares. Each test compares against the
insert path on the same source, or checks that a refused run wrote nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from backends import Backend
from galleries import Digits
from helpers import assert_same_rows, die_after_first_submit

from dmu_migrate.api import migrate
from dmu_migrate.artifact import Artifact
from dmu_migrate.errors import InputError
from dmu_migrate.evolve import bulk_pass
from dmu_migrate.evolve.ledger import Ledger
from dmu_migrate.evolve.pipeline import EvolveOptions, evolve
from dmu_migrate.evolve.plan import make_plan
from dmu_migrate.evolve.progress import EVOLVE
from dmu_migrate.evolve.run import EvolveResult, Outcome
from dmu_migrate.evolve.transform import AdapterChain
from dmu_migrate.stores.base import VectorStore

ROWS = 600


def _seed(backend: Backend, digits: Digits) -> tuple[str, np.ndarray]:
    source = backend.unique("bulk_src")
    ids = np.arange(ROWS, dtype=np.int64) * 3 + 7
    names = [f"n{i}" for i in ids.tolist()]
    fields: dict[str, list[Any]] = {"name": names, "label": digits.y_te[:ROWS].tolist()}
    alias = backend.unique("bulk")
    backend.seed(source, ids, digits.old_te[:ROWS], fields, alias=alias)
    return alias, ids


def _across(collection: str, artifact: Artifact, **settings: Any) -> EvolveResult:
    """``dmu-migrate evolve`` as the API runs it (with --target-uri and every flag)."""
    done = migrate.evolve(collection, artifact.path, **settings)
    assert isinstance(done, EvolveResult)
    return done


def _run(
    store: VectorStore, source: str, artifact: Artifact, on_progress: Any = None, **options: Any
) -> Any:
    plan = make_plan(store, source, AdapterChain([artifact]))
    return evolve(store, plan, EvolveOptions(batch_size=100, **options), on_progress)


@pytest.fixture
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    backend = Backend("milvus-server", request.getfixturevalue("milvus_server"), tmp_path)
    before = backend.list_collections()
    yield backend
    backend.close_stores()
    backend.drop_created(backend.created_since(before))


@pytest.mark.integration
def test_bulk_equals_insert_row_for_row(
    server: Backend, digits: Digits, artifact: Artifact, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setattr(bulk_pass, "PART_BYTES", 250 * 4 * AdapterChain([artifact]).out_dim)
    a, _ = _seed(server, digits)
    b, _ = _seed(server, digits)
    files = tmp_path / "bulk"
    files.mkdir()
    store = server.open_store()
    by_insert = _run(store, a, artifact)
    heard: list[tuple[int, int]] = []  # the evolve phase, as a (done, total) callback hears it
    by_bulk = _run(
        store,
        b,
        artifact,
        lambda phase, done, total: heard.append((done, total)) if phase == EVOLVE else None,
        write_path="bulk",
        bulk_storage=str(files),
    )
    assert by_bulk.outcome == Outcome.DONE and by_bulk.verify is not None
    assert heard[0] == (0, ROWS) and heard[-1] == (ROWS, ROWS)
    assert [d for d, _ in heard] == sorted(d for d, _ in heard)
    report = by_bulk.verify
    assert (by_bulk.caught_up, by_bulk.updated) == (0, 0)  # the imports wrote every row
    assert (report.source_rows, report.target_rows, report.missing) == (ROWS, ROWS, 0), report
    record = Ledger(store).load(by_bulk.migration)
    assert record is not None and record.bulk is not None
    # Parts close at the first batch boundary past 250 rows: two of three 100-row batches.
    assert [p["rows"] for p in record.bulk["parts"]] == [300, 300]
    assert all(p["done"] and p["job"] for p in record.bulk["parts"])
    assert list(files.iterdir()) == []  # imported files are deleted
    assert_same_rows(server.read_all(by_bulk.target), server.read_all(by_insert.target))


@pytest.mark.integration
def test_run_killed_after_submit_resumes_without_duplicates(
    server: Backend, digits: Digits, artifact: Artifact, tmp_path: Path, monkeypatch: Any
) -> None:
    """Dies right after the first job id is on record; the next run settles, reads on."""
    monkeypatch.setattr(bulk_pass, "PART_BYTES", 200 * 4 * AdapterChain([artifact]).out_dim)
    source, ids = _seed(server, digits)
    files = tmp_path / "bulk"
    files.mkdir()
    store = server.open_store()
    die_after_first_submit(
        monkeypatch,
        lambda: _run(store, source, artifact, write_path="bulk", bulk_storage=str(files)),
    )
    # The job id went on record; so did the files, which the next run must not re-import.
    result = _run(store, source, artifact, write_path="insert", take_over=True)
    assert result.outcome == Outcome.DONE and result.verify is not None
    assert (result.verify.target_rows, result.verify.missing) == (ROWS, 0)
    rows = server.read_all(result.target)
    assert sorted(rows) == sorted(ids.tolist())
    client = store.client  # type: ignore[attr-defined]
    count = client.query(
        result.target, filter="", output_fields=["count(*)"], consistency_level="Strong"
    )
    assert count[0]["count(*)"] == ROWS  # no row imported twice


@pytest.mark.integration
def test_bad_storage_is_one_line_and_writes_nothing(
    server: Backend, digits: Digits, artifact: Artifact, tmp_path: Path
) -> None:
    source, _ = _seed(server, digits)
    store = server.open_store()
    before = server.list_collections()
    with pytest.raises(InputError, match="is not a directory") as missing:
        _run(store, source, artifact, write_path="bulk", bulk_storage=str(tmp_path / "nope"))
    assert "\n" not in str(missing.value)
    with pytest.raises(InputError, match="only s3:// object storage") as s3:
        _run(store, source, artifact, write_path="bulk", bulk_storage="gs://bucket/prefix")
    assert "\n" not in str(s3.value)
    assert server.list_collections() == before
    assert Ledger(store).records() == [] or all(r.source != source for r in Ledger(store).records())


@pytest.mark.parametrize("kind", ["milvus-lite", "qdrant-local", "parquet"])
def test_bulk_is_refused_on_stores_without_import(
    kind: str, digits: Digits, artifact: Artifact, tmp_path: Path
) -> None:
    uri = {
        "milvus-lite": str(tmp_path / "store.db"),
        "qdrant-local": f"qdrant:{tmp_path / 'qdrant'}",
        "parquet": f"parquet:{tmp_path / 'parquet'}",
    }[kind]
    backend = Backend(kind, uri, tmp_path)
    source = "live"
    backend.seed("src", np.arange(20) + 1, digits.old_te[:20], {"name": ["x"] * 20}, alias=source)
    store = backend.open_store()
    try:
        with pytest.raises(InputError, match="has no bulk import") as refused:
            _run(store, source, artifact, write_path="bulk", bulk_storage=str(tmp_path))
        assert "\n" not in str(refused.value)
        # auto falls back to the insert path there
        assert _run(store, source, artifact, write_path="auto").outcome == Outcome.DONE
    finally:
        backend.close_stores()


@pytest.mark.integration
def test_bulk_refuses_a_target_holding_rows(
    server: Backend, digits: Digits, artifact: Artifact, tmp_path: Path
) -> None:
    source, _ = _seed(server, digits)
    store = server.open_store()
    first = _run(store, source, artifact)
    with pytest.raises(InputError, match="already holds rows"):
        _run(store, source, artifact, write_path="bulk", bulk_storage=str(tmp_path), restart=True)
    assert first.outcome == Outcome.DONE


@pytest.mark.integration
def test_a_lite_source_is_bulk_imported_into_the_server(
    server: Backend, digits: Digits, artifact: Artifact, tmp_path: Path, monkeypatch: Any
) -> None:
    """--target-uri from a Milvus Lite file: the server imports the main pass, every row
    as a same-store evolve of the file writes it; a re-run catches up by insert."""
    monkeypatch.setattr(bulk_pass, "PART_BYTES", 250 * 4 * AdapterChain([artifact]).out_dim)
    lite = Backend("milvus-lite", str(tmp_path / "lite.db"), tmp_path / "lite")
    alias, ids = _seed(lite, digits)
    files = tmp_path / "bulk"
    files.mkdir()
    live = server.unique("live")
    bulk: dict[str, Any] = {"write_path": "bulk", "bulk_storage": str(files), "batch_size": 100}
    done = _across(alias, artifact, uri=lite.uri, target_uri=server.uri, alias=live, **bulk)
    assert done.outcome == Outcome.DONE and done.verify is not None
    assert (done.caught_up, done.updated, done.verify.missing) == (0, 0, 0)
    store = server.open_store()
    record = Ledger(store).load(done.migration)
    assert record is not None and record.bulk is not None
    assert [p["rows"] for p in record.bulk["parts"]] == [300, 300]
    assert list(files.iterdir()) == []
    server.close_stores()
    same = _across(alias, artifact, uri=lite.uri, alias=lite.unique("live"))
    inserted = lite.read_all(same.target)
    assert_same_rows(server.read_all(done.target), inserted)
    assert sorted(inserted) == sorted(ids.tolist())

    source = lite.open_store()
    name = source.alias_target(alias)
    assert name is not None
    source.delete_ids(name, ids[:2])
    source.flush(name)
    lite.close_stores()
    again = _across(alias, artifact, uri=lite.uri, target_uri=server.uri, alias=live, **bulk)
    assert (again.outcome, again.caught_up, again.updated, again.deleted) == (Outcome.DONE, 0, 0, 2)
    assert sorted(server.read_all(done.target)) == sorted(ids[2:].tolist())


@pytest.mark.integration
def test_a_source_of_another_kind_is_not_bulk_imported(
    server: Backend, digits: Digits, artifact: Artifact, tmp_path: Path
) -> None:
    """Its fields reach Milvus as dynamic keys, which per-field import files cannot carry:
    bulk is refused in one line with nothing written; auto takes the insert path."""
    qdrant = Backend("qdrant-local", f"qdrant:{tmp_path / 'qdrant'}", tmp_path)
    qdrant.seed("src", np.arange(20) + 1, digits.old_te[:20], {"name": ["x"] * 20})
    before = server.list_collections()
    live = server.unique("live")
    args: dict[str, Any] = {"uri": qdrant.uri, "target_uri": server.uri, "alias": live}
    bulk = {"write_path": "bulk", "bulk_storage": str(tmp_path)}
    with pytest.raises(InputError, match="another store kind") as refused:
        _across("src", artifact, **bulk, **args)
    assert "\n" not in str(refused.value)
    assert server.list_collections() == before
    into = Backend("parquet", f"parquet:{tmp_path / 'parquet'}", tmp_path)
    with pytest.raises(InputError, match="has no bulk import"):  # nor into a store without it
        _across("src", artifact, uri=qdrant.uri, target_uri=into.uri, **bulk)
    assert into.list_collections() == set()
    done = _across("src", artifact, write_path="auto", bulk_storage=str(tmp_path), **args)
    assert done.outcome == Outcome.DONE and len(server.read_all(done.target)) == 20


@pytest.mark.integration
def test_shards_import_their_ranges_like_one_insert_run(
    server: Backend, digits: Digits, artifact: Artifact, tmp_path: Path, monkeypatch: Any
) -> None:
    """--shards 2, and --shard 1/2 then 0/2, with --write-path bulk: each shard imports its
    own range through the split's storage; the finish waits for every imported row, then
    verifies and cuts over."""
    from dmu_migrate.evolve.shards import load_shards

    monkeypatch.setattr(bulk_pass, "PART_BYTES", 200 * 4 * AdapterChain([artifact]).out_dim)
    (a, ids), (b, _), (c, _) = (_seed(server, digits) for _ in range(3))
    store = server.open_store()
    by_insert = _run(store, a, artifact)
    server.close_stores()
    files = tmp_path / "bulk"
    files.mkdir()
    bulk: dict[str, Any] = {"write_path": "bulk", "bulk_storage": str(files), "batch_size": 100}
    together = _across(b, artifact, uri=server.uri, shards=2, **bulk)
    assert together.outcome == Outcome.DONE and together.verify is not None
    assert [s["rows_written"] for s in together.shards] == [300, 300]
    one = _across(c, artifact, uri=server.uri, shard="1/2", **bulk)
    assert one.outcome == Outcome.SHARD_DONE
    other = _across(c, artifact, uri=server.uri, shard="0/2", **bulk)
    assert other.outcome == Outcome.DONE and other.verify is not None
    inserted = server.read_all(by_insert.target)
    assert sorted(inserted) == sorted(ids.tolist())
    store = server.open_store()
    ledger = Ledger(store)
    for done in (together, other):
        assert (done.caught_up, done.updated, done.verify.missing) == (0, 0, 0)  # type: ignore[union-attr]
        record = ledger.load(done.migration)
        assert record is not None and record.bulk is not None
        shards = load_shards(ledger, record)
        parts = [p for s in shards if s is not None and s.bulk for p in s.bulk["parts"]]
        assert [p["rows"] for p in parts] == [200, 100, 200, 100] and all(p["done"] for p in parts)
        count = store.client.query(  # type: ignore[attr-defined]
            done.target, filter="", output_fields=["count(*)"], consistency_level="Strong"
        )
        assert count[0]["count(*)"] == ROWS  # each range imported once
        assert_same_rows(server.read_all(done.target), inserted)
    assert list(files.iterdir()) == []
