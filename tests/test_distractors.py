"""The gate at the gallery's real size: distractors beside the held-out gallery, counted, never
a hit, read from the training table, a Parquet or a collection; and the adapter's ceiling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from galleries import Digits, Gallery
from helpers import assert_clean_error
from pymilvus import DataType, MilvusClient
from typer.testing import CliRunner

from dmu_migrate.artifact import Artifact
from dmu_migrate.ceiling import gap_closed
from dmu_migrate.cli import app
from dmu_migrate.data import read_table, write_table
from dmu_migrate.distractors import NO_LABEL, Distractors, from_parquet, pool
from dmu_migrate.evaluation import evaluate
from dmu_migrate.metrics import retrieval_scores
from dmu_migrate.quality import judged_at, verdict
from dmu_migrate.training.trainer import TrainConfig
from dmu_migrate.training.upgrade import train_upgrade

runner = CliRunner()
GATED = ("old->old", "new->old", "new->evolved", "fused")


def clustered(n_classes: int, per_class: int, dim: int, noise: float, seed: int) -> tuple:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    labels = np.repeat(np.arange(n_classes), per_class)
    return centres[labels] + noise * rng.normal(size=(len(labels), dim)), labels


def test_distractors_lower_or_keep_recall_and_never_count_as_hits() -> None:
    clean, labels = clustered(30, 3, 8, 0.4, 0)
    others, _ = clustered(50, 4, 8, 0.4, 1)
    alone = retrieval_scores(clean, labels, clean, labels, leave_one_out=True)
    crowded = retrieval_scores(clean, labels, clean, labels, leave_one_out=True, distractors=others)
    assert crowded.recall[1] <= alone.recall[1] and crowded.recall[5] <= alone.recall[5]
    assert crowded.mean_ap <= alone.mean_ap and crowded.queries == alone.queries
    # A copy of each query is its best possible match: unlabelled it takes the top spot from
    # every relevant item; with the query's own label it is left out, not a hit (the copies
    # of other items are impostors that tie with those items: top-1 cannot change).
    foreign = retrieval_scores(clean, labels, clean, labels, leave_one_out=True, distractors=clean)
    assert foreign.recall[1] == 0.0
    same = retrieval_scores(
        clean,
        labels,
        clean,
        labels,
        leave_one_out=True,
        distractors=clean,
        distractor_labels=labels,
    )
    assert same.recall[1] == alone.recall[1]


def test_the_pool_drops_held_out_items_and_codes_labels_as_text() -> None:
    held, _ = clustered(5, 2, 4, 0.3, 0)
    others, _ = clustered(4, 2, 4, 0.3, 1)
    # The held-out rows come back (by vector, as a read-back copy does) and by id.
    old = np.vstack([held[:3] * 2.0, others]).astype(np.float32)  # same direction, other norm
    ids = np.array(["h0", "h1", "h2", *[f"o{i}" for i in range(7)], "h9"], dtype=object)
    labels = np.array([0, 1, 2, "3", 3, "x", None, 4, 4, 4, 1], dtype=object)
    held_ids = np.array(["h0", "h1", "h2", "h3", "h4", "h5", "h6", "h7", "h8", "h9"], dtype=object)
    got = pool(Distractors(old, labels, ids, "t"), held, held_ids, np.array([1, 3, 4]))
    assert got.excluded == 4 and got.count == 7  # three by vector, one by id
    # "3" and 3 are one label (code 1 of classes [1, 3, 4]); unknown ones never match.
    assert got.labels.tolist() == [1, 1, NO_LABEL, NO_LABEL, 2, 2, 2]


def test_the_gate_records_how_many_distractors_each_figure_saw(artifact: Artifact) -> None:
    q = artifact.manifest.quality
    pool_seen = q["distractors"]
    rows = len(read_table(artifact.manifest.training["table"], need_x=False))
    # Digits hold out rows: every other row of the training table is a distractor.
    assert pool_seen["source"] == "the training table" and pool_seen["count"] == rows - q["rows"]
    for setting in ("old->old", "new->old", "new->evolved"):
        assert pool_seen["settings"][setting] == pool_seen["count"]
    assert pool_seen["settings"]["new->new"] == 0 and pool_seen["settings"]["new->mixed"] == 0
    assert "raw items" in pool_seen["note"]
    where = judged_at("held-out identities", pool_seen["count"], pool_seen["source"])
    assert q["verdict"] == verdict(q["settings"], where).line
    assert f"+ {pool_seen['count']:,} distractors" in q["verdict"]


def test_evaluate_scores_with_the_training_table_and_counts_it(
    digits: Digits, artifact: Artifact
) -> None:
    crowded = evaluate(digits.eval_path, artifact, fars=(), backfill_curve=False)
    alone = evaluate(digits.eval_path, artifact, fars=(), backfill_curve=False, distractors="none")
    train_rows = len(read_table(digits.train_path, need_x=False))
    d = crowded.distractors
    assert d["source"] == "the training table" and d["count"] == train_rows
    assert d["excluded_as_held_out"] == 0
    for setting in GATED:
        assert d["settings"][setting] == train_rows
        assert crowded.scores[setting].recall[1] <= alone.scores[setting].recall[1]
    assert crowded.scores["new->evolved"].recall[1] < alone.scores["new->evolved"].recall[1] or (
        crowded.scores["old->old"].recall[1] < alone.scores["old->old"].recall[1]
    )
    for setting in ("new->new", "new->mixed"):
        assert d["settings"][setting] == 0
        assert crowded.scores[setting] == alone.scores[setting]
    assert alone.distractors["count"] == 0 and alone.distractors["source"] == "none"
    assert f"+ {train_rows:,} distractors" in crowded.verdict.line


def test_distractors_from_a_parquet_leave_out_the_evaluated_items(
    tmp_path: Path, digits: Digits, artifact: Artifact
) -> None:
    train = read_table(digits.train_path, need_x=False)
    labels = train.classes[train.labels]
    # A sample of the collection as `sample` writes it: it holds the evaluated items too.
    path = tmp_path / "sample.parquet"
    write_table(
        path,
        {
            "id": np.arange(len(labels) + len(digits.y_te)),
            "old": np.vstack([train.old, digits.old_te]),
            "label": np.concatenate([labels, digits.y_te]),
        },
    )
    given = evaluate(
        digits.eval_path, artifact, fars=(), backfill_curve=False, distractors=from_parquet(path)
    )
    default = evaluate(digits.eval_path, artifact, fars=(), backfill_curve=False)
    assert given.distractors["excluded_as_held_out"] == len(digits.y_te)
    assert given.distractors["count"] == len(labels)
    for setting in GATED:
        assert given.scores[setting] == default.scores[setting]
    result = runner.invoke(
        app,
        [
            "evaluate",
            str(digits.eval_path),
            "--adapter",
            str(artifact.path),
            "--distractors",
            str(path),
            "--no-backfill-curve",
            "--no-tar",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["distractors"]["count"] == len(labels)
    assert shown["distractors"]["source"] == f"'{path}'"


def lite_collection(db: Path, name: str, old: np.ndarray, labels: np.ndarray) -> None:
    client = MilvusClient(str(db))
    try:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=old.shape[1])
        schema.add_field("label", DataType.INT64)
        index = client.prepare_index_params()
        index.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="COSINE")
        client.create_collection(name, schema=schema, index_params=index)
        rows = [
            {"id": i, "vector": v.tolist(), "label": int(c)}
            for i, (v, c) in enumerate(zip(old, labels, strict=True))
        ]
        client.insert(name, rows)
    finally:
        client.close()


def test_distractors_from_a_milvus_lite_collection(
    tmp_path: Path, digits: Digits, artifact: Artifact, gallery: Gallery
) -> None:
    train = read_table(digits.train_path, need_x=False)
    lite_collection(gallery.db, "others", train.old, train.classes[train.labels])
    args = ["evaluate", str(digits.eval_path), "--adapter", str(artifact.path)]
    args += ["--distractors-uri", str(gallery.db), "--no-backfill-curve", "--no-tar", "--json"]
    result = runner.invoke(app, [*args, "--distractors", "others"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    default = evaluate(digits.eval_path, artifact, fars=(), backfill_curve=False)
    assert shown["distractors"]["count"] == len(train.old)
    assert shown["distractors"]["source"] == "collection 'others'"
    for setting in GATED:
        assert shown["settings"][setting] == default.scores[setting].as_dict()
    # The collection of the evaluated gallery itself: every item is held out, none left.
    result = runner.invoke(app, [*args, "--distractors", "digits"])
    assert result.exit_code == 0, result.output
    own = json.loads(result.output)["distractors"]
    assert own["count"] == 0 and own["excluded_as_held_out"] == len(gallery.ids)
    refused = runner.invoke(app, [*args, "--distractors", "training"])
    assert_clean_error(refused, 2, "--distractors COLLECTION")


def test_the_ceiling_in_json_and_table(digits: Digits, artifact: Artifact) -> None:
    report = evaluate(digits.eval_path, artifact, fars=(), backfill_curve=False)
    assert report.ceiling is not None and report.ceiling.form == "affine"
    top = report.ceiling.scores
    closed = gap_closed(report.scores["new->evolved"], report.scores["old->old"], top)
    assert report.ceiling.closed == closed
    r1 = report.scores
    expected = (r1["new->evolved"].recall[1] - r1["old->old"].recall[1]) / (
        top.recall[1] - r1["old->old"].recall[1]
    )
    assert closed["R@1"] == pytest.approx(expected)
    assert report.distractors["settings"]["ceiling"] == report.distractors["count"]
    args = ["evaluate", str(digits.eval_path), "--adapter", str(artifact.path), "--no-tar"]
    shown = json.loads(runner.invoke(app, [*args, "--json", "--no-backfill-curve"]).output)
    ceiling = shown["ceiling"]
    assert ceiling["label"] == "ceiling (oracle)" and "no deployment has" in ceiling["fitted_on"]
    assert ceiling["scores"]["R@1"] == pytest.approx(top.recall[1])
    assert ceiling["gap_closed"]["R@1"] == pytest.approx(expected)
    text = runner.invoke(app, [*args, "--no-backfill-curve"]).output
    assert "ceiling (oracle)" in text and "ceiling gap closed" in text
    assert "distractors from the training table" in text and "raw" in text
    off = evaluate(digits.eval_path, artifact, fars=(), backfill_curve=False, ceiling=False)
    assert off.ceiling is None and off.as_dict()["ceiling"] is None


def decoy_upgrade(root: Path) -> tuple[Path, Path, np.ndarray]:
    """An adapter-only upgrade whose new space drops eight noise dimensions of the old one,
    and decoys: copies of the items with those dimensions blown up. The old model sees
    the decoys far from every item; psi maps each onto its item's new vector."""
    clean, labels = clustered(60, 4, 8, 0.3, 0)
    rng = np.random.default_rng(2)
    old = np.hstack([clean, 0.5 * rng.normal(size=clean.shape)]).astype(np.float32)
    new = np.hstack([clean, np.zeros_like(clean)]).astype(np.float32)
    table = root / "pairs.parquet"
    write_table(table, {"label": labels, "old": old, "new": new})
    decoys = np.hstack([clean, 4.0 * rng.normal(size=clean.shape)]).astype(np.float32)
    path = root / "decoys.parquet"
    write_table(path, {"old": decoys})  # unlabelled: every decoy is an impostor
    return table, path, old


def test_the_gate_refuses_when_distractors_turn_the_verdict(tmp_path: Path) -> None:
    table, decoys, old = decoy_upgrade(tmp_path)
    config = TrainConfig(method="adapter", adapter_kind="affine", seed=0)
    small = train_upgrade(table, tmp_path / "a", "small", config, distractors="none")
    assert small.artifact.manifest.quality["verdict"].startswith("deploy:")
    args = ["train", str(table), "--name", "big", "--out-dir", str(tmp_path / "a")]
    args += ["--method", "adapter", "--adapter-kind", "affine", "--seed", "0"]
    result = runner.invoke(app, [*args, "--distractors", str(decoys)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())  # as one line, however the terminal wraps it
    assert "do not deploy" in said and f"+ {len(old):,} distractors" in said
    big = json.loads((tmp_path / "a" / "big" / "manifest.json").read_text())["quality"]
    assert big["distractors"]["settings"]["new->evolved"] == len(old)
    alone = small.artifact.validated
    assert alone is not None
    assert big["settings"]["new->evolved"]["R@1"] < alone["new->evolved"]["R@1"]
    # The collection it would deploy to: evolve refuses before writing anything.
    db = tmp_path / "store.db"
    lite_collection(db, "items", old, np.zeros(len(old), dtype=np.int64))
    refused = runner.invoke(
        app,
        ["evolve", "--collection", "items", "--adapter", str(tmp_path / "a" / "big")]
        + ["--uri", str(db)],
    )
    assert_clean_error(refused, 6, "would make search worse", f"{len(old):,} distractors")
    client = MilvusClient(str(db))
    assert client.list_collections() == ["items"]
    client.close()
    assert pq.read_schema(decoys).names == ["old"]


def test_bad_distractors_are_one_line(tmp_path: Path, digits: Digits, artifact: Artifact) -> None:
    args = ["evaluate", str(digits.eval_path), "--adapter", str(artifact.path), "--no-tar"]
    missing = runner.invoke(app, [*args, "--distractors", str(tmp_path / "nope.parquet")])
    assert_clean_error(missing, 2, "nope.parquet' is not a file", "'none'")
    narrow = tmp_path / "narrow.parquet"
    write_table(narrow, {"old": np.ones((4, 5), np.float32)})
    refused = runner.invoke(app, [*args, "--distractors", str(narrow)])
    assert_clean_error(refused, 2, "are 5-d but the held-out old vectors are", "same old model")
    bare = tmp_path / "bare.parquet"
    write_table(bare, {"vec": np.ones((4, 5), np.float32)})
    refused = runner.invoke(app, [*args, "--distractors", str(bare)])
    assert_clean_error(refused, 2, "has no column 'old'")
