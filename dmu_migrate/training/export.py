"""ONNX export of the trained networks, checked against torch with onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from dmu_migrate.errors import ArtifactError
from dmu_migrate.onnx_model import OnnxModel
from dmu_migrate.training.models import Normalized

OPSET = 17
PARITY_TOLERANCE = 1e-4  # on unit vectors and scores near 1; float32 kernels differ by ~1e-6


def export_onnx(
    model: nn.Module,
    sample: np.ndarray,
    path: Path,
    input_name: str,
    output_name: str,
    normalize: bool = True,
) -> float:
    """Export ``normalize(model(x))`` with a dynamic batch axis; return the parity error.

    ``normalize=False`` exports ``model(x)`` as it is: a score, not an embedding.

    The parity error is the largest absolute difference between torch and
    onnxruntime outputs on ``sample``; above PARITY_TOLERANCE the file is
    removed and export fails, so no artifact ships a model that computes
    something else than what was trained.
    """
    wrapped = (Normalized(model) if normalize else model).cpu().eval()
    example = torch.tensor(sample[:2], dtype=torch.float32)
    tmp = path.with_suffix(".onnx.tmp")
    torch.onnx.export(
        wrapped,
        (example,),
        str(tmp),
        input_names=[input_name],
        output_names=[output_name],
        dynamic_axes={input_name: {0: "n"}, output_name: {0: "n"}},
        opset_version=OPSET,
        dynamo=False,
    )
    tmp.replace(path)
    with torch.no_grad():
        expected = wrapped(torch.tensor(sample, dtype=torch.float32)).numpy()
    got = OnnxModel(path)(sample)
    error = float(np.abs(expected - got).max())
    if not error <= PARITY_TOLERANCE:
        path.unlink()
        raise ArtifactError(
            f"ONNX export of '{path.name}' differs from torch by {error:.2e} "
            f"(limit {PARITY_TOLERANCE:.0e}); report this with the training table"
        )
    return error
