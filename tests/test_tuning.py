"""train --tune: Optuna trials on the held-out rows, the best one kept and every one recorded."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from galleries import Digits

from dmu_migrate.errors import InputError
from dmu_migrate.training.config import TrainConfig
from dmu_migrate.training.tuning import space
from dmu_migrate.training.upgrade import train_upgrade

FAST = TrainConfig(epochs=2, batch_size=128, hidden=32, adapter_hidden=32, device="cpu", seed=1)


def test_tune_keeps_the_best_trial_and_records_them_all(tmp_path: Path, digits: Digits) -> None:
    report = train_upgrade(digits.train_path, tmp_path, "tuned", FAST, tune=3)
    m = report.artifact.manifest
    trials = m.training["tuning"]
    assert len(trials) == 3
    scores = [t["figures"]["new->evolved"]["R@1"] for t in trials]
    best = trials[scores.index(max(scores))]
    # The kept settings are the best trial's, and so are the gate's figures.
    for name, value in best["params"].items():
        assert m.training["config"][name] == pytest.approx(value)
    assert m.quality["settings"] == best["figures"]
    # psi is a closed form by default: only the new model's settings are searched.
    assert {"lr", "scale", "dropout", "lambda_b"} == set(best["params"])


def test_tune_refuses_what_it_cannot_score(tmp_path: Path, digits: Digits) -> None:
    with pytest.raises(InputError, match="--val-fraction > 0"):
        train_upgrade(
            digits.train_path, tmp_path, "a", dataclasses.replace(FAST, val_fraction=0.0), tune=2
        )
    with pytest.raises(InputError, match="not with --resume"):
        train_upgrade(digits.train_path, tmp_path, "b", FAST, tune=2, resume=True)
    closed = dataclasses.replace(FAST, method="adapter", adapter_kind="affine")
    with pytest.raises(InputError, match="nothing to search"):
        train_upgrade(digits.train_path, tmp_path, "c", closed, tune=2)


def test_tune_searches_psi_settings_only_where_psi_is_trained() -> None:
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    new_model = {"lr", "scale", "dropout", "lambda_b"}
    cases = [
        (FAST, new_model),  # two stages, closed-form psi
        (dataclasses.replace(FAST, joint=True), new_model | {"lambda_f", "tau"}),
        (dataclasses.replace(FAST, adapter_kind="mlp"), new_model | {"tau"}),
        (dataclasses.replace(FAST, method="adapter", adapter_kind="mlp"), {"lr", "tau"}),
        (dataclasses.replace(FAST, method="bct"), {"lr", "scale", "dropout"}),
    ]
    for config, expected in cases:
        assert set(space(study.ask(), config)) == expected, config
