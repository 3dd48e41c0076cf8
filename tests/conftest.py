"""Shared fixtures: real data (scikit-learn digits), a trained artifact, a Milvus Lite gallery,
the store backends and the servers behind them.

Fixtures and their private parts only. The plain classes and functions that tests share
live in helper modules (galleries.py, migrations.py, helpers.py, backends.py, ...), and
tests import them from there, never from conftest or from another test module.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from backends import Backend, backend_kinds
from galleries import Digits, Gallery, create_gallery
from helpers import deployable
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from dmu_migrate.artifact import Artifact
from dmu_migrate.data import write_table
from dmu_migrate.demo import embed, fit_old_model
from dmu_migrate.evolve.ledger import SETTLE_ENV
from dmu_migrate.training.trainer import TrainConfig
from dmu_migrate.training.upgrade import train_upgrade

# Lease settle time for the tests' runs and the CLI processes they start. No run against
# the session's private server is slower than this; tests of lease races take the real
# one (``real_lease_settle``).
TEST_SETTLE = "1.0"
# The session artifacts' training, as long as the quality gate needs to let them through:
# v2 reaches at 30 epochs the held-out R@1 of 40 (93.6 over the old model's 90.8; 20 only
# tie it); v3 must beat v2 itself, which 30 epochs do not (92.7 to 93.6).
EPOCHS_V2, EPOCHS_V3 = 30, 40
# The test server's waits, lowered from Milvus's defaults: they are periods the server
# waits out, not work, and every server test pays them many times over. A Strong read waits
# for the next time tick (200 ms; 80 ms at 50, measured); a flush waits for the sealed
# segment's row allocations to expire (2000 ms; a flush took 2.5 s, 1.5 s at 500). Milvus
# warns against lowering the expiration across a restart of the same data; this server
# starts empty. What the server stores and returns is unchanged.
SERVER_INTERVALS = {
    "proxy.timeTickInterval": 50,
    "dataCoord.segment.assignmentExpiration": 500,
}


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault(SETTLE_ENV, TEST_SETTLE)


@pytest.fixture
def real_lease_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    """The deployed lease settle time, for tests that race two runs for a lease."""
    monkeypatch.delenv(SETTLE_ENV, raising=False)


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Digits:
    """The 30% -> 100% upgrade of the DMU paper on real handwritten digits."""
    root = tmp_path_factory.mktemp("digits")
    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.4, stratify=y, random_state=1)
    x_old, _, y_old, _ = train_test_split(x_tr, y_tr, train_size=0.3, stratify=y_tr, random_state=1)
    old_model = fit_old_model(x_old, y_old, seed=1)
    old_tr, old_te = embed(old_model, x_tr), embed(old_model, x_te)
    is_query = np.arange(len(y_te)) % 4 == 0
    role = np.where(is_query, "query", "gallery").astype(object)
    write_table(root / "train.parquet", {"label": y_tr, "old": old_tr, "x": x_tr})
    write_table(root / "eval.parquet", {"label": y_te, "old": old_te, "x": x_te, "role": role})
    return Digits(root / "train.parquet", root / "eval.parquet", x_te, y_te, old_te, is_query)


@pytest.fixture(scope="session")
def artifact(digits: Digits, tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    out = tmp_path_factory.mktemp("adapters")
    config = TrainConfig(epochs=EPOCHS_V2, batch_size=128, seed=1)
    return deployable(train_upgrade(digits.train_path, out, "digits-v2", config).artifact)


@pytest.fixture
def gallery(tmp_path: Path, digits: Digits) -> Gallery:
    return create_gallery(tmp_path / "gallery.db", digits)


# -- store backends: one contract, every store (see tests/backends.py) ---------------


def _stop_milvus(server, pid: int | None) -> None:
    """Stop a server from the `milvus` package; SIGKILL it if it outlives a grace period."""
    import contextlib
    import signal
    import subprocess

    with contextlib.suppress(subprocess.TimeoutExpired):  # killed below
        server.stop()
    if pid is None:
        return
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)  # it ignores SIGTERM for a while; never leave it on the ports


@pytest.fixture
def milvus_server(request: pytest.FixtureRequest) -> str:
    """The session's Milvus server, for integration tests only: the fast suite starts none."""
    if request.node.get_closest_marker("integration") is None:
        pytest.fail(
            f"{request.node.nodeid} uses the Milvus server but is not marked integration: "
            "add @pytest.mark.integration (or kind_params(...) for a store-kind parameter)"
        )
    return request.getfixturevalue("_milvus_server")  # started only past the check


@pytest.fixture(scope="session")
def _milvus_server(tmp_path_factory: pytest.TempPathFactory):
    """The real Milvus 2.3.5 standalone server from the `milvus` package, once per session.

    Its embedded etcd always binds peer port 2380, so a second server on the machine (a
    concurrent test run) panics at start: runs take turns through a file lock instead.
    """
    import fcntl
    import tempfile

    from milvus import default_server

    lock = open(Path(tempfile.gettempdir()) / "dmu-migrate-milvus-server.lock", "w")  # noqa: SIM115
    deadline = time.monotonic() + 900
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise RuntimeError("another test run held the Milvus server for 15 min") from None
            time.sleep(1)
    proc = None
    try:
        default_server.set_base_dir(str(tmp_path_factory.mktemp("milvus-server")))
        for key, value in SERVER_INTERVALS.items():
            default_server.config.set(key, value)
        default_server.start()
        proc = default_server.server_proc
        # Bound to 19530 unless something else holds it; then the next free port.
        yield f"http://127.0.0.1:{default_server.listen_port}"
    finally:
        _stop_milvus(default_server, proc.pid if proc is not None else None)
        lock.close()  # releases the lock


@pytest.fixture(params=backend_kinds())
def backend(request: pytest.FixtureRequest, tmp_path: Path):
    """A store kind with a fresh namespace; server collections made by the test are dropped."""
    kind = request.param
    if kind == "milvus-lite":
        uri = str(tmp_path / "store.db")
    elif kind == "milvus-server":
        uri = request.getfixturevalue("milvus_server")
    elif kind == "qdrant-local":
        uri = f"qdrant:{tmp_path / 'qdrant'}"
    elif kind == "qdrant-server":
        uri = (
            os.environ["QDRANT_URL"]
            .replace("https://", "qdrants://")
            .replace("http://", "qdrant://")
        )
    else:
        uri = f"parquet:{tmp_path / 'parquet'}"
    harness = Backend(kind, uri, tmp_path)
    before = harness.list_collections() if kind.endswith("-server") else set()
    try:
        yield harness
    finally:
        harness.close_stores()
        if kind.endswith("-server"):
            harness.drop_created(harness.created_since(before))


@pytest.fixture(scope="session")
def artifact_v3(
    digits: Digits, artifact: Artifact, tmp_path_factory: pytest.TempPathFactory
) -> Artifact:
    """A second upgrade, v2 -> v3, trained on the v2 (evolved) vectors: for chained upgrades."""
    from dmu_migrate.data import read_table
    from dmu_migrate.onnx_model import OnnxModel

    root = tmp_path_factory.mktemp("v3")
    table = read_table(digits.train_path)
    v2 = OnnxModel(artifact.adapter_path)(table.old)
    write_table(root / "train_v2.parquet", {"label": table.labels, "old": v2, "x": table.x})
    config = TrainConfig(epochs=EPOCHS_V3, batch_size=128, seed=1)
    return deployable(
        train_upgrade(
            root / "train_v2.parquet", root, "digits-v3", config, from_version="v2", to_version="v3"
        ).artifact
    )


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """A local Ray head node for the session: --engine ray runs on it as on a user's cluster."""
    ray = str(Path(sys.executable).parent / "ray")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = [ray, "start", "--head", f"--port={port}", "--num-cpus=2", "--disable-usage-stats"]
    # A private throwaway cluster: no token (the test's CLI processes inherit this).
    os.environ["RAY_AUTH_MODE"] = "disabled"
    started = subprocess.run(
        [*start, "--include-dashboard=false"], capture_output=True, text=True, timeout=180
    )
    if started.returncode != 0:
        pytest.fail(f"ray start failed: {started.stdout[-1500:]}{started.stderr[-1500:]}")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, timeout=120)
