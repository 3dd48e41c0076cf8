"""The ONNX runtime of an artifact: one onnxruntime session per exported model.

Everything that runs an artifact's models (evolve's adapters, evaluate, the
backfill score, training's export checks) goes through this one wrapper, so
session options and input checks are written once, beside the artifact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

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
