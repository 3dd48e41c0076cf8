"""The smaller answers a user acts on, each true and each refusing what would mislead:
in-place's note on rows added later, transition with a fitted weight of 0, the gate's
advice on artifacts that transition wrote, plan-backfill over an existing plan, all-zero
backfill vectors and an empty --bulk-storage.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from backends import Backend
from galleries import Digits, Gallery, read_all
from helpers import assert_clean_error
from migrations import evolve_args
from pymilvus import MilvusClient
from typer.testing import CliRunner

from dmu_migrate.artifact import Artifact, load_artifact
from dmu_migrate.cli import app
from dmu_migrate.data import write_table
from dmu_migrate.errors import QualityGateError
from dmu_migrate.evolve.plan import gate
from dmu_migrate.evolve.transform import AdapterChain

runner = CliRunner()


def cli(*args: str) -> Any:
    return runner.invoke(app, list(args))


def with_quality(artifact: Artifact, directory: Path, **quality: Any) -> Path:
    """A copy of ``artifact`` whose manifest's quality figures are replaced by ``quality``."""
    shutil.copytree(artifact.path, directory)
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["quality"] = {**manifest["quality"], **quality}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


def test_in_place_says_no_later_run_evolves_rows_added_after_its_pass(
    tmp_path: Path, digits: Digits, artifact: Artifact
) -> None:
    backend = Backend("parquet", f"parquet:{tmp_path / 'parquet'}", tmp_path)
    backend.seed("digits__v1", list(range(1, 41)), digits.old_te[:40])
    args = ["evolve", "--collection", "digits__v1", "--adapter", str(artifact.path)]
    args += ["--uri", backend.uri, "--strategy", "in-place", "--yes-overwrite"]
    done = cli(*args, "--snapshot-dir", str(tmp_path / "snap"))
    assert done.exit_code == 0, done.output
    flat = " ".join(done.stdout.split())
    assert "note: in-place evolves only the rows its pass read" in flat
    assert "not evolved by this or any later run" in flat and "--strategy new-collection" in flat
    assert "does not catch up" not in flat


def test_transition_refuses_a_fitted_weight_of_zero_and_names_what_to_deploy(
    tmp_path: Path, artifact: Artifact
) -> None:
    old_zero = with_quality(
        artifact, tmp_path / "old-zero", fusion={"a": 0.0, "b": 1.0, "R@1": 0.9, "mAP": 0.8}
    )
    refused = cli("transition", "--adapter", str(old_zero), "--out-dir", str(tmp_path / "out"))
    assert_clean_error(
        refused, 2, "gives the old model weight 0", "[0.00 q_old ; 1.00 q_new]",
        f"dmu-migrate evolve --adapter {old_zero}",
    )  # fmt: skip
    new_zero = with_quality(
        artifact, tmp_path / "new-zero", fusion={"a": 1.0, "b": 0.0, "R@1": 0.9, "mAP": 0.8}
    )
    refused = cli("transition", "--adapter", str(new_zero), "--out-dir", str(tmp_path / "out"))
    assert_clean_error(refused, 2, "gives the new model weight 0", "keep today's system")
    assert not (tmp_path / "out").exists()  # nothing written, not even the directory


def test_the_gate_never_advises_transition_on_an_artifact_transition_wrote(
    tmp_path: Path, artifact: Artifact
) -> None:
    settings = dict(artifact.manifest.quality["settings"])
    settings["old->old"] = {"R@1": 0.9, "mAP": 0.8}
    settings["new->evolved"] = {"R@1": 0.5, "mAP": 0.4}  # a regression
    fusion = {"a": 0.5, "b": 0.5, "R@1": 0.95, "mAP": 0.9}  # the transition beats the floor
    base = with_quality(artifact, tmp_path / "base", settings=settings, fusion=fusion)
    with pytest.raises(QualityGateError) as refused:
        gate(AdapterChain([load_artifact(base)]), accept_regression=False)
    assert f"dmu-migrate transition --adapter {base}" in str(refused.value)

    made = cli("transition", "--adapter", str(base), "--out-dir", str(tmp_path))
    assert made.exit_code == 0, made.output
    exit_artifact = load_artifact(tmp_path / f"{artifact.manifest.name}-exit")
    with pytest.raises(QualityGateError) as refused:
        gate(AdapterChain([exit_artifact]), accept_regression=False)
    message = str(refused.value)
    assert "dmu-migrate transition" not in message and "\n" not in message
    assert "keep serving the -transition artifact's fused vectors" in message
    # The transition artifact itself passes the gate on its fused figures.
    transition = load_artifact(tmp_path / f"{artifact.manifest.name}-transition")
    gate(AdapterChain([transition]), accept_regression=False)
    # transition on what transition wrote is refused, naming the artifact to start from.
    for written in (transition, exit_artifact):
        again = cli("transition", "--adapter", str(written.path))
        assert_clean_error(again, 2, "was written by transition", artifact.manifest.name)


def test_plan_backfill_keeps_an_existing_plan_unless_overwrite(
    tmp_path: Path, gallery: Gallery, artifact: Artifact
) -> None:
    assert cli(*evolve_args(gallery, artifact)).exit_code == 0
    plan = tmp_path / "plan.parquet"
    plan.write_bytes(b"an earlier plan")
    args = ["plan-backfill", "--collection", "digits", "--adapter", str(artifact.path)]
    args += ["--uri", str(gallery.db), "--budget", "10%", "--output", str(plan)]
    refused = cli(*args)
    assert_clean_error(refused, 2, f"--output '{plan}' already exists", "--overwrite")
    assert plan.read_bytes() == b"an earlier plan"
    replaced = cli(*args, "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert plan.read_bytes()[:4] == b"PAR1"


def test_backfill_refuses_all_zero_vectors_naming_their_ids(
    tmp_path: Path, gallery: Gallery, artifact: Artifact
) -> None:
    assert cli(*evolve_args(gallery, artifact)).exit_code == 0
    before = read_all(gallery.db, "digits__v2")
    ids = gallery.ids[:6]
    vectors = np.full((6, artifact.manifest.new_dim), 0.1, np.float32)
    vectors[[2, 4]] = 0.0
    native = tmp_path / "native.parquet"
    write_table(native, {"id": ids, "vector": vectors})
    refused = cli(
        "backfill", "--collection", "digits", "--uri", str(gallery.db), "--input", str(native)
    )
    first = [int(ids[2]), int(ids[4])]
    assert_clean_error(refused, 2, "all-zero vectors in 2 rows", f"first ids: {first}", "re-embed")
    after = read_all(gallery.db, "digits__v2")
    assert all(after[i]["dmu_origin"] == before[i]["dmu_origin"] for i in ids.tolist())


def test_an_empty_bulk_storage_is_refused(gallery: Gallery, artifact: Artifact) -> None:
    for extra in (["--bulk-storage", ""], ["--bulk-storage", " ", "--write-path", "bulk"]):
        refused = cli(*evolve_args(gallery, artifact, *extra))
        assert_clean_error(refused, 2, "--bulk-storage is empty", "working directory")
    client = MilvusClient(str(gallery.db))
    try:
        assert not client.has_collection("digits__v2")
    finally:
        client.close()
