"""The adapters of a migration, chained: v1 -> v2 -> v3 without storing v2."""

from __future__ import annotations

import numpy as np

from dmu_migrate.artifact import Artifact
from dmu_migrate.errors import ArtifactError, InputError
from dmu_migrate.onnx_model import OnnxModel


class AdapterChain:
    """One or more adapters applied in turn: v1 -> v2 -> v3 without storing v2.

    Chained upgrades let rows that were never evolved to v2 go straight to v3;
    the chain must be contiguous in versions and dimensions.
    """

    def __init__(self, artifacts: list[Artifact], threads: int = 0) -> None:
        if not artifacts:
            raise InputError("give at least one --adapter")
        for prev, nxt in zip(artifacts, artifacts[1:], strict=False):
            a, b = prev.manifest, nxt.manifest
            if a.to_version != b.from_version or a.new_dim != b.old_dim:
                raise InputError(
                    f"adapters '{a.name}' ({a.from_version}->{a.to_version}, {a.new_dim}-d) and "
                    f"'{b.name}' ({b.from_version}->{b.to_version}, {b.old_dim}-d) do not chain; "
                    f"order --adapter from the oldest version to the newest"
                )
        self.artifacts = artifacts
        self.models = [OnnxModel(a.adapter_path, threads) for a in artifacts]
        for artifact, model in zip(artifacts, self.models, strict=True):
            m = artifact.manifest
            if (model.input_dim, model.output_dim) != (m.old_dim, m.new_dim):
                # The manifest sizes the target collection: it must describe this model.
                raise ArtifactError(
                    f"adapter.onnx of '{artifact.path}' maps {model.input_dim}-d -> "
                    f"{model.output_dim}-d but its manifest says {m.old_dim}-d -> "
                    f"{m.new_dim}-d; re-export the artifact"
                )
        first, last = artifacts[0].manifest, artifacts[-1].manifest
        self.from_version, self.to_version = first.from_version, last.to_version
        self.in_dim, self.out_dim = first.old_dim, last.new_dim
        self.name = "+".join(a.manifest.name for a in artifacts)
        # Identifies exactly which models produced a stored vector (resume checks it).
        self.checksum = "+".join(a.manifest.files["adapter.onnx"][:16] for a in artifacts)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        for model in self.models:
            batch = model(batch)
        return batch
