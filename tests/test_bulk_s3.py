"""``evolve --write-path bulk --bulk-storage s3://BUCKET/PREFIX``: import through object storage.

A Milvus 2.3.5 server beside the session's keeps its data in moto's S3 server
(``common.storageType: minio``, bucket ``milvus-bucket``), as a server on MinIO
or S3 does; evolve uploads each part's files into that bucket, the server
imports them from there, and the objects are deleted once imported.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from backends import Backend
from galleries import Digits
from helpers import assert_same_rows, die_after_first_submit
from limits import limit
from side_servers import s3_server, side_milvus

from dmu_migrate.artifact import Artifact
from dmu_migrate.errors import InputError, StoreError
from dmu_migrate.evolve import bulk_pass
from dmu_migrate.evolve.ledger import Ledger
from dmu_migrate.evolve.pipeline import EvolveOptions, evolve
from dmu_migrate.evolve.plan import make_plan
from dmu_migrate.evolve.run import EvolveResult, Outcome
from dmu_migrate.evolve.transform import AdapterChain
from dmu_migrate.stores.base import VectorStore
from dmu_migrate.stores.bulk_storage import Bucket

BUCKET = "milvus-bucket"
ROWS = 600
KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
# Its own Milvus server over an S3 endpoint: the integration suite.
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 endpoint, with the server's bucket and one it does not read."""
    import boto3

    log = tmp_path_factory.mktemp("s3") / "moto.log"
    with s3_server(log) as endpoint:
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **_keys())
        client.create_bucket(Bucket=BUCKET)
        client.create_bucket(Bucket="elsewhere")
        yield endpoint


@pytest.fixture(scope="module")
def s3_milvus(s3: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(the Milvus URI, the S3 endpoint) of a server that keeps its data in the bucket."""
    settings = {
        "common.storageType": "minio",
        "minio.address": "127.0.0.1",
        "minio.port": int(s3.rsplit(":", 1)[1]),
        "minio.bucketName": BUCKET,
        "minio.rootPath": "files",
        "minio.accessKeyID": KEYS["AWS_ACCESS_KEY_ID"],
        "minio.secretAccessKey": KEYS["AWS_SECRET_ACCESS_KEY"],
    }
    with side_milvus(tmp_path_factory.mktemp("milvus-s3"), settings) as uri:
        yield uri, s3


def _keys() -> dict[str, str]:
    return {"aws_access_key_id": KEYS["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": "testing"}


@pytest.fixture
def server(
    s3_milvus: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Backend]:
    """The S3-backed server, with the credentials and endpoint in the environment."""
    uri, endpoint = s3_milvus
    for name, value in {
        **KEYS,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    backend = Backend("milvus-server", uri, tmp_path)
    before = backend.list_collections()
    yield backend
    backend.close_stores()
    backend.drop_created(backend.created_since(before))


def _objects(endpoint: str, bucket: str, prefix: str) -> list[str]:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **_keys())
    listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for o in listed.get("Contents", [])]


def _seed(backend: Backend, digits: Digits) -> tuple[str, np.ndarray]:
    source = backend.unique("s3_src")
    ids = np.arange(ROWS, dtype=np.int64) * 3 + 7
    fields: dict[str, list[Any]] = {
        "name": [f"n{i}" for i in ids.tolist()],
        "label": digits.y_te[:ROWS].tolist(),
    }
    alias = backend.unique("s3")
    backend.seed(source, ids, digits.old_te[:ROWS], fields, alias=alias)
    return alias, ids


def _run(store: VectorStore, source: str, artifact: Artifact, **options: Any) -> EvolveResult:
    plan = make_plan(store, source, AdapterChain([artifact]))
    return evolve(store, plan, EvolveOptions(batch_size=100, **options))


@limit(600)
def test_bulk_through_the_servers_bucket_equals_insert_row_for_row(
    server: Backend,
    s3_milvus: tuple[str, str],
    digits: Digits,
    artifact: Artifact,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bulk_pass, "PART_BYTES", 250 * 4 * AdapterChain([artifact]).out_dim)
    a, ids = _seed(server, digits)
    b, _ = _seed(server, digits)
    store = server.open_store()
    by_insert = _run(store, a, artifact)
    storage = f"s3://{BUCKET}/dmu-import"
    by_bulk = _run(store, b, artifact, write_path="bulk", bulk_storage=storage)
    assert by_bulk.outcome == Outcome.DONE and by_bulk.verify is not None
    assert (by_bulk.caught_up, by_bulk.updated, by_bulk.verify.missing) == (0, 0, 0)
    record = Ledger(store).load(by_bulk.migration)
    assert record is not None and record.bulk is not None
    assert record.bulk["storage"] == storage
    parts = record.bulk["parts"]
    assert [p["rows"] for p in parts] == [300, 300] and all(p["done"] for p in parts)
    # The server was given object keys in its bucket, under the prefix; all deleted since.
    assert all(f.startswith("dmu-import/dmu-") for p in parts for f in p["files"])
    assert _objects(s3_milvus[1], BUCKET, "dmu-import/") == []
    inserted = server.read_all(by_insert.target)
    assert_same_rows(server.read_all(by_bulk.target), inserted)
    assert sorted(inserted) == sorted(ids.tolist())


@limit(600)
def test_a_run_killed_after_uploading_and_submitting_resumes_without_duplicates(
    server: Backend,
    s3_milvus: tuple[str, str],
    digits: Digits,
    artifact: Artifact,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Dies right after the first job id is on record, and again with a part uploaded
    but never recorded; the next run imports every row once and leaves no object."""
    monkeypatch.setattr(bulk_pass, "PART_BYTES", 200 * 4 * AdapterChain([artifact]).out_dim)
    source, ids = _seed(server, digits)
    store = server.open_store()
    storage = f"s3://{BUCKET}/killed"
    die_after_first_submit(
        monkeypatch, lambda: _run(store, source, artifact, write_path="bulk", bulk_storage=storage)
    )
    add = bulk_pass.Parts.add

    def upload_then_die(self: bulk_pass.Parts, *args: Any) -> None:
        raise KeyboardInterrupt  # uploaded by publish, never recorded

    monkeypatch.setattr(bulk_pass.Parts, "add", upload_then_die)
    with pytest.raises(KeyboardInterrupt):
        _run(store, source, artifact, take_over=True)
    assert _objects(s3_milvus[1], BUCKET, "killed/") != []  # the unrecorded part's files
    monkeypatch.setattr(bulk_pass.Parts, "add", add)
    result = _run(store, source, artifact, take_over=True)
    assert result.outcome == Outcome.DONE and result.verify is not None
    assert (result.verify.target_rows, result.verify.missing) == (ROWS, 0)
    assert sorted(server.read_all(result.target)) == sorted(ids.tolist())
    count = store.client.query(  # type: ignore[attr-defined]
        result.target, filter="", output_fields=["count(*)"], consistency_level="Strong"
    )
    assert count[0]["count(*)"] == ROWS  # no row imported twice
    assert _objects(s3_milvus[1], BUCKET, "killed/") == []


@limit(300)
def test_storage_the_server_cannot_read_is_one_line_and_writes_nothing(
    server: Backend,
    s3_milvus: tuple[str, str],
    digits: Digits,
    artifact: Artifact,
) -> None:
    source, _ = _seed(server, digits)
    store = server.open_store()
    before = server.list_collections()
    cases = [
        (f"s3://elsewhere/{source}", "the bucket the Milvus server keeps its data in"),
        ("s3://no-such-bucket/x", "NoSuchBucket"),
        ("s3:///x", "names no bucket"),
        ("gs://bucket/x", "only s3:// object storage"),
    ]
    for storage, needle in cases:
        with pytest.raises(InputError, match=needle) as refused:
            _run(store, source, artifact, write_path="bulk", bulk_storage=storage)
        assert "\n" not in str(refused.value), storage
    assert server.list_collections() == before
    assert not any(r.source == source for r in Ledger(store).records())
    assert _objects(s3_milvus[1], "elsewhere", "") == []


@limit(120)
def test_an_upload_that_fails_is_one_line_naming_the_bucket(s3: str) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=s3, region_name="us-east-1", **_keys())
    gone = Bucket(client, "gone", "p")
    part = gone.scratch("dmu-x-00000")
    part.mkdir(parents=True)
    (part / "v.npy").write_bytes(b"x")
    with pytest.raises(StoreError, match=r"--bulk-storage 's3://gone/p': uploading failed") as e:
        gone.publish("dmu-x-00000", [str(part / "v.npy")])
    assert "\n" not in str(e.value) and "NoSuchBucket" in str(e.value)
    assert not part.exists()  # the local copy goes either way
