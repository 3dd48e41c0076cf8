"""The calibrated deploy artifact: the offset of evolved items stored as one extra dimension.

A trained artifact (v1 -> v2) whose manifest records a calibration offset c > 0
(calibration.py) yields ``<name>-calibrated`` (v1 -> v2_cal), an ordinary upgrade
that ``evolve`` runs like any other:

    adapter.onnx      stored old vector -> [psi(o) ; k]   the evolved rows evolve writes
    new_model.onnx    model input -> [f(x) ; 1]           queries
                      (both scaled to unit length for a cosine collection)
    item_model.onnx   model input -> [f(x) ; 0]           native rows: backfill's vectors
                                                          and the application's inserts
    backfill_score.onnx                                   the base's, unchanged

k = calibration.stored_constant(c, metric), so that one search of the store scores an
evolved item c above a native item of the same cosine. An adapter-only base ships no
encoder: its new_model.onnx and item_model.onnx then take the new model's embedding.
The models are the base's graphs with nodes added, as transition.py builds its own,
so no torch is needed and any artifact, however trained, can be derived.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from dmu_migrate.artifact import (
    ADAPTER,
    BACKFILL_SCORE,
    ITEM_MODEL,
    NEW_MODEL,
    Artifact,
    Manifest,
    load_artifact,
    staged,
    write_manifest,
)
from dmu_migrate.calibration import stored_constant
from dmu_migrate.errors import ArtifactError, InputError
from dmu_migrate.metrics import l2_normalize
from dmu_migrate.onnx_model import OnnxModel
from dmu_migrate.training.export import OPSET, PARITY_TOLERANCE

CALIBRATED_SUFFIX = "_cal"


def make_calibrated(
    artifact_path: str | Path,
    out_dir: str | Path | None = None,
    metric: str = "cosine",
    overwrite: bool = False,
) -> Artifact:
    """Write ``<name>-calibrated`` beside the artifact (or in ``out_dir``) for a collection
    searched by ``metric`` (cosine, ip or l2)."""
    base = load_artifact(artifact_path)
    m = base.manifest
    if m.method.startswith("transition") or m.method == "calibrated":
        raise InputError(
            f"artifact '{base.path}' was derived ({m.method}); derive the calibrated artifact "
            f"from the trained artifact '{m.training.get('base', '?')}'"
        )
    offset = base.offset
    if offset == 0.0:
        raise InputError(
            f"artifact '{base.path}' has calibration offset 0 (none fitted, or evolved and "
            f"native items already score alike): deploy it as it is, it needs no extra dimension"
        )
    k = stored_constant(offset, metric)
    target = (Path(out_dir) if out_dir is not None else base.path.parent) / f"{m.name}-calibrated"
    if target.exists() and not overwrite:
        raise InputError(f"artifact '{target}' already exists; pass --overwrite to replace it")
    encoder_input = m.input_dim if base.new_model_path is not None else m.new_dim
    # A cosine store scores (and Qdrant stores) unit vectors: the derived models return
    # them, which changes no cosine. ip and l2 read the lengths, so theirs stay as derived.
    unit = metric == "cosine"
    with staged(target) as staging:
        append_constant(base.adapter_path, staging / ADAPTER, k, unit)
        encoder = base.new_model_path
        if encoder is None:  # adapter-only: the encoders take the new model's embedding
            encoder = staging / "normalize.onnx"
            normalize_graph(m.new_dim, encoder)
        append_constant(encoder, staging / NEW_MODEL, 1.0, unit)
        append_constant(encoder, staging / ITEM_MODEL, 0.0)
        if encoder.parent == staging:
            encoder.unlink()
        if base.backfill_score_path is not None:
            shutil.copyfile(base.backfill_score_path, staging / BACKFILL_SCORE)
        parity = _parity(base, staging, k, encoder_input, unit)
        manifest = Manifest(
            name=target.name,
            from_version=m.from_version,
            to_version=f"{m.to_version}{CALIBRATED_SUFFIX}",
            method="calibrated",
            old_dim=m.old_dim,
            new_dim=m.new_dim + 1,
            input_dim=encoder_input,
            metric=metric,
            normalized=unit,
            opset=OPSET,
            parity=parity,
            training={"base": m.name, "offset": offset, "stored_constant": k, "metric": metric},
            # An evolved-only gallery ranks as before (the constant shifts every evolved
            # score alike, and cosine's shrink keeps the order): the gate's figures hold.
            quality=dict(m.quality),
        )
        write_manifest(staging, manifest)
    return load_artifact(target)


def _parity(
    base: Artifact, staging: Path, k: float, encoder_input: int | None, unit: bool
) -> dict[str, float]:
    """Each derived model against its definition on random inputs; refuse a mismatch."""
    m = base.manifest
    rng = np.random.default_rng(0)
    old = rng.normal(size=(64, m.old_dim)).astype(np.float32)
    x = rng.normal(size=(64, encoder_input or m.new_dim)).astype(np.float32)
    psi = OnnxModel(base.adapter_path)(old)
    f = OnnxModel(base.new_model_path)(x) if base.new_model_path is not None else l2_normalize(x)

    def error(name: str, got_from: np.ndarray, want: np.ndarray) -> float:
        want = l2_normalize(want) if unit else want
        return float(np.abs(OnnxModel(staging / name)(got_from) - want).max())

    column = np.ones((64, 1), np.float32)
    parity = {
        ADAPTER: error(ADAPTER, old, np.hstack([psi, k * column])),
        NEW_MODEL: error(NEW_MODEL, x, np.hstack([f, column])),
        ITEM_MODEL: error(ITEM_MODEL, x, np.hstack([f, 0 * column])),
    }
    worst = max(parity.values())
    if not worst <= PARITY_TOLERANCE:
        raise ArtifactError(
            f"calibrated model of '{m.name}' differs from its definition by {worst:.2e}; "
            f"report this with the base artifact"
        )
    return parity


def append_constant(source: Path, target: Path, value: float, unit: bool = False) -> None:
    """A model with one unit-length output (n, d) -> the same with a column of ``value``:
    (n, d + 1), scaled by 1 / sqrt(1 + value^2) to unit length with ``unit``.

    The column is cut from the output (a slice times 0, plus the value) and the scale is
    a constant, so the derived model costs a copy of its output, not another norm."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(source))
    graph = model.graph
    (out,) = graph.output
    inner = "dmu_plain"
    for node in graph.node:
        node.output[:] = [inner if name == out.name else name for name in node.output]
        node.input[:] = [inner if name == out.name else name for name in node.input]
    scale = 1.0 / float(np.sqrt(1.0 + value * value)) if unit else 1.0
    graph.initializer.extend(
        [
            helper.make_tensor("dmu_start", TensorProto.INT64, [1], [0]),
            helper.make_tensor("dmu_end", TensorProto.INT64, [1], [1]),
            helper.make_tensor("dmu_axis", TensorProto.INT64, [1], [1]),
            helper.make_tensor("dmu_zero", TensorProto.FLOAT, [], [0.0]),
            helper.make_tensor("dmu_value", TensorProto.FLOAT, [], [float(value)]),
            helper.make_tensor("dmu_scale", TensorProto.FLOAT, [], [scale]),
        ]
    )
    wide = "dmu_wide" if unit else out.name
    graph.node.extend(
        [
            helper.make_node("Slice", [inner, "dmu_start", "dmu_end", "dmu_axis"], ["dmu_first"]),
            helper.make_node("Mul", ["dmu_first", "dmu_zero"], ["dmu_zeros"]),
            helper.make_node("Add", ["dmu_zeros", "dmu_value"], ["dmu_column"]),
            helper.make_node("Concat", [inner, "dmu_column"], [wide], axis=1),
        ]
    )
    if unit:
        graph.node.append(helper.make_node("Mul", [wide, "dmu_scale"], [out.name]))
    dims = out.type.tensor_type.shape.dim
    if dims[1].HasField("dim_value"):
        dims[1].dim_value = dims[1].dim_value + 1
    else:  # a symbolic width: the runtime shape says it
        dims[1].dim_param = f"{dims[1].dim_param}_plus_1"
    onnx.checker.check_model(model)
    onnx.save(model, str(target))


def normalize_graph(dim: int, target: Path) -> None:
    """x (n, dim) -> x / max(|x|, eps): the encoder of an adapter-only artifact, whose new
    model is the user's own."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", dim])
    y = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", dim])
    graph = helper.make_graph(
        [
            helper.make_node("ReduceL2", ["x"], ["norm"], axes=[1], keepdims=1),
            helper.make_node("Max", ["norm", "eps"], ["safe"]),
            helper.make_node("Div", ["x", "safe"], ["embedding"]),
        ],
        "normalize",
        [x],
        [y],
        [helper.make_tensor("eps", TensorProto.FLOAT, [], [1e-12])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model)
    onnx.save(model, str(target))
