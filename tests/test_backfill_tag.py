"""plan-backfill --tag on real stores: ranks written onto exactly the planned evolved rows and
nothing else, reruns that overwrite and clear, the cron evolve afterwards, and the stores
that cannot hold the field refused before anything is written.

Data: the digits gallery of test_evolve_pipeline.seed_gallery and the digits artifact (its
backfill_score.onnx ranks the rows). On Milvus Lite the gallery is seeded with a dynamic
field, which evolve's new collection copies and which then holds the rank.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from backends import Backend
from galleries import ROWS, Digits, Gallery, read_all, seed_gallery
from helpers import Phases, assert_clean_error
from migrations import run
from typer.testing import CliRunner

from dmu_migrate.artifact import Artifact
from dmu_migrate.cli import app
from dmu_migrate.data import write_table
from dmu_migrate.errors import StoreError
from dmu_migrate.evolve.backfill_input import VectorTable
from dmu_migrate.evolve.backfill_plan import parse_budget, plan_backfill
from dmu_migrate.evolve.backfill_tag import tag_target, tag_target_of
from dmu_migrate.evolve.backfill_write import backfill
from dmu_migrate.evolve.progress import TAG, UNTAG
from dmu_migrate.evolve.run import Outcome
from dmu_migrate.stores.base import RANK_FIELD, Batch

pytestmark = pytest.mark.timeout(600)
PLANNED = round(0.1 * ROWS)
REFUSED = {
    "milvus-server": f"without partial update, so its rows cannot get '{RANK_FIELD}'",
    "parquet": "is in a Parquet store",
}


def seed(backend: Backend, digits: Digits) -> tuple[str, str, np.ndarray]:
    """seed_gallery's rows; on Milvus Lite in a collection with a dynamic field."""
    if backend.kind != "milvus-lite":
        return seed_gallery(backend, digits)
    from pymilvus import DataType, MilvusClient

    source, alias = backend.unique("gal"), backend.unique("live")
    ids = np.arange(10, 10 + ROWS) * 3
    client = MilvusClient(backend.uri)
    try:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=digits.old_te.shape[1])
        schema.add_field("name", DataType.VARCHAR, max_length=64)
        index = client.prepare_index_params()
        index.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="COSINE")
        client.create_collection(source, schema=schema, index_params=index)
        client.insert(
            source,
            [
                {"id": i, "vector": v.tolist(), "name": f"n{i}", "label": int(y)}  # label: dynamic
                for i, v, y in zip(
                    ids.tolist(), digits.old_te[:ROWS], digits.y_te[:ROWS], strict=True
                )
            ],
        )
        client.create_alias(source, alias)
    finally:
        client.close()
    return source, alias, ids


def ranks(rows: dict[Any, dict[str, Any]]) -> dict[Any, int]:
    """Every row's rank, for the rows that hold one (a cleared rank is null or absent)."""
    return {i: r[RANK_FIELD] for i, r in rows.items() if r.get(RANK_FIELD) is not None}


def without_rank(rows: dict[Any, dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    return {i: {k: v for k, v in r.items() if k != RANK_FIELD} for i, r in rows.items()}


def test_ranks_go_onto_the_planned_rows_and_reruns_clear_the_stale_ones(
    backend: Backend, digits: Digits, artifact: Artifact, tmp_path: Path
) -> None:
    source, alias, ids = seed(backend, digits)
    store = backend.open_store()
    first = run(store, alias, [artifact])
    if backend.kind in REFUSED:
        before = backend.read_all(first.target)
        with pytest.raises(StoreError, match=REFUSED[backend.kind]) as refused:
            tag_target_of(store, alias)
        assert f"collection '{first.target}'" in str(refused.value)
        assert "\n" not in str(refused.value) and "plan-backfill --output" in str(refused.value)
        assert backend.read_all(first.target) == before
        return
    target = tag_target_of(store, alias)
    assert target == first.target
    before = backend.read_all(target)
    plan = plan_backfill(store, alias, artifact, parse_budget("10%"))
    heard = Phases()
    report = tag_target(store, target, plan.ids, 5, heard)  # batches of 5: several writes
    assert (report.tagged, report.not_in_target, report.cleared) == (PLANNED, 0, 0)
    assert heard.check(UNTAG, TAG) == {UNTAG: 0, TAG: PLANNED}
    assert len(heard.calls[TAG]) > 3
    tagged = backend.read_all(target)
    expected = {i: k + 1 for k, i in enumerate(plan.ids.tolist())}
    assert ranks(tagged) == expected
    # Nothing else changed: no other field of a planned row, no field of any other row.
    assert without_rank(tagged) == without_rank(before)
    assert store.count(target, store.rank_filter()) == PLANNED

    # The same plan again writes the same values; the ranks it finds are all still planned.
    again = tag_target(store, target, plan.ids, 5)
    assert (again.tagged, again.cleared) == (PLANNED, 0)
    assert backend.read_all(target) == tagged

    # The top 3 re-embedded natively: the next plan leaves them out and ranks 3 others.
    top = plan.ids[:3]
    native = np.ones((len(top), artifact.manifest.new_dim), np.float32)
    write_table(
        tmp_path / "native.parquet", {"id": top, "vector": native / np.sqrt(native[0] @ native[0])}
    )
    backfill(store, alias, VectorTable(tmp_path / "native.parquet"))
    later = plan_backfill(store, alias, artifact, parse_budget("10%"))
    assert not set(top.tolist()) & set(later.ids.tolist())
    heard = Phases()
    report = tag_target(store, target, later.ids, 5, heard)
    assert (report.tagged, report.cleared) == (len(later.ids), 3)
    assert heard.check(UNTAG, TAG) == {UNTAG: PLANNED, TAG: len(later.ids)}
    now = backend.read_all(target)
    assert ranks(now) == {i: k + 1 for k, i in enumerate(later.ids.tolist())}
    assert all(now[i]["dmu_origin"] == "native" for i in top.tolist())

    # An id with no evolved row is counted, never added; no ranked row is touched.
    missing = np.asarray([*later.ids.tolist(), 999_999])
    report = tag_target(store, target, missing, 100)
    assert (report.tagged, report.not_in_target) == (len(later.ids), 1)
    assert sorted(backend.read_all(target)) == sorted(now)

    # The cron evolve with the ranks on the rows: verified. A ranked row whose source vector
    # changed is evolved again: Qdrant replaces the point, so its rank goes; Milvus Lite's
    # upsert keeps dynamic keys it is not given, so its rank stays (stale) until the next
    # --tag, which then leaves every rank as the new plan says.
    changed = later.ids[0]
    info = store.describe(source)
    fresh = Batch(np.asarray([changed]), digits.old_te[300:301], {"label": [1], "name": ["c"]})
    store.write_rows(info, source, fresh, {})
    store.flush(source)
    cron = run(store, alias, [artifact])
    assert cron.outcome == Outcome.DONE and cron.verify is not None and cron.verify.missing == 0
    assert cron.updated == 1
    kept = ranks(now)
    if backend.kind != "milvus-lite":
        del kept[changed.item()]
    assert ranks(backend.read_all(target)) == kept
    final = plan_backfill(store, alias, artifact, parse_budget("10%"))
    tag_target(store, target, final.ids, 5)
    assert ranks(backend.read_all(target)) == {i: k + 1 for k, i in enumerate(final.ids.tolist())}


def test_the_command_refuses_a_collection_without_room_for_the_rank(
    gallery: Gallery, artifact: Artifact
) -> None:
    """The gallery's Milvus Lite collection has no dynamic field and Lite cannot add a field."""
    db = str(gallery.db)
    runner = CliRunner()
    args = ["plan-backfill", "--collection", "digits", "--adapter", str(artifact.path), "--uri", db]
    early = runner.invoke(app, [*args, "--tag"])
    assert_clean_error(early, 2, "no new-collection migration of 'digits'", "run evolve first")
    evolved = runner.invoke(app, ["evolve", *args[1:5], "--uri", db])
    assert evolved.exit_code == 0, evolved.output
    before = read_all(gallery.db, "digits__v2")
    refused = runner.invoke(app, [*args, "--tag", "-v"])
    assert_clean_error(
        refused,
        4,
        f"collection 'digits__v2' has no field '{RANK_FIELD}' and no dynamic field",
        "add a nullable INT64 field",
    )
    assert "score:" not in refused.stderr  # refused before the scan
    assert read_all(gallery.db, "digits__v2") == before


def test_the_command_tags_a_qdrant_collection_and_logs_each_phase(
    digits: Digits, artifact: Artifact, tmp_path: Path
) -> None:
    harness = Backend("qdrant-local", f"qdrant:{tmp_path / 'qdrant'}", tmp_path)
    try:
        _, alias, _ = seed_gallery(harness, digits)
        target = run(harness.open_store(), alias, [artifact]).target
    finally:
        harness.close_stores()  # local mode: one process, one client
    args = ["plan-backfill", "--collection", alias, "--adapter", str(artifact.path)]
    result = CliRunner().invoke(
        app, [*args, "--uri", harness.uri, "--budget", "10%", "--tag", "--batch-size", "5", "-v"]
    )
    assert result.exit_code == 0, result.output
    assert f"ranks written to {PLANNED} rows of '{target}' as {RANK_FIELD}" in result.stdout
    logged = [
        x.split("dmu_migrate.progress: ")[1]
        for x in result.stderr.splitlines()
        if "dmu_migrate.progress: " in x
    ]
    phases = list(dict.fromkeys(x.split(":")[0] for x in logged))
    assert phases == ["native ids", "score", "untag", "tag"], result.stderr
    assert logged[-1].startswith(f"tag: {PLANNED}/{PLANNED} rows"), result.stderr
    try:
        rows = harness.read_all(target)
    finally:
        harness.close_stores()
    assert sorted(ranks(rows).values()) == list(range(1, PLANNED + 1))


def test_milvus_ranks_go_into_a_declared_nullable_field_and_odd_fields_are_refused(
    tmp_path: Path,
) -> None:
    """Store level, on Milvus Lite: a nullable INT64 field holds and clears ranks; a field
    that cannot be cleared, or named partitions, are refused before any write."""
    from pymilvus import DataType, MilvusClient

    from dmu_migrate.stores.opener import open_store

    uri = str(tmp_path / "ranks.db")
    client = MilvusClient(uri)
    layouts = {
        "declared": (DataType.INT64, True, False),
        "not_nullable": (DataType.INT64, False, False),
        "int32": (DataType.INT32, True, False),
        "partitioned": (None, False, True),
    }
    try:
        for name, (kind, nullable, partitioned) in layouts.items():
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=partitioned)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2)
            schema.add_field("name", DataType.VARCHAR, max_length=16)
            if kind is not None:
                schema.add_field(RANK_FIELD, kind, nullable=nullable)
            index = client.prepare_index_params()
            index.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="COSINE")
            client.create_collection(name, schema=schema, index_params=index)
            if partitioned:
                client.create_partition(name, "recent")
            rows = [{"id": i, "vector": [1.0, float(i)], "name": f"n{i}"} for i in range(1, 7)]
            if kind is not None:
                for row in rows:
                    row[RANK_FIELD] = None if nullable else 0
            client.insert(name, rows)
    finally:
        client.close()
    store = open_store(uri)
    try:
        assert store.rank_problem("declared") is None
        for name, needle in (
            ("not_nullable", "has field 'dmu_backfill_rank' as INT64, which cannot"),
            ("int32", "as nullable INT32"),
            ("partitioned", "has named partitions (recent)"),
        ):
            problem = store.rank_problem(name)
            assert problem is not None and needle in problem, problem
        info = store.describe("declared")
        before = {i: r for i, r in zip(*_rows(store, info), strict=True)}
        assert store.write_ranks("declared", np.asarray([5, 2, 99]), np.asarray([1, 2, 3])) == 2
        assert store.write_ranks("declared", np.asarray([2]), None) == 1
        after = {i: r for i, r in zip(*_rows(store, info), strict=True)}
        assert {i: r[RANK_FIELD] for i, r in after.items() if r[RANK_FIELD] is not None} == {5: 1}
        assert without_rank(after) == without_rank(before) and 99 not in after
        assert store.count("declared", store.rank_filter()) == 1
    finally:
        store.close()


def _rows(store: Any, info: Any) -> tuple[list[Any], list[dict[str, Any]]]:
    """(ids, rows as field dicts with the vector as a list) of a whole collection."""
    ids: list[Any] = []
    rows: list[dict[str, Any]] = []
    for batch in store.iter_batches(info, 100):
        for k, i in enumerate(batch.ids.tolist()):
            ids.append(i)
            row = {f: v[k] for f, v in batch.fields.items()}
            row["vector"] = batch.vectors[k].tolist()
            rows.append(row)
    return ids, rows
