"""What ``train`` returns; apart from the trainer so that reading it needs no torch."""

from __future__ import annotations

from dataclasses import dataclass

from dmu_migrate.artifact import Artifact


@dataclass(frozen=True)
class TrainReport:
    artifact: Artifact  # the artifact written: .path, .manifest (config, quality, parity, ...)
    seconds: float
    log: list[dict[str, float]]  # one entry per epoch: the loss terms and validation scores
