"""Training methods end to end on real digits: artifacts, ONNX parity, hygiene.

Runs are short (2-4 epochs, narrow networks): these tests check what each
method writes and that seeding, resume and early stopping do what they say,
not how accurate the models get (benchmarks/ measures that).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from galleries import Digits

from dmu_migrate.artifact import Artifact, load_artifact
from dmu_migrate.data import read_table, write_table
from dmu_migrate.demo import embed, fit_old_model
from dmu_migrate.errors import InputError
from dmu_migrate.metrics import l2_normalize, retrieval_scores
from dmu_migrate.onnx_model import OnnxModel
from dmu_migrate.training.checkpoint import FILE, work_dir
from dmu_migrate.training.closed_form import fit_affine
from dmu_migrate.training.loop import held_out_kind, pick_device, split_by_label
from dmu_migrate.training.trainer import TrainConfig, train
from dmu_migrate.training.upgrade import train_upgrade

# device cpu: the device test below covers "auto"; these compare exact CPU results.
FAST = TrainConfig(epochs=2, batch_size=128, hidden=64, adapter_hidden=64, seed=3, device="cpu")


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """These networks are tiny: a second intra-op thread only adds contention on 2 cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def paired(digits: Digits, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Digits with the embeddings of an unrelated, fixed 'new' model (another seed, all data)."""
    table = read_table(digits.train_path)
    x = table.x.copy()  # Arrow-backed arrays are read-only
    new = embed(fit_old_model(x, table.labels, seed=7), x)
    path = tmp_path_factory.mktemp("paired") / "paired.parquet"
    write_table(path, {"label": table.classes[table.labels], "old": table.old, "new": new})
    return path


def onnx(artifact: Artifact, name: str, inputs: np.ndarray) -> np.ndarray:
    return OnnxModel(artifact.path / name)(inputs)


@pytest.mark.parametrize(
    "overrides",
    [
        {"method": "dmu", "discriminativeness": "margin"},
        {"method": "bct"},
        {"method": "independent", "dim": 24},
        {"method": "dmu", "model": "cnn", "image_shape": (1, 8, 8)},
        {"method": "dmu", "joint": True},
    ],
    ids=["dmu", "bct", "independent", "dmu-cnn", "dmu-joint"],
)
def test_every_trained_method_writes_a_parity_checked_artifact(
    tmp_path: Path, digits: Digits, overrides: dict
) -> None:
    config = dataclasses.replace(FAST, **overrides)
    report = train_upgrade(digits.train_path, tmp_path, "a", config)
    m = load_artifact(report.artifact.path).manifest
    assert m.method == overrides["method"]
    assert set(m.files) == {"adapter.onnx", "new_model.onnx", "backfill_score.onnx"}
    assert m.input_dim == 64 and m.new_dim == overrides.get("dim", 32)
    assert max(m.parity.values()) < 1e-4
    assert m.training["config"]["model"] == config.model
    assert m.training["device"] == "cpu"
    assert [e["epoch"] for e in m.training["log"] if e.get("stage", 1) == 1] == [1, 2]
    # The exported encoder gives unit vectors of the declared size.
    emb = onnx(report.artifact, "new_model.onnx", digits.x_te)
    assert emb.shape == (len(digits.x_te), m.new_dim)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert not work_dir(tmp_path, "a").exists()  # a finished run leaves no checkpoint


def test_two_stages_fit_psi_after_the_new_model_and_resume_across_them(
    tmp_path: Path, digits: Digits
) -> None:
    config = dataclasses.replace(
        FAST, epochs=3, joint=False, adapter_kind="mlp", val_fraction=0.3, patience=0
    )
    whole = train_upgrade(digits.train_path, tmp_path / "whole", "s", config)
    stages = [entry.get("stage", 1) for entry in whole.log]
    assert stages == [1, 1, 1, 2, 2, 2]  # the new model's epochs, then psi's
    assert all("val_new_evolved" in e for e in whole.log[3:])  # psi stops on new->evolved

    def crash_in_stage_two(epoch: int, entry: dict[str, float]) -> None:
        if "val_new_new" not in entry and epoch == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_upgrade(digits.train_path, tmp_path / "cut", "s", config, on_epoch=crash_in_stage_two)
    resumed = train_upgrade(digits.train_path, tmp_path / "cut", "s", config, resume=True)
    assert resumed.log == whole.log
    old = digits.old_te[:40]
    np.testing.assert_allclose(
        onnx(resumed.artifact, "adapter.onnx", old),
        onnx(whole.artifact, "adapter.onnx", old),
        atol=1e-6,
    )


def test_bct_ships_an_identity_adapter_and_uniform_inheritance(
    tmp_path: Path, digits: Digits
) -> None:
    report = train_upgrade(
        digits.train_path, tmp_path, "b", dataclasses.replace(FAST, method="bct")
    )
    evolved = onnx(report.artifact, "adapter.onnx", digits.old_te)
    # BCT does not evolve: new->evolved is exactly new->old.
    np.testing.assert_allclose(evolved, l2_normalize(digits.old_te), atol=1e-6)
    config = report.artifact.manifest.training["config"]
    assert config["gamma"] == 0.0 and config["lambda_f"] == 0.0
    assert all(entry["fa"] == 0.0 and entry["sbc"] > 0 for entry in report.log)


@pytest.mark.parametrize(
    ("kind", "extra"),
    [("mlp", {"val_fraction": 0.3, "epochs": 15}), ("procrustes", {}), ("affine", {})],
)
def test_adapter_method_fits_psi_only_and_ships_no_new_model(
    tmp_path: Path, paired: Path, kind: str, extra: dict
) -> None:
    config = dataclasses.replace(FAST, method="adapter", adapter_kind=kind, **extra)
    report = train_upgrade(paired, tmp_path, kind, config)
    m = report.artifact.manifest
    assert m.method == f"adapter:{kind}" and m.input_dim is None
    assert set(m.files) == {"adapter.onnx", "backfill_score.onnx"}
    assert report.artifact.new_model_path is None
    assert m.parity["adapter_max_abs_diff"] < 1e-4
    table = read_table(paired, need_x=False, need_new=True)
    assert table.new is not None
    evolved = onnx(report.artifact, "adapter.onnx", table.old)
    # psi moves stored vectors towards the fixed new model's space.
    before = (l2_normalize(table.old) * l2_normalize(table.new)).sum(1).mean()
    after = (evolved * l2_normalize(table.new)).sum(1).mean()
    assert after > before + 0.1, (before, after)
    if kind == "mlp":
        assert m.training["validation"]["identities"] == 10  # rows of every digit
        assert {"nce", "cos", "ce", "val"} <= set(m.training["log"][0])


def test_adapter_method_trains_without_labels(tmp_path: Path, paired: Path) -> None:
    table = read_table(paired, need_x=False, need_new=True)
    unlabelled = tmp_path / "pairs.parquet"
    write_table(unlabelled, {"old": table.old, "new": table.new})
    config = dataclasses.replace(FAST, method="adapter", adapter_kind="mlp", val_fraction=0.2)
    report = train_upgrade(unlabelled, tmp_path, "u", config)
    training = report.artifact.manifest.training
    assert training["classes"] is None and "ce" not in training["log"][0]
    assert training["validation"]["rows"] == round(0.2 * len(table))


def test_independent_new_model_is_the_one_trained_alone(digits: Digits) -> None:
    table = read_table(digits.train_path)
    config = dataclasses.replace(FAST, method="independent", val_fraction=0.3, epochs=3)
    alone = dataclasses.replace(config, method="dmu", lambda_b=0.0, lambda_f=0.0)
    with_psi = train(table.x, table.old, table.labels, config)
    without = train(table.x, table.old, table.labels, alone)
    assert with_psi.new_model is not None and without.new_model is not None
    for (key, a), b in zip(
        with_psi.new_model.state_dict().items(),
        without.new_model.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b), key
    # psi was fitted: it maps old vectors somewhere other than where they were.
    with torch.no_grad():
        evolved = with_psi.adapter(torch.tensor(table.old[:20], dtype=torch.float32)).numpy()
    assert not np.allclose(l2_normalize(evolved), l2_normalize(table.old[:20]), atol=1e-3)


def test_default_psi_is_the_affine_map_of_the_kept_model_on_training_rows_only(
    digits: Digits,
) -> None:
    """Two stages by default: psi never sees the held-out rows the quality gate scores."""
    table = read_table(digits.train_path)
    config = dataclasses.replace(FAST, val_fraction=0.3)
    result = train(table.x, table.old, table.labels, config)
    assert result.new_model is not None
    train_idx, val_idx = split_by_label(table.labels, config.val_fraction, config.seed)
    with torch.no_grad():
        result.new_model.eval()
        new = result.new_model(torch.tensor(table.x, dtype=torch.float32)).numpy()
        evolved = result.adapter(torch.tensor(table.old, dtype=torch.float32)).numpy()
    # psi's ridge and prior were picked on training identities (closed_form.select_affine).
    (chosen,) = [e for e in result.log if e.get("stage") == 2]
    prior = "identity" if chosen["psi_identity_prior"] else "zero"
    ridge = chosen["psi_ridge"]
    weight, bias = fit_affine(table.old[train_idx], new[train_idx], ridge=ridge, prior=prior)
    np.testing.assert_allclose(evolved, l2_normalize(table.old) @ weight + bias, atol=1e-4)
    # Fitted with the held-out rows, the map would differ: they were left out.
    leaky, _ = fit_affine(table.old, new, ridge=ridge, prior=prior)
    assert not np.allclose(leaky, weight, atol=1e-4)
    assert len(val_idx) and result.quality["new->evolved"]["R@1"] > 0


def test_bct_is_dmu_with_uniform_weights_and_no_adaptation(digits: Digits) -> None:
    table = read_table(digits.train_path)
    bct = train(table.x, table.old, table.labels, dataclasses.replace(FAST, method="bct"))
    plain = dataclasses.replace(FAST, method="dmu", gamma=0.0, lambda_f=0.0)
    dmu = train(table.x, table.old, table.labels, plain)
    assert bct.new_model is not None and dmu.new_model is not None
    a, b = bct.new_model.state_dict(), dmu.new_model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # With gamma > 0 the same run weights samples by q and trains another model.
    selective = dataclasses.replace(plain, gamma=2.0)
    other = train(table.x, table.old, table.labels, selective).new_model
    assert other is not None
    assert not all(torch.equal(a[k], other.state_dict()[k]) for k in a)


def test_training_is_reproducible_given_the_seed(digits: Digits) -> None:
    table = read_table(digits.train_path)
    runs = [
        train(table.x, table.old, table.labels, dataclasses.replace(FAST, seed=s))
        for s in (5, 5, 6)
    ]
    states = [r.adapter.state_dict() for r in runs]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not all(torch.equal(states[0][k], states[2][k]) for k in states[0])


class Interrupt(Exception):
    pass


def test_resume_continues_to_the_same_result_as_an_uninterrupted_run(
    tmp_path: Path, digits: Digits
) -> None:
    config = dataclasses.replace(FAST, epochs=4, val_fraction=0.3, patience=0)
    whole = train_upgrade(digits.train_path, tmp_path / "whole", "r", config)

    def crash_after_two(epoch: int, entry: dict[str, float]) -> None:
        if epoch == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_upgrade(digits.train_path, tmp_path / "cut", "r", config, on_epoch=crash_after_two)
    assert (work_dir(tmp_path / "cut", "r") / FILE).is_file()
    assert not (tmp_path / "cut" / "r").exists()

    # Another configuration may not pick up this checkpoint.
    other = dataclasses.replace(config, lr=1e-3)
    with pytest.raises(InputError, match="another configuration"):
        train_upgrade(digits.train_path, tmp_path / "cut", "r", other, resume=True)

    seen: list[int] = []
    resumed = train_upgrade(
        digits.train_path,
        tmp_path / "cut",
        "r",
        config,
        on_epoch=lambda epoch, _: seen.append(epoch),
        resume=True,
    )
    assert seen == [3, 4]
    assert resumed.log == whole.log
    for name in ("adapter.onnx", "new_model.onnx"):
        data = digits.old_te if name == "adapter.onnx" else digits.x_te
        np.testing.assert_array_equal(
            onnx(resumed.artifact, name, data), onnx(whole.artifact, name, data)
        )


def test_resume_without_checkpoint_is_refused(tmp_path: Path, digits: Digits) -> None:
    with pytest.raises(InputError, match="--resume: no checkpoint"):
        train_upgrade(digits.train_path, tmp_path, "n", FAST, resume=True)


@pytest.mark.parametrize("joint", [False, True], ids=["two-stage", "joint"])
def test_validation_holds_out_identities_and_early_stopping_keeps_the_best_epoch(
    tmp_path: Path, digits: Digits, joint: bool
) -> None:
    # An unregularised MLP on a fifth of the rows overfits: validation peaks, then falls.
    config = dataclasses.replace(
        FAST,
        joint=joint,
        epochs=30,
        val_fraction=0.8,
        patience=2,
        model="mlp",
        hidden=256,
        dropout=0.0,
        lr=5e-2,
        weight_decay=0.0,
    )
    report = train_upgrade(digits.train_path, tmp_path, "e", config)
    training = report.artifact.manifest.training
    log = [entry for entry in report.log if "stage" not in entry]  # the new model's stage
    scores = [entry["val"] for entry in log]
    best = training["best_epoch"]
    assert scores[best - 1] == max(scores) == training["best_val"]
    # The run stops `patience` epochs after its best one instead of running all 30.
    assert len(log) < config.epochs and len(log) - best == config.patience
    # The artifact holds the best epoch's weights: re-score the held-out identities with it.
    table = read_table(digits.train_path)
    train_idx, val_idx = split_by_label(table.labels, config.val_fraction, config.seed)
    assert not set(train_idx.tolist()) & set(val_idx.tolist())
    assert training["validation"] == {"rows": len(val_idx), "identities": 10, "held_out": "rows"}
    new = onnx(report.artifact, "new_model.onnx", table.x[val_idx])
    evolved = onnx(report.artifact, "adapter.onnx", table.old[val_idx])
    y = table.labels[val_idx]
    # Joint DMU stops on the mean of new->new and new->evolved mAP; in two stages the
    # new model stops on new->new (psi is fitted afterwards).
    rescored = [
        retrieval_scores(new, y, gallery, y, ks=(1,), leave_one_out=True).mean_ap
        for gallery in ((new, evolved) if joint else (new,))
    ]
    assert np.mean(rescored) == pytest.approx(training["best_val"], abs=1e-4)


def test_validation_split_refuses_a_share_that_holds_out_nothing(digits: Digits) -> None:
    table = read_table(digits.train_path)
    with pytest.raises(InputError, match="--val-fraction 0.001 holds out no rows"):
        train(table.x, table.old, table.labels, dataclasses.replace(FAST, val_fraction=0.001))


def test_validation_holds_out_only_identities_that_can_be_retrieved() -> None:
    # 60 identities: 0-19 have one row each, which leave-one-out cannot score.
    labels = np.concatenate([np.arange(20), np.repeat(np.arange(20, 60), 2)])
    for seed in range(5):
        train_idx, val_idx = split_by_label(labels, 0.25, seed)
        held = set(labels[val_idx].tolist())
        assert held <= set(range(20, 60)) and len(held) == 15
        assert not held & set(labels[train_idx].tolist())  # whole identities, never split
        assert sorted([*train_idx, *val_idx]) == list(range(len(labels)))
    with pytest.raises(InputError, match="identities with 2\\+ rows"):
        split_by_label(labels, 0.7, 0)  # 42 of 60 identities, only 40 eligible
    _, val_idx = split_by_label(np.arange(100), 0.3, 0, min_rows=1)  # unlabelled pairs
    assert len(val_idx) == 30


def test_few_classes_hold_out_rows_of_every_class() -> None:
    # Ten classes are a closed set the gallery shares: holding out two whole
    # classes would train on eight and validate on a task that never occurs.
    labels = np.repeat(np.arange(10), 20)
    train_idx, val_idx = split_by_label(labels, 0.2, 0)
    assert held_out_kind(labels) == "rows" and len(val_idx) == 40
    for part in (train_idx, val_idx):
        assert set(labels[part].tolist()) == set(range(10))
    assert not set(train_idx.tolist()) & set(val_idx.tolist())


def test_device_auto_picks_cuda_only_when_present() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device("auto").type == expected
    assert pick_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="--device cuda"):
            pick_device("cuda")
