"""Calibrated origins: the evolved items' score offset in a mixed gallery, fitted at training,
recorded in the manifest, applied by evaluate and the backfill curve, and its store encoding
(calibration.py), on the real digits upgrade of conftest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from galleries import Digits

from dmu_migrate import backfill_curve, calibration
from dmu_migrate.artifact import MANIFEST, Artifact, load_artifact
from dmu_migrate.data import Columns, read_table
from dmu_migrate.errors import ArtifactError, InputError
from dmu_migrate.evaluation import embed, evaluate, mixed_gallery, split_roles
from dmu_migrate.metrics import l2_normalize, retrieval_scores


def with_calibration(artifact: Artifact, root: Path, calibrated: dict | None) -> Artifact:
    """A copy of the artifact whose manifest records ``calibrated`` (None: no key at all,
    as a manifest written before calibration existed)."""
    target = root / "calibrated"
    shutil.copytree(artifact.path, target)
    raw = json.loads((target / MANIFEST).read_text())
    raw.pop("calibration", None)
    if calibrated is not None:
        raw["calibration"] = calibrated
    (target / MANIFEST).write_text(json.dumps(raw))
    return load_artifact(target)


def unit(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    return l2_normalize(rng.normal(size=(rows, dim)).astype(np.float32))


def test_training_records_the_fitted_offset(artifact: Artifact) -> None:
    fitted = artifact.manifest.calibration
    assert set(fitted) == {"offset", "shares", "draws", "queries", "R@1"}
    assert fitted["offset"] in calibration.OFFSETS and artifact.offset == fitted["offset"]
    assert fitted["shares"] == list(calibration.SHARES) and fitted["queries"] > 0
    # The grid holds 0, so the fitted offset is never below the uncalibrated search.
    assert fitted["R@1"]["calibrated"] >= fitted["R@1"]["uncalibrated"]


def test_a_manifest_without_calibration_searches_as_before(
    digits: Digits, artifact: Artifact, tmp_path: Path
) -> None:
    plain = with_calibration(artifact, tmp_path, None)
    assert plain.offset == 0.0 and plain.manifest.calibration == {}
    report = evaluate(digits.eval_path, plain, fars=(), distractors="none", ceiling=False)
    assert report.calibration == {"offset": 0.0}
    # new->mixed is the plain half-native gallery at today's dimension, as before.
    table = read_table(digits.eval_path, Columns())
    vectors, _ = embed(plain, table)
    q, g, _ = split_roles(table, Columns())
    gallery = mixed_gallery(vectors["evolved"][g], vectors["new"][g], 0.5, 0)
    assert gallery.shape[1] == plain.manifest.new_dim
    want = retrieval_scores(vectors["new"][q], table.labels[q], gallery, table.labels[g])
    assert report.scores["new->mixed"] == want
    assert report.backfill is not None and report.backfill.offset == 0.0


def test_evaluate_scores_new_to_mixed_with_the_recorded_offset(
    digits: Digits, artifact: Artifact, tmp_path: Path
) -> None:
    plain = evaluate(
        digits.eval_path, with_calibration(artifact, tmp_path / "a", None), fars=(), ceiling=False
    )
    shifted = with_calibration(artifact, tmp_path / "b", {"offset": 0.3})
    report = evaluate(digits.eval_path, shifted, fars=(), ceiling=False)
    assert report.calibration["offset"] == 0.3
    # The uncalibrated figure beside it is the plain artifact's new->mixed.
    assert report.calibration["new->mixed uncalibrated"] == plain.scores["new->mixed"].as_dict()
    # Every other setting is untouched; the curve is scored with the offset.
    for setting in ("old->old", "new->old", "new->evolved", "new->new"):
        assert report.scores[setting] == plain.scores[setting]
    assert report.backfill is not None and report.backfill.offset == 0.3
    # With every item native or every item evolved, the offset changes no ranking.
    for share in (0.0, 1.0):
        a, b = (
            evaluate(digits.eval_path, art, mixed_fraction=share, fars=(), ceiling=False)
            for art in (with_calibration(artifact, tmp_path / f"c{share}", None), shifted)
        )
        assert a.scores["new->mixed"].recall == b.scores["new->mixed"].recall
    assert report.as_dict()["calibration"] == report.calibration


def test_the_trained_offset_does_not_lower_a_tenth_native_gallery(
    digits: Digits, artifact: Artifact
) -> None:
    """The offset fitted on the training table's held-out digits, on the eval table."""
    report = evaluate(
        digits.eval_path, artifact, mixed_fraction=0.1, fars=(), ceiling=False, backfill_curve=False
    )
    if artifact.offset == 0.0:
        assert "new->mixed uncalibrated" not in report.calibration
        return
    before = report.calibration["new->mixed uncalibrated"]["R@1"]
    assert report.scores["new->mixed"].recall[1] >= before


def test_calibrated_mixture_is_not_below_uncalibrated_on_held_out_rows(
    digits: Digits, artifact: Artifact
) -> None:
    """The fitted offset on the eval table's gallery at 10% native (random draws)."""
    table = read_table(digits.eval_path, Columns())
    vectors, _ = embed(artifact, table)
    q, g, _ = split_roles(table, Columns())
    args = (vectors["new"][q], table.labels[q], vectors["evolved"][g], vectors["new"][g])
    fitted = calibration.fit_offset(*args, table.labels[g], False, seed=0, shares=(0.1,))
    assert fitted.after >= fitted.before and fitted.queries == len(q)
    # The fast fit agrees with a full ranking of the stored (ip-encoded) vectors.
    rng = np.random.default_rng(0)
    hits = []
    for _ in range(calibration.DRAWS):
        native = rng.permutation(len(g))[: round(0.1 * len(g))]
        stored = calibration.gallery(args[2], args[3], native, fitted.offset, "ip")
        queries = calibration.queries(args[0], fitted.offset)
        s = retrieval_scores(queries, args[1], stored, table.labels[g], ks=(1,))
        hits.append(s.recall[1])
    assert np.mean(hits) == pytest.approx(fitted.after, abs=1e-9)


@pytest.mark.parametrize("metric", calibration.METRICS)
def test_the_stored_constant_gives_the_offset_under_each_metric(metric: str) -> None:
    rng = np.random.default_rng(3)
    q, evolved, native = unit(rng, 40, 16), unit(rng, 60, 16), unit(rng, 60, 16)
    offset = 0.07
    k = calibration.stored_constant(offset, metric)
    qx = calibration.queries(q, offset)
    ex = np.hstack([evolved, np.full((60, 1), k, np.float32)])
    nx = np.hstack([native, np.zeros((60, 1), np.float32)])

    def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if metric == "ip":
            return a @ b.T
        if metric == "l2":  # as a similarity: minus the squared distance, halved
            return -0.5 * ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return l2_normalize(a) @ l2_normalize(b).T

    # The evolved item's score minus a native item's of the same cosine: the offset (up to
    # each query's own constant). Cosine shrinks the evolved scores by sqrt(1 - offset^2).
    slope = np.sqrt(1 - offset**2) if metric == "cosine" else 1.0
    scale = np.sqrt(2.0) if metric == "cosine" else 1.0  # the query's norm in the cosine
    to_evolved, to_native = similarity(qx, ex) * scale, similarity(qx, nx) * scale
    shift = to_native - q @ native.T  # per query: the metric's own constant
    np.testing.assert_allclose(shift, shift[:, :1].repeat(60, 1), atol=1e-5)
    got = to_evolved - shift[:, :1] - slope * (q @ evolved.T)
    np.testing.assert_allclose(got, offset, atol=1e-5)


def test_offset_zero_keeps_vectors_and_dimensions() -> None:
    rng = np.random.default_rng(0)
    q, evolved, new = unit(rng, 5, 8), unit(rng, 9, 8), unit(rng, 9, 8)
    assert calibration.queries(q, 0.0) is q
    plain = calibration.gallery(evolved, new, np.array([1, 4]), 0.0)
    want = evolved.copy()
    want[[1, 4]] = new[[1, 4]]
    np.testing.assert_array_equal(plain, want)
    shifted = calibration.gallery(evolved, new, np.array([1, 4]), 0.1)
    assert shifted.shape == (9, 9) and calibration.queries(q, 0.1).shape == (5, 9)
    assert set(shifted[[1, 4], -1]) == {0.0} and np.all(np.delete(shifted[:, -1], [1, 4]) > 0)


def test_the_curve_with_offset_zero_is_the_plain_curve() -> None:
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(20), 3)
    q, evolved, new = unit(rng, 60, 8), unit(rng, 60, 8), unit(rng, 60, 8)
    order = rng.permutation(60)
    a = backfill_curve.curve(q, labels, evolved, new, labels, order, True)
    b = backfill_curve.curve(q, labels, evolved, new, labels, order, True, offset=0.0)
    assert a == b
    # Everything native or everything evolved: the offset changes nothing.
    c = backfill_curve.curve(q, labels, evolved, new, labels, order, True, (0.0, 1.0), offset=0.2)
    assert c.figures == {m: (v[0], v[-1]) for m, v in a.figures.items()}


def test_fit_offset_finds_the_scale_gap() -> None:
    """Evolved items that score their own identity lower than native ones do: a positive
    offset wins back what the native items of other identities took."""
    rng = np.random.default_rng(5)
    ids, dim = 150, 32
    centres = unit(rng, ids, dim)
    labels = np.repeat(np.arange(ids), 2)
    native = l2_normalize(centres[labels] + 0.6 * unit(rng, len(labels), dim))
    evolved = l2_normalize(centres[labels] + 1.1 * unit(rng, len(labels), dim))
    fitted = calibration.fit_offset(native, labels, evolved, native, labels, True, seed=0)
    assert fitted.offset > 0 and fitted.after > fitted.before


@pytest.mark.parametrize("offset", ["0.1", -0.1, 0.5, True])
def test_a_damaged_offset_is_refused(artifact: Artifact, tmp_path: Path, offset: object) -> None:
    with pytest.raises(ArtifactError, match=r"calibration\.offset") as err:
        with_calibration(artifact, tmp_path, {"offset": offset})
    assert "\n" not in str(err.value)


def test_stored_constant_refuses_what_no_encoding_holds() -> None:
    with pytest.raises(InputError, match="metric 'hamming'"):
        calibration.stored_constant(0.1, "hamming")
    with pytest.raises(InputError, match="outside"):
        calibration.stored_constant(0.6)
