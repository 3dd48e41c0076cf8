"""What of the image can be checked without a Docker engine: its entrypoint and its lock.

The entrypoint runs here as the shell script it is, with ``echo`` standing in
for dmu-migrate, as an unprivileged user (through setpriv when the tests run as
root) against directories owned by root or by that user.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
NOBODY = 65534


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory every user can enter (pytest's tmp_path is private to its owner)."""
    path = Path(tempfile.mkdtemp(prefix="dmu-entrypoint-"))
    path.chmod(0o755)
    shutil.copy(ENTRYPOINT, path / "entrypoint.sh")
    try:
        yield path
    finally:
        shutil.rmtree(path)


def as_other_user(shared: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the entrypoint as a user that does not own ``shared`` (root cannot be refused)."""
    command = ["sh", str(shared / "entrypoint.sh"), *args]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: no unprivileged user to test as")
        command = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command]
    env = {**os.environ, "DMU_PROGRAM": "echo"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)


def make_unwritable(path: Path) -> None:
    path.mkdir()
    (path / "segment").write_text("data")
    if os.geteuid() != 0:  # as a user, the best stand-in for "owned by someone else"
        path.chmod(0o555)


def test_a_store_owned_by_another_user_is_one_line_naming_the_user_to_run_as(
    shared: Path,
) -> None:
    store = shared / "faces.db"
    make_unwritable(store)
    done = as_other_user(shared, "evolve", "--collection", "faces", "--uri", str(store))
    owner = f"{store.stat().st_uid}:{store.stat().st_gid}"
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        f"error: {store} is owned by {owner} and not writable by uid "
        f"{NOBODY if os.geteuid() == 0 else os.geteuid()}; run the container with --user "
        f"{owner}, or chown -R {NOBODY if os.geteuid() == 0 else os.geteuid()}:"
        f"{NOBODY if os.geteuid() == 0 else os.getegid()} the mounted directory"
    ]
    # A file to be created is checked through its directory; --flag=value forms too.
    done = as_other_user(shared, "evolve", f"--metrics-file={shared / 'new' / 'm.prom'}")
    assert done.returncode == 2 and f"error: {shared} is owned by" in done.stderr
    done = as_other_user(shared, "evolve", "--target-uri", f"qdrant:{store}/q")
    assert done.returncode == 2 and f"error: {store} is owned by" in done.stderr


def test_writable_paths_and_servers_run_the_command_unchanged(shared: Path) -> None:
    mine = shared / "mine"
    mine.mkdir()
    (mine / "faces.db").mkdir()
    (mine / "m.prom").write_text("")  # root's, in a directory the user owns: replaced by rename
    if os.geteuid() == 0:
        for path in (mine, mine / "faces.db"):
            os.chown(path, NOBODY, NOBODY)
    args = [
        "evolve",
        "--uri",
        str(mine / "faces.db"),
        "--target-uri",
        f"parquet:{mine / 'out'}",
        "--metrics-file",
        str(mine / "m.prom"),
        "--adapter",
        str(shared),  # read, never written: not checked
    ]
    done = as_other_user(shared, *args)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == args
    done = as_other_user(shared, "status", "--uri", "http://milvus:19530")
    assert done.returncode == 0 and done.stdout.split() == [
        "status",
        "--uri",
        "http://milvus:19530",
    ]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_the_lock_pins_every_base_dependency_once() -> None:
    lock = (ROOT / "requirements" / "evolve.lock").read_text().splitlines()
    pins = [line for line in lock if line and not line.startswith("#")]
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[^=\s]+", p) for p in pins), pins
    pinned = [_name(p) for p in pins]
    assert len(pinned) == len(set(pinned))
    requires = importlib.metadata.requires("dmu-migrate") or []
    base = {_name(r) for r in requires if "extra ==" not in r}
    assert {"pymilvus", "qdrant-client", "onnxruntime"} <= base
    missing = base - set(pinned)
    assert not missing, (
        f"requirements/evolve.lock lacks {missing}; regenerate: sh requirements/lock.sh"
    )
    assert "torch" not in pinned  # the evolve image has no torch
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--constraint requirements/evolve.lock" in dockerfile
    assert 'ARG TORCH="torch==2.13.0"' in dockerfile
