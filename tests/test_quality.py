"""The quality gate and the transition mode: figures at training, verdicts, refusals, fusion."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from galleries import Digits, Gallery, read_all
from helpers import assert_clean_error
from pymilvus import MilvusClient
from typer.testing import CliRunner, Result

from dmu_migrate.artifact import MANIFEST, Artifact, load_artifact
from dmu_migrate.cli import app
from dmu_migrate.errors import QualityGateError
from dmu_migrate.metrics import l2_normalize
from dmu_migrate.onnx_model import OnnxModel
from dmu_migrate.quality import (
    check_gate,
    fit_fusion,
    judged_at,
    measure,
    transition_hint,
    verdict,
)
from dmu_migrate.training.transition import fuse_gallery, fuse_query, make_transition

runner = CliRunner()


def cli(*args: str) -> Result:
    return runner.invoke(app, list(args))


def clustered(n_classes: int, per_class: int, dim: int, noise: float, seed: int) -> tuple:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    labels = np.repeat(np.arange(n_classes), per_class)
    return centres[labels] + noise * rng.normal(size=(len(labels), dim)), labels


def test_measure_and_verdict_follow_the_numbers() -> None:
    clean, labels = clustered(40, 4, 16, 0.3, 0)
    noisy = clean + 3.0 * np.random.default_rng(1).normal(size=clean.shape)
    # Old vectors are noisy; new and evolved are clean: the upgrade helps.
    better = measure(noisy, clean, clean, labels)
    assert better["new->evolved"]["R@1"] > better["old->old"]["R@1"]
    assert verdict(better, "t").deploy is True and verdict(better, "t").line.startswith("deploy:")
    # Evolved vectors worse than the old ones: the gate must say no, with both numbers.
    worse = measure(clean, clean, noisy, labels)
    result = verdict(worse, "t")
    assert result.deploy is False
    assert f"{100 * worse['old->old']['R@1']:.1f}" in result.line
    with pytest.raises(QualityGateError, match="--accept-regression"):
        check_gate("a", worse)
    unjudged = verdict(None, "validated at training of 'a'")
    assert unjudged.deploy is None and "no figures were validated at training" in unjudged.line


def test_a_refusal_points_at_the_transition_mode_only_where_it_was_validated_above() -> None:
    figures = {"old->old": {"R@1": 0.9}, "new->evolved": {"R@1": 0.5}}
    above = {"settings": figures, "fusion": {"R@1": 0.95, "a": 0.5, "b": 0.5}}
    hint = transition_hint(above, "adapters/a")
    assert hint is not None and "95.0 > old->old 90.0" in hint
    assert "dmu-migrate transition --adapter adapters/a" in hint
    with pytest.raises(
        QualityGateError, match="transition --adapter adapters/a.*--accept-regression"
    ):
        check_gate("a", figures, hint)
    below = {"settings": figures, "fusion": {"R@1": 0.9, "a": 0.5, "b": 0.5}}
    assert transition_hint(below, "adapters/a") is None  # a tie does not beat the floor
    assert transition_hint({"settings": figures}, "adapters/a") is None
    assert transition_hint(None, "adapters/a") is None


def test_fusion_weights_recover_the_better_half() -> None:
    clean, labels = clustered(40, 4, 16, 0.3, 0)
    noisy = clean + 3.0 * np.random.default_rng(1).normal(size=clean.shape)
    # Only the old half knows the classes: the fitted weight leans on it.
    assert fit_fusion(clean, noisy, noisy, labels)["a"] >= 0.7
    assert fit_fusion(noisy, clean, clean, labels)["a"] <= 0.3


def test_training_records_the_gate_figures(artifact: Artifact) -> None:
    q = artifact.manifest.quality
    assert q["held_out"] == "rows" and q["rows"] > 0  # digits: ten classes, rows held out
    for setting in ("old->old", "new->old", "new->evolved", "new->mixed", "new->new"):
        assert 0.0 <= q["settings"][setting]["R@1"] <= 1.0
    crowd = q["distractors"]  # the training table's other rows (tests/test_distractors.py)
    where = judged_at("held-out identities", crowd["count"], crowd["source"])
    assert q["verdict"] == verdict(q["settings"], where).line
    assert q["fusion"]["a"] + q["fusion"]["b"] == pytest.approx(1.0)


def regressed(artifact: Artifact, root: Path, fused: float = 0.8) -> Artifact:
    """A copy of the artifact whose validated figures put new->evolved below old->old
    (and the transition mode at ``fused``)."""
    copy = root / f"regressed-{fused}"
    shutil.copytree(artifact.path, copy)
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["quality"]["settings"]["old->old"]["R@1"] = 0.9
    manifest["quality"]["settings"]["new->evolved"]["R@1"] = 0.5
    manifest["quality"]["fusion"]["R@1"] = fused
    (copy / MANIFEST).write_text(json.dumps(manifest))
    return load_artifact(copy)


def test_evolve_refuses_a_regression_and_writes_nothing(
    gallery: Gallery, artifact: Artifact, tmp_path: Path
) -> None:
    bad = regressed(artifact, tmp_path)
    args = [
        "evolve",
        "--collection",
        "digits",
        "--adapter",
        str(bad.path),
        "--uri",
        str(gallery.db),
    ]
    refused = cli(*args)
    assert_clean_error(refused, 6, "would make search worse", "50.0", "90.0", "--accept-regression")
    assert "transition" not in refused.output  # fused 80.0 does not beat old->old either
    client = MilvusClient(str(gallery.db))
    assert not client.has_collection("digits__v2")
    assert client.describe_alias("digits")["collection_name"] == "digits__v1"
    assert not client.has_collection("dmu_ledger") or not client.query(
        "dmu_ledger", filter="", output_fields=["*"], limit=10
    )
    client.close()

    accepted = cli(*args, "--accept-regression")
    assert accepted.exit_code == 0, accepted.output
    client = MilvusClient(str(gallery.db))
    assert client.describe_alias("digits")["collection_name"] == "digits__v2"
    client.close()


def test_a_refused_upgrade_names_the_transition_mode_when_it_beats_the_floor(
    gallery: Gallery, artifact: Artifact, tmp_path: Path
) -> None:
    bad = regressed(artifact, tmp_path, fused=0.95)
    refused = cli(
        "evolve", "--collection", "digits", "--adapter", str(bad.path), "--uri", str(gallery.db)
    )
    assert_clean_error(
        refused, 6, "fused 95.0 > old->old 90.0", f"dmu-migrate transition --adapter {bad.path}"
    )
    client = MilvusClient(str(gallery.db))
    assert not client.has_collection("digits__v2")
    client.close()


def test_evaluate_ends_with_a_verdict_and_scores_the_transition(
    digits: Digits, artifact: Artifact
) -> None:
    result = cli("evaluate", str(digits.eval_path), "--adapter", str(artifact.path), "--no-tar")
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(("deploy: new->evolved", "do not deploy: new->evolved"))
    assert "eval.parquet" in last
    report = json.loads(
        cli("evaluate", str(digits.eval_path), "--adapter", str(artifact.path), "--json").output
    )
    assert report["verdict"] == last
    # The sixth setting: [a q_old ; b q_new] against [o ; psi(o)].
    assert "fused" in report["settings"]
    fused = report["settings"]["fused"]["R@1"]
    assert fused >= min(s["R@1"] for s in report["settings"].values())


def test_transition_artifacts_store_both_halves_and_exit_to_psi(
    digits: Digits, artifact: Artifact, gallery: Gallery, tmp_path: Path
) -> None:
    made = make_transition(artifact.path, tmp_path)
    assert artifact.new_model_path is not None and made.transition.new_model_path is not None
    t, e = made.transition.manifest, made.exit.manifest
    m = artifact.manifest
    assert (t.from_version, t.to_version, t.new_dim) == ("v1", "v2_fused", m.old_dim + m.new_dim)
    assert (e.from_version, e.to_version, e.new_dim) == ("v2_fused", "v2", m.new_dim)

    old = digits.old_te[:50]
    psi = OnnxModel(artifact.adapter_path)(old)
    stored = OnnxModel(made.transition.adapter_path)(old)
    np.testing.assert_allclose(stored, fuse_gallery(old, psi), atol=1e-5)
    np.testing.assert_allclose(OnnxModel(made.exit.adapter_path)(stored), psi, atol=1e-5)
    # The query encoder takes [q_old ; q_new] side by side; one inner product then
    # scores a cos(q_old, o) + b cos(q_new, psi(o)), up to one positive factor per query.
    new = OnnxModel(artifact.new_model_path)(digits.x_te[:50])
    a, b = t.training["fusion"]["a"], t.training["fusion"]["b"]
    query = OnnxModel(made.transition.new_model_path)(np.hstack([old, new]))
    np.testing.assert_allclose(query, fuse_query(old, new, a, b), atol=1e-5)
    scores = query @ stored.T
    expected = a * l2_normalize(old) @ l2_normalize(old).T + b * new @ psi.T
    ratio = scores / np.where(np.abs(expected) > 1e-6, expected, np.nan)
    assert np.nanstd(ratio / np.nanmean(ratio, axis=1, keepdims=True)) < 1e-3

    # Deployed end to end: v1 -> v2_fused behind the alias, then out to v2.
    common = ["--collection", "digits", "--uri", str(gallery.db)]
    first = cli("evolve", *common, "--adapter", str(made.transition.path))
    assert first.exit_code == 0, first.output
    rows = read_all(gallery.db, "digits__v2_fused")
    assert {r["dmu_version"] for r in rows.values()} == {"v2_fused"}
    assert len(next(iter(rows.values()))["vector"]) == m.old_dim + m.new_dim
    out = cli("evolve", *common, "--adapter", str(made.exit.path))
    assert out.exit_code == 0, out.output
    client = MilvusClient(str(gallery.db))
    assert client.describe_alias("digits")["collection_name"] == "digits__v2"
    client.close()
    final = read_all(gallery.db, "digits__v2")
    ids = sorted(final)[:20]
    by_id = dict(zip(gallery.ids.tolist(), gallery.vectors, strict=True))
    got = np.array([final[i]["vector"] for i in ids], np.float32)
    want = OnnxModel(artifact.adapter_path)(np.array([by_id[i] for i in ids], np.float32))
    np.testing.assert_allclose(got, want, atol=1e-5)
