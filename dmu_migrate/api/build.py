"""The verbs that build and judge an upgrade: train (needs torch) and evaluate."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dmu_migrate.artifact import load_artifact
from dmu_migrate.data import Columns
from dmu_migrate.distractors import load
from dmu_migrate.errors import InputError
from dmu_migrate.evaluation import FARS, EvalReport, backfill_plot_path, plot_backfill, plot_report
from dmu_migrate.evaluation import evaluate as run_evaluation
from dmu_migrate.settings import unknown_names
from dmu_migrate.training.config import (
    TrainConfig,
    build_config,
    load_config_file,
    parse_image_shape,
)

if TYPE_CHECKING:
    from dmu_migrate.training.report import TrainReport

# Column names default to the data contract's (Columns), written once there.
_COLUMNS = Columns()


def train(
    table: str | Path,
    name: str,
    out_dir: str | Path = Path("adapters"),
    config_file: str | Path | None = None,
    label_col: str = _COLUMNS.label,
    old_col: str = _COLUMNS.old,
    x_col: str = _COLUMNS.x,
    new_col: str = _COLUMNS.new,
    from_version: str = "v1",
    to_version: str = "v2",
    resume: bool = False,
    overwrite: bool = False,
    tune: int = 0,
    threads: int = 0,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    distractors: str | Path = "training",
    distractors_uri: str | None = None,
    **settings: Any,
) -> TrainReport:
    """Train the new model and the forward adapter on ``table``; write OUT_DIR/NAME.

    ``settings`` are TrainConfig fields (dmu_migrate/training/config.py: method,
    epochs, gamma, seed, ...), with TrainConfig's defaults; they override the
    TOML ``config_file``. ``on_epoch(epoch, losses)`` is called after each epoch.
    ``distractors`` join the held-out gallery of the gate's figures: "training"
    (the table's rows not held out), "none", a Parquet of stored old
    vectors, or with ``distractors_uri`` a collection there (distractors.py).
    Needs the training extra (torch).
    """
    try:
        import torch  # noqa: F401
    except ImportError:
        raise InputError(
            "train needs torch; install the training extra: pip install 'dmu-migrate[train]'"
        ) from None
    # Here, not at the top: it imports torch (the train extra), checked just above.
    from dmu_migrate.training.upgrade import train_upgrade

    config = train_config(config_file, **settings)
    columns = Columns(label_col, old_col, x_col, new=new_col)
    return train_upgrade(
        table,
        out_dir,
        name,
        config,
        columns,
        from_version,
        to_version,
        overwrite,
        on_epoch,
        resume,
        tune,
        threads,
        load(distractors, columns, distractors_uri),
    )


def train_config(config_file: str | Path | None = None, **settings: Any) -> TrainConfig:
    """The settings ``train`` runs with: TrainConfig's defaults, then the file, then ``settings``."""
    unknown_names(TrainConfig, "train", settings)
    flags = dict(settings)
    if isinstance(flags.get("image_shape"), str):
        flags["image_shape"] = parse_image_shape(flags["image_shape"])
    file_values = load_config_file(config_file) if config_file is not None else {}
    return build_config(file_values, flags, config_file)


def evaluate(
    table: str | Path,
    adapter: str | Path,
    reference: str | Path | None = None,
    label_col: str = _COLUMNS.label,
    old_col: str = _COLUMNS.old,
    x_col: str = _COLUMNS.x,
    new_col: str = _COLUMNS.new,
    role_col: str = _COLUMNS.role,
    mixed_fraction: float = 0.5,
    seed: int = 0,
    tar: bool = True,
    backfill_curve: bool = True,
    plot: str | Path | None = None,
    distractors: str | Path = "training",
    distractors_uri: str | None = None,
    ceiling: bool = True,
) -> EvalReport:
    """Score old->old, new->old, new->evolved, new->mixed and new->new on a held-out table.

    ``reference``: an artifact of an independently trained new model (the
    full-backfill bound) for the gain-captured and degradation figures.
    ``plot``: a .png path for the bar chart (needs matplotlib); the
    partial-backfill chart goes beside it. ``report.charts`` lists what was written.
    ``distractors`` join the galleries built from stored old vectors: "training"
    (the artifact's training table), "none", a Parquet of stored old
    vectors, or with ``distractors_uri`` a collection there. ``ceiling`` adds the
    oracle adapter fitted on this gallery (ceiling.py).
    """
    if plot is not None:
        _check_plotting(Path(plot))
    columns = Columns(label_col, old_col, x_col, role_col, new_col)
    artifact = load_artifact(Path(adapter))
    report = run_evaluation(
        table,
        artifact,
        columns,
        reference=load_artifact(Path(reference)) if reference is not None else None,
        mixed_fraction=mixed_fraction,
        seed=seed,
        fars=FARS if tar else (),
        backfill_curve=backfill_curve,
        distractors=load(distractors, columns, distractors_uri),
        ceiling=ceiling,
    )
    if plot is None:
        return report
    charts = [plot_report(report, plot), plot_backfill(report, backfill_plot_path(plot))]
    return dataclasses.replace(report, charts=tuple(c for c in charts if c is not None))


def _check_plotting(plot: Path) -> None:
    if plot.suffix.lower() != ".png":
        raise InputError(f"--plot '{plot}' is not a .png path; give a file name ending in .png")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise InputError(
            "--plot needs matplotlib; install the training extra: pip install 'dmu-migrate[train]'"
        ) from None
