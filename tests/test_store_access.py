"""Rejected credentials and missing privileges are named as such, on a real Milvus server.

A second Milvus 2.3.5 server from the `milvus` package runs here beside the
session's (tests/side_servers.py) with ``common.security.authorizationEnabled:
true`` (its built-in user is root:Milvus).

pymilvus words a wrong password exactly as a server that is down ("Fail
connecting to server ..., illegal connection params or server unavailable");
these tests prove the one line the user sees says which it is.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from limits import limit
from pymilvus import MilvusClient
from side_servers import free_port, side_milvus

from dmu_migrate.errors import AccessDenied, StoreError
from dmu_migrate.evolve.retry import Retrier, RetryPolicy
from dmu_migrate.stores.opener import open_store

ROOT = "root:Milvus"  # the server's built-in superuser
CALL_TIMEOUT = 60
SECRET = "s3cret-pw"  # in every wrong credential: it must never be printed


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("milvus-auth")
    with side_milvus(base, {"authorization_enabled": True}) as uri:
        yield uri


def _seed(uri: str, name: str) -> None:
    """A small indexed collection, made by root."""
    root = MilvusClient(uri=uri, token=ROOT, timeout=CALL_TIMEOUT)
    try:
        root.create_collection(name, dimension=8, timeout=CALL_TIMEOUT)
        rng = np.random.default_rng(0)
        rows = [{"id": i, "vector": rng.normal(size=8).tolist()} for i in range(20)]
        root.insert(name, rows, timeout=CALL_TIMEOUT)
    finally:
        root.close()


def _cli(uri: str, token: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DMU_TOKEN"}
    if token is not None:
        env["DMU_TOKEN"] = token  # where a cron job keeps them
    return subprocess.run(
        [sys.executable, "-m", "dmu_migrate", "status", "--uri", uri],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.mark.integration  # its own Milvus server, with authentication
@limit(300)
def test_rejected_or_missing_credentials_are_named_as_such(auth_server: str) -> None:
    cases = {
        f"root:{SECRET}": "rejected the credentials",  # wrong password
        f"nobody:{SECRET}": "rejected the credentials",  # no such user
        f"key-{SECRET}": "rejected the credentials",  # not an API key this server knows
        None: "requires credentials and none were given",
    }
    for token, needle in cases.items():
        result = _cli(auth_server, token)
        assert result.returncode == 4, (token, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and result.stdout == "", (token, result.stderr)
        assert needle in lines[0] and "DMU_TOKEN" in lines[0], (token, lines[0])
        assert "server unavailable" not in lines[0] and SECRET not in lines[0], lines[0]
    # The same refusal when the password rides in the URI, and at the library level.
    with_password = auth_server.replace("http://", f"http://root:{SECRET}@")
    with pytest.raises(AccessDenied, match="rejected the credentials") as caught:
        open_store(with_password)
    assert SECRET not in str(caught.value)
    # The right credentials open it; a server that is down still reads as one.
    assert _cli(auth_server, ROOT).returncode == 0
    with pytest.raises(StoreError, match="check --uri") as down:
        open_store(f"http://127.0.0.1:{free_port()}", ROOT)
    assert not isinstance(down.value, AccessDenied)


@pytest.mark.integration  # its own Milvus server, with authentication
@limit(300)
def test_credentials_revoked_during_a_run_stop_it_at_once(auth_server: str) -> None:
    name = "revoked"
    _seed(auth_server, name)
    root = MilvusClient(uri=auth_server, token=ROOT, timeout=CALL_TIMEOUT)
    try:
        root.create_user("alice", "alice-pass-1", timeout=CALL_TIMEOUT)
        root.grant_role("alice", "admin", timeout=CALL_TIMEOUT)
        store = open_store(auth_server, "alice:alice-pass-1")
        try:
            assert store.describe(name).count == 20  # accepted at first
            root.drop_user("alice", timeout=CALL_TIMEOUT)  # an operator rotates credentials
            retry = Retrier(RetryPolicy(max_retries=5, base_delay=2.0))
            started = time.monotonic()
            with pytest.raises(AccessDenied) as caught:
                retry.run("counting", lambda: store.count(name))
            # Not waited out as an outage (code 2 "cannot connect" is retried otherwise).
            assert retry.retries == 0 and time.monotonic() - started < 10
            message = str(caught.value)
            assert "Milvus at" in message and "rejected the credentials" in message, message
            assert "DMU_TOKEN" in message and "\n" not in message
        finally:
            store.close()
    finally:
        root.close()


@pytest.mark.integration  # its own Milvus server, with authentication
@limit(300)
def test_a_missing_privilege_is_named(auth_server: str) -> None:
    name = "guarded"
    _seed(auth_server, name)
    root = MilvusClient(uri=auth_server, token=ROOT, timeout=CALL_TIMEOUT)
    try:
        root.create_user("bob", "bob-pass-1", timeout=CALL_TIMEOUT)  # no role: may not query
    finally:
        root.close()
    store = open_store(auth_server, "bob:bob-pass-1")  # the login itself is accepted
    try:
        retry = Retrier(RetryPolicy(max_retries=5, base_delay=2.0))
        with pytest.raises(AccessDenied) as caught:
            retry.run("counting", lambda: store.count(name))
        assert retry.retries == 0
        message = str(caught.value)
        assert "denied a privilege to the user" in message and "permission deny to bob" in message
        assert "grant" in message and "DMU_TOKEN" in message, message
    finally:
        store.close()


class _Rpc(grpc.RpcError):
    """A gRPC error as grpc raises it: the status behind a method."""

    def __init__(self, status: object, details: str) -> None:
        super().__init__(details)
        self._status, self._details = status, details

    def code(self) -> object:
        return self._status

    def details(self) -> str:
        return self._details


_Rpc.__module__ = "grpc._channel"  # where grpc's own errors live


def test_a_denial_is_never_retried_whatever_wraps_it() -> None:
    """The classification the server tests rely on, also where no such server runs."""
    from pymilvus import MilvusException

    from dmu_migrate.evolve.retry import is_transient
    from dmu_migrate.stores.client_errors import store_error
    from dmu_migrate.stores.milvus_errors import MILVUS

    def client_error(exc: BaseException, what: str) -> StoreError | None:
        return store_error(exc, MILVUS, "http://x:19530", what)

    def wrapped(status: object, details: str) -> MilvusException:
        try:
            try:
                raise _Rpc(status, details)
            except _Rpc as rpc:
                raise MilvusException(code=2, message="Fail connecting ...") from rpc
        except MilvusException as outer:
            return outer

    refused = wrapped(grpc.StatusCode.UNAUTHENTICATED, "auth check failure")
    down = wrapped(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses")
    assert not is_transient(client_error(refused, "reading"))
    assert is_transient(client_error(down, "reading"))
    assert isinstance(client_error(refused, "reading"), AccessDenied)
    assert not isinstance(client_error(down, "reading"), AccessDenied)
    denied = client_error(_Rpc(grpc.StatusCode.PERMISSION_DENIED, "permission deny to bob"), "x")
    assert isinstance(denied, AccessDenied) and "denied a privilege" in str(denied)
    # A bug whose message happens to hold the words is still a bug (kept with its traceback).
    assert client_error(RuntimeError("auth check failure"), "x") is None
