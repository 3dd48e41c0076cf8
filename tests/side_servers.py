"""Servers a test module runs beside the session's Milvus (tests/conftest.py).

``side_milvus`` starts another Milvus 2.3.5 from the `milvus` package with its own
settings. It shares nothing with the session's server: every port is a free one
picked here, and its embedded etcd, which otherwise always binds 2379/2380, gets
its own through an etcd config file; so it needs no turn at the session server's
lock. ``s3_server`` runs moto's S3 server, an S3 endpoint Milvus can keep its
data in (``common.storageType: minio``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

START_SECONDS = 60  # for moto's S3 server to answer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def side_milvus(base: Path, settings: dict[str, Any]) -> Iterator[str]:
    """A Milvus server with ``settings`` (configurable items or dotted YAML keys); its URI."""
    from milvus import MilvusServer, MilvusServerConfig

    config = MilvusServerConfig()
    ports = {key: free_port() for key in config.configurable_items if key.endswith("_port")}
    config.update(**ports, data_dir=str(base))
    for key, value in settings.items():
        config.set(key, value)
    peer, client = free_port(), free_port()
    etcd = base / "etcd.yaml"
    etcd.write_text(
        "name: dmu-side\n"
        f"listen-client-urls: http://127.0.0.1:{client}\n"
        f"advertise-client-urls: http://127.0.0.1:{client}\n"
        f"listen-peer-urls: http://127.0.0.1:{peer}\n"
        f"initial-advertise-peer-urls: http://127.0.0.1:{peer}\n"
        f"initial-cluster: dmu-side=http://127.0.0.1:{peer}\n"
    )
    # The package's template has no etcd.config.path line to set; add it under "etcd:".
    config.template_text = config.template_text.replace(
        "\netcd:\n", f"\netcd:\n  config:\n    path: {etcd}\n", 1
    )
    server = MilvusServer(config)
    server.webservice_port = free_port()
    server.start()
    pid = server.server_proc.pid
    try:
        yield f"http://127.0.0.1:{server.listen_port}"
    finally:
        server.stop()  # terminates, then kills after a second
        with suppress(ProcessLookupError):
            os.kill(pid, 0)
            os.kill(pid, 9)  # never leave it running


@contextmanager
def s3_server(log: Path) -> Iterator[str]:
    """moto's S3 server on a free port; its endpoint URL. It keeps objects in memory."""
    port = free_port()
    executable = Path(sys.executable).parent / "moto_server"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(executable), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto's S3 server did not start; see {log}") from None
                time.sleep(0.2)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
