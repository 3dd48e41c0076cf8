"""The documented commands on a Milvus Lite file run for real, exactly as typed.

tests/test_documented_commands.py parses every command of the README, docs/
and examples/. Here every one of them that works on a Lite file (``--uri
faces.db``, the Docker line's ``/data/faces.db``) and ``transition`` run in a
directory laid out as the README assumes: ``faces.db`` whose alias 'faces'
serves 'faces__v1' (the digits gallery), and ``adapters/faces-v2`` (the
session's trained artifact under that name). Each starts from the state the
README puts it in (a fresh gallery, a finished migration, the transition's
artifacts). Every other documented command must be named in ``elsewhere``
with the test that runs it (or why it is not run), so a new documented
command fails here until something runs it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from doc_commands import COMMANDS
from galleries import Digits, create_gallery
from pymilvus import MilvusClient
from typer.testing import CliRunner, Result

from dmu_migrate.artifact import Artifact
from dmu_migrate.cli import app
from dmu_migrate.stores.opener import open_store

runner = CliRunner()
EVOLVE = ["evolve", "--collection", "faces", "--adapter", "adapters/faces-v2", "--uri", "faces.db"]


def on_lite(args: list[str]) -> bool:
    uri = args[args.index("--uri") + 1] if "--uri" in args else ""
    return uri.endswith(".db") or args[0] == "transition"


def elsewhere(where: str, args: list[str]) -> str | None:
    """The test that runs a documented command not run here (or why none does), else None."""
    path, command = where.split(":", 1)[0], args[0]
    if path.startswith("examples/") and path.endswith("/run.sh"):
        return "training runs of minutes to hours; shrunk at library level in test_examples.py"
    if command == "train":
        return "test_cli.py, test_cli_train.py; --tune at library level in test_tuning.py"
    if command == "evaluate":
        return "test_evaluation.py::test_cli_reference_json_and_chart"
    if command == "calibrate":
        return "test_calibrated_store.py::test_the_command_writes_the_calibrated_artifact"
    if command == "demo":
        return "test_cli.py::test_demo_runs_and_refuses_foreign_workdir"
    if command == "completion":
        return (
            "test_cli_conventions.py::test_completion_scripts_name_the_program_and_complete_in_bash"
        )
    if "gallery.db" in args:  # the demo's workdir: plan, backfill, then the nightly evolve
        return "test_backfill_commands.py::test_backfill_writes_native_rows_that_cron_evolve_keeps_and_verify_accepts"
    if command in ("plan-backfill", "backfill"):
        return "test_backfill_commands.py (every store, through the CLI; needs a plan and vectors)"
    if "faces_v2" in args:  # the own-collection walk-through's alias for the new encoder
        return "test_sample.py::test_the_readme_walk_through_runs_on_a_lite_file"
    if command == "evolve" and "--write-path" in args:
        return (
            "test_bulk_write.py (the bulk pass on the Milvus server); "
            "test_cli_migration.py::test_write_path_refusals (the flags through the CLI)"
        )
    if command == "evolve" and "--shards" in args:
        return "test_cli_shards.py (--shards and --workers on the Milvus server)"
    return None


def run(root: Path, args: list[str]) -> Result:
    args = [a.replace("/data/", f"{root}/") for a in args]  # the Docker line's mount
    return runner.invoke(app, args)


def readme_toml(name: str) -> str:
    """The TOML block that follows "`NAME` example:" in the README or a docs/ page."""
    root = Path(__file__).resolve().parent.parent
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    text = next(t for t in (p.read_text() for p in pages) if f"`{name}` example:" in t)
    after = text.split(f"`{name}` example:", 1)[1]
    return after.split("```toml\n", 1)[1].split("```", 1)[0]


def alias_target(db: Path) -> str:
    client = MilvusClient(str(db))
    try:
        return str(client.describe_alias("faces")["collection_name"])
    finally:
        client.close()


@pytest.fixture
def readme_dir(
    tmp_path: Path, digits: Digits, artifact: Artifact, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """faces.db and adapters/faces-v2 as the README has them, in the working directory."""
    create_gallery(tmp_path / "faces.db", digits, collection="faces__v1")
    client = MilvusClient(str(tmp_path / "faces.db"))
    try:
        client.drop_alias("digits")
        client.create_alias("faces__v1", "faces")
    finally:
        client.close()
    adapter = tmp_path / "adapters" / "faces-v2"
    shutil.copytree(artifact.path, adapter)
    manifest = json.loads((adapter / "manifest.json").read_text())
    manifest["name"] = "faces-v2"  # transition names its artifacts after it
    (adapter / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.chdir(tmp_path)
    return tmp_path


LITE = [(w, args) for w, args in COMMANDS if elsewhere(w, args) is None and on_lite(args)]


def test_every_documented_command_is_run_somewhere() -> None:
    unplaced = [w for w, args in COMMANDS if elsewhere(w, args) is None and not on_lite(args)]
    assert not unplaced, unplaced
    shown = {args[0] for _, args in LITE}
    assert {"evolve", "verify", "status", "history", "rollback", "prune", "transition"} <= shown


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("where", "args"), LITE, ids=[w for w, _ in LITE])
def test_documented_lite_command_runs(readme_dir: Path, where: str, args: list[str]) -> None:
    adapter = args[args.index("--adapter") + 1] if "--adapter" in args else ""
    db = readme_dir / "faces.db"
    # The state the README runs the command in.
    across = (
        args[args.index("--target-uri") : args.index("--target-uri") + 2]
        if "--target-uri" in args
        else []
    )
    if args[0] in ("verify", "status", "history", "rollback", "prune"):
        assert run(readme_dir, [*EVOLVE, *across]).exit_code == 0
    if adapter.endswith(("-transition", "-exit")):
        made = run(readme_dir, ["transition", "--adapter", "adapters/faces-v2"])
        assert made.exit_code == 0, made.output
    if adapter.endswith("-exit"):
        fused = [*EVOLVE[:4], "adapters/faces-v2-transition", *EVOLVE[5:]]
        assert run(readme_dir, fused).exit_code == 0
    if "--config" in args:  # the file the docs show above the command, as written there
        name = args[args.index("--config") + 1]
        (readme_dir / name).write_text(readme_toml(name))

    result = run(readme_dir, args)
    assert result.exit_code == 0, f"{where}: {result.output}"
    if args[0] == "evolve" and across:  # the alias moved in the other store, not here
        assert alias_target(db) == "faces__v1", where
        target = open_store(across[1])
        try:
            assert target.alias_target("faces") == "faces__v2", where
        finally:
            target.close()
    elif args[0] == "evolve":
        want = "faces__v2_fused" if adapter.endswith("-transition") else "faces__v2"
        assert alias_target(db) == want, where
    elif args[0] == "transition":
        assert (readme_dir / "adapters" / "faces-v2-transition" / "manifest.json").exists()
        assert (readme_dir / "adapters" / "faces-v2-exit" / "manifest.json").exists()
    elif args[0] == "rollback":
        assert alias_target(db) == "faces__v1"
    elif args[0] == "prune":
        assert not MilvusClient(str(db)).has_collection("faces__v1")
    elif args[0] == "status" and "--json" in args:
        assert json.loads(result.stdout)  # machine-readable as documented
