"""Where bulk import files go: a directory the Milvus server shares, or its bucket.

A part is always written to a local directory first: its vector file streams to
disk and gets its row count in the header at close, which object storage cannot
do in place. On shared local storage that directory is where the server reads.
With object storage (``s3://bucket/prefix``: the bucket the server keeps its
data in, ``minio.bucketName``) the closed files are uploaded, the local copy is
deleted, and the server is given the object keys, which it reads from its bucket.

Each part has a name (``dmu-<run>-<n>``); its files lie under ``<root>/<name>/``
and ``drop(name)`` removes them, wherever they are. Credentials for object
storage come from the environment, as the AWS SDKs read them
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` for
MinIO or another S3-compatible store).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
import weakref
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from dmu_migrate.errors import InputError, StoreError

TIMEOUT = 60  # seconds for one object storage call (connect, read)
SCHEMES = ("s3://",)
UNSUPPORTED = ("gs://", "minio://", "az://")


class Storage(Protocol):
    uri: str  # as the ledger records it and a resumed run reopens it

    def scratch(self, name: str) -> Path:
        """The local directory part ``name`` is written into (made by the writer)."""
        ...

    def publish(self, name: str, paths: list[str]) -> list[str]:
        """Part ``name``'s closed files as the server reads them."""
        ...

    def names(self, prefix: str) -> set[str]:
        """The parts in storage whose name starts with ``prefix``."""
        ...

    def drop(self, name: str) -> None:
        """Remove part ``name``'s files; nothing if there are none."""
        ...


def part_name(files: list[str]) -> str:
    """The part a published file list belongs to: the name of the files' directory."""
    return PurePosixPath(files[0]).parent.name


class SharedDirectory:
    """A directory on the server's own file system (its ``localStorage``)."""

    def __init__(self, root: Path) -> None:
        self.root, self.uri = root, str(root)

    def scratch(self, name: str) -> Path:
        return self.root / name

    def publish(self, name: str, paths: list[str]) -> list[str]:
        return paths  # written where the server reads them

    def names(self, prefix: str) -> set[str]:
        return {p.name for p in self.root.glob(f"{prefix}*")}

    def drop(self, name: str) -> None:
        shutil.rmtree(self.root / name, ignore_errors=True)


class Bucket:
    """``s3://bucket/prefix``: parts are uploaded, then imported from the server's bucket."""

    def __init__(self, client: Any, bucket: str, prefix: str) -> None:
        self.client, self.bucket, self.prefix = client, bucket, prefix
        self.uri = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        self._local = Path(tempfile.mkdtemp(prefix="dmu-bulk-"))  # parts before upload
        weakref.finalize(self, shutil.rmtree, self._local, True)

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def scratch(self, name: str) -> Path:
        return self._local / name

    def publish(self, name: str, paths: list[str]) -> list[str]:
        keys = []
        try:
            for path in paths:
                key = self._key(name, Path(path).name)
                self._call(
                    "uploading", lambda p=path, k=key: self.client.upload_file(p, self.bucket, k)
                )
                keys.append(key)
        finally:
            shutil.rmtree(self._local / name, ignore_errors=True)
        return keys

    def names(self, prefix: str) -> set[str]:
        found: set[str] = set()
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._key(prefix)
        )
        for page in self._call("listing", lambda: list(pages)):
            found.update(part_name([o["Key"]]) for o in page.get("Contents", []))
        return found

    def drop(self, name: str) -> None:
        shutil.rmtree(self._local / name, ignore_errors=True)
        listed = self._call(
            "listing",
            lambda: self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._key(name) + "/"),
        )
        keys = [{"Key": o["Key"]} for o in listed.get("Contents", [])]
        if keys:
            self._call(
                "deleting",
                lambda: self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys}),
            )

    def _call(self, doing: str, call: Any) -> Any:
        """One object storage call; its errors mapped to one line naming the bucket."""
        from boto3.exceptions import Boto3Error  # upload_file's S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call()
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise StoreError(
                f"--bulk-storage '{self.uri}': {doing} failed ({error.get('Code')}: "
                f"{error.get('Message')}); check the bucket and the AWS_* credentials"
            ) from None
        except (BotoCoreError, Boto3Error) as exc:
            raise StoreError(f"--bulk-storage '{self.uri}': {doing} failed ({exc})") from None


def open_storage(path: str) -> Storage:
    """The storage ``--bulk-storage`` names, checked writable; one-line errors otherwise."""
    if not path.strip():  # Path("") is the working directory: never a shared one
        raise InputError(
            "--bulk-storage is empty; give a directory the Milvus server shares or "
            "s3://BUCKET/PREFIX"
        )
    if path.startswith(UNSUPPORTED):
        raise InputError(
            f"--bulk-storage '{path}': only s3:// object storage (S3, MinIO) is supported; give "
            "s3://BUCKET/PREFIX or a directory the Milvus server shares"
        )
    if path.startswith(SCHEMES):
        return _bucket(path)
    return _directory(path)


def _directory(path: str) -> SharedDirectory:
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise InputError(
            f"--bulk-storage '{path}' is not a directory; create it on storage the Milvus "
            "server shares, or use --write-path insert"
        )
    probe = root / f".dmu-write-{uuid.uuid4().hex[:8]}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(
            f"--bulk-storage '{path}' is not writable ({exc.strerror}); give a directory this "
            "user can write and the Milvus server can read"
        ) from None
    return SharedDirectory(root)


def _bucket(path: str) -> Bucket:
    bucket, _, prefix = path[len("s3://") :].partition("/")
    if not bucket:
        raise InputError(f"--bulk-storage '{path}' names no bucket; give s3://BUCKET/PREFIX")
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise InputError(
            f"--bulk-storage '{path}' needs boto3; pip install 'dmu-migrate[s3]'"
        ) from None
    config = Config(connect_timeout=TIMEOUT, read_timeout=TIMEOUT, retries={"max_attempts": 5})
    storage = Bucket(boto3.client("s3", config=config), bucket, prefix.strip("/"))
    key = storage._key(f".dmu-write-{uuid.uuid4().hex[:8]}")
    try:  # writable, with these credentials, before anything is written for the run
        storage._call(
            "writing", lambda: storage.client.put_object(Bucket=bucket, Key=key, Body=b"")
        )
        storage._call("deleting", lambda: storage.client.delete_object(Bucket=bucket, Key=key))
    except StoreError as exc:
        raise InputError(str(exc)) from None
    return storage
