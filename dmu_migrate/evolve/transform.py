"""onnxruntime wrapper for the exported models (adapter and new-model encoder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from dmu_migrate.errors import ArtifactError, InputError


class OnnxModel:
    """One reusable inference session with a single input and a single output."""

    def __init__(self, path: Path, threads: int = 0) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0 lets onnxruntime use every core
        options.log_severity_level = 3
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
        (out,) = self.session.run([self.output_name], {self.input_name: batch})
        return np.asarray(out, dtype=np.float32)
