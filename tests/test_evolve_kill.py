"""SIGKILL an evolve subprocess again and again; every resume must end in the same state.

Milvus Lite and Qdrant local mode lock their data to one process, and the lock
outlives a client's close() inside that process; so this test touches the
store only from child processes (seeding, status, reading back).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from backends import Backend
from galleries import Digits

from dmu_migrate.artifact import Artifact
from dmu_migrate.data import write_table
from dmu_migrate.evolve.transform import AdapterChain

# 30 batches of 4: every kill lands in the main pass, with batches left for the final run.
ROWS = 120
# Kill points per store before a run may finish: half between batches, half mid-write,
# each on a run that was itself resumed (the first aside). Every attempt costs two
# process starts (the run and `status`), so each kill is seconds of the suite.
KILLS = 4
TESTS = Path(__file__).resolve().parent

SEED = """
import sys, numpy as np
sys.path.insert(0, {tests!r})
from backends import Backend
from dmu_migrate.data import read_table
t = read_table({table!r}, need_x=False)
b = Backend({kind!r}, {uri!r}, __import__("pathlib").Path({root!r}))
ids = np.arange(len(t.labels)) * 2 + 1
b.seed({source!r}, ids, t.old, {{"name": [f"n{{i}}" for i in ids]}}, alias={alias!r})
b.close_stores()
"""

READ = """
import sys, json
sys.path.insert(0, {tests!r})
from backends import Backend
b = Backend({kind!r}, {uri!r}, __import__("pathlib").Path({root!r}))
rows = b.read_all(sys.argv[1])
print(json.dumps({{str(k): [v[{field!r}], v["name"], v["dmu_version"]] for k, v in rows.items()}}))
"""


def child(*args: str) -> str:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        pytest.fail(f"child {args[:3]} failed: {done.stderr[-2000:]}")
    return done.stdout


def status(uri: str, alias: str) -> list[dict]:
    out = child("-m", "dmu_migrate", "status", "--uri", uri, "--collection", alias, "--json")
    return json.loads(out) if out.strip().startswith("[") else []


@pytest.mark.integration  # kills child processes, and the Milvus server kind
@pytest.mark.parametrize("kind", ["milvus-lite", "milvus-server", "qdrant-local"])
def test_killed_runs_resume_to_the_uninterrupted_state(
    kind: str, tmp_path: Path, digits: Digits, artifact: Artifact, request: pytest.FixtureRequest
) -> None:
    if kind == "milvus-server":
        uri = request.getfixturevalue("milvus_server")
    elif kind == "milvus-lite":
        uri = str(tmp_path / "store.db")
    else:
        uri = f"qdrant:{tmp_path / 'qdrant'}"
    table = tmp_path / "gallery.parquet"
    write_table(table, {"label": digits.y_te[:ROWS], "old": digits.old_te[:ROWS]})
    fmt = {"tests": str(TESTS), "kind": kind, "uri": uri, "root": str(tmp_path)}
    source = f"gallery_{tmp_path.name[-12:].replace('-', '_')}"  # unique on a shared server
    alias = f"{source}_live"
    before = Backend(kind, uri, tmp_path).list_collections() if kind == "milvus-server" else set()
    child("-c", SEED.format(table=str(table), source=source, alias=alias, **fmt))

    rng = np.random.default_rng(7)
    progress: list[int] = []
    kills = 0
    for _attempt in range(KILLS + 10):
        cmd = [
            "-m",
            "dmu_migrate",
            "-vv",
            "evolve",
            "--collection",
            alias,
            "--adapter",
            str(artifact.path),
            "--uri",
            uri,
            "--batch-size",
            "4",
            "--take-over",
        ]
        proc = subprocess.Popen(
            [sys.executable, *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        # Kill point: after k more acknowledged batches, either right there (between
        # batches) or as the next write starts (mid-write, before its ledger update),
        # in turn. After KILLS kills the run is left to finish.
        k, mid_write = int(rng.integers(1, 3)), kills % 2 == 1
        acked, log = 0, []
        assert proc.stderr is not None
        for line in proc.stderr:
            log.append(line)
            acked += "batch acknowledged" in line
            if kills < KILLS and acked >= k and (not mid_write or "writing" in line):
                proc.send_signal(signal.SIGKILL)
                kills += 1
                break
        proc.wait()
        if proc.returncode == 0:
            break
        if proc.returncode != -signal.SIGKILL:
            pytest.fail(f"evolve failed on its own: {''.join(log)[-2000:]}")
        records = status(uri, alias)
        progress.append(records[0]["rows_done"] if records else 0)
    else:
        pytest.fail(f"evolve never finished; rows done after each kill: {progress}")

    assert kills == KILLS, f"the run finished after {kills} kills ({progress})"
    assert progress == sorted(progress) and progress[-1] < ROWS, progress  # never lost ground
    (record,) = status(uri, alias)
    assert record["status"] == "done" and record["alias_target"] == record["target"]
    field = "" if kind == "qdrant-local" else "vector"
    rows = json.loads(child("-c", READ.format(field=field, **fmt), record["target"]))
    ids = np.arange(ROWS) * 2 + 1
    assert sorted(int(k) for k in rows) == ids.tolist()  # nothing lost, nothing duplicated
    expected = AdapterChain([artifact])(digits.old_te[:ROWS])
    for i, row_id in enumerate(ids.tolist()):
        vector, name, version = rows[str(row_id)]
        np.testing.assert_allclose(vector, expected[i], atol=1e-5)
        assert name == f"n{row_id}" and version == "v2"
    if kind == "milvus-server":
        server = Backend(kind, uri, tmp_path)
        server.drop_created(sorted(server.list_collections() - before))
