"""``dmu-migrate train`` as a library call: table -> trained models -> upgrade artifact."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import numpy as np

from dmu_migrate.artifact import (
    ADAPTER,
    BACKFILL_SCORE,
    NEW_MODEL,
    Manifest,
    check_version_id,
    load_artifact,
    staged,
    write_manifest,
)
from dmu_migrate.data import Columns, Table, read_table
from dmu_migrate.distractors import NONE, TRAINING, Distractors, Pool, PoolFor, pool, table_ids
from dmu_migrate.errors import InputError
from dmu_migrate.quality import judged_at, verdict
from dmu_migrate.training import distributed
from dmu_migrate.training.adapter_only import fit_adapter
from dmu_migrate.training.checkpoint import FILE, Checkpoint, work_dir
from dmu_migrate.training.export import OPSET, export_onnx
from dmu_migrate.training.loop import TrainResult, pick_device
from dmu_migrate.training.report import TrainReport
from dmu_migrate.training.threads import use_threads
from dmu_migrate.training.trainer import EpochCallback, TrainConfig, train
from dmu_migrate.training.tuning import check as check_tune
from dmu_migrate.training.tuning import tune as tune_trials

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def train_upgrade(
    table_path: str | Path,
    out_dir: str | Path,
    name: str,
    config: TrainConfig,
    columns: Columns = Columns(),
    from_version: str = "v1",
    to_version: str = "v2",
    overwrite: bool = False,
    on_epoch: EpochCallback | None = None,
    resume: bool = False,
    tune: int = 0,
    threads: int | None = None,
    distractors: Distractors | str = TRAINING,
) -> TrainReport:
    """Train by ``config.method`` and write the artifact OUT_DIR/NAME.

    Every method writes the same artifact format: adapter.onnx always,
    new_model.onnx unless the method is ``adapter`` (the new model is not ours).
    Progress is checkpointed every epoch in OUT_DIR/.NAME.train/, which
    ``resume`` continues from and a finished run removes. ``tune`` > 0 runs
    that many Optuna trials on the held-out identities and keeps the best
    (training/tuning.py). ``threads`` sets torch's CPU threads (0: automatic,
    see training/threads.py); None leaves them as the caller has them.
    ``distractors`` join the held-out gallery where the gate's figures are measured:
    TRAINING (the table's rows that were not held out), NONE, or stored old vectors
    (distractors.load: a Parquet or a collection).
    """
    config.check()
    check_tune(config, tune, resume)
    check_version_id(from_version, "--from-version")
    check_version_id(to_version, "--to-version")
    if from_version == to_version:
        raise InputError(
            f"--from-version and --to-version are both '{to_version}'; give distinct ids"
        )
    if not _NAME_RE.fullmatch(name) or ".." in name:
        raise InputError(
            f"--name '{name}' is not an artifact name; use letters, digits, '.', '_' or '-' "
            f"(it becomes a directory under --out-dir)"
        )
    target = Path(out_dir) / name
    if target.exists() and not overwrite:
        raise InputError(
            f"artifact '{target}' already exists; pick another --name or pass --overwrite"
        )

    if threads is not None:
        use_threads(threads)
    start = time.perf_counter()
    with distributed.process_group(pick_device(config.device)):
        adapter_mode = config.method == "adapter"
        table = read_table(
            table_path,
            columns,
            need_x=not adapter_mode,
            need_new=adapter_mode,
            need_labels=not adapter_mode,
        )
        run = config.resolved()
        _, ranks = distributed.shard()
        # Batches are split across ranks, so another number of ranks is another run.
        data = table.fingerprint if ranks == 1 else f"{table.fingerprint} on {ranks} ranks"
        checkpoint = Checkpoint(work_dir(out_dir, name) / FILE, run.fingerprint(data), resume)
        new = table.new
        if adapter_mode and new is None:  # read_table(need_new=True) refuses this
            raise InputError(f"table '{table_path}' has no new-model embeddings; pass --new-col")
        if tune and ranks > 1:
            raise InputError("--tune runs in one process; start it without torchrun")

        crowd = pool_for(table, distractors)

        def fit(c: TrainConfig, saved: Checkpoint | None = checkpoint) -> TrainResult:
            if adapter_mode and new is not None:
                labels = table.labels if table.labelled else None
                return fit_adapter(table.old, new, labels, c, on_epoch, saved, crowd)
            return train(table.x, table.old, table.labels, c, on_epoch, saved, crowd)

        trials: list[dict[str, object]] = []
        if tune > 0:
            # Trials are short and independent: they are not checkpointed.
            result, config, trials = tune_trials(lambda c: fit(c, None), config, tune)
            run = config.resolved()
        else:
            result = fit(config)

        def publish() -> TrainReport:
            _write_artifact(
                target, table_path, table, run, result, from_version, to_version, ranks, trials
            )
            # The run is complete and recorded in the manifest; its checkpoint is spent.
            shutil.rmtree(work_dir(out_dir, name), ignore_errors=True)
            return TrainReport(load_artifact(target), time.perf_counter() - start, result.log)

        # Rank 0 writes the one artifact; the other ranks wait here and return its report.
        return distributed.from_main(publish)


def pool_for(table: Table, distractors: Distractors | str) -> PoolFor | None:
    """The gate's distractors for a held-out split of ``table`` (distractors.py)."""
    if distractors == NONE:
        return None
    ids = table_ids(table.path)
    classes = table.classes if table.labelled else None

    def held_out_pool(train_idx: np.ndarray, val_idx: np.ndarray) -> Pool:
        given = distractors
        if not isinstance(given, Distractors):  # TRAINING: the rows that were not held out
            given = Distractors(
                table.old[train_idx],
                table.classes[table.labels[train_idx]] if table.labelled else None,
                None if ids is None else ids[train_idx],
                "the training table",
            )
        held_ids = None if ids is None else ids[val_idx]
        return pool(given, table.old[val_idx], held_ids, classes)

    return held_out_pool


def _write_artifact(
    target: Path,
    table_path: str | Path,
    table: Table,
    run: TrainConfig,
    result: TrainResult,
    from_version: str,
    to_version: str,
    ranks: int,
    trials: list[dict[str, object]],
) -> None:
    """Export the trained models and the manifest to ``target``, replacing what is there."""
    name = target.name
    adapter_mode = run.method == "adapter"
    with staged(target) as staging:
        sample = slice(0, min(len(table), 512))
        parity = {
            "adapter_max_abs_diff": export_onnx(
                result.adapter, table.old[sample], staging / ADAPTER, "old", "evolved"
            )
        }
        if result.new_model is not None:
            parity["new_model_max_abs_diff"] = export_onnx(
                result.new_model, table.x[sample], staging / NEW_MODEL, "x", "embedding"
            )
        if result.backfill_score is not None:
            parity["backfill_score_max_abs_diff"] = export_onnx(
                result.backfill_score,
                table.old[sample],
                staging / BACKFILL_SCORE,
                "old",
                "score",
                normalize=False,
            )
        method = f"adapter:{run.adapter_kind}" if adapter_mode else run.method
        manifest = Manifest(
            name=name,
            from_version=from_version,
            to_version=to_version,
            method=method,
            old_dim=int(table.old.shape[1]),
            new_dim=int(result.new_dim),
            input_dim=None if result.new_model is None else int(table.x.shape[1]),
            opset=OPSET,
            parity=parity,
            training={
                "method": method,
                "config": run.as_dict(),
                "table": str(table_path),
                "data_fingerprint": table.fingerprint,
                "rows": len(table),
                "classes": len(table.classes) if table.labelled else None,
                "device": result.device,
                "processes": ranks,
                "best_epoch": result.best_epoch,
                "best_val": result.best_val,
                "validation": result.validation,
                "q_mean": result.q_mean,
                "log": result.log,
                **({"tuning": trials} if trials else {}),
            },
            calibration=result.calibration,
        )
        if result.quality:
            crowd = result.distractors
            where = judged_at("held-out identities", crowd.get("count"), crowd.get("source"))
            manifest.quality = {
                "settings": result.quality,
                **({"fusion": result.fusion} if result.fusion else {}),
                **result.validation,
                "distractors": crowd,
                "verdict": verdict(result.quality, where).line,
            }
        write_manifest(staging, manifest)
