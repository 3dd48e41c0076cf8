"""onnxruntime wrapper for the exported models (adapter and new-model encoder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from dmu_migrate.artifact import Artifact
from dmu_migrate.errors import ArtifactError, InputError

RUN_ROWS = 1024  # rows per onnxruntime call


class OnnxModel:
    """One reusable inference session with a single input and a single output."""

    def __init__(self, path: Path, threads: int = 0) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0 lets onnxruntime use every core
        options.log_severity_level = 3
        # Idle pool threads would spin for work between batches, taking CPU from the
        # reader and writer stages (and from a store on the same machine).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ArtifactError(
                f"'{path}' is not a loadable ONNX model ({exc}); re-export the artifact"
            ) from exc
        (inp,) = self.session.get_inputs()
        self.input_name = inp.name
        self.output_name = self.session.get_outputs()[0].name
        dim = inp.shape[1]
        self.input_dim = dim if isinstance(dim, int) else None
        out_dim = self.session.get_outputs()[0].shape[1]
        self.output_dim = out_dim if isinstance(out_dim, int) else None
        self.path = path

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.ndim != 2 or (self.input_dim is not None and batch.shape[1] != self.input_dim):
            raise InputError(
                f"model '{self.path.name}' takes {self.input_dim}-d rows, got shape {batch.shape}; "
                f"check the vector field or column"
            )
        if len(batch) == 0:
            out_dim = self.session.get_outputs()[0].shape[1]
            return np.zeros((0, out_dim if isinstance(out_dim, int) else 0), np.float32)
        # A few hundred rows per run keep onnxruntime's intermediate tensors in the
        # caches and out of the process's peak memory (8192 x 512-d in one run held
        # ~120 MB of them); throughput is the same or better than one big run.
        parts = [
            self.session.run([self.output_name], {self.input_name: batch[i : i + RUN_ROWS]})[0]
            for i in range(0, len(batch), RUN_ROWS)
        ]
        out = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return np.asarray(out, dtype=np.float32)


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
