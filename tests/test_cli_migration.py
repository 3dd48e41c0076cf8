"""evolve options and the admin commands through the command line, on Milvus Lite."""

from __future__ import annotations

import json
from pathlib import Path

from galleries import Gallery
from helpers import assert_clean_error
from migrations import evolve_args, verify_args
from pymilvus import MilvusClient
from typer.testing import CliRunner, Result

from dmu_migrate.artifact import Artifact
from dmu_migrate.cli import app

runner = CliRunner()


def cli(*args: str) -> Result:
    return runner.invoke(app, list(args))


def test_dry_run_changes_nothing(gallery: Gallery, artifact: Artifact) -> None:
    result = cli(
        "evolve",
        "--collection",
        "digits",
        "--adapter",
        str(artifact.path),
        "--uri",
        str(gallery.db),
        "--dry-run",
        "--json",
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output[result.output.index("{") :])
    assert plan["target"] == "digits__v2" and plan["rows"] == len(gallery.ids)
    assert plan["estimate"]["read_transform_rows_per_s"] > 0
    client = MilvusClient(str(gallery.db))
    assert not client.has_collection("digits__v2")
    assert client.describe_alias("digits")["collection_name"] == "digits__v1"
    client.close()


def test_time_budget_exit_code_then_resume_and_admin(gallery: Gallery, artifact: Artifact) -> None:
    evolve = [
        "evolve",
        "--collection",
        "digits",
        "--adapter",
        str(artifact.path),
        "--uri",
        str(gallery.db),
        "--batch-size",
        "100",
    ]
    stopped = cli(*evolve, "--max-seconds", "0")
    assert stopped.exit_code == 75, stopped.output
    status = json.loads(cli("status", "--uri", str(gallery.db), "--json").output)
    # No process runs it: 'stopped', resumable, not 'running'.
    assert [(s["status"], s["rows_done"]) for s in status] == [("stopped", 100)]

    finished = cli(*evolve)
    assert finished.exit_code == 0, finished.output
    assert "resumed" in finished.output and "alias 'digits' -> 'digits__v2'" in finished.output
    verified = cli(*verify_args(gallery, artifact))
    assert verified.exit_code == 0 and "OK" in verified.output, verified.output
    history = cli("history", "--uri", str(gallery.db), "--collection", "digits")
    assert "v1 -> v2" in history.output and "(done)" in history.output

    live = cli("prune", "--collection", "digits__v2", "--uri", str(gallery.db), "--yes")
    assert_clean_error(live, 2, "no finished migration has 'digits__v2' as its source")
    back = cli("rollback", "--collection", "digits", "--uri", str(gallery.db))
    assert back.exit_code == 0 and "alias 'digits' -> 'digits__v1'" in back.output
    refused = cli("prune", "--collection", "digits__v1", "--uri", str(gallery.db), "--yes")
    assert_clean_error(refused, 2, "was rolled back")

    again = cli(*evolve, "--reapply")
    assert again.exit_code == 0, again.output
    asked = runner.invoke(
        app, ["prune", "--collection", "digits__v1", "--uri", str(gallery.db)], input="n\n"
    )
    assert asked.exit_code == 0 and "cannot be undone" in asked.output, asked.output
    assert "nothing was dropped" in asked.output
    pruned = cli("prune", "--collection", "digits__v1", "--uri", str(gallery.db), "--yes")
    assert pruned.exit_code == 0 and "dropped 'digits__v1'" in pruned.output
    client = MilvusClient(str(gallery.db))
    assert not client.has_collection("digits__v1") and client.has_collection("digits__v2")
    client.close()


def test_in_place_needs_confirmation(gallery: Gallery, artifact: Artifact) -> None:
    result = cli(
        "evolve",
        "--collection",
        "digits__v1",
        "--adapter",
        str(artifact.path),
        "--uri",
        str(gallery.db),
        "--strategy",
        "in-place",
    )
    assert_clean_error(result, 2, "--yes-overwrite")


def test_unknown_strategy_and_alias_misuse(gallery: Gallery, artifact: Artifact) -> None:
    base = [
        "evolve",
        "--collection",
        "digits__v1",
        "--adapter",
        str(artifact.path),
        "--uri",
        str(gallery.db),
    ]
    assert_clean_error(cli(*base, "--strategy", "copy"), 2, "unknown --strategy 'copy'")
    assert_clean_error(
        cli(*base, "--strategy", "new-field", "--alias", "x"),
        2,
        "--alias applies to --strategy new-collection only",
    )


def test_write_path_refusals(gallery: Gallery, artifact: Artifact, tmp_path: Path) -> None:
    """--write-path reaches the verb: a bad value, bulk on Milvus Lite, with or without
    shards."""
    base = evolve_args(gallery, artifact)
    assert_clean_error(cli(*base, "--write-path", "copy"), 2, "unknown --write-path 'copy'")
    for shards in ([], ["--shards", "2"]):
        assert_clean_error(
            cli(*base, "--write-path", "bulk", "--bulk-storage", str(tmp_path), *shards),
            2,
            "has no bulk import (Milvus server only)",
        )
    client = MilvusClient(str(gallery.db))
    assert not client.has_collection("digits__v2")  # refused before anything was written
    client.close()
