"""evolve --target-uri: the evolved collection, ledger and alias written into another store kind.

Each direction is compared with an evolve of the same data within the source's own
store: the same ids, fields, tags and evolved vectors, in the target kind's layout
(stores/crossing.py). Refusals happen before anything is written in the target.
"""

from __future__ import annotations

import re
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from backends import Backend
from galleries import ROWS, Digits
from helpers import assert_same_rows
from limits import limit
from typer.testing import CliRunner

from dmu_migrate.api import migrate, records
from dmu_migrate.artifact import Artifact
from dmu_migrate.cli import app
from dmu_migrate.errors import InputError
from dmu_migrate.evolve.run import EvolveResult, Outcome
from dmu_migrate.evolve.transform import AdapterChain
from dmu_migrate.stores.base import Batch

PAIRS = [
    ("milvus-lite", "qdrant-local"),
    ("qdrant-local", "milvus-lite"),
    ("milvus-lite", "parquet"),
    ("qdrant-local", "parquet"),
    ("parquet", "milvus-lite"),
    ("parquet", "qdrant-local"),
    # Two stores of one kind: another file or directory, the source's own layout.
    ("milvus-lite", "milvus-lite"),
    ("qdrant-local", "qdrant-local"),
    ("parquet", "parquet"),
]
IDS = [f"{a}-to-{b}" for a, b in PAIRS]
# A cycle through the kinds: each is a source once and a target once. The re-run's sync
# is the same code whatever the pair; the fast suite runs it on these, the rest run in
# the integration suite.
CYCLE = {("milvus-lite", "qdrant-local"), ("qdrant-local", "parquet"), ("parquet", "milvus-lite")}
RERUN_PAIRS = [
    pair if pair in CYCLE else pytest.param(*pair, marks=pytest.mark.integration, id=name)
    for pair, name in zip(PAIRS, IDS, strict=True)
]


def harness(kind: str, root: Path) -> Backend:
    root.mkdir(parents=True, exist_ok=True)
    uri = {
        "milvus-lite": str(root / "store.db"),
        "qdrant-local": f"qdrant:{root / 'qdrant'}",
        "parquet": f"parquet:{root / 'parquet'}",
    }[kind]
    return Backend(kind, uri, root)


def seed(backend: Backend, digits: Digits, source: str, alias: str) -> np.ndarray:
    """The first ROWS digits with a label and a name, behind ``alias``; their ids."""
    ids = np.arange(10, 10 + ROWS) * 3
    fields: dict[str, list[Any]] = {
        "label": [int(v) for v in digits.y_te[:ROWS]],
        "name": [f"n{i}" for i in ids],
    }
    backend.seed(source, ids, digits.old_te[:ROWS], fields, alias=alias)
    return ids


def seeded_pair(
    tmp_path: Path, digits: Digits, src_kind: str, dst_kind: str
) -> tuple[Backend, Backend, Backend, str, str]:
    """A seeded source, an empty target, and a reference store seeded alike (the same-store
    evolve to compare with); the source collection's name and its alias."""
    src, dst = harness(src_kind, tmp_path / "src"), harness(dst_kind, tmp_path / "dst")
    ref = harness(src_kind, tmp_path / "ref")
    source, alias = src.unique("gal"), src.unique("live")
    seed(src, digits, source, alias)
    seed(ref, digits, source, alias)
    return src, dst, ref, source, alias


def evolve(src: Backend, dst: Backend | None, alias: str, artifact: Artifact) -> EvolveResult:
    target: dict[str, Any] = {} if dst is None else {"target_uri": dst.uri}
    result = migrate.evolve(alias, artifact.path, uri=src.uri, batch_size=32, **target)
    assert isinstance(result, EvolveResult)
    return result


def rows(backend: Backend, name: str) -> dict[Any, dict[str, Any]]:
    """Every row by id without its key, the vector under "vector" whatever the kind calls it."""
    out = {}
    for row_id, row in backend.read_all(name).items():
        row = {k: v for k, v in row.items() if k != "id"}
        row["vector"] = np.asarray(row.pop("vector") if "vector" in row else row.pop(""))
        out[row_id] = row
    return out


@limit(300)
@pytest.mark.parametrize(("src_kind", "dst_kind"), PAIRS, ids=IDS)
def test_evolve_into_another_store_writes_what_a_same_store_evolve_writes(
    tmp_path: Path, digits: Digits, artifact: Artifact, src_kind: str, dst_kind: str
) -> None:
    src, dst, ref, source, alias = seeded_pair(tmp_path, digits, src_kind, dst_kind)

    same = evolve(ref, None, alias, artifact)
    across = evolve(src, dst, alias, artifact)
    assert across.outcome == Outcome.DONE and across.target == same.target
    assert across.verify is not None and across.verify.max_abs_error <= 1e-5
    assert across.verify.searched > 0  # the target's own index found its vectors
    assert_same_rows(rows(dst, across.target), rows(ref, same.target))

    # The alias is in the target; the source store is only read.
    assert src.list_collections() == {source}
    target_store = dst.open_store()
    assert target_store.alias_target(alias) == across.target
    dst.close_stores()
    source_store = src.open_store()
    assert source_store.alias_target(alias) == source
    src.close_stores()

    # The ledger is in the target: status there shows the migration and where its source is.
    shown = records.status(dst.uri).migrations
    assert [(m["source"], m["target"], m["status"]) for m in shown] == [
        (source, across.target, "done")
    ]
    assert shown[0]["source_uri"] == src.uri and shown[0]["alias_target"] == across.target
    checked = migrate.verify(source, artifact.path, uri=src.uri, target_uri=dst.uri, alias=alias)
    assert checked.target == across.target and checked.missing == 0


@limit(300)
@pytest.mark.parametrize(("src_kind", "dst_kind"), RERUN_PAIRS, ids=IDS)
def test_rerun_brings_the_other_store_in_step_with_the_source(
    tmp_path: Path, digits: Digits, artifact: Artifact, src_kind: str, dst_kind: str
) -> None:
    src, dst = harness(src_kind, tmp_path / "src"), harness(dst_kind, tmp_path / "dst")
    source, alias = src.unique("gal"), src.unique("live")
    ids = seed(src, digits, source, alias)
    first = evolve(src, dst, alias, artifact)

    deleted, updated, inserted = ids[:3], ids[3:6], np.array([1, 2])
    fresh = digits.old_te[200:205]
    changed = np.concatenate([updated, inserted])
    store = src.open_store()
    info = store.describe(source)
    store.delete_ids(source, deleted)
    names = [f"changed-{i}" for i in changed.tolist()]
    store.write_rows(info, source, Batch(changed, fresh, {"label": [1] * 5, "name": names}), {})
    store.flush(source)
    src.close_stores()

    again = evolve(src, dst, alias, artifact)
    assert (again.caught_up, again.updated, again.deleted) == (2, 3, 3)
    after = rows(dst, first.target)
    assert set(after) == set(ids.tolist()) - set(deleted.tolist()) | set(inserted.tolist())
    evolved = AdapterChain([artifact])(fresh)
    for k, row_id in enumerate(changed.tolist()):
        np.testing.assert_allclose(after[row_id]["vector"], evolved[k], atol=1e-5)
        assert after[row_id]["name"] == f"changed-{row_id}"
    third = evolve(src, dst, alias, artifact)
    assert (third.rows_written, third.caught_up, third.updated, third.deleted) == (0, 0, 0, 0)


@limit(300)
@pytest.mark.parametrize(
    ("src_kind", "dst_kind"),
    [("milvus-lite", "qdrant-local"), ("qdrant-local", "parquet")],
    ids=["milvus-lite-to-qdrant-local", "qdrant-local-to-parquet"],
)
def test_sharded_evolve_into_another_store(
    tmp_path: Path, digits: Digits, artifact: Artifact, src_kind: str, dst_kind: str
) -> None:
    """--shards with --target-uri: every shard reads the source and writes the target."""
    src, dst, ref, source, alias = seeded_pair(tmp_path, digits, src_kind, dst_kind)
    same = evolve(ref, None, alias, artifact)

    # Both stores here admit one process: shards in parallel are refused, naming the store.
    with pytest.raises(InputError, match=rf"'{re.escape(src.uri)}' is an embedded store"):
        migrate.evolve(alias, artifact.path, uri=src.uri, target_uri=dst.uri, shards=2, workers=2)
    nothing_written(dst)

    first = migrate.evolve(alias, artifact.path, uri=src.uri, target_uri=dst.uri, shard="0/2")
    assert isinstance(first, EvolveResult) and first.outcome == Outcome.SHARD_DONE
    assert 0 < first.rows_written < ROWS
    done = migrate.evolve(alias, artifact.path, uri=src.uri, target_uri=dst.uri, shards=2)
    assert isinstance(done, EvolveResult) and done.outcome == Outcome.DONE
    assert done.target == same.target and done.rows_written == ROWS - first.rows_written
    assert_same_rows(rows(dst, done.target), rows(ref, same.target))
    assert src.list_collections() == {source}
    shown = records.status(dst.uri).migrations
    assert [(m["source"], m["status"], m["source_uri"]) for m in shown] == [
        (source, "done", src.uri)
    ]


FILTERS = [
    ("milvus-lite", "qdrant-local", 'label < 5 and name in ["n30", "n33", "n36", "n39", "n42"]'),
    ("qdrant-local", "parquet", '{"must": [{"key": "label", "match": {"any": [1, 2, 3]}}]}'),
    ("parquet", "milvus-lite", "label >= 3 and label <= 6.5"),
    ("qdrant-local", "milvus-lite", '{"must": [{"key": "label", "range": {"gt": 6}}]}'),
]


@limit(300)
@pytest.mark.parametrize(
    ("src_kind", "dst_kind", "expr"), FILTERS, ids=[f"{a}-to-{b}" for a, b, _ in FILTERS]
)
def test_filtered_evolve_into_another_store(
    tmp_path: Path, digits: Digits, artifact: Artifact, src_kind: str, dst_kind: str, expr: str
) -> None:
    """--filter with --target-uri: the subset crosses, checked in the target's own language."""
    src, dst, ref, source, alias = seeded_pair(tmp_path, digits, src_kind, dst_kind)
    same = migrate.evolve(alias, artifact.path, uri=ref.uri, filter=expr)
    across = migrate.evolve(alias, artifact.path, uri=src.uri, target_uri=dst.uri, filter=expr)
    assert isinstance(same, EvolveResult) and isinstance(across, EvolveResult)
    assert across.outcome == Outcome.DONE and 0 < across.rows_written < ROWS
    assert across.verify is not None and across.verify.missing == 0
    want = rows(ref, same.target)
    assert len(want) == across.rows_written
    assert_same_rows(rows(dst, across.target), want)
    dst_store = dst.open_store()
    assert dst_store.alias_target(alias) is None  # a --filter run does not cut over
    dst.close_stores()

    # A re-run of the subset writes nothing; a full run evolves the rest and cuts over.
    again = migrate.evolve(alias, artifact.path, uri=src.uri, target_uri=dst.uri, filter=expr)
    assert isinstance(again, EvolveResult) and (again.rows_written, again.caught_up) == (0, 0)
    full = migrate.evolve(alias, artifact.path, uri=src.uri, target_uri=dst.uri)
    assert isinstance(full, EvolveResult) and full.outcome == Outcome.DONE
    assert len(rows(dst, full.target)) == ROWS
    dst_store = dst.open_store()
    assert dst_store.alias_target(alias) == full.target
    dst.close_stores()


@limit(120)
def test_filters_that_cannot_cross_are_refused_before_anything_is_written(
    tmp_path: Path, digits: Digits, artifact: Artifact
) -> None:
    qsrc, mdst = harness("qdrant-local", tmp_path / "q"), harness("milvus-lite", tmp_path / "m")
    pdst, qdst = harness("parquet", tmp_path / "p"), harness("qdrant-local", tmp_path / "qd")
    msrc = harness("milvus-lite", tmp_path / "ms")
    seed(qsrc, digits, "gal", "live")
    seed(msrc, digits, "gal", "live")
    refused = [
        (qsrc, mdst, '{"should": [{"key": "label", "match": {"value": 1}}]}', "uses 'should'"),
        (qsrc, pdst, '{"must": [{"is_empty": {"key": "label"}}]}', "kind IsEmptyCondition"),
        (qsrc, mdst, '{"must_not": [{"key": "label", "match": {"value": 1}}]}', "'label != ...'"),
        (msrc, pdst, "label not in [1, 2]", "'label not in ...', which matches rows without"),
        (msrc, qdst, 'name > "n5"', "Qdrant cannot"),
        (msrc, pdst, "label in [1, 2] or label > 7", "more than --target-uri carries"),
        (msrc, pdst, 'json_contains(tags, "a")', "more than --target-uri carries"),
    ]
    for src, dst, expr, needle in refused:
        with pytest.raises(InputError, match=re.escape(needle)):
            migrate.evolve("gal", artifact.path, uri=src.uri, target_uri=dst.uri, filter=expr)
        nothing_written(dst)


USERS = 40
# A nullable range: rows without a value (k % 5 == 0) match on neither side.
IN_RANGE = {
    "milvus-lite": "opt >= 4",
    "qdrant-local": '{"must": [{"key": "opt", "range": {"gte": 4}}]}',
}


def users_uuid(k: int) -> str:
    return str(uuid.UUID(int=(k + 1) * 104729 << 64))


def users_row(k: int, vector: np.ndarray, opt: int | None) -> dict[str, Any]:
    """String key, a nullable field, a defaulted one left out, and a key only some rows have."""
    row: dict[str, Any] = {"id": users_uuid(k), "emb": vector.tolist(), "opt": opt}
    if k % 3 == 0:
        row["color"] = f"c{k % 4}"
    return row


def users_opt(k: int) -> int | None:
    return None if k % 5 == 0 else k % 10


def users_write(backend: Backend, name: str, rows: list[dict[str, Any]], gone: list[Any]) -> None:
    """Create ``name`` when missing (Milvus: HNSW, dynamic field; Qdrant: payload index), then
    delete ``gone`` and upsert ``rows``, with each kind's own client."""
    if backend.is_milvus:
        from pymilvus import DataType, MilvusClient

        client = MilvusClient(backend.uri)
        try:
            if not client.has_collection(name):
                schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True)
                schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
                schema.add_field("emb", DataType.FLOAT_VECTOR, dim=len(rows[0]["emb"]))
                schema.add_field("opt", DataType.INT64, nullable=True)
                schema.add_field(
                    "tier", DataType.VARCHAR, max_length=8, nullable=True, default_value="free"
                )
                index = client.prepare_index_params()
                params = {"M": 8, "efConstruction": 64}
                index.add_index("emb", index_type="HNSW", metric_type="COSINE", params=params)
                client.create_collection(name, schema=schema, index_params=index)
            if gone:
                client.delete(name, ids=gone)
            client.upsert(name, rows)
            client.flush(name)
        finally:
            client.close()
        return

    from qdrant_client import models

    def write(client: Any) -> None:
        if not client.collection_exists(name):
            size = len(rows[0]["emb"])
            params = models.VectorParams(size=size, distance=models.Distance.COSINE)
            client.create_collection(name, vectors_config={"emb": params})
            with warnings.catch_warnings():  # local mode keeps the index but does not use it
                warnings.simplefilter("ignore", UserWarning)
                client.create_payload_index(name, "opt", models.PayloadSchemaType.INTEGER)
        if gone:
            client.delete(name, points_selector=models.PointIdsList(points=gone))
        points = [
            models.PointStruct(
                id=r["id"],
                vector={"emb": r["emb"]},
                payload={k: v for k, v in r.items() if k not in ("id", "emb")},
            )
            for r in rows
        ]
        client.upsert(name, points)

    backend._with_qdrant(write)


def users_subset(backend: Backend, name: str) -> dict[str, dict[str, Any]]:
    """Rows by key, the vector under "vector"; a null and a missing key read alike,
    since a Milvus dynamic key has no null (stores/crossing.py)."""
    out = {}
    for key, row in backend.read_all(name).items():
        row = {k: v for k, v in row.items() if v is not None and k != "id"}
        row["vector"] = np.asarray(row.pop("emb"))
        out[str(key)] = row
    return out


@limit(300)
@pytest.mark.parametrize(
    ("src_kind", "dst_kind"),
    [("milvus-lite", "qdrant-local"), ("qdrant-local", "milvus-lite")],
    ids=["milvus-lite-to-qdrant-local", "qdrant-local-to-milvus-lite"],
)
def test_a_filtered_subset_of_a_changing_users_schema_crosses_like_a_same_store_evolve(
    tmp_path: Path, digits: Digits, artifact: Artifact, src_kind: str, dst_kind: str
) -> None:
    """--filter on a nullable field of a schema like users' (string keys, defaults, dynamic
    keys, HNSW or payload indexes), then deletes, updates (into, within and out of the
    subset) and inserts in the source: after each run the target holds what an evolve
    within the source's store holds, and exactly the source's subset."""
    src, dst = harness(src_kind, tmp_path / "src"), harness(dst_kind, tmp_path / "dst")
    ref = harness(src_kind, tmp_path / "ref")
    expr, vectors = IN_RANGE[src_kind], digits.old_te
    adapter = AdapterChain([artifact])

    def chain(old: np.ndarray) -> np.ndarray:
        """The evolved vector, unit length: a cosine collection may store it so."""
        out = adapter(np.asarray(old, dtype=np.float32)[None])[0]
        return out / np.linalg.norm(out)

    first = [users_row(k, vectors[k], users_opt(k)) for k in range(USERS)]
    for backend in (src, ref):
        users_write(backend, "users", first, [])

    def both() -> tuple[EvolveResult, EvolveResult]:
        common: dict[str, Any] = {"filter": expr, "alias": "live", "across_metric": True}
        same = migrate.evolve("users", artifact.path, uri=ref.uri, **common)
        across = migrate.evolve("users", artifact.path, uri=src.uri, target_uri=dst.uri, **common)
        assert isinstance(same, EvolveResult) and isinstance(across, EvolveResult)
        assert across.verify is not None and across.verify.missing == 0
        got, want = users_subset(dst, across.target), users_subset(ref, same.target)
        assert_same_rows(got, want)
        in_source = {
            k: row for k, row in users_subset(src, "users").items() if row.get("opt", -1) >= 4
        }
        assert sorted(got) == sorted(in_source)
        for key, row in in_source.items():  # the source's fields, besides the version tags
            fields = {k: v for k, v in got[key].items() if not k.startswith("dmu_")}
            vector = fields.pop("vector")
            np.testing.assert_allclose(
                vector / np.linalg.norm(vector), chain(row.pop("vector")), atol=1e-5
            )
            assert fields == row, key
        return same, across

    _, across = both()
    assert 0 < across.rows_written < USERS
    if src.is_milvus:  # the field Milvus filled with its default reaches the target
        assert all(r["tier"] == "free" for r in users_subset(dst, across.target).values())

    subset = [k for k in range(USERS) if (users_opt(k) or 0) >= 4]
    outside = [k for k in range(USERS) if k not in subset]
    fresh = digits.old_te[300:]
    changes = [
        users_row(subset[2], fresh[0], None),  # leaves the subset: its value is gone
        users_row(subset[3], fresh[1], users_opt(subset[3])),  # a new vector, still inside
        users_row(outside[1], fresh[2], 9),  # joins the subset
        users_row(USERS, fresh[3], 7),  # a new row inside
        users_row(USERS + 1, fresh[4], 1),  # a new row outside
    ]
    gone = [users_uuid(subset[0]), users_uuid(subset[1])]
    for backend in (src, ref):
        users_write(backend, "users", changes, gone)
    _, again = both()
    # In: the new row and the one that joined; updated: the new vector; out: two deleted
    # rows and the one whose value is gone.
    assert again.outcome == Outcome.DONE
    assert (again.caught_up, again.updated, again.deleted) == (2, 1, 3)
    _, third = both()
    assert (third.rows_written, third.caught_up, third.updated, third.deleted) == (0, 0, 0, 0)


@limit(300)
@pytest.mark.parametrize(
    ("src_kind", "dst_kind"),
    [("milvus-lite", "qdrant-local"), ("qdrant-local", "milvus-lite")],
    ids=["milvus-lite-to-qdrant-local", "qdrant-local-to-milvus-lite"],
)
def test_shards_of_a_users_schema_changing_between_them_cross_like_a_same_store_evolve(
    tmp_path: Path, digits: Digits, artifact: Artifact, src_kind: str, dst_kind: str
) -> None:
    """--shard 0/2, then deletes, an update and an insert, then --shards 2: string keys split
    into shards the same way in both stores, and the target ends as a same-store evolve."""
    src, dst = harness(src_kind, tmp_path / "src"), harness(dst_kind, tmp_path / "dst")
    ref = harness(src_kind, tmp_path / "ref")
    first = [users_row(k, digits.old_te[k], users_opt(k)) for k in range(USERS)]
    changes = [users_row(3, digits.old_te[300], 8), users_row(USERS, digits.old_te[301], None)]

    def sharded(backend: Backend, target_uri: str | None) -> tuple[EvolveResult, EvolveResult]:
        users_write(backend, "users", first, [])
        runs = []
        for shards, gone in ((dict(shard="0/2"), [0, USERS - 1]), (dict(shards=2), [])):
            settings: dict[str, Any] = {"alias": "live", "across_metric": True, **shards}
            if target_uri is not None:
                settings["target_uri"] = target_uri
            run = migrate.evolve("users", artifact.path, uri=backend.uri, **settings)
            assert isinstance(run, EvolveResult)
            runs.append(run)
            if gone:  # the source changes between the shards
                users_write(backend, "users", changes, [users_uuid(k) for k in gone])
        return runs[0], runs[1]

    same_first, same = sharded(ref, None)
    across_first, across = sharded(src, dst.uri)
    assert across_first.outcome == Outcome.SHARD_DONE and across.outcome == Outcome.DONE
    assert across_first.rows_written == same_first.rows_written
    assert 0 < across_first.rows_written < USERS
    got = users_subset(dst, across.target)
    assert_same_rows(got, users_subset(ref, same.target))
    assert sorted(got) == sorted(users_subset(src, "users"))  # USERS - 2 + 1 rows
    assert len(got) == USERS - 1


@limit(300)
@pytest.mark.parametrize(
    ("src_kind", "dst_kind"),
    [
        ("milvus-lite", "milvus-lite"),
        pytest.param("milvus-lite", "milvus-server", marks=pytest.mark.integration),
        pytest.param("milvus-server", "milvus-lite", marks=pytest.mark.integration),
    ],
    ids=["lite-to-lite", "lite-to-server", "server-to-lite"],
)
def test_another_milvus_gets_the_whole_schema_indexes_and_partitions(
    tmp_path: Path,
    digits: Digits,
    artifact: Artifact,
    request: pytest.FixtureRequest,
    src_kind: str,
    dst_kind: str,
) -> None:
    """One Milvus into another keeps what a same-store evolve keeps: a partition key and
    its partition count (which Milvus Lite reports one higher), the dynamic field, an HNSW
    index with its build parameters, settings, and (where both versions have them) nullable
    fields, defaults and an INVERTED scalar index; named partitions hold the same rows. A
    server's Bounded consistency becomes Lite's only level, Strong."""
    from pymilvus import DataType, MilvusClient

    from dmu_migrate.stores import milvus_schema

    def backend(kind: str, place: Path) -> Backend:
        if kind == "milvus-server":
            return Backend(kind, request.getfixturevalue("milvus_server"), place)
        return harness(kind, place)

    src, dst = backend(src_kind, tmp_path / "src"), backend(dst_kind, tmp_path / "dst")
    server = src if src_kind == "milvus-server" else dst
    lite = (src_kind == "milvus-lite", dst_kind == "milvus-lite")
    recent = all(lite)  # the 2.3 server has no nullable, default or INVERTED
    before = server.list_collections()
    keyed, parted = src.unique("keyed"), src.unique("parted")
    dim, n = digits.old_te.shape[1], 40
    client = MilvusClient(src.uri)
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field("tenant", DataType.VARCHAR, max_length=16, is_partition_key=True)
    if recent:
        schema.add_field("note", DataType.VARCHAR, max_length=32, nullable=True)
        schema.add_field("score", DataType.DOUBLE, default_value=0.5)
    index = client.prepare_index_params()
    hnsw = {"params": {"M": 12, "efConstruction": 96}}  # the form Milvus Lite keeps
    index.add_index("vector", index_type="HNSW", metric_type="COSINE", params=hnsw)
    if recent:
        index.add_index("score", index_type="INVERTED")
    client.create_collection(
        keyed,
        schema=schema,
        index_params=index,
        num_partitions=16,
        description="by tenant",
        properties={"collection.ttl.seconds": 86400},
    )
    rows = []
    for i in range(n):
        row: dict[str, Any] = {"id": i, "vector": digits.old_te[i].tolist(), "tenant": f"t{i % 5}"}
        if recent:
            row |= ({"note": f"n{i}"} if i % 3 else {}) | ({"score": i / 2} if i % 2 else {})
        rows.append(row | ({"color": f"c{i % 4}"} if i % 4 == 0 else {}))
    client.insert(keyed, rows)
    flat = MilvusClient.create_schema(auto_id=False)
    flat.add_field("id", DataType.INT64, is_primary=True)
    flat.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    plain = client.prepare_index_params()
    plain.add_index("vector", index_type="FLAT", metric_type="COSINE")
    client.create_collection(parted, schema=flat, index_params=plain)
    for part in ("north", "south"):
        client.create_partition(parted, part)
    for i in range(n):
        row = {"id": i, "vector": digits.old_te[i].tolist()}
        client.insert(parted, [row], partition_name="north" if i % 2 else "south")
    client.close()

    try:
        for name in (keyed, parted):
            alias = dst.unique("live")
            done = migrate.evolve(name, artifact.path, uri=src.uri, target_uri=dst.uri, alias=alias)
            assert isinstance(done, EvolveResult) and done.outcome == Outcome.DONE
            source, target = MilvusClient(src.uri), MilvusClient(dst.uri)
            try:
                want = source.describe_collection(name)
                got = target.describe_collection(done.target)
                made = milvus_schema.definition(got, "vector", True, lite[1])
                wanted = milvus_schema.definition(want, "vector", lite=lite[0])
                if lite[1]:  # Lite's only level
                    wanted["consistency_level"] = "Strong"
                assert made == wanted
                assert milvus_schema.key_partitions(got, lite[1]) == (
                    milvus_schema.key_partitions(want, lite[0])
                )
                assert milvus_schema.key_partitions(want, lite[0]) == (
                    16 if name == keyed else None
                )
                for key in ("description", "properties"):
                    assert got[key] == want[key], key
                built = {i.field: i for i in milvus_schema.read_indexes(target, done.target)}
                for spec in milvus_schema.read_indexes(source, name):
                    assert built[spec.field].same_build(spec), spec.describe()
                for part in ("north", "south") if name == parted else ():
                    mine, theirs = (
                        c.query(
                            on, filter="", partition_names=[part], output_fields=["id"], limit=100
                        )
                        for c, on in ((source, name), (target, done.target))
                    )
                    assert sorted(r["id"] for r in theirs) == sorted(r["id"] for r in mine) != []
            finally:
                source.close()
                target.close()
            rows_in, rows_out = src.read_all(name), dst.read_all(done.target)
            assert sorted(rows_out) == sorted(rows_in)
            for key, row in rows_in.items():
                got_row = {k: v for k, v in rows_out[key].items() if not k.startswith("dmu_")}
                assert {k: v for k, v in got_row.items() if k != "vector"} == {
                    k: v for k, v in row.items() if k != "vector"
                }, key
    finally:
        server.drop_created(sorted(server.list_collections() - before))


@limit(300)
def test_the_source_store_spelled_another_way_is_no_other_store(
    tmp_path: Path, digits: Digits, artifact: Artifact
) -> None:
    """--target-uri naming the source's own store (another path to the same file)
    evolves within it, as without --target-uri, instead of opening the file twice."""
    src = harness("milvus-lite", tmp_path / "src")
    seed(src, digits, "gal", "live")
    again = f"{src.root}/../{src.root.name}/./store.db"
    done = migrate.evolve("live", artifact.path, uri=src.uri, target_uri=again)
    assert isinstance(done, EvolveResult) and done.outcome == Outcome.DONE
    assert [m["source_uri"] for m in records.status(src.uri).migrations] == [None]
    store = src.open_store()
    assert store.alias_target("live") == done.target
    src.close_stores()


@limit(300)
def test_another_qdrant_gets_the_sparse_vectors_beside_the_evolved_one(
    tmp_path: Path, digits: Digits, artifact: Artifact
) -> None:
    """Between two Qdrant stores nothing is mapped: sparse vectors, which no other kind
    holds, are carried with their config and values, as within one store."""
    from qdrant_client import QdrantClient, models

    src, dst = harness("qdrant-local", tmp_path / "src"), harness("qdrant-local", tmp_path / "dst")
    qc = QdrantClient(path=str(src.root / "qdrant"))
    dense = models.VectorParams(size=digits.old_te.shape[1], distance=models.Distance.COSINE)
    sparse = {"bm25": models.SparseVectorParams(modifier=models.Modifier.IDF)}
    qc.create_collection("docs", vectors_config={"dense": dense}, sparse_vectors_config=sparse)
    terms = {i: models.SparseVector(indices=[i, i + 7], values=[1.0, 0.5]) for i in range(20)}
    qc.upsert(
        "docs",
        [
            models.PointStruct(
                id=i,
                vector={"dense": digits.old_te[i].tolist(), "bm25": terms[i]},
                payload={"n": i},
            )
            for i in range(20)
        ],
    )
    qc.close()
    done = migrate.evolve("docs", artifact.path, uri=src.uri, target_uri=dst.uri, alias="live")
    assert isinstance(done, EvolveResult) and done.outcome == Outcome.DONE

    def read(client: Any) -> tuple[Any, dict[Any, Any]]:
        config = client.get_collection(done.target).config.params.sparse_vectors
        points, _ = client.scroll(done.target, limit=100, with_vectors=True)
        return config, {p.id: p for p in points}

    config, points = dst._with_qdrant(read)
    assert config == sparse
    assert sorted(points) == list(range(20))
    for i, point in points.items():
        assert point.vector["bm25"] == terms[i] and point.payload["n"] == i


def nothing_written(dst: Backend) -> None:
    """No collection in the target: neither the evolved one nor the ledger."""
    assert dst.list_collections() == set()


@limit(300)
def test_what_a_target_cannot_hold_is_refused_before_anything_is_written(
    tmp_path: Path, digits: Digits, artifact: Artifact
) -> None:
    vectors = digits.old_te[:20]
    ids = np.arange(20)

    # A Milvus source with a second vector field, into Qdrant.
    src = harness("milvus-lite", tmp_path / "a")
    dst = harness("qdrant-local", tmp_path / "a-dst")
    src.seed("two", ids, {"vector": vectors, "extra": vectors}, {"n": list(range(20))})
    with pytest.raises(InputError, match=r"vector field 'extra' \(FLOAT_VECTOR\).*into Qdrant"):
        migrate.evolve("two", artifact.path, uri=src.uri, target_uri=dst.uri, vector_field="vector")
    nothing_written(dst)

    # String keys that are no UUIDs cannot be Qdrant point ids.
    src.seed("keys", [f"key-{i:03d}" for i in range(20)], vectors, {"n": list(range(20))})
    with pytest.raises(InputError, match=r"key 'key-000'.*unsigned integers or UUIDs"):
        migrate.evolve("keys", artifact.path, uri=src.uri, target_uri=dst.uri)
    nothing_written(dst)

    # A Qdrant source with sparse vectors, into Milvus.
    from qdrant_client import QdrantClient, models

    qsrc = harness("qdrant-local", tmp_path / "b")
    client = QdrantClient(path=str(qsrc.root / "qdrant"))
    dense = models.VectorParams(size=vectors.shape[1], distance=models.Distance.COSINE)
    client.create_collection(
        "docs",
        vectors_config=dense,
        sparse_vectors_config={"bm25": models.SparseVectorParams()},
    )
    client.upsert("docs", [models.PointStruct(id=i, vector=vectors[i].tolist()) for i in range(20)])
    client.close()
    mdst = harness("milvus-lite", tmp_path / "b-dst")
    with pytest.raises(InputError, match=r"sparse vectors \['bm25'\].*into Milvus"):
        migrate.evolve("docs", artifact.path, uri=qsrc.uri, target_uri=mdst.uri)
    nothing_written(mdst)

    # Scope: what --target-uri does not do, refused before a store is opened (bulk import
    # across stores: tests/test_bulk_write.py).
    with pytest.raises(InputError, match="--strategy new-field works within one store"):
        migrate.evolve("two", artifact.path, uri=src.uri, target_uri=dst.uri, strategy="new-field")
    nothing_written(dst)


@limit(300)
def test_rollback_and_prune_in_the_target_name_the_source_store(
    tmp_path: Path, digits: Digits, artifact: Artifact
) -> None:
    src, dst = harness("milvus-lite", tmp_path / "src"), harness("parquet", tmp_path / "dst")
    source, alias = src.unique("gal"), src.unique("live")
    seed(src, digits, source, alias)
    runner = CliRunner()
    args = ["evolve", "--collection", alias, "--adapter", str(artifact.path), "--uri", src.uri]
    preview = runner.invoke(app, [*args, "--target-uri", dst.uri, "--dry-run", "--json"])
    assert preview.exit_code == 0, preview.output
    assert '"target_uri"' in preview.output and dst.uri in preview.output
    nothing_written(dst)
    done = runner.invoke(app, [*args, "--target-uri", dst.uri])
    assert done.exit_code == 0, done.output
    assert f"alias '{alias}' -> '{source}__" in done.output
    status = runner.invoke(app, ["status", "--uri", dst.uri, "--json"])
    assert status.exit_code == 0 and src.uri in status.output
    # The tables say where the old vectors are too, not only the JSON.
    for verb in ("status", "history"):
        shown = runner.invoke(app, [verb, "--uri", dst.uri], env={"COLUMNS": "400"})
        assert shown.exit_code == 0 and src.uri in shown.output, shown.output

    with pytest.raises(InputError, match=r"point your application back at"):
        records.rollback(alias, uri=dst.uri)
    with pytest.raises(InputError, match=r"drop it there yourself"):
        records.prune(source, uri=dst.uri, yes=True)
    assert source in src.list_collections()
    # Run within the target store, the migration is pointed back at its source store.
    with pytest.raises(InputError, match=rf"run evolve with --uri {re.escape(src.uri)} --target"):
        migrate.evolve(alias, artifact.path, uri=dst.uri)

    # Evolved within its own store as well, the alias there names a v2 collection: that
    # is not evolved again into the other store.
    home = evolve(src, None, alias, artifact)
    with pytest.raises(InputError, match=rf"already holds version .*--collection {source}"):
        evolve(src, dst, alias, artifact)
    assert dst.list_collections() == {home.target}


@limit(300)
def test_scalar_types_nulls_and_uuid_keys_cross_both_ways(
    tmp_path: Path, digits: Digits, artifact: Artifact
) -> None:

    from pymilvus import DataType, MilvusClient
    from qdrant_client import QdrantClient, models

    n = 12
    keys = sorted(str(uuid.UUID(int=(i + 1) * 7919 << 64)) for i in range(n))
    vectors = digits.old_te[:n]
    milvus = harness("milvus-lite", tmp_path / "m")
    client = MilvusClient(milvus.uri)
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("emb", DataType.FLOAT_VECTOR, dim=vectors.shape[1])
    schema.add_field("i", DataType.INT64)
    schema.add_field("f", DataType.DOUBLE)
    schema.add_field("b", DataType.BOOL)
    schema.add_field("s", DataType.VARCHAR, max_length=32)
    schema.add_field("j", DataType.JSON)
    schema.add_field("a", DataType.ARRAY, element_type=DataType.INT64, max_capacity=4)
    schema.add_field("opt", DataType.INT64, nullable=True)
    index = client.prepare_index_params()
    index.add_index(field_name="emb", index_type="AUTOINDEX", metric_type="IP")
    client.create_collection("typed", schema=schema, index_params=index)
    client.insert(
        "typed",
        [
            {
                "pk": key,
                "emb": vectors[k].tolist(),
                "i": -k,
                "f": k / 4,
                "b": k % 2 == 0,
                "s": f"s{k}",
                "j": {"k": k, "list": [k, "x"]},
                "a": [k, k + 1],
                "opt": None if k % 3 == 0 else k,
            }
            for k, key in enumerate(keys)
        ],
    )
    client.close()

    qdrant = harness("qdrant-local", tmp_path / "q")
    done = migrate.evolve(
        "typed", artifact.path, uri=milvus.uri, target_uri=qdrant.uri, across_metric=True
    )
    assert isinstance(done, EvolveResult) and done.outcome == Outcome.DONE
    points = qdrant.read_all(done.target)
    assert sorted(points) == keys
    for k, key in enumerate(keys):
        p = points[key]
        assert (p["i"], p["f"], p["b"], p["s"]) == (-k, k / 4, k % 2 == 0, f"s{k}")
        assert (p["j"], p["a"]) == ({"k": k, "list": [k, "x"]}, [k, k + 1])
        assert "opt" in p and p["opt"] == (None if k % 3 == 0 else k)  # null stays null
        assert len(p["emb"]) == AdapterChain([artifact]).out_dim  # the vector keeps its name
    store = qdrant.open_store()
    info = store.describe(done.target)
    assert (info.vector_field, info.metric) == ("emb", "IP")  # IP is Qdrant's Dot
    qdrant.close_stores()

    # Qdrant -> Milvus: UUID point ids become VARCHAR keys; payload lands in the dynamic field.
    source = harness("qdrant-local", tmp_path / "q2")
    qc = QdrantClient(path=str(source.root / "qdrant"))
    dense = models.VectorParams(size=vectors.shape[1], distance=models.Distance.EUCLID)
    qc.create_collection("docs", vectors_config=dense)
    payloads = [{"n": k, "deep": {"x": [k, None]}, "maybe": None} for k in range(n)]
    qc.upsert(
        "docs",
        [
            models.PointStruct(id=key, vector=vectors[k].tolist(), payload=payloads[k])
            for k, key in enumerate(keys)
        ],
    )
    qc.close()
    target = harness("milvus-lite", tmp_path / "m2")
    back = migrate.evolve(
        "docs", artifact.path, uri=source.uri, target_uri=target.uri, across_metric=True
    )
    assert isinstance(back, EvolveResult) and back.outcome == Outcome.DONE
    got = target.read_all(back.target)
    assert sorted(got) == keys
    for k, key in enumerate(keys):
        assert (got[key]["n"], got[key]["deep"]) == (k, {"x": [k, None]})
        assert "maybe" not in got[key]  # Milvus has no null for a dynamic key: absent
    store = target.open_store()
    info = store.describe(back.target)
    assert (info.pk_field, info.vector_field, info.metric) == ("id", "vector", "L2")
    target.close_stores()


@limit(600)
@pytest.mark.integration
@pytest.mark.parametrize(
    ("local_kind", "server_is_source"),
    [
        ("qdrant-local", False),
        ("qdrant-local", True),
        ("milvus-lite", False),
        ("milvus-lite", True),
    ],
    ids=["qdrant-to-server", "server-to-qdrant", "lite-to-server", "server-to-lite"],
)
def test_the_milvus_server_as_source_or_target(
    tmp_path: Path,
    digits: Digits,
    artifact: Artifact,
    milvus_server: str,
    local_kind: str,
    server_is_source: bool,
) -> None:
    server = Backend("milvus-server", milvus_server, tmp_path / "server")
    local = harness(local_kind, tmp_path / "local")
    src, dst = (server, local) if server_is_source else (local, server)
    before = server.list_collections()
    try:
        source, alias = src.unique("gal"), src.unique("live")
        ids = seed(src, digits, source, alias)
        first = evolve(src, dst, alias, artifact)
        assert first.outcome == Outcome.DONE and first.verify is not None
        chain = AdapterChain([artifact])
        got = rows(dst, first.target)
        assert sorted(got) == ids.tolist()
        for k, row_id in enumerate(ids.tolist()):
            np.testing.assert_allclose(
                got[row_id]["vector"], chain(digits.old_te[k : k + 1])[0], atol=1e-5
            )
            assert (got[row_id]["name"], got[row_id]["dmu_origin"]) == (f"n{row_id}", "evolved")

        store = src.open_store()
        store.delete_ids(source, ids[:2])
        store.flush(source)
        src.close_stores()
        again = evolve(src, dst, alias, artifact)
        assert (again.caught_up, again.updated, again.deleted) == (0, 0, 2)
        assert sorted(rows(dst, first.target)) == ids[2:].tolist()
        target = dst.open_store()
        assert target.alias_target(alias) == first.target
        dst.close_stores()
    finally:
        server.drop_created(server.created_since(before))


@limit(300)
def test_json_values_parquet_cannot_type_stop_the_run_naming_the_field(
    tmp_path: Path, digits: Digits, artifact: Artifact
) -> None:
    from dmu_migrate.errors import StoreError

    src, dst = harness("qdrant-local", tmp_path / "src"), harness("parquet", tmp_path / "dst")
    ids = list(range(1, 11))
    src.seed("mixed", ids, digits.old_te[:10], {"v": [1, "one", 2, "two", 3, 4, 5, 6, 7, 8]})
    with pytest.raises(StoreError, match=r"field 'v' of the rows written to 'mixed__v2' holds"):
        migrate.evolve("mixed", artifact.path, uri=src.uri, target_uri=dst.uri, alias="m")
    status = records.status(dst.uri).migrations
    assert [m["status"] for m in status] == ["failed"]  # on record, resumable once fixed


@limit(300)
def test_a_key_the_target_cannot_hold_inserted_later_stops_the_rerun_before_its_batch(
    tmp_path: Path, digits: Digits, artifact: Artifact
) -> None:
    src, dst = harness("milvus-lite", tmp_path / "src"), harness("qdrant-local", tmp_path / "dst")
    keys = sorted(str(uuid.UUID(int=(i + 1) << 100)) for i in range(10))
    src.seed("uu", keys, digits.old_te[:10], {"n": list(range(10))})
    first = migrate.evolve("uu", artifact.path, uri=src.uri, target_uri=dst.uri)
    assert isinstance(first, EvolveResult) and first.outcome == Outcome.DONE
    store = src.open_store()
    info = store.describe("uu")
    later = Batch(np.array(["zz-not-a-uuid"], dtype=object), digits.old_te[10:11], {"n": [10]})
    store.write_rows(info, "uu", later, {})
    store.flush("uu")
    src.close_stores()
    with pytest.raises(InputError, match=r"has key 'zz-not-a-uuid', but Qdrant point ids"):
        migrate.evolve("uu", artifact.path, uri=src.uri, target_uri=dst.uri)
    assert sorted(dst.read_all(first.target)) == keys  # the batch was not written


@limit(30)
def test_target_credentials_never_fall_back_to_the_source_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dmu_migrate.api.store import resolve_target_token

    monkeypatch.setenv("DMU_TOKEN", "source-secret")
    monkeypatch.setenv("QDRANT_API_KEY", "qdrant-key")
    monkeypatch.delenv("MILVUS_TOKEN", raising=False)
    monkeypatch.delenv("DMU_TARGET_TOKEN", raising=False)
    assert resolve_target_token("qdrant://q:6333", None) == "qdrant-key"
    assert resolve_target_token("http://m:19530", None) is None
    monkeypatch.setenv("DMU_TARGET_TOKEN", "target-env")
    assert resolve_target_token("http://m:19530", None) == "target-env"
    assert resolve_target_token("http://m:19530", "given") == "given"
