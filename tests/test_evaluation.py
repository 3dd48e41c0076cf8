"""evaluate(): the five settings, the mixed gallery, adapter-only artifacts, the reference,
the derived figures and the chart, on the real digits upgrade of conftest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from galleries import Digits
from typer.testing import CliRunner

from dmu_migrate.artifact import NEW_MODEL, Artifact, load_artifact, write_manifest
from dmu_migrate.cli import app
from dmu_migrate.errors import InputError
from dmu_migrate.evaluation import SETTINGS, evaluate, mixed_gallery
from dmu_migrate.onnx_model import OnnxModel

runner = CliRunner()


def adapter_only(artifact: Artifact, root: Path) -> Artifact:
    """The same adapter without its encoder, as an adapter-only upgrade ships it."""
    target = root / "adapter-only"
    shutil.copytree(artifact.path, target)
    (target / NEW_MODEL).unlink()
    manifest = artifact.manifest
    manifest_copy = type(manifest)(**{**manifest.__dict__, "input_dim": None})
    write_manifest(target, manifest_copy)
    return load_artifact(target)


def with_new_column(digits: Digits, artifact: Artifact, path: Path, name: str = "new") -> Path:
    """The eval table plus the encoder's embeddings as a precomputed column."""
    assert artifact.new_model_path is not None
    table = pq.read_table(digits.eval_path)
    new = OnnxModel(artifact.new_model_path)(digits.x_te)
    column = pa.FixedSizeListArray.from_arrays(pa.array(new.ravel()), new.shape[1])
    pq.write_table(table.append_column(name, column), path)
    return path


def test_every_setting_with_tar(digits: Digits, artifact: Artifact) -> None:
    report = evaluate(digits.eval_path, artifact)
    assert tuple(report.scores) == (*SETTINGS, "fused")  # the artifact carries fusion weights
    assert report.protocol == "query/gallery" and report.new_source == "new_model.onnx"
    assert report.queries == int(digits.is_query.sum())
    for scores in report.scores.values():
        values = scores.as_dict()
        assert set(values) == {"R@1", "R@5", "mAP", "TAR@FAR=1e-03", "TAR@FAR=1e-04"}
        assert 0.0 <= values["TAR@FAR=1e-04"] <= values["TAR@FAR=1e-03"] <= 1.0
    s = {k: v.as_dict() for k, v in report.scores.items()}
    assert s["new->new"]["R@1"] > s["old->old"]["R@1"]
    # Half natively new: between the evolved and the fully re-embedded gallery.
    lo, hi = sorted((s["new->evolved"]["mAP"], s["new->new"]["mAP"]))
    assert lo - 0.02 <= s["new->mixed"]["mAP"] <= hi + 0.02
    # No reference: only the compatibility figure.
    assert report.derived.gain_captured == {} and report.derived.degradation == {}
    assert report.derived.compatible["R@1"] == (s["new->old"]["R@1"] > s["old->old"]["R@1"])


def test_mixed_fraction_ends(digits: Digits, artifact: Artifact) -> None:
    # new->mixed has no distractors (its native items need raw data): compare it with the
    # other settings on the same gallery.
    none, every = (
        evaluate(digits.eval_path, artifact, mixed_fraction=f, fars=(), distractors="none")
        for f in (0.0, 1.0)
    )
    assert none.scores["new->mixed"] == none.scores["new->evolved"]
    assert every.scores["new->mixed"] == every.scores["new->new"]
    with pytest.raises(InputError, match="--mixed-fraction"):
        evaluate(digits.eval_path, artifact, mixed_fraction=1.5)


def test_mixed_gallery_is_a_seeded_share() -> None:
    evolved, new = np.zeros((10, 2), np.float32), np.ones((10, 2), np.float32)
    a = mixed_gallery(evolved, new, 0.3, seed=7)
    assert int(a[:, 0].sum()) == 3
    np.testing.assert_array_equal(a, mixed_gallery(evolved, new, 0.3, seed=7))
    assert not np.array_equal(a, mixed_gallery(evolved, new, 0.3, seed=8))


def test_reference_gives_gain_and_degradation(digits: Digits, artifact: Artifact) -> None:
    # The artifact as its own reference: no degradation, and a fully new
    # gallery captures the whole backfill gain.
    report = evaluate(digits.eval_path, artifact, reference=artifact, mixed_fraction=1.0)
    assert report.reference_scores == report.scores["new->new"]
    assert report.derived.degradation["R@1"] == 0.0
    assert report.derived.gain_captured["new->mixed"]["R@1"] == pytest.approx(1.0)
    ev = report.scores["new->evolved"].recall[1]
    old = report.scores["old->old"].recall[1]
    ref = report.reference_scores.recall[1]
    share = report.derived.gain_captured["new->evolved"]["R@1"]
    assert share == pytest.approx((ev - old) / (ref - old))


def test_adapter_only_artifact_reads_the_new_column(
    tmp_path: Path, digits: Digits, artifact: Artifact
) -> None:
    bare = adapter_only(artifact, tmp_path)
    assert bare.new_model_path is None
    table = with_new_column(digits, artifact, tmp_path / "eval_new.parquet", name="emb")
    report = evaluate(table, bare, new_col="emb", fars=())
    full = evaluate(digits.eval_path, artifact, fars=())
    assert report.new_source == "column 'emb'"
    for setting in SETTINGS:
        assert report.scores[setting].as_dict() == pytest.approx(full.scores[setting].as_dict())
    # The full artifact as reference still encodes x for new*->new*.
    ref = evaluate(table, bare, reference=artifact, new_col="emb", fars=())
    assert ref.derived.degradation["mAP"] == pytest.approx(0.0, abs=1e-6)


def test_adapter_only_without_new_column_is_refused(
    tmp_path: Path, digits: Digits, artifact: Artifact
) -> None:
    bare = adapter_only(artifact, tmp_path)
    with pytest.raises(InputError, match="no new_model.onnx and .* no column 'new'"):
        evaluate(digits.eval_path, bare)


def test_new_column_of_the_wrong_size_is_refused(
    tmp_path: Path, digits: Digits, artifact: Artifact
) -> None:
    bare = adapter_only(artifact, tmp_path)
    table = pq.read_table(digits.eval_path)
    x = table.column("x")  # 64-d pixels where 32-d embeddings belong
    pq.write_table(table.append_column("new", x), tmp_path / "bad.parquet")
    with pytest.raises(InputError, match="64-d vectors but artifact .* 32-d"):
        evaluate(tmp_path / "bad.parquet", bare)


def test_cli_reference_json_and_chart(tmp_path: Path, digits: Digits, artifact: Artifact) -> None:
    chart = tmp_path / "report.png"
    args = ["evaluate", str(digits.eval_path), "--adapter", str(artifact.path)]
    result = runner.invoke(app, [*args, "--reference", str(artifact.path), "--plot", str(chart)])
    assert result.exit_code == 0, result.output
    assert "new->mixed" in result.output and "gain new->evolved" in result.output
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 5000
    result = runner.invoke(app, [*args, "--json", "--no-tar", "--mixed-fraction", "0.25"])
    report = json.loads(result.output)
    assert report["mixed_fraction"] == 0.25 and report["reference"] is None
    assert set(report["settings"]["new->new"]) == {"R@1", "R@5", "mAP"}
    assert report["derived"]["gain_captured"] == {}
    assert isinstance(report["derived"]["compatible"]["R@1"], bool)


def test_cli_refuses_a_non_png_chart(tmp_path: Path, digits: Digits, artifact: Artifact) -> None:
    args = ["evaluate", str(digits.eval_path), "--adapter", str(artifact.path)]
    result = runner.invoke(app, [*args, "--plot", str(tmp_path / "chart.jpg")])
    assert result.exit_code == 2 and "error:" in result.output and ".png" in result.output
