"""``dmu-migrate evaluate``: what the upgrade buys, on held-out data.

Four settings (query model -> gallery vectors):
    old->old       today's system
    new->old       new queries against the untouched old gallery (compatibility)
    new->evolved   new queries against psi(old gallery): what evolve deploys
    new->new       new queries against a re-embedded gallery (full backfill)
Only onnxruntime is used, so evaluation runs wherever evolve runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dmu_migrate.artifact import Artifact
from dmu_migrate.data import Columns, Table, read_table
from dmu_migrate.errors import ArtifactError, InputError
from dmu_migrate.evolve.transform import OnnxModel
from dmu_migrate.metrics import RetrievalScores, retrieval_scores

SETTINGS = ("old->old", "new->old", "new->evolved", "new->new")


@dataclass(frozen=True)
class EvalReport:
    table: str
    artifact: str
    protocol: str  # "query/gallery" or "leave-one-out"
    queries: int
    gallery: int
    scores: dict[str, RetrievalScores]

    def as_dict(self) -> dict[str, object]:
        return {
            "table": self.table,
            "artifact": self.artifact,
            "protocol": self.protocol,
            "queries": self.queries,
            "gallery": self.gallery,
            "settings": {name: s.as_dict() for name, s in self.scores.items()},
        }


def embed(artifact: Artifact, table: Table) -> dict[str, np.ndarray]:
    """The three embeddings of every row: old (stored), new (encoder), evolved (adapter)."""
    m = artifact.manifest
    if table.old.shape[1] != m.old_dim:
        raise InputError(
            f"column 'old' of '{table.path}' has {table.old.shape[1]}-d vectors but adapter "
            f"'{m.name}' expects {m.old_dim}-d; use the table of the matching old model"
        )
    if artifact.new_model_path is None:
        raise ArtifactError(f"artifact {artifact.label} has no new_model.onnx to encode queries")
    if table.x.shape[1] != m.input_dim:
        raise InputError(
            f"column 'x' of '{table.path}' has {table.x.shape[1]} features but the new model of "
            f"'{m.name}' takes {m.input_dim}; use the table the model was trained for"
        )
    return {
        "old": table.old,
        "new": OnnxModel(artifact.new_model_path)(table.x),
        "evolved": OnnxModel(artifact.adapter_path)(table.old),
    }


def evaluate(
    table_path: str | Path, artifact: Artifact, columns: Columns = Columns()
) -> EvalReport:
    table = read_table(table_path, columns)
    vectors = embed(artifact, table)
    if table.role is not None:
        is_query = table.role == "query"
        if not is_query.any() or is_query.all():
            raise InputError(
                f"column '{columns.role}' of '{table_path}' needs both 'query' and 'gallery' rows"
            )
        q_idx, g_idx = np.flatnonzero(is_query), np.flatnonzero(~is_query)
        protocol = "query/gallery"
    else:
        q_idx = g_idx = np.arange(len(table))
        protocol = "leave-one-out"

    scores = {}
    for setting in SETTINGS:
        query_kind, gallery_kind = setting.split("->")
        scores[setting] = retrieval_scores(
            vectors[query_kind][q_idx],
            table.labels[q_idx],
            vectors[gallery_kind][g_idx],
            table.labels[g_idx],
            leave_one_out=table.role is None,
        )
    return EvalReport(str(table_path), str(artifact.path), protocol, len(q_idx), len(g_idx), scores)
