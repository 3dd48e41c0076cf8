"""Transition deploy mode: old and evolved vectors side by side while the old encoder still runs.

A trained artifact (v1 -> v2) yields two more artifacts, each an ordinary
upgrade that ``evolve`` runs like any other:

    <name>-transition   v1 -> v2_fused   gallery g = [o ; psi(o)] / sqrt(2)
                                         query encoder: [q_old ; q_new] -> [a q_old ; b q_new]
    <name>-exit         v2_fused -> v2   g -> psi(o): the way out once the old encoder retires

One inner-product search of the fused query against the fused gallery scores
a cos(q_old, o) + b cos(q_new, psi(o)) (each half unit-norm), so the old
model's view keeps what it knew while the new one adds what it knows; a and b
were fitted on identities held out of training (quality.fit_fusion).
Natively new items inserted during the transition are stored as
[phi_old(x) ; phi_new(x)] / sqrt(2): the same ``fuse_gallery`` with psi replaced
by the new encoder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dmu_migrate.artifact import (
    ADAPTER,
    NEW_MODEL,
    Artifact,
    Manifest,
    load_artifact,
    staged,
    write_manifest,
)
from dmu_migrate.errors import ArtifactError, InputError
from dmu_migrate.metrics import l2_normalize
from dmu_migrate.onnx_model import OnnxModel
from dmu_migrate.training.export import OPSET, PARITY_TOLERANCE, export_onnx
from dmu_migrate.training.models import l2_normalize as torch_normalize

FUSED_SUFFIX = "_fused"


class FusedQuery(nn.Module):
    """[q_old ; q_new] -> [a normalize(q_old) ; b normalize(q_new)]."""

    def __init__(self, old_dim: int, a: float, b: float) -> None:
        super().__init__()
        self.old_dim, self.a, self.b = old_dim, a, b

    def forward(self, both: torch.Tensor) -> torch.Tensor:
        old, new = both[:, : self.old_dim], both[:, self.old_dim :]
        return torch.cat([self.a * torch_normalize(old), self.b * torch_normalize(new)], dim=1)


class ExitAdapter(nn.Module):
    """[o ; psi(o)] -> psi(o): the evolved half of a fused vector."""

    def __init__(self, old_dim: int) -> None:
        super().__init__()
        self.old_dim = old_dim

    def forward(self, fused: torch.Tensor) -> torch.Tensor:
        return fused[:, self.old_dim :]


def fuse_query(q_old: np.ndarray, q_new: np.ndarray, a: float, b: float) -> np.ndarray:
    """The fused query of each row, for applications that do not run query.onnx."""
    return l2_normalize(np.hstack([a * l2_normalize(q_old), b * l2_normalize(q_new)]))


def fuse_gallery(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """The stored vector of an item: [old ; new] halves unit-norm; new is psi(o) or phi_new(x)."""
    return l2_normalize(np.hstack([l2_normalize(old), l2_normalize(new)]))


@dataclass(frozen=True)
class TransitionArtifacts:
    transition: Artifact
    exit: Artifact


def make_transition(
    artifact_path: str | Path, out_dir: str | Path | None = None, overwrite: bool = False
) -> TransitionArtifacts:
    """Write ``<name>-transition`` and ``<name>-exit`` beside the artifact (or in out_dir)."""
    base = load_artifact(artifact_path)
    m = base.manifest
    if m.method.startswith("transition"):
        raise InputError(
            f"artifact '{base.path}' was written by transition ({m.method}); derive the "
            f"transition artifacts from the trained artifact '{m.training.get('base', '?')}'"
        )
    fusion = m.quality.get("fusion") if m.quality else None
    if not isinstance(fusion, dict) or "a" not in fusion:
        raise InputError(
            f"artifact '{base.path}' has no fitted fusion weights (trained without held-out "
            f"identities); retrain with --val-fraction > 0"
        )
    check_weights(base, float(fusion["a"]), float(fusion["b"]))
    if base.new_model_path is None:
        raise InputError(
            f"artifact '{base.path}' ships no new_model.onnx; the transition's query encoder "
            f"needs the new model's embeddings beside the old ones, so train with a new model"
        )
    out = Path(out_dir) if out_dir is not None else base.path.parent
    fused_version = f"{m.to_version}{FUSED_SUFFIX}"
    both = m.old_dim + m.new_dim
    rng = np.random.default_rng(0)
    sample_old = rng.normal(size=(64, m.old_dim)).astype(np.float32)
    sample_both = rng.normal(size=(64, both)).astype(np.float32)
    # What the transition deploys is the fused setting: the gate judges it.
    settings = dict(m.quality.get("settings", {}))
    settings["new->evolved"] = {"R@1": float(fusion["R@1"]), "mAP": float(fusion["mAP"])}

    def gallery(staging: Path) -> float:
        fused_gallery_graph(base.adapter_path, staging / ADAPTER)
        expected = fuse_gallery(sample_old, OnnxModel(base.adapter_path)(sample_old))
        return float(np.abs(OnnxModel(staging / ADAPTER)(sample_old) - expected).max())

    def query(staging: Path) -> float:
        q = FusedQuery(m.old_dim, float(fusion["a"]), float(fusion["b"]))
        return export_onnx(q, sample_both, staging / NEW_MODEL, "x", "embedding")

    def exit_adapter(staging: Path) -> float:
        return export_onnx(ExitAdapter(m.old_dim), sample_both, staging / ADAPTER, "old", "evolved")

    transition = _write(
        out / f"{m.name}-transition",
        overwrite,
        Manifest(
            name=f"{m.name}-transition",
            from_version=m.from_version,
            to_version=fused_version,
            method="transition",
            old_dim=m.old_dim,
            new_dim=both,
            input_dim=both,
            opset=OPSET,
            training={"base": m.name, "fusion": fusion},
            quality={**m.quality, "settings": settings},
        ),
        {ADAPTER: gallery, NEW_MODEL: query},
    )
    exit_artifact = _write(
        out / f"{m.name}-exit",
        overwrite,
        Manifest(
            name=f"{m.name}-exit",
            from_version=fused_version,
            to_version=m.to_version,
            method="transition-exit",
            old_dim=both,
            new_dim=m.new_dim,
            input_dim=None,
            opset=OPSET,
            training={"base": m.name},
            quality=dict(m.quality),
        ),
        {ADAPTER: exit_adapter},
    )
    return TransitionArtifacts(transition, exit_artifact)


def check_weights(base: Artifact, a: float, b: float) -> None:
    """A fitted weight of 0 leaves one half of every fused vector unread: twice the
    dimensions for a ranking one model gives alone, so refuse and name what to deploy."""
    query = f"[{a:.2f} q_old ; {b:.2f} q_new]"
    if a <= 0.0:
        raise InputError(
            f"the fusion fitted for '{base.path}' gives the old model weight 0 (query "
            f"{query}): the old half would be stored and never scored, so the transition "
            f"ranks as the evolved gallery alone at twice the dimensions; deploy the artifact "
            f"itself: dmu-migrate evolve --adapter {base.path}"
        )
    if b <= 0.0:
        raise InputError(
            f"the fusion fitted for '{base.path}' gives the new model weight 0 (query "
            f"{query}): it ranks as today's old->old search, so the transition gains nothing; "
            f"keep today's system and retrain (see docs/method.md)"
        )


def fused_gallery_graph(adapter_onnx: Path, target: Path) -> None:
    """adapter.onnx (old -> psi(o), unit-norm) -> old -> [normalize(o) ; psi(o)] / sqrt(2).

    Built by adding nodes to the base graph rather than re-exporting torch
    weights, so a transition can be derived from any artifact, however trained.
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(adapter_onnx))
    graph = model.graph
    (inp,), (out,) = graph.input, graph.output
    psi = "dmu_psi"
    for node in graph.node:
        node.output[:] = [psi if name == out.name else name for name in node.output]
        node.input[:] = [psi if name == out.name else name for name in node.input]
    graph.initializer.extend(
        [
            helper.make_tensor("dmu_eps", TensorProto.FLOAT, [], [1e-12]),
            helper.make_tensor("dmu_half_sqrt2", TensorProto.FLOAT, [], [float(np.sqrt(0.5))]),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("ReduceL2", [inp.name], ["dmu_norm"], axes=[1], keepdims=1),
            helper.make_node("Max", ["dmu_norm", "dmu_eps"], ["dmu_norm_safe"]),
            helper.make_node("Div", [inp.name, "dmu_norm_safe"], ["dmu_old_unit"]),
            helper.make_node("Concat", ["dmu_old_unit", psi], ["dmu_both"], axis=1),
            helper.make_node("Mul", ["dmu_both", "dmu_half_sqrt2"], [out.name]),
        ]
    )
    dims = out.type.tensor_type.shape.dim
    dims[1].dim_value = dims[1].dim_value + inp.type.tensor_type.shape.dim[1].dim_value
    onnx.checker.check_model(model)
    onnx.save(model, str(target))


def _write(
    target: Path, overwrite: bool, manifest: Manifest, writers: dict[str, Callable[[Path], float]]
) -> Artifact:
    """Write each model with its writer (which returns its parity error), then the manifest;
    the directory appears whole or not at all."""
    if target.exists() and not overwrite:
        raise InputError(f"artifact '{target}' already exists; pass --overwrite to replace it")
    with staged(target) as staging:
        manifest.parity = {name: write(staging) for name, write in writers.items()}
        worst = max(manifest.parity.values())
        if not worst <= PARITY_TOLERANCE:
            raise ArtifactError(
                f"transition model of '{target.name}' differs from its definition by "
                f"{worst:.2e}; report this with the base artifact"
            )
        write_manifest(staging, manifest)
    return load_artifact(target)
