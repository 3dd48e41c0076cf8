"""``dmu-migrate train`` as a library call: table -> trained models -> upgrade artifact."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from dmu_migrate.artifact import (
    ADAPTER,
    NEW_MODEL,
    Artifact,
    Manifest,
    check_version_id,
    load_artifact,
    write_manifest,
)
from dmu_migrate.data import Columns, read_table
from dmu_migrate.errors import InputError
from dmu_migrate.training.export import OPSET, export_onnx
from dmu_migrate.training.trainer import EpochCallback, TrainConfig, train


@dataclass(frozen=True)
class TrainReport:
    artifact: Artifact
    seconds: float
    log: list[dict[str, float]]


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
) -> TrainReport:
    check_version_id(from_version, "--from-version")
    check_version_id(to_version, "--to-version")
    if from_version == to_version:
        raise InputError(
            f"--from-version and --to-version are both '{to_version}'; give distinct ids"
        )
    target = Path(out_dir) / name
    if target.exists() and not overwrite:
        raise InputError(
            f"artifact '{target}' already exists; pick another --name or pass --overwrite"
        )

    start = time.perf_counter()
    table = read_table(table_path, columns)
    result = train(table.x, table.old, table.labels, config, on_epoch)

    # Build the artifact beside its final place and move it in whole, so a
    # failed export never leaves a half-written artifact under the real name.
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
    try:
        sample = slice(0, min(len(table), 512))
        parity = {
            "adapter_max_abs_diff": export_onnx(
                result.adapter, table.old[sample], staging / ADAPTER, "old", "evolved"
            ),
            "new_model_max_abs_diff": export_onnx(
                result.new_model, table.x[sample], staging / NEW_MODEL, "x", "embedding"
            ),
        }
        new_dim = config.dim or table.old.shape[1]
        manifest = Manifest(
            name=name,
            from_version=from_version,
            to_version=to_version,
            method="dmu",
            old_dim=int(table.old.shape[1]),
            new_dim=int(new_dim),
            input_dim=int(table.x.shape[1]),
            opset=OPSET,
            parity=parity,
            training={
                "config": config.as_dict(),
                "table": str(table_path),
                "data_fingerprint": table.fingerprint,
                "rows": len(table),
                "classes": len(table.classes),
                "log": result.log,
            },
        )
        write_manifest(staging, manifest)
        if target.exists():
            shutil.rmtree(target)
        staging.replace(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return TrainReport(load_artifact(target), time.perf_counter() - start, result.log)
