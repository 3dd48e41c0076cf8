"""sample: a seeded uniform sample of stored old vectors, as the old half of a training table.

Run against every store (Milvus Lite, the Milvus server, Qdrant local mode,
Parquet): the sampled ids are the lowest priorities under the seed, whatever the
store; the vectors and labels are the stored ones; the table loads as train
reads it once the user's x column is joined on; bad input is one line and
leaves no output behind.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from backends import Backend
from galleries import Digits, create_gallery
from pymilvus import DataType, MilvusClient
from typer.testing import CliRunner

from dmu_migrate.artifact import Artifact
from dmu_migrate.cli import app
from dmu_migrate.data import read_table
from dmu_migrate.errors import InputError, StoreError
from dmu_migrate.sample import ID_COLUMN, priorities, sample_collection

# 600: a test on the Milvus server may first wait for another run to release it.
pytestmark = pytest.mark.timeout(600)
runner = CliRunner()
N, DIM = 600, 16


def _rows(n: int = N, seed: int = 0) -> tuple[np.ndarray, list[int], list[str]]:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    # Unit vectors: Qdrant normalises what a cosine collection stores.
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = [int(k) for k in rng.integers(0, 20, n)]
    return vectors, labels, [f"item-{i}" for i in range(n)]


def _lowest(ids: list, seed: int, k: int) -> list:
    """The ids sample --limit k --seed seed must pick: the k lowest priorities."""
    prio = priorities(np.asarray(ids, dtype=np.int64 if isinstance(ids[0], int) else object), seed)
    return sorted(ids[i] for i in np.lexsort((np.arange(len(ids)), prio))[:k])


def test_priorities_are_uniform_and_fixed_per_seed() -> None:
    ids = np.arange(100_000, dtype=np.int64)
    a, b = priorities(ids, 7), priorities(ids, 8)
    assert np.array_equal(a, priorities(ids, 7))
    assert a.min() >= 0 and a.max() < 1
    # Consecutive keys spread evenly: each tenth of [0, 1) holds close to a tenth.
    counts = np.histogram(a, bins=10, range=(0, 1))[0]
    assert np.all(np.abs(counts - 10_000) < 500), counts
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.02  # another seed, another draw
    strings = np.asarray([f"k{i}" for i in range(20_000)], dtype=object)
    s = priorities(strings, 7)
    assert np.array_equal(s, priorities(strings, 7)) and abs(s.mean() - 0.5) < 0.01


def test_sample_takes_the_seeded_rows_with_their_stored_vectors_and_labels(
    backend: Backend, tmp_path: Path
) -> None:
    vectors, labels, names = _rows()
    ids = list(range(10, 10 + 3 * N, 3))
    name, alias = backend.unique("faces"), backend.unique("live")
    backend.seed(name, ids, vectors, {"label": labels, "name": names}, alias=alias)
    store = backend.open_store()
    out = tmp_path / "train_old.parquet"

    result = sample_collection(
        store, alias, out, limit=100, label_field="label", seed=3, batch_size=128
    )
    table = pq.read_table(out)
    assert table.column_names == [ID_COLUMN, "old", "label"]
    got = table.column(ID_COLUMN).to_pylist()
    assert got == _lowest(ids, 3, 100)  # the same ids on every store, in id order
    row = {i: k for k, i in enumerate(ids)}
    at = [row[i] for i in got]
    old = read_table(out, need_x=False).old
    np.testing.assert_allclose(old, vectors[at], atol=1e-6)
    assert table.column("label").to_pylist() == [labels[k] for k in at]
    assert (result.collection, result.rows_read, result.rows) == (name, N, 100)
    assert result.labels == len(set(table.column("label").to_pylist()))

    again = tmp_path / "again.parquet"
    sample_collection(store, alias, again, limit=100, label_field="label", seed=3)
    assert pq.read_table(again).equals(table)  # deterministic per seed, any batch size
    other = tmp_path / "other.parquet"
    sample_collection(store, alias, other, limit=100, seed=4)
    assert pq.read_table(other).column(ID_COLUMN).to_pylist() != got
    assert pq.read_table(other).column_names == [ID_COLUMN, "old"]  # no label asked for

    half = tmp_path / "half.parquet"
    result = sample_collection(store, name, half, fraction=0.5, seed=3, batch_size=100)
    kept = pq.read_table(half).column(ID_COLUMN).to_pylist()
    prio = priorities(np.asarray(ids, dtype=np.int64), 3)
    assert kept == [i for i, p in zip(ids, prio, strict=True) if p < 0.5]
    assert 240 <= result.rows <= 360  # Binomial(600, 0.5): 5 standard deviations
    assert set(got) - set(kept) == {i for i in got if prio[row[i]] >= 0.5}  # nested samples


def test_sample_with_string_ids_and_a_filter(backend: Backend, tmp_path: Path) -> None:
    vectors, labels, names = _rows(300, seed=1)
    ids = backend.string_ids(300)
    name = backend.unique("docs")
    backend.seed(name, ids, vectors, {"label": labels, "name": names})
    store = backend.open_store()
    out = tmp_path / "s.parquet"
    if backend.is_qdrant:
        where = json.dumps({"must": [{"key": "label", "range": {"lt": 10}}]})
    else:
        where = "label < 10"
    result = sample_collection(store, name, out, limit=50, label_field="label", filter=where)
    matching = [i for i, c in zip(ids, labels, strict=True) if c < 10]
    table = pq.read_table(out)
    assert table.column(ID_COLUMN).to_pylist() == _lowest(matching, 0, 50)
    assert max(table.column("label").to_pylist()) < 10
    assert result.rows_read == len(matching)
    none = (
        '{"must": [{"key": "label", "range": {"gt": 99}}]}' if backend.is_qdrant else "label > 99"
    )
    with pytest.raises(
        InputError, match=r"no row of collection .* matches --filter .*loosen --filter"
    ):
        sample_collection(store, name, tmp_path / "none.parquet", limit=5, filter=none)


def test_bad_inputs_are_one_line_and_leave_no_output(backend: Backend, tmp_path: Path) -> None:
    vectors, labels, names = _rows(200, seed=2)
    name = backend.unique("faces")
    backend.seed(name, list(range(200)), vectors, {"label": labels, "name": names})
    store = backend.open_store()
    out = tmp_path / "t.parquet"
    with pytest.raises(StoreError, match=r"collection 'nope_\w+' does not exist .* --collection"):
        sample_collection(store, backend.unique("nope"), out, limit=5)
    with pytest.raises(InputError, match=rf"'{name}' has no field 'identity' .* --label-field"):
        sample_collection(store, name, out, limit=5, label_field="identity")
    with pytest.raises(InputError, match="--limit N .* or --fraction F"):
        sample_collection(store, name, out)
    with pytest.raises(InputError, match="--fraction must be above 0"):
        sample_collection(store, name, out, fraction=1.5)
    with pytest.raises(InputError, match="sample of collection .* is empty .* raise --fraction"):
        sample_collection(store, name, out, fraction=1e-9)
    assert list(tmp_path.glob("*.parquet*")) == []  # nothing written, not even a temp file
    out.write_bytes(b"mine")
    with pytest.raises(InputError, match=r"output '.*t.parquet' exists; pass --overwrite"):
        sample_collection(store, name, out, limit=5)
    assert out.read_bytes() == b"mine"
    sample_collection(store, name, out, limit=5, overwrite=True)
    assert pq.read_table(out).num_rows == 5


@pytest.mark.parametrize("kind", ["qdrant-local", "parquet"])
def test_a_failure_mid_stream_leaves_no_output(kind: str, tmp_path: Path) -> None:
    """Rows written before an unlabelled row was met never reach --output."""
    uri = (
        f"qdrant:{tmp_path / 'qdrant'}"
        if kind == "qdrant-local"
        else f"parquet:{tmp_path / 'parquet'}"
    )
    backend = Backend(kind, uri, tmp_path)
    vectors, labels, names = _rows(300, seed=3)
    unlabelled: list[int | None] = [*labels[:250], *[None] * 50]
    backend.seed("faces", list(range(300)), vectors, {"label": unlabelled, "name": names})
    try:
        store = backend.open_store()
        out = tmp_path / "out" / "t.parquet"
        with pytest.raises(InputError, match="row 250 of collection 'faces' has no 'label'"):
            sample_collection(store, "faces", out, fraction=1.0, label_field="label", batch_size=50)
        assert list((tmp_path / "out").iterdir()) == []
    finally:
        backend.close_stores()


def test_the_table_trains_once_x_is_joined_on_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's join (string keys here): the user's raw inputs by id, then train's table."""
    monkeypatch.chdir(tmp_path)
    vectors, labels, _ = _rows(200, seed=4)
    backend = Backend("parquet", f"parquet:{tmp_path / 'parquet'}", tmp_path)
    ids = backend.string_ids(200)
    backend.seed("faces", ids, vectors, {"label": labels})
    sample_collection(
        backend.open_store(), "faces", Path("train_old.parquet"), limit=80, label_field="label"
    )
    backend.close_stores()
    with pytest.raises(InputError, match="has no column 'x'"):
        read_table("train_old.parquet")  # train needs x: the user adds it
    # The user's side: raw inputs (here 5 features) for all but the first 30 items.
    x = np.random.default_rng(0).normal(size=(200, 5)).astype(np.float32)
    pq.write_table(pa.table({"id": ids[30:], "x": x[30:].tolist()}), "features.parquet")

    exec(_section_blocks("python")[1], {})

    train, held = read_table("train.parquet"), read_table("eval.parquet")
    sampled = pq.read_table("train_old.parquet").column("id").to_pylist()
    assert len(train) + len(held) == len([i for i in sampled if i not in ids[:30]])
    assert not set(train.classes) & set(held.classes) and len(held.classes) == 2
    rows = {i: k for k, i in enumerate(ids)}
    got = pq.read_table("train.parquet").column("id").to_pylist()
    np.testing.assert_array_equal(train.x, x[[rows[i] for i in got]])
    np.testing.assert_array_equal(train.old, vectors[[rows[i] for i in got]])


def test_cli_on_a_lite_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    vectors, labels, _ = _rows(300, seed=5)
    client = MilvusClient("faces.db")
    try:
        for collection, rows in (("faces__v1", 300), ("empty", 0)):
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
            schema.add_field("label", DataType.INT64)
            index = client.prepare_index_params()
            index.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="COSINE")
            client.create_collection(collection, schema=schema, index_params=index)
            if rows:
                client.insert(
                    collection,
                    [
                        {"id": i, "vector": vectors[i].tolist(), "label": labels[i]}
                        for i in range(rows)
                    ],
                )
        client.create_alias("faces__v1", "faces")
    finally:
        client.close()
    base = ["sample", "--collection", "faces", "--uri", "faces.db", "--output", "t.parquet"]

    done = runner.invoke(app, [*base, "--label-field", "label", "--limit", "40", "--json"])
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout)
    assert summary["rows"] == 40 and summary["collection"] == "faces__v1"
    assert summary["columns"] == ["id", "old", "label"]
    assert pq.read_table("t.parquet").column("id").to_pylist() == _lowest(list(range(300)), 0, 40)

    failures = {
        "exists; pass --overwrite": ([*base, "--limit", "5"], 2),
        "has no field 'who'": ([*base, "--limit", "5", "--label-field", "who", "--overwrite"], 2),
        "does not exist": (
            [
                "sample",
                "--collection",
                "nope",
                "--uri",
                "faces.db",
                "--output",
                "n.parquet",
                "--limit",
                "5",
            ],
            4,
        ),  # fmt: skip
        "no row of collection 'empty'": (
            [
                "sample",
                "--collection",
                "empty",
                "--uri",
                "faces.db",
                "--output",
                "e.parquet",
                "--limit",
                "5",
            ],
            2,
        ),  # fmt: skip
        "--batch-size must be between 1 and 16384": (
            [*base, "--limit", "5", "--batch-size", "0"],
            2,
        ),
    }
    for words, (args, code) in failures.items():
        result = runner.invoke(app, args)
        assert result.exit_code == code, (words, result.output)
        assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1, words
    assert sorted(p.name for p in tmp_path.glob("*.parquet*")) == ["t.parquet"]

    done = runner.invoke(app, [*base, "--fraction", "0.5", "--seed", "2", "--overwrite"])
    assert done.exit_code == 0, done.output
    assert "sampled" in done.stdout and "of 300 rows of 'faces__v1'" in done.stdout


def _section_blocks(language: str) -> list[str]:
    """Fenced blocks of the README's "On your own collection", in order."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("\n## On your own collection\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


@pytest.mark.timeout(600)
def test_the_readme_walk_through_runs_on_a_lite_file(
    tmp_path: Path, digits: Digits, artifact: Artifact, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every command and snippet of "On your own collection", in order, as written."""
    monkeypatch.chdir(tmp_path)
    gallery = create_gallery(tmp_path / "faces.db", digits, collection="faces__v1")
    client = MilvusClient("faces.db")
    client.drop_alias("digits")  # the user's collection has no alias yet
    client.close()
    alias_setup, join, serve = _section_blocks("python")
    exec(alias_setup, {})
    # The user's raw inputs: the digits' pixels of the gallery items, by id.
    x = digits.x_te[~digits.is_query]
    pq.write_table(pa.table({"id": gallery.ids, "x": x.tolist()}), "features.parquet")
    lines = [line for block in _section_blocks("bash") for line in block.splitlines()]
    commands = [shlex.split(line)[1:] for line in lines if line.startswith("dmu-migrate ")]
    assert [c[0] for c in commands] == ["sample", "train", "evaluate", "evolve", "rollback"]
    for args in commands:
        if args[0] == "train":
            args = [*args, "--epochs", "3"]  # speed only: the gate is the session artifact's job
        if args[0] == "evolve":
            # The session's artifact, trained on more rows than this gallery, passes the gate.
            shutil.rmtree("adapters/faces-v2")
            shutil.copytree(artifact.path, "adapters/faces-v2")
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
        if args[0] == "sample":
            exec(join, {})
            train = read_table("train.parquet")
            held = read_table("eval.parquet")
            assert len(train) + len(held) == len(gallery.ids)
            assert not set(train.classes) & set(held.classes)
        elif args[0] == "evolve":
            assert _alias_target("faces_v2") == "faces__v2"
            assert _alias_target("faces") == "faces__v1"  # the old application's alias
            names: dict[str, object] = {"features": x[:7]}
            exec(serve, names)
            queries = np.asarray(names["queries"])
            assert queries.shape == (7, artifact.manifest.new_dim)
            np.testing.assert_allclose(np.linalg.norm(queries, axis=1), 1.0, atol=1e-5)
        elif args[0] == "rollback":
            assert _alias_target("faces_v2") == "faces__v1"


def _alias_target(alias: str) -> str:
    client = MilvusClient("faces.db")
    try:
        return str(client.describe_alias(alias)["collection_name"])
    finally:
        client.close()
