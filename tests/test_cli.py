"""Every command through Typer's runner: the happy path and a bad input each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from galleries import Digits, Gallery
from helpers import assert_clean_error
from migrations import evolve_args
from pymilvus import MilvusClient
from typer.testing import CliRunner

from dmu_migrate.artifact import Artifact
from dmu_migrate.cli import app

runner = CliRunner()


def test_train_writes_artifact(tmp_path: Path, digits: Digits) -> None:
    args = ["train", str(digits.train_path), "--name", "d2", "--out-dir", str(tmp_path)]
    result = runner.invoke(app, [*args, "--epochs", "3", "--json"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "d2" / "manifest.json").read_text())
    assert manifest["old_dim"] == 32 and manifest["new_dim"] == 32
    assert manifest["parity"]["adapter_max_abs_diff"] < 1e-4
    stages = [entry.get("stage", 1) for entry in manifest["training"]["log"]]
    assert stages == [1, 1, 1, 2]  # three epochs of the new model, then psi's closed form
    assert {"adapter.onnx", "new_model.onnx", "backfill_score.onnx"} == set(manifest["files"])
    # A second run under the same name refuses to overwrite the artifact.
    again = runner.invoke(app, [*args, "--epochs", "1"])
    assert_clean_error(again, 2, "already exists", "--overwrite")


def test_train_missing_column(tmp_path: Path, digits: Digits) -> None:
    result = runner.invoke(
        app,
        [
            "train",
            str(digits.train_path),
            "--name",
            "x",
            "--out-dir",
            str(tmp_path),
            "--old-col",
            "old_emb",
        ],
    )
    assert_clean_error(result, 2, "no column 'old_emb'", "--*-col")
    assert not (tmp_path / "x").exists()


def test_evaluate_table_and_json(digits: Digits, artifact: Artifact) -> None:
    result = runner.invoke(
        app, ["evaluate", str(digits.eval_path), "--adapter", str(artifact.path)]
    )
    assert result.exit_code == 0, result.output
    assert "new->evolved" in result.output and "query/gallery" in result.output
    result = runner.invoke(
        app, ["evaluate", str(digits.eval_path), "--adapter", str(artifact.path), "--json"]
    )
    report = json.loads(result.output)
    settings = report["settings"]
    assert settings["new->evolved"]["R@1"] > settings["new->old"]["R@1"] - 0.02
    assert settings["new->new"]["mAP"] > settings["old->old"]["mAP"]


def test_evaluate_missing_artifact(tmp_path: Path, digits: Digits) -> None:
    result = runner.invoke(app, ["evaluate", str(digits.eval_path), "--adapter", str(tmp_path)])
    assert_clean_error(result, 3, "not an upgrade artifact")


def test_evolve_happy_path(gallery: Gallery, artifact: Artifact) -> None:
    result = runner.invoke(
        app,
        evolve_args(gallery, artifact, "--json"),
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output[result.output.index("{") :])
    assert payload["target"] == "digits__v2" and payload["rows_written"] == len(gallery.ids)
    client = MilvusClient(str(gallery.db))
    assert client.describe_alias("digits")["collection_name"] == "digits__v2"
    client.close()


def test_evolve_missing_collection(gallery: Gallery, artifact: Artifact) -> None:
    result = runner.invoke(
        app,
        [
            "evolve",
            "--collection",
            "faces",
            "--adapter",
            str(artifact.path),
            "--uri",
            str(gallery.db),
        ],
    )
    assert_clean_error(result, 4, "collection 'faces' does not exist", "--collection")


def test_evolve_dims_mismatch(tmp_path: Path, gallery: Gallery, digits: Digits) -> None:
    narrow = tmp_path / "narrow"
    trained = runner.invoke(
        app,
        [
            "train",
            str(digits.train_path),
            "--name",
            "n",
            "--out-dir",
            str(narrow),
            "--old-col",
            "x",
            "--epochs",
            "1",
        ],
    )
    assert trained.exit_code == 0, trained.output  # an adapter for 64-d "old" vectors
    result = runner.invoke(
        app,
        [
            "evolve",
            "--collection",
            "digits",
            "--adapter",
            str(narrow / "n"),
            "--uri",
            str(gallery.db),
        ],
    )
    assert_clean_error(result, 2, "has 32-d vectors", "expects 64-d")


def test_evolve_unknown_scheme(artifact: Artifact) -> None:
    result = runner.invoke(
        app,
        ["evolve", "--collection", "c", "--adapter", str(artifact.path), "--uri", "ftp://host/db"],
    )
    assert_clean_error(result, 2, "unknown store URI scheme 'ftp://'")


def test_demo_runs_and_refuses_foreign_workdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dmu_migrate.demo
    from dmu_migrate.cli.common import out
    from dmu_migrate.cli.training import show_demo

    # One run (it trains): --json for scripts, and the same result rendered for people.
    runs: list[Any] = []
    real = dmu_migrate.demo.run_demo

    def kept(*args: Any, **kwargs: Any) -> Any:
        runs.append(real(*args, **kwargs))
        return runs[-1]

    monkeypatch.setattr(dmu_migrate.demo, "run_demo", kept)
    workdir = tmp_path / "demo"
    # 20 epochs: at 10 the new model is undertrained, and the gate, judged among the
    # training table's other rows, refuses it (new->evolved 80.7 <= old->old 82.6).
    result = runner.invoke(app, ["demo", "--workdir", str(workdir), "--epochs", "20", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    (demo,) = runs
    scores = demo.evaluation.scores["new->evolved"].as_dict()
    assert shown["evaluation"]["settings"]["new->evolved"] == scores
    assert shown["evaluation"]["verdict"] == demo.evaluation.verdict.line
    assert shown["evolve"]["rows_written"] == demo.evolve.rows_written > 0
    assert shown["evolve"]["alias"] == "digits"
    assert shown["search"]["evolved_hits"] == demo.search.evolved_hits
    assert shown["search"]["possible"] == demo.search.possible > 0
    assert shown["database"] == str(workdir / "gallery.db")
    with out.capture() as human:
        show_demo(demo)
    assert "new->evolved" in human.get() and "Milvus search" in human.get()
    assert f"{demo.search.evolved_hits}/{demo.search.possible}" in human.get()
    assert (workdir / "adapters" / "digits-v2" / "adapter.onnx").exists()
    # Re-running over its own directory is fine; over someone else's files it refuses.
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    result = runner.invoke(app, ["demo", "--workdir", str(foreign)])
    assert_clean_error(result, 2, "was not made by the demo")
    assert (foreign / "notes.txt").read_text() == "keep me"
