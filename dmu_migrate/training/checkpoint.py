"""Per-epoch checkpoints in a work directory beside the artifact, for ``--resume``.

A checkpoint holds every piece of state the next epoch reads (weights,
optimiser, schedule, shuffling generator, early-stopping record, log), so a
resumed run ends with the same weights as an uninterrupted one. It is tagged
with the run's fingerprint (config + training table), and a resume from a
checkpoint of another run is refused rather than silently mixed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dmu_migrate.errors import InputError

FILE = "checkpoint.pt"


def work_dir(out_dir: str | Path, name: str) -> Path:
    return Path(out_dir) / f".{name}.train"


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    fingerprint: str
    resume: bool = False

    def load(self) -> dict[str, Any] | None:
        """The saved state when resuming (refusing a foreign one); None for a fresh run."""
        if not self.resume:
            return None
        if not self.path.is_file():
            raise InputError(
                f"--resume: no checkpoint at '{self.path}'; run without --resume to start training"
            )
        try:
            state: dict[str, Any] = torch.load(self.path, map_location="cpu", weights_only=True)
        except (RuntimeError, OSError, EOFError) as exc:
            raise InputError(
                f"--resume: checkpoint '{self.path}' is unreadable ({exc}); run without --resume"
            ) from exc
        if state.get("fingerprint") != self.fingerprint:
            raise InputError(
                f"--resume: checkpoint '{self.path}' was written for another configuration or "
                f"table; use the same flags and table, or run without --resume to start over"
            )
        return state

    def stage(self, name: str) -> Checkpoint:
        """The checkpoint of a later training stage: resumed only if that stage had begun."""
        path = self.path.with_name(f"{self.path.stem}-{name}{self.path.suffix}")
        return Checkpoint(path, self.fingerprint, self.resume and path.is_file())

    def save(self, state: dict[str, Any]) -> None:
        # Write then rename: a crash mid-save keeps the previous epoch's checkpoint.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save({**state, "fingerprint": self.fingerprint}, tmp)
        tmp.replace(self.path)
