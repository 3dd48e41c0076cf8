"""The calibrated deploy artifact (training/calibrated.py) end to end: evolve writes
[psi(o) ; k], backfill writes item_model.onnx's [f ; 0], and one search of the store with
new_model.onnx's [q ; 1] ranks as the calibrated score does, on the digits gallery in
Milvus Lite."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from backends import Backend
from galleries import Digits, Gallery, read_all, seed_gallery
from migrations import run
from typer.testing import CliRunner

from dmu_migrate import calibration
from dmu_migrate.api.store import opened
from dmu_migrate.artifact import MANIFEST, NEW_MODEL, Artifact, load_artifact
from dmu_migrate.cli import app
from dmu_migrate.data import write_table
from dmu_migrate.errors import InputError
from dmu_migrate.evaluation import evaluate
from dmu_migrate.evolve.backfill_input import VectorTable
from dmu_migrate.evolve.backfill_write import backfill
from dmu_migrate.metrics import l2_normalize
from dmu_migrate.onnx_model import OnnxModel
from dmu_migrate.training.calibrated import make_calibrated

runner = CliRunner()
OFFSET = 0.1  # larger than the digits fit, so that the extra dimension decides rankings


def with_offset(artifact: Artifact, root: Path, offset: float, drop_encoder: bool = False) -> Path:
    target = root / "base"
    shutil.copytree(artifact.path, target)
    raw = json.loads((target / MANIFEST).read_text())
    raw["calibration"] = {"offset": offset}
    if drop_encoder:  # as an adapter-only upgrade ships it
        (target / NEW_MODEL).unlink()
        del raw["files"][NEW_MODEL]
        raw["input_dim"] = None
    (target / MANIFEST).write_text(json.dumps(raw))
    return target


def test_the_derived_models_append_the_constants(artifact: Artifact, tmp_path: Path) -> None:
    base = load_artifact(with_offset(artifact, tmp_path, OFFSET))
    made = make_calibrated(base.path, tmp_path / "out", metric="ip")
    m = made.manifest
    assert (
        made.path.name == "digits-v2-calibrated"
        and m.to_version == f"{base.manifest.to_version}_cal"
    )
    assert m.new_dim == base.manifest.new_dim + 1 and m.metric == "ip"
    assert made.item_model_path is not None and made.offset == 0.0  # a deploy form, not refitted
    old = np.random.default_rng(0).normal(size=(7, m.old_dim)).astype(np.float32)
    evolved = OnnxModel(made.adapter_path)(old)
    np.testing.assert_allclose(evolved[:, :-1], OnnxModel(base.adapter_path)(old), atol=1e-6)
    np.testing.assert_allclose(evolved[:, -1], OFFSET, atol=1e-7)  # ip: k = c
    assert base.new_model_path is not None and made.new_model_path is not None
    x = np.random.default_rng(1).normal(size=(5, m.input_dim or 0)).astype(np.float32)
    f = OnnxModel(base.new_model_path)(x)
    np.testing.assert_allclose(OnnxModel(made.new_model_path)(x), np.hstack([f, np.ones((5, 1))]))
    np.testing.assert_allclose(OnnxModel(made.item_model_path)(x), np.hstack([f, np.zeros((5, 1))]))


def test_an_adapter_only_base_gets_encoders_of_the_new_embedding(
    artifact: Artifact, tmp_path: Path
) -> None:
    made = make_calibrated(with_offset(artifact, tmp_path, OFFSET, drop_encoder=True))
    assert made.manifest.input_dim == made.manifest.new_dim - 1
    e = np.random.default_rng(2).normal(size=(4, made.manifest.input_dim)).astype(np.float32)
    assert made.new_model_path is not None and made.item_model_path is not None
    want = l2_normalize(np.hstack([l2_normalize(e), np.ones((4, 1), np.float32)]))  # cosine
    np.testing.assert_allclose(OnnxModel(made.new_model_path)(e), want, atol=1e-6)


def test_nothing_to_calibrate_is_refused(
    artifact: Artifact, digits: Digits, tmp_path: Path
) -> None:
    with pytest.raises(InputError, match="offset 0") as err:
        make_calibrated(with_offset(artifact, tmp_path, 0.0))
    assert "\n" not in str(err.value) and not (tmp_path / "digits-v2-calibrated").exists()
    made = make_calibrated(with_offset(artifact, tmp_path / "b", OFFSET))
    with pytest.raises(InputError, match="derived"):
        make_calibrated(made.path, tmp_path / "again")
    with pytest.raises(InputError, match="evaluate the base artifact"):
        evaluate(digits.eval_path, made)


def test_one_store_search_ranks_by_the_calibrated_score(
    gallery: Gallery, digits: Digits, artifact: Artifact, tmp_path: Path
) -> None:
    made = make_calibrated(with_offset(artifact, tmp_path, OFFSET))  # the gallery is COSINE
    db = str(gallery.db)
    evolved = runner.invoke(
        app, ["evolve", "--collection", "digits", "--adapter", str(made.path), "--uri", db]
    )
    assert evolved.exit_code == 0, evolved.output
    # 30% of the items re-embedded natively, through the item encoder.
    x_gallery = digits.x_te[~digits.is_query]
    native = np.random.default_rng(0).permutation(len(gallery.ids))[: round(0.3 * len(gallery.ids))]
    assert made.item_model_path is not None and made.new_model_path is not None
    items = OnnxModel(made.item_model_path)(x_gallery[native])
    write_table(tmp_path / "native.parquet", {"id": gallery.ids[native], "vector": items})
    args = ["--collection", "digits", "--uri", db, "--input", str(tmp_path / "native.parquet")]
    wrote = runner.invoke(app, ["backfill", *args])
    assert wrote.exit_code == 0, wrote.output

    target = "digits__" + made.manifest.to_version
    rows = read_all(gallery.db, target)
    stored = np.asarray([rows[int(i)]["vector"] for i in gallery.ids], np.float32)
    is_native = np.isin(np.arange(len(gallery.ids)), native)
    # Unit vectors for a cosine collection: [psi(o) ; k] / sqrt(1 + k^2) ends in c itself.
    np.testing.assert_allclose(stored[:, -1], np.where(is_native, 0.0, OFFSET), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1.0, atol=1e-5)

    # The intended score: cosine of the plain vectors, plus the offset for evolved items
    # (scaled as the cosine encoding scales them).
    base = load_artifact(tmp_path / "base")
    assert base.new_model_path is not None
    q = OnnxModel(base.new_model_path)(digits.x_te[digits.is_query])
    plain = l2_normalize(stored[:, :-1])
    slope = np.sqrt(1 - OFFSET**2)
    intended = np.where(is_native[None, :], q @ plain.T, slope * (q @ plain.T) + OFFSET)
    best = np.sort(intended, axis=1)
    clear = best[:, -1] - best[:, -2] > 1e-4  # no near-tie for the top spot
    with opened(db, None) as store:
        hits = store.search(target, "vector", OnnxModel(made.new_model_path)(q_input(digits)), 1)
    got = np.asarray([h[0] for h in hits.ids])
    want = gallery.ids[np.argmax(intended, axis=1)]
    assert clear.sum() > 0.9 * len(q)
    np.testing.assert_array_equal(got[clear], want[clear])
    # Without the offset the top spot differs for some query: the extra dimension decides.
    uncalibrated = gallery.ids[np.argmax(q @ plain.T, axis=1)]
    assert (uncalibrated != want).any()


def q_input(digits: Digits) -> np.ndarray:
    return digits.x_te[digits.is_query]


def test_the_command_writes_the_calibrated_artifact(artifact: Artifact, tmp_path: Path) -> None:
    base = with_offset(artifact, tmp_path, OFFSET)
    shown = runner.invoke(app, ["calibrate", "--adapter", str(base), "--metric", "l2"])
    assert shown.exit_code == 0, shown.output
    made = load_artifact(tmp_path / "digits-v2-calibrated")
    assert f"{made.path}" in " ".join(shown.stdout.split()) and "+0.10" in shown.stdout
    assert made.manifest.training["stored_constant"] == calibration.stored_constant(OFFSET, "l2")
    again = runner.invoke(app, ["calibrate", "--adapter", str(base), "--json"])
    assert again.exit_code == 2 and "--overwrite" in again.output  # it exists: one line
    again = runner.invoke(app, ["calibrate", "--adapter", str(base), "--json", "--overwrite"])
    assert again.exit_code == 0 and json.loads(again.stdout)["metric"] == "cosine"
    wrong = runner.invoke(app, ["calibrate", "--adapter", str(base), "--metric", "hamming"])
    assert wrong.exit_code == 2 and "metric 'hamming'" in wrong.output


def test_every_store_holds_the_extra_dimension_and_searches_by_it(
    backend: Backend, digits: Digits, artifact: Artifact, tmp_path: Path
) -> None:
    """The same scheme on each store kind (Milvus Lite, the 2.3 server, Qdrant, Parquet),
    through the library: evolve, backfill from a table, one search of the store."""
    made = make_calibrated(with_offset(artifact, tmp_path, OFFSET))
    source, alias, ids = seed_gallery(backend, digits)
    store = backend.open_store()
    done = run(store, alias, [made])
    assert done.target is not None
    x = digits.x_te[: len(ids)]
    native = np.random.default_rng(1).permutation(len(ids))[: round(0.3 * len(ids))]
    assert made.item_model_path is not None and made.new_model_path is not None
    items = OnnxModel(made.item_model_path)(x[native])
    write_table(tmp_path / "native.parquet", {"id": ids[native], "vector": items})
    backfill(store, alias, VectorTable(tmp_path / "native.parquet"))

    rows = backend.read_all(done.target)
    stored = np.asarray([rows[i][backend.vector_name] for i in ids.tolist()], np.float32)
    is_native = np.isin(np.arange(len(ids)), native)
    np.testing.assert_allclose(stored[:, -1], np.where(is_native, 0.0, OFFSET), atol=1e-6)
    # Queries: other digits than the gallery's, through the query encoder.
    x_q = digits.x_te[len(ids) : len(ids) + 60]
    q = OnnxModel(made.new_model_path)(x_q)
    plain = l2_normalize(stored[:, :-1])
    cos = q[:, :-1] @ plain.T
    intended = np.where(is_native[None, :], cos, np.sqrt(1 - OFFSET**2) * cos + OFFSET)
    best = np.sort(intended, axis=1)
    clear = best[:, -1] - best[:, -2] > 1e-4
    hits = store.search(done.target, done.target_field or backend.vector_name, q, 1)
    got = np.asarray([h[0] for h in hits.ids])
    assert clear.sum() > 0.9 * len(q)
    np.testing.assert_array_equal(got[clear], ids[np.argmax(intended, axis=1)][clear])
