"""Bad inputs through the command line, each refused with its own exit code and one line.

Every test runs the real CLI on Milvus Lite and the real digits data, checks the
exit code (2 input, 3 artifact, 4 store), that exactly one ``error:`` line names
the object and the fix, that no traceback is printed, and that nothing was
written: no target collection, no ledger where the refusal comes before a
migration starts, the alias where it was, no artifact directory.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from backends import Backend
from galleries import Digits, Gallery
from helpers import assert_clean_error
from pymilvus import DataType, MilvusClient
from typer.testing import CliRunner

from dmu_migrate.artifact import Artifact
from dmu_migrate.cli import app
from dmu_migrate.data import file_sha256, write_table
from dmu_migrate.evolve.verify import VERIFY_SAMPLE, Reservoir
from dmu_migrate.stores.base import LEDGER_COLLECTION

runner = CliRunner()


def cli(*args: str) -> Any:
    return runner.invoke(app, list(args))


def evolve(db: Path | str, collection: str, *extra: str, adapters: list[Path]) -> Any:
    flags = [x for a in adapters for x in ("--adapter", str(a))]
    return cli("evolve", "--collection", collection, *flags, "--uri", str(db), *extra)


def state(db: Path) -> dict[str, Any]:
    """Collections, their row counts, and where each alias points: what a refusal must keep."""
    client = MilvusClient(str(db))
    try:
        names = sorted(client.list_collections())
        aliases: dict[str, str] = {}
        counts: dict[str, int] = {}
        for name in names:
            for alias in client.list_aliases(name)["aliases"]:
                aliases[alias] = name
            counts[name] = int(client.query(name, output_fields=["count(*)"])[0]["count(*)"])
        return {"collections": names, "aliases": aliases, "counts": counts}
    finally:
        client.close()


def assert_untouched(db: Path, before: dict[str, Any]) -> None:
    after = state(db)
    assert after == before
    assert LEDGER_COLLECTION not in after["collections"]
    assert not any(name.endswith("__v2") for name in after["collections"])


def seed(db: Path, name: str, vectors: np.ndarray | dict[str, np.ndarray], alias: str) -> Backend:
    backend = Backend("milvus-lite", str(db), db.parent)
    n = len(next(iter(vectors.values()))) if isinstance(vectors, dict) else len(vectors)
    ids = np.arange(1, n + 1)
    backend.seed(name, ids, vectors, {"name": [f"n{i}" for i in ids]}, alias=alias)
    return backend


def artifact_copy(artifact: Artifact, tmp_path: Path) -> Path:
    copy = tmp_path / "digits-v2"
    shutil.copytree(artifact.path, copy)
    return copy


def rewrite_checksum(directory: Path) -> None:
    """Make the manifest agree with a replaced adapter.onnx, so only loading it can fail."""
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["files"]["adapter.onnx"] = file_sha256(directory / "adapter.onnx")
    (directory / "manifest.json").write_text(json.dumps(manifest))


# -- the store side ------------------------------------------------------------------


def test_missing_collection(gallery: Gallery, artifact: Artifact) -> None:
    before = state(gallery.db)
    result = evolve(gallery.db, "faces", adapters=[artifact.path])
    assert_clean_error(result, 4, "collection 'faces' does not exist", "--collection")
    assert_untouched(gallery.db, before)


def test_empty_collection(tmp_path: Path, artifact: Artifact) -> None:
    db = tmp_path / "empty.db"
    client = MilvusClient(str(db))
    schema = MilvusClient.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=32)
    index = client.prepare_index_params()
    index.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="COSINE")
    client.create_collection("empty__v1", schema=schema, index_params=index)
    client.create_alias("empty__v1", "empty")
    client.close()
    before = state(db)
    result = evolve(db, "empty", adapters=[artifact.path])
    assert_clean_error(result, 2, "collection 'empty' is empty", "nothing to evolve")
    assert_untouched(db, before)


def test_wrong_vector_field(gallery: Gallery, artifact: Artifact) -> None:
    before = state(gallery.db)
    result = evolve(gallery.db, "digits", "--vector-field", "nose", adapters=[artifact.path])
    assert_clean_error(result, 2, "no float vector field 'nose'", "'vector'", "--vector-field")
    assert_untouched(gallery.db, before)


def test_two_vector_fields_without_vector_field(
    tmp_path: Path, digits: Digits, artifact: Artifact
) -> None:
    db = tmp_path / "two.db"
    old = digits.old_te[:40]
    seed(db, "two__v1", {"face": old, "body": old[:, :16]}, alias="two").close_stores()
    before = state(db)
    result = evolve(db, "two", adapters=[artifact.path])
    assert_clean_error(result, 2, "vector fields ['face', 'body']", "--vector-field")
    assert_untouched(db, before)


def test_vector_dims_do_not_match_the_adapter(
    tmp_path: Path, digits: Digits, artifact: Artifact
) -> None:
    db = tmp_path / "narrow.db"
    seed(db, "narrow__v1", digits.old_te[:40, :16], alias="narrow").close_stores()
    before = state(db)
    result = evolve(db, "narrow", adapters=[artifact.path])
    assert_clean_error(result, 2, "has 16-d vectors", "expects 32-d", "adapter trained for")
    assert_untouched(db, before)


def nan_or_zero_gallery(tmp_path: Path, digits: Digits, row: int, value: float) -> Path:
    db = tmp_path / "bad.db"
    vectors = digits.old_te[:96].copy()
    if np.isnan(value):
        vectors[row, 5] = value
    else:
        vectors[row] = value
    seed(db, "bad__v1", vectors, alias="bad").close_stores()
    return db


def assert_bad_batch_not_written(db: Path, bad_id: int) -> None:
    """Batches of 32: the batches before the bad one were written, that one and after not."""
    after = state(db)
    assert after["aliases"]["bad"] == "bad__v1"  # never cut over
    written = after["counts"].get("bad__v2", 0)
    assert written == 32 * ((bad_id - 1) // 32)
    assert after["counts"]["bad__v1"] == 96  # the source is never written


def test_nan_vector_in_the_collection(tmp_path: Path, digits: Digits, artifact: Artifact) -> None:
    db = nan_or_zero_gallery(tmp_path, digits, row=40, value=float("nan"))
    result = evolve(db, "bad", "--batch-size", "32", adapters=[artifact.path])
    assert_clean_error(result, 2, "NaN, inf or all-zero", "first ids: [41]", "--skip-bad-vectors")
    assert_bad_batch_not_written(db, 41)


def test_zero_vector_in_the_collection(tmp_path: Path, digits: Digits, artifact: Artifact) -> None:
    db = nan_or_zero_gallery(tmp_path, digits, row=10, value=0.0)
    result = evolve(db, "bad", "--batch-size", "32", adapters=[artifact.path])
    assert_clean_error(result, 2, "NaN, inf or all-zero", "first ids: [11]", "--skip-bad-vectors")
    assert_bad_batch_not_written(db, 11)


def test_milvus_lite_path_that_does_not_exist(tmp_path: Path, artifact: Artifact) -> None:
    db = tmp_path / "typo.db"
    result = evolve(db, "digits", adapters=[artifact.path])
    assert_clean_error(result, 4, f"no Milvus Lite database at '{db}'", "--uri")
    assert not db.exists()


def test_uri_that_is_neither_a_scheme_nor_a_db_file(tmp_path: Path, artifact: Artifact) -> None:
    uri = tmp_path / "gallery.sqlite"
    result = evolve(uri, "digits", adapters=[artifact.path])
    assert_clean_error(result, 2, f"'{uri}' is not a Milvus Lite file", "'.db'")
    assert not uri.exists()


def test_target_collection_exists_with_another_schema(gallery: Gallery, artifact: Artifact) -> None:
    client = MilvusClient(str(gallery.db))
    schema = MilvusClient.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=32)
    index = client.prepare_index_params()
    index.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="COSINE")
    client.create_collection("digits__v2", schema=schema, index_params=index)
    client.close()
    result = evolve(gallery.db, "digits", adapters=[artifact.path])
    assert_clean_error(result, 4, "target collection 'digits__v2' exists but", "drop or rename")
    after = state(gallery.db)
    assert after["aliases"]["digits"] == "digits__v1"
    assert after["counts"]["digits__v2"] == 0  # nothing written into the foreign collection
    # The refusal comes after the migration took its lease: the ledger says why it failed.
    status = json.loads(cli("status", "--uri", str(gallery.db), "--json").output)
    assert [r["status"] for r in status] == ["failed"]


def test_in_place_without_yes_overwrite(
    tmp_path: Path, gallery: Gallery, artifact: Artifact
) -> None:
    before = state(gallery.db)
    snapshots = tmp_path / "snapshots"
    result = evolve(
        gallery.db,
        "digits__v1",
        "--strategy",
        "in-place",
        "--snapshot-dir",
        str(snapshots),
        adapters=[artifact.path],
    )
    assert_clean_error(result, 2, "overwrites the vectors of 'digits__v1'", "--yes-overwrite")
    assert_untouched(gallery.db, before)
    assert not snapshots.exists()


def test_zero_batch_size(gallery: Gallery, artifact: Artifact) -> None:
    before = state(gallery.db)
    result = evolve(gallery.db, "digits", "--batch-size", "0", adapters=[artifact.path])
    assert_clean_error(result, 2, "--batch-size must be between 1 and 16384, got 0")
    assert_untouched(gallery.db, before)


# -- the artifact side ---------------------------------------------------------------


def test_adapter_checksum_mismatch(tmp_path: Path, gallery: Gallery, artifact: Artifact) -> None:
    copy = artifact_copy(artifact, tmp_path)
    data = bytearray((copy / "adapter.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF  # same length, one byte changed
    (copy / "adapter.onnx").write_bytes(bytes(data))
    before = state(gallery.db)
    result = evolve(gallery.db, "digits", adapters=[copy])
    assert_clean_error(result, 3, "adapter.onnx", "does not match the checksum", "copy the")
    assert_untouched(gallery.db, before)


def test_truncated_adapter_with_matching_checksum(
    tmp_path: Path, gallery: Gallery, artifact: Artifact
) -> None:
    copy = artifact_copy(artifact, tmp_path)
    data = (copy / "adapter.onnx").read_bytes()
    (copy / "adapter.onnx").write_bytes(data[: len(data) // 2])
    rewrite_checksum(copy)
    before = state(gallery.db)
    result = evolve(gallery.db, "digits", adapters=[copy])
    assert_clean_error(result, 3, "is not a loadable ONNX model", "re-export")
    assert_untouched(gallery.db, before)


def test_non_onnx_adapter_with_matching_checksum(
    tmp_path: Path, gallery: Gallery, artifact: Artifact
) -> None:
    copy = artifact_copy(artifact, tmp_path)
    (copy / "adapter.onnx").write_text("this is a README, not a model\n")
    rewrite_checksum(copy)
    before = state(gallery.db)
    result = evolve(gallery.db, "digits", adapters=[copy])
    assert_clean_error(result, 3, "is not a loadable ONNX model", "re-export")
    assert_untouched(gallery.db, before)


def test_manifest_missing(tmp_path: Path, gallery: Gallery, artifact: Artifact) -> None:
    copy = artifact_copy(artifact, tmp_path)
    (copy / "manifest.json").unlink()
    before = state(gallery.db)
    result = evolve(gallery.db, "digits", adapters=[copy])
    assert_clean_error(result, 3, "not an upgrade artifact (no manifest.json)", "dmu-migrate train")
    assert_untouched(gallery.db, before)


def test_adapters_that_do_not_chain(
    gallery: Gallery, artifact: Artifact, artifact_v3: Artifact
) -> None:
    before = state(gallery.db)
    result = evolve(gallery.db, "digits", adapters=[artifact_v3.path, artifact.path])
    assert_clean_error(result, 2, "do not chain", "oldest version to the newest")
    assert_untouched(gallery.db, before)


# -- train and evaluate --------------------------------------------------------------


def train(table: Path, out: Path, *extra: str) -> Any:
    return cli("train", str(table), "--name", "t", "--out-dir", str(out), "--epochs", "1", *extra)


def assert_no_artifact(out: Path) -> None:
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())


def test_train_single_class(tmp_path: Path, digits: Digits) -> None:
    table = tmp_path / "one.parquet"
    n = 60
    write_table(
        table, {"label": np.zeros(n, np.int64), "old": digits.old_te[:n], "x": digits.x_te[:n]}
    )
    result = train(table, tmp_path / "out")
    assert_clean_error(result, 2, "single class", "at least 2 labels")
    assert_no_artifact(tmp_path / "out")


def test_train_ragged_vectors(tmp_path: Path, digits: Digits) -> None:
    old = [v.tolist() for v in digits.old_te[:20]]
    old[7] = old[7][:31]
    table = tmp_path / "ragged.parquet"
    pq.write_table(
        pa.table(
            {
                "label": pa.array(digits.y_te[:20]),
                "old": pa.array(old, pa.list_(pa.float32())),
                "x": pa.array([v.tolist() for v in digits.x_te[:20]], pa.list_(pa.float32())),
            }
        ),
        table,
    )
    result = train(table, tmp_path / "out")
    assert_clean_error(result, 2, "column 'old'", "row 7: 31", "same dimension")
    assert_no_artifact(tmp_path / "out")


def test_train_non_parquet_file(tmp_path: Path) -> None:
    table = tmp_path / "train.parquet"
    table.write_text("label,old,x\n1,0.1,0.2\n")
    result = train(table, tmp_path / "out")
    assert_clean_error(result, 2, "is not readable Parquet", "write it with pyarrow")
    assert_no_artifact(tmp_path / "out")


def test_train_existing_artifact_without_overwrite(tmp_path: Path, digits: Digits) -> None:
    out = tmp_path / "out"
    (out / "t").mkdir(parents=True)
    (out / "t" / "notes.txt").write_text("keep me")
    result = train(digits.train_path, out)
    assert_clean_error(result, 2, "already exists", "--overwrite")
    assert [p.name for p in out.iterdir()] == ["t"]  # no staging or checkpoint left behind
    assert [p.name for p in (out / "t").iterdir()] == ["notes.txt"]
    assert (out / "t" / "notes.txt").read_text() == "keep me"


def test_evaluate_old_dims_differ_from_the_adapter(
    tmp_path: Path, digits: Digits, artifact: Artifact
) -> None:
    table = tmp_path / "eval16.parquet"
    n = 80
    role = np.where(np.arange(n) % 4 == 0, "query", "gallery").astype(object)
    write_table(
        table,
        {
            "label": digits.y_te[:n],
            "old": digits.old_te[:n, :16],
            "x": digits.x_te[:n],
            "role": role,
        },
    )
    plot = tmp_path / "chart.png"
    result = cli("evaluate", str(table), "--adapter", str(artifact.path), "--plot", str(plot))
    assert_clean_error(result, 2, "column 'old'", "has 16-d vectors", "expects 32-d")
    assert not plot.exists()


def test_adapter_path_is_a_file(gallery: Gallery, artifact: Artifact) -> None:
    before = state(gallery.db)
    result = evolve(gallery.db, "digits", adapters=[artifact.adapter_path])
    assert_clean_error(result, 3, "is not an upgrade artifact", "point --adapter at a directory")
    assert_untouched(gallery.db, before)


def test_manifest_that_is_not_an_object(
    tmp_path: Path, gallery: Gallery, artifact: Artifact
) -> None:
    copy = artifact_copy(artifact, tmp_path)
    (copy / "manifest.json").write_text("[1, 2]")
    before = state(gallery.db)
    result = evolve(gallery.db, "digits", adapters=[copy])
    assert_clean_error(result, 3, "manifest", "is unreadable", "re-run train")
    assert_untouched(gallery.db, before)


SEED_IN_CHILD = """
import numpy as np
from pymilvus import DataType, MilvusClient
client = MilvusClient({db!r})
schema = MilvusClient.create_schema(auto_id=False)
schema.add_field("id", DataType.INT64, is_primary=True)
schema.add_field("vector", DataType.FLOAT_VECTOR, dim=32)
index = client.prepare_index_params()
index.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="COSINE")
client.create_collection("digits__v1", schema=schema, index_params=index)
vectors = np.load({npy!r})
client.insert("digits__v1", [{{"id": i, "vector": v.tolist()}} for i, v in enumerate(vectors)])
client.create_alias("digits__v1", "digits")
client.close()
"""


@pytest.mark.integration  # six CLI processes, each importing the stores
def test_a_real_process_prints_one_line(tmp_path: Path, digits: Digits, artifact: Artifact) -> None:
    """The runner above cannot see what libraries log to the process's stderr; a child can.

    Milvus Lite locks its file to one process, so the child seeds the store too.
    """
    db, npy = tmp_path / "child.db", tmp_path / "old.npy"
    np.save(npy, digits.old_te[:50])
    subprocess.run(
        [sys.executable, "-c", SEED_IN_CHILD.format(db=str(db), npy=str(npy))], check=True
    )
    for extra, code, needle in [
        (["--collection", "faces"], 4, "collection 'faces' does not exist"),
        (["--collection", "digits", "--vector-field", "nose"], 2, "no float vector field 'nose'"),
        (["--collection", "digits__v1", "--strategy", "in-place"], 2, "--yes-overwrite"),
        (["--collection", "digits", "--filter", "id >>> 3"], 2, "fix --filter"),
        (["--collection", "digits__v1", "--strategy", "new-field"], 4, "cannot add a vector"),
    ]:
        done = subprocess.run(
            [sys.executable, "-m", "dmu_migrate", "evolve", *extra, "--adapter", str(artifact.path)]
            + ["--uri", str(db)],
            capture_output=True,
            text=True,
        )
        assert done.returncode == code, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], lines
        assert done.stdout == ""


# -- a damaged target after cut-over -------------------------------------------------


def test_damaged_target_fails_verify_then_evolve_repairs_it(
    gallery: Gallery, artifact: Artifact
) -> None:
    """A row lost from the evolved collection, then a vector overwritten: verify exits 5."""
    a = str(artifact.path)
    assert evolve(gallery.db, "digits", adapters=[artifact.path]).exit_code == 0
    verify = ["verify", "--collection", "digits__v1", "--alias", "digits", "--adapter", a]
    verify += ["--uri", str(gallery.db)]
    assert cli(*verify).exit_code == 0

    lost = int(gallery.ids[7])
    client = MilvusClient(str(gallery.db))
    client.delete("digits__v2", ids=[lost])
    client.close()
    result = cli(*verify)
    assert_clean_error(result, 5, "1 rows of 'digits__v1'", f"[{lost}]", "run evolve again")
    # The cron re-run finds the missing row, writes it and verifies again.
    again = evolve(gallery.db, "digits", adapters=[artifact.path])
    assert again.exit_code == 0 and "1 rows added" in again.output, again.output
    assert cli(*verify).exit_code == 0

    sample = Reservoir(VERIFY_SAMPLE)
    sample.add(np.sort(gallery.ids))  # the ids verify will compare, drawn the same way
    changed = int(sample.ids()[0])
    client = MilvusClient(str(gallery.db))
    row = client.get("digits__v2", ids=[changed])[0]
    row["vector"] = (-np.asarray(row["vector"], np.float32)).tolist()
    client.upsert("digits__v2", [row])
    client.close()
    result = cli(*verify)
    assert_clean_error(result, 5, "evolved vectors in 'digits__v2' differ", "nothing was cut over")
    assert state(gallery.db)["aliases"]["digits"] == "digits__v2"


# -- inputs that once slipped through ------------------------------------------------


def test_empty_collection_name(gallery: Gallery, artifact: Artifact) -> None:
    before = state(gallery.db)
    result = evolve(gallery.db, "", adapters=[artifact.path])
    assert_clean_error(result, 2, "--collection is empty")
    assert_untouched(gallery.db, before)


def test_verify_before_evolve(gallery: Gallery, artifact: Artifact) -> None:
    before = state(gallery.db)
    result = cli(
        "verify",
        "--collection",
        "digits",
        "--adapter",
        str(artifact.path),
        "--uri",
        str(gallery.db),
    )
    assert_clean_error(result, 4, "'digits__v2' does not exist", "run evolve first")
    assert_untouched(gallery.db, before)  # no ledger collection appeared either


def test_dry_run_with_zero_batch_size(gallery: Gallery, artifact: Artifact) -> None:
    result = evolve(
        gallery.db, "digits", "--dry-run", "--batch-size", "0", adapters=[artifact.path]
    )
    assert_clean_error(result, 2, "--batch-size must be between 1 and 16384, got 0")


def edit_manifest(artifact: Artifact, tmp_path: Path, **changes: Any) -> Path:
    copy = artifact_copy(artifact, tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest.update(changes)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"new_dim": 64}, "maps 32-d -> 32-d but its manifest says 32-d -> 64-d"),
        ({"to_version": "v 2!"}, "to_version 'v 2!', not a version id"),
        ({"old_dim": "32"}, 'has old_dim = "32", which should be an integer'),
        ({"old_dim": 0}, "old_dim 0, not a positive integer"),
    ],
)
def test_manifest_that_lies_about_the_adapter(
    tmp_path: Path, gallery: Gallery, artifact: Artifact, changes: dict[str, Any], needle: str
) -> None:
    before = state(gallery.db)
    result = evolve(gallery.db, "digits", adapters=[edit_manifest(artifact, tmp_path, **changes)])
    assert_clean_error(result, 3, needle, "re-export the artifact")
    assert_untouched(gallery.db, before)


def test_train_name_that_leaves_the_registry(tmp_path: Path, digits: Digits) -> None:
    out = tmp_path / "out" / "registry"
    result = train(digits.train_path, out, "--name", "../esc")
    assert_clean_error(result, 2, "--name '../esc' is not an artifact name")
    assert not (tmp_path / "out").exists()
