"""What the val-split probes share: the seed-0 DMU model of an example, its tables, R@1.

A probe reads the training table (to fit) and the val split (to score); the
test split is never read, so nothing a probe picks is tuned on test numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from compat import EXAMPLES, plugins, tables

from dmu_migrate.artifact import load_artifact
from dmu_migrate.data import Columns, Table, read_table
from dmu_migrate.evaluation import embed, split_roles
from dmu_migrate.metrics import retrieval_scores


@dataclass
class ValProbe:
    train: Table
    val: Table
    on_train: dict[str, np.ndarray]  # old / new / evolved embeddings; empty unless asked
    on_val: dict[str, np.ndarray]

    def r1(self, queries: np.ndarray, gallery: np.ndarray) -> float:
        """Recall@1 (a fraction) of val ``queries`` against the val ``gallery`` rows."""
        q, g, loo = split_roles(self.val, Columns())
        labels = self.val.labels
        s = retrieval_scores(
            queries[q], labels[q], gallery[g], labels[g], ks=(1,), leave_one_out=loo
        )
        return float(s.recall[1])


def open_probe(example: str, data: Path, work: Path, embed_train: bool = False) -> ValProbe:
    """The seed-0 DMU artifact of ``compat.py``'s run under ``work``, and the tables."""
    ex = EXAMPLES[example]
    paths = tables(ex, data)
    with plugins(ex):
        artifact = load_artifact(work / example / "seed0" / "dmu")
        train = read_table(paths["train"], Columns(), need_x=True)
        val = read_table(paths["val"], Columns(), need_x=True)
        on_train = embed(artifact, train)[0] if embed_train else {}
        on_val, _ = embed(artifact, val)
    return ValProbe(train, val, on_train, on_val)
