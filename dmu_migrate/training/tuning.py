"""``train --tune N``: a small Optuna search on the held-out identities.

Each trial trains with sampled settings and is scored by what the quality
gate judges: validated new->evolved R@1 (new->new for ``independent``, whose
job is the full-backfill reference), mAP breaking ties. The best trial's
models are kept; every trial's settings and figures go into the manifest.
The held-out identities are the tuning split: the figures of the kept trial
are therefore optimistic, and a user's own held-out table (``evaluate``) is
the unbiased check.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from dmu_migrate.errors import InputError
from dmu_migrate.training.config import TrainConfig
from dmu_migrate.training.loop import TrainResult

log = logging.getLogger(__name__)


def space(trial: Any, config: TrainConfig) -> dict[str, Any]:
    """The settings a trial varies; each range brackets the default (docs/method.md)."""
    params: dict[str, Any] = {"lr": trial.suggest_float("lr", 5e-4, 8e-3, log=True)}
    if config.method != "adapter":
        params["scale"] = trial.suggest_categorical("scale", [12.0, 16.0, 20.0, 30.0])
        params["dropout"] = trial.suggest_float("dropout", 0.1, 0.7)
    if config.method == "dmu":
        params["lambda_b"] = trial.suggest_float("lambda_b", 0.25, 4.0, log=True)
    # psi's loss settings only matter where psi is trained: in the new model's loop
    # (--joint, weighted by lambda_f) or as an mlp; a closed-form psi has none.
    joint = config.joint and config.method in ("dmu", "independent")
    if joint:
        params["lambda_f"] = trial.suggest_float("lambda_f", 0.25, 4.0, log=True)
    if joint or (config.adapter_kind == "mlp" and config.method != "bct"):
        params["tau"] = trial.suggest_float("tau", 0.03, 0.2, log=True)
    return params


def objective_setting(config: TrainConfig) -> str:
    return "new->new" if config.method == "independent" else "new->evolved"


def check(config: TrainConfig, trials: int, resume: bool) -> None:
    """Refuse a search that cannot run or score, before any data is read."""
    if trials < 0 or (trials and resume):
        raise InputError(
            f"--tune {trials}: give a number of trials >= 1, and not with --resume "
            f"(trials are not checkpointed)"
        )
    if not trials:
        return
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise InputError("--tune needs Optuna: pip install 'dmu-migrate[tune]'") from None
    if config.val_fraction <= 0:
        raise InputError("--tune scores trials on held-out identities; give --val-fraction > 0")
    if config.method == "adapter" and config.adapter_kind != "mlp":
        raise InputError(
            f"--tune has nothing to search for --adapter-kind {config.adapter_kind} "
            f"(a closed-form fit); use --adapter-kind mlp or drop --tune"
        )


def tune(
    fit: Callable[[TrainConfig], TrainResult], config: TrainConfig, trials: int
) -> tuple[TrainResult, TrainConfig, list[dict[str, Any]]]:
    """Run ``trials`` trainings through ``fit``; return the best result, its config, all trials."""
    import optuna

    setting = objective_setting(config)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=config.seed)
    )
    results: dict[int, tuple[TrainResult, TrainConfig]] = {}
    record: list[dict[str, Any]] = []
    for _ in range(trials):
        trial = study.ask()
        trial_config = dataclasses.replace(config, **space(trial, config))
        result = fit(trial_config)
        figures = result.quality.get(setting)
        if figures is None:
            raise InputError(
                f"--tune: the held-out rows score no {setting}; give --val-fraction > 0 and labels"
            )
        study.tell(trial, figures["R@1"] + 1e-3 * figures["mAP"])  # mAP breaks ties
        results[trial.number] = (result, trial_config)
        record.append({"trial": trial.number, "params": trial.params, "figures": result.quality})
        log.info("trial %d %s: %s %s", trial.number, trial.params, setting, figures)
    best = max(record, key=lambda t: (t["figures"][setting]["R@1"], t["figures"][setting]["mAP"]))
    result, best_config = results[best["trial"]]
    return result, best_config, record
