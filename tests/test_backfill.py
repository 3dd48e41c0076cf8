"""Partial backfill: the score train exports, and new->mixed along its order in evaluate,
on the real digits upgrade of conftest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from galleries import Digits
from typer.testing import CliRunner

from dmu_migrate.artifact import BACKFILL_SCORE, Artifact, load_artifact, write_manifest
from dmu_migrate.backfill_curve import BUDGETS, Curve, reach, reach_line
from dmu_migrate.cli import app
from dmu_migrate.evaluation import evaluate
from dmu_migrate.onnx_model import OnnxModel
from dmu_migrate.training.backfill_score import alignment_error
from dmu_migrate.training.export import PARITY_TOLERANCE

runner = CliRunner()


def without_score(artifact: Artifact, root: Path) -> Artifact:
    """The artifact as a version of dmu-migrate before the backfill score wrote it."""
    target = root / "no-score"
    shutil.copytree(artifact.path, target)
    (target / BACKFILL_SCORE).unlink()
    write_manifest(target, artifact.manifest)
    return load_artifact(target)


def test_train_exports_a_score_that_tracks_the_alignment_error(
    digits: Digits, artifact: Artifact
) -> None:
    assert artifact.backfill_score_path is not None
    assert artifact.manifest.parity["backfill_score_max_abs_diff"] <= PARITY_TOLERANCE
    assert artifact.new_model_path is not None
    scores = OnnxModel(artifact.backfill_score_path)(digits.old_te)
    assert scores.shape == (len(digits.old_te), 1)
    # Held-out rows: the score was fitted on training rows only.
    err = alignment_error(
        OnnxModel(artifact.adapter_path)(digits.old_te),
        OnnxModel(artifact.new_model_path)(digits.x_te),
    )
    ranks = np.argsort(np.argsort(scores[:, 0])), np.argsort(np.argsort(err))
    assert np.corrcoef(*ranks)[0, 1] > 0.2


def test_curve_runs_from_evolved_to_new(digits: Digits, artifact: Artifact) -> None:
    # The curve's galleries mix in native items, which distractors (stored old vectors
    # only) cannot have: its end points equal the settings on the same gallery.
    report = evaluate(digits.eval_path, artifact, fars=(), distractors="none")
    assert report.backfill is not None and report.backfill.ranked is not None
    evolved, new = report.scores["new->evolved"], report.scores["new->new"]
    for c in (report.backfill.ranked, report.backfill.random):
        assert c.budgets == BUDGETS
        assert np.isclose(c.figures["R@1"][0], evolved.recall[1])
        assert np.isclose(c.figures["mAP"][-1], new.mean_ap)
    assert report.backfill.line.startswith("ranked order reaches")


def test_older_artifact_without_score_shows_random_order_only(
    tmp_path: Path, digits: Digits, artifact: Artifact
) -> None:
    old = without_score(artifact, tmp_path)
    assert old.backfill_score_path is None
    report = evaluate(digits.eval_path, old, fars=())
    assert report.backfill is not None and report.backfill.ranked is None
    assert "no backfill ranking" in report.backfill.line
    assert report.as_dict()["backfill"]["beats_random"] == {"R@1": None, "mAP": None}  # type: ignore[index]
    assert evaluate(digits.eval_path, old, fars=(), backfill_curve=False).backfill is None


def test_area_share_and_reach_of_a_known_curve() -> None:
    # Values exact in binary, so the shares compare exactly.
    r1 = (0.0, 0.5, 0.96875, 1.0)
    c = Curve("ranked", (0.0, 0.1, 0.3, 1.0), {"R@1": r1, "mAP": (0.5, 0.5, 0.5, 0.5)})
    assert np.isclose(c.area("R@1"), 0.25 * 0.1 + 0.734375 * 0.2 + 0.984375 * 0.7)
    assert c.gain_share("R@1") == r1
    assert reach(c) == (0.96875, 0.3)
    assert reach_line(c) == (
        "ranked order reaches 97% of the full-backfill R@1 gain at 30% re-embedded"
    )
    assert "no gain" in reach_line(c, "mAP")


def test_cli_json_and_line_chart(tmp_path: Path, digits: Digits, artifact: Artifact) -> None:
    chart = tmp_path / "report.png"
    args = ["evaluate", str(digits.eval_path), "--adapter", str(artifact.path), "--no-tar"]
    result = runner.invoke(app, [*args, "--plot", str(chart)])
    assert result.exit_code == 0, result.output
    assert "partial backfill" in result.output and "ranked order reaches" in result.output
    line_chart = tmp_path / "report-backfill.png"
    assert line_chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and line_chart.stat().st_size > 5000
    curves = json.loads(runner.invoke(app, [*args, "--json"]).output)["backfill"]
    assert curves["budgets"] == list(BUDGETS)
    assert set(curves["ranked"]["auc"]) == {"R@1", "mAP"}
    assert len(curves["random"]["R@1"]) == len(BUDGETS)
    assert curves["summary"].startswith("ranked order reaches")
