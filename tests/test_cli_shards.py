"""``evolve --shards/--workers/--shard/--engine ray`` as users run them: separate processes.

Each command runs as its own ``python -m dmu_migrate`` process against the real
Milvus server (embedded stores admit one process), so worker processes, Ray
tasks and killed shards are exercised exactly as in production.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from backends import Backend
from galleries import Digits

from dmu_migrate.artifact import Artifact
from dmu_migrate.evolve.transform import AdapterChain

ROWS = 150


@pytest.fixture
def server(milvus_server: str, tmp_path: Path) -> Iterator[Backend]:
    backend = Backend("milvus-server", milvus_server, tmp_path)
    before = backend.list_collections()
    try:
        yield backend
    finally:
        backend.close_stores()
        backend.drop_created(backend.created_since(before))


def gallery(digits: Digits, rows: int) -> np.ndarray:
    """``rows`` real old-model vectors (the held-out digits, repeated past their count)."""
    return np.resize(digits.old_te, (rows, digits.old_te.shape[1]))


def seed(backend: Backend, digits: Digits, rows: int = ROWS) -> tuple[str, np.ndarray]:
    source, alias = backend.unique("gal"), backend.unique("live")
    ids = np.arange(rows) * 5 + 3
    fields: dict[str, list[Any]] = {"name": [f"n{i}" for i in ids]}
    backend.seed(source, ids, gallery(digits, rows), fields, alias=alias)
    return alias, ids


def cli(*args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "300"}  # tables unwrapped
    done = subprocess.run(
        [sys.executable, "-m", "dmu_migrate", *args], capture_output=True, text=True, env=env
    )
    if check is not None and done.returncode != check:
        pytest.fail(f"exit {done.returncode} (wanted {check}): {done.stdout}{done.stderr}"[-3000:])
    return done


def evolve(uri: str, alias: str, artifact: Artifact, *flags: str, check: int | None = 0) -> Any:
    base = ["evolve", "--uri", uri, "--collection", alias, "--adapter", str(artifact.path)]
    done = cli(*base, "--batch-size", "16", *flags, check=check)
    return json.loads(done.stdout) if "--json" in flags and done.returncode == 0 else done


def status(uri: str, alias: str) -> dict[str, Any]:
    (record,) = json.loads(cli("status", "--uri", uri, "--collection", alias, "--json").stdout)
    return record


def assert_evolved(backend: Backend, target: str, ids: np.ndarray, expected: np.ndarray) -> None:
    rows = backend.read_all(target)
    assert sorted(rows) == ids.tolist()
    for i, row_id in enumerate(ids.tolist()):
        np.testing.assert_allclose(rows[row_id]["vector"], expected[i], atol=1e-5)
        assert rows[row_id]["name"] == f"n{row_id}" and rows[row_id]["dmu_version"] == "v2"


@pytest.mark.integration
def test_workers_run_the_shards_and_status_shows_them(
    server: Backend, digits: Digits, artifact: Artifact
) -> None:
    alias, ids = seed(server, digits)
    result = evolve(server.uri, alias, artifact, "--shards", "3", "--workers", "2", "--json")
    assert result["outcome"] == "done" and result["rows_written"] == ROWS
    assert sorted(s["index"] for s in result["shards"]) == [0, 1, 2]
    assert_evolved(server, result["target"], ids, AdapterChain([artifact])(digits.old_te[:ROWS]))
    record = status(server.uri, alias)
    assert record["status"] == "done" and record["alias_target"] == result["target"]
    assert [s["status"] for s in record["shard_status"]] == ["done"] * 3
    table = cli("status", "--uri", server.uri, "--collection", alias).stdout
    assert "3/3 shards done" in table


@pytest.mark.integration
def test_a_killed_shard_resumes_alone(server: Backend, digits: Digits, artifact: Artifact) -> None:
    # Shard 1 writes 1000 rows two at a time: seconds, past the first cursor save (1 s),
    # so it is killed mid-way; more rows only make the resume longer.
    rows = 2000
    half = rows // 2
    alias, ids = seed(server, digits, rows)
    first = evolve(server.uri, alias, artifact, "--shard", "0/2")
    assert "1 of 2 shards done" in first.stdout
    before = status(server.uri, alias)["shard_status"]

    base = ["evolve", "--uri", server.uri, "--collection", alias, "--adapter", str(artifact.path)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "dmu_migrate", "-vv", *base, "--batch-size", "2", "--shard", "1/2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        # Killed once a cursor with rows behind it is on record, whatever the clock says: on a
        # loaded machine this process reads the log late, and a kill "1.5 s after the first
        # batch" could land before the first save (rows_done 0, the assertions below fail).
        saved = re.search(r"cursor saved: (\d+) rows", line)
        if saved and int(saved.group(1)) > 0:
            proc.send_signal(signal.SIGKILL)
            break
    assert proc.wait() == -signal.SIGKILL, "shard 1 finished before it could be killed"
    killed = status(server.uri, alias)
    assert killed["status"] != "done" and killed["alias_target"] != killed["target"]
    shard0, shard1 = killed["shard_status"]
    assert shard0 == before[0]  # the finished shard is not touched
    assert shard1["status"] == "running" and 0 < shard1["rows_done"] < half

    # The dead process still holds shard 1's lease: a plain re-run is refused, --take-over resumes.
    refused = evolve(server.uri, alias, artifact, "--shard", "1/2", check=4)
    assert "is being run by" in refused.stderr and "--take-over" in refused.stderr
    resumed = evolve(server.uri, alias, artifact, "--shard", "1/2", "--take-over", "--json")
    assert resumed["outcome"] == "done"
    # From its cursor on (a batch written after the last cursor save is written again).
    assert 0 < resumed["rows_written"] <= half - shard1["rows_done"]
    assert resumed["shards"][0]["rows_done"] == half and resumed["id_check"] == "full diff"
    expected = AdapterChain([artifact])(gallery(digits, rows))
    assert_evolved(server, resumed["target"], ids, expected)
    assert status(server.uri, alias)["alias_target"] == resumed["target"]


@pytest.mark.integration
def test_ray_runs_the_shards_to_the_single_process_state(
    server: Backend, digits: Digits, artifact: Artifact, ray_cluster: str
) -> None:
    alias_a, ids = seed(server, digits)
    alias_b, _ = seed(server, digits)
    single = evolve(server.uri, alias_a, artifact, "--threads", "1", "--json")
    ray = ("--engine", "ray", "--ray-address", ray_cluster)
    sharded = evolve(server.uri, alias_b, artifact, "--shards", "4", *ray, "--json")
    assert sharded["outcome"] == "done" and sharded["rows_written"] == ROWS
    assert sorted(s["index"] for s in sharded["shards"]) == [0, 1, 2, 3]
    rows_a, rows_b = server.read_all(single["target"]), server.read_all(sharded["target"])
    assert sorted(rows_a) == sorted(rows_b) == ids.tolist()
    assert all(rows_a[k] == rows_b[k] for k in rows_a)  # one thread each: bit-identical
    assert status(server.uri, alias_b)["alias_target"] == sharded["target"]


@pytest.mark.integration
def test_ray_reports_a_shard_that_keeps_failing_and_keeps_the_rest(
    server: Backend, digits: Digits, artifact: Artifact, ray_cluster: str
) -> None:
    """Shard 1's lease is held by a live run elsewhere: every Ray try fails, the rest finish."""
    from dmu_migrate.evolve.ledger import Ledger
    from dmu_migrate.evolve.shards import load_shards

    alias, ids = seed(server, digits)
    evolve(server.uri, alias, artifact, "--shard", "0/3")  # makes the split
    store = server.open_store()
    ledger = Ledger(store, owner="other-host:1234")
    parent = ledger.load(status(server.uri, alias)["key"])
    assert parent is not None
    shard1 = load_shards(ledger, parent)[1]
    assert shard1 is not None
    ledger.acquire(shard1)
    ray = ("--engine", "ray", "--ray-address", ray_cluster)
    failed = evolve(server.uri, alias, artifact, "--shards", "3", *ray, check=4)
    assert "1 of 3 shards" in failed.stderr and "shard 1/3" in failed.stderr
    assert "other-host:1234" in failed.stderr
    record = status(server.uri, alias)
    assert [s["status"] for s in record["shard_status"]] == ["done", "running", "done"]
    assert record["alias_target"] != record["target"]

    ledger.release(shard1)  # that run ended: the same command finishes shard 1 alone
    result = evolve(server.uri, alias, artifact, "--shards", "3", *ray, "--json")
    assert result["outcome"] == "done" and [s["index"] for s in result["shards"]] == [1]
    assert_evolved(server, result["target"], ids, AdapterChain([artifact])(digits.old_te[:ROWS]))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--shard", "0/2", "--shards", "2"], "give one of the two"),
        (["--workers", "2"], "add --shards N"),
        (["--shards", "2", "--engine", "spark"], "unknown --engine 'spark'"),
        (["--shards", "2", "--ray-address", "auto"], "add --engine ray"),
        (["--shards", "2", "--engine", "ray", "--workers", "2"], "cluster's CPUs"),
        (["--shard", "2/2"], "0 <= INDEX < COUNT"),
        (["--shards", "0"], "--shards must be >= 1"),
        (["--shards", "2", "--workers", "2"], "one process at a time can open"),
        (["--shards", "999"], "more than the 150 rows"),
        (["--shards", "2", "--strategy", "in-place", "--yes-overwrite"], "runs as one process"),
    ],
)
def test_bad_fan_out_flags_are_refused_before_anything_is_written(
    tmp_path: Path, digits: Digits, artifact: Artifact, flags: list[str], message: str
) -> None:
    # A Parquet store: embedded like Milvus Lite (one process), and free of its file lock,
    # which outlives a client's close() in this test's own process.
    local = Backend("parquet", f"parquet:{tmp_path / 'parquet'}", tmp_path)
    alias, _ = seed(local, digits)
    done = evolve(local.uri, alias, artifact, *flags, check=2)
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not any(c.endswith("__v2") for c in local.list_collections())
