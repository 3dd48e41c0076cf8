"""Adapter artifacts of the shipped shape, made without training, for speed benchmarks.

Throughput does not depend on the weights, only on the network's shape, so
a randomly initialised residual adapter (the one ``dmu-migrate train`` ships:
Linear -> LayerNorm -> GELU blocks plus a skip path) is exported with the
same exporter and manifest as a trained one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dmu_migrate.artifact import ADAPTER, Manifest, write_manifest
from dmu_migrate.training.export import OPSET, export_onnx
from dmu_migrate.training.models import ResidualAdapter


def adapter_module(
    old_dim: int, new_dim: int, hidden: int = 256, layers: int = 1
) -> ResidualAdapter:
    torch.manual_seed(0)
    return ResidualAdapter(old_dim, new_dim, hidden, layers).eval()


def make_adapter_artifact(
    directory: Path, old_dim: int, new_dim: int, hidden: int = 256, layers: int = 1
) -> Path:
    """Write an artifact directory (adapter.onnx + manifest) and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    module = adapter_module(old_dim, new_dim, hidden, layers)
    sample = np.random.default_rng(0).standard_normal((64, old_dim)).astype(np.float32)
    error = export_onnx(module, sample, directory / ADAPTER, "old", "evolved")
    manifest = Manifest(
        name=directory.name,
        from_version="v1",
        to_version="v2",
        method="benchmark",
        old_dim=old_dim,
        new_dim=new_dim,
        input_dim=None,
        opset=OPSET,
        parity={"adapter": error},
        training={"note": "random weights of the shipped shape, for throughput only"},
    )
    write_manifest(directory, manifest)
    return directory
