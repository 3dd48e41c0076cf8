"""``dmu-migrate demo``: the whole upgrade story on real data, in a scratch directory.

Data: scikit-learn's bundled handwritten digits (1,797 8x8 images, 10 classes).
Story, as the DMU paper simulates upgrades ("30% data -> 100% data"):
1. an old model, trained on 30% of the training split, embedded the gallery
   that now lives in a Milvus Lite collection behind the alias ``digits``;
2. ``train`` fits the new model with selective backward compatibility and the
   forward adapter on 100% of the training split;
3. ``evolve`` streams the stored vectors through the adapter into a new
   collection and moves the alias;
4. ``evaluate`` scores held-out queries, and real searches run through Milvus.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pymilvus import DataType, MilvusClient
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from dmu_migrate.artifact import NEW_MODEL
from dmu_migrate.data import write_table
from dmu_migrate.errors import InputError
from dmu_migrate.evaluation import EvalReport, evaluate
from dmu_migrate.evolve.pipeline import EvolveResult, evolve_collection
from dmu_migrate.onnx_model import OnnxModel
from dmu_migrate.stores.milvus import MilvusStore
from dmu_migrate.training.losses import CosFaceLoss
from dmu_migrate.training.trainer import EpochCallback, TrainConfig
from dmu_migrate.training.upgrade import TrainReport, train_upgrade

MARKER = ".dmu-demo"
DIM = 32
ALIAS = "digits"
OLD_COLLECTION = "digits__v1"
DATABASE = "gallery.db"  # the Milvus Lite file in the workdir


@dataclass(frozen=True)
class SearchCheck:
    """New-model queries searched through Milvus: how many of the top-k share the query's label."""

    k: int
    possible: int  # queries x k
    evolved_hits: int  # searched through the alias, now on the evolved collection
    old_hits: int  # the same queries against the untouched old collection
    examples: list[tuple[int, int, int]]  # (query label, top-1 label evolved, top-1 label old)

    def as_dict(self) -> dict[str, object]:
        return {
            "k": self.k,
            "possible": self.possible,
            "evolved_hits": self.evolved_hits,
            "old_hits": self.old_hits,
            "examples": [
                {"label": label, "evolved_top1": evolved, "old_top1": old}
                for label, evolved, old in self.examples
            ],
        }


@dataclass(frozen=True)
class DemoResult:
    workdir: Path
    train: TrainReport
    evolve: EvolveResult
    evaluation: EvalReport
    search: SearchCheck

    @property
    def database(self) -> Path:
        return self.workdir / DATABASE

    def as_dict(self) -> dict[str, object]:
        """What the demo prints, for --json: the evaluation report, the migration, the searches."""
        return {
            "workdir": str(self.workdir),
            "artifact": str(self.train.artifact.path),
            "database": str(self.database),
            "evaluation": self.evaluation.as_dict(),
            "evolve": self.evolve.as_dict(),
            "search": self.search.as_dict(),
        }


def prepare_workdir(workdir: Path) -> None:
    """Reuse a directory only if an earlier demo made it: never delete a user's files."""
    if workdir.exists() and any(workdir.iterdir()):
        if not (workdir / MARKER).exists():
            raise InputError(
                f"'{workdir}' exists and was not made by the demo; pass --workdir with a new path"
            )
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).write_text("created by dmu-migrate demo; safe to delete\n")


def fit_old_model(x: np.ndarray, y: np.ndarray, seed: int) -> nn.Module:
    """The legacy model: small, and trained on little data, as deployed models often were."""
    torch.manual_seed(seed)
    hidden = 32
    model = nn.Sequential(
        nn.Linear(x.shape[1], hidden),
        nn.LayerNorm(hidden),
        nn.GELU(),
        nn.Linear(hidden, hidden),
        nn.LayerNorm(hidden),
        nn.GELU(),
        nn.Linear(hidden, DIM),
    )
    head = CosFaceLoss(DIM, int(y.max()) + 1, scale=30.0, margin=0.2)
    opt = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=3e-3)
    xs, ys = torch.as_tensor(x), torch.as_tensor(y)
    for _ in range(40):
        loss = head(model(xs), ys)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def embed(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = torch.nn.functional.normalize(model(torch.as_tensor(x)), dim=1)
    return out.numpy()


def store_gallery(db: Path, vectors: np.ndarray, labels: np.ndarray) -> None:
    """The production gallery before the upgrade: old vectors behind the alias users query."""
    client = MilvusClient(str(db))
    try:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=vectors.shape[1])
        schema.add_field("label", DataType.INT64)
        index = client.prepare_index_params()
        index.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="COSINE")
        client.create_collection(OLD_COLLECTION, schema=schema, index_params=index)
        client.insert(
            OLD_COLLECTION,
            [
                {"id": i, "vector": v, "label": int(c)}
                for i, (v, c) in enumerate(zip(vectors, labels, strict=True))
            ],
        )
        client.create_alias(OLD_COLLECTION, ALIAS)
    finally:
        client.close()


def search_check(db: Path, queries: np.ndarray, labels: np.ndarray, k: int = 10) -> SearchCheck:
    client = MilvusClient(str(db))
    try:
        found = {}
        for name in (ALIAS, OLD_COLLECTION):
            client.load_collection(name)
            hits = client.search(name, data=queries, limit=k, output_fields=["label"])
            found[name] = np.asarray([[h["entity"]["label"] for h in row] for row in hits])
    finally:
        client.close()
    evolved, old = found[ALIAS], found[OLD_COLLECTION]
    examples = [(int(labels[i]), int(evolved[i, 0]), int(old[i, 0])) for i in range(5)]
    return SearchCheck(
        k,
        evolved.size,
        int((evolved == labels[:, None]).sum()),
        int((old == labels[:, None]).sum()),
        examples,
    )


def run_demo(
    workdir: Path,
    seed: int = 0,
    epochs: int = 40,
    on_step: Callable[[str], None] | None = None,
    on_epoch: EpochCallback | None = None,
    threads: int = 0,
) -> DemoResult:
    step = on_step or (lambda _msg: None)
    prepare_workdir(workdir)
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.4, stratify=y, random_state=seed)
    x_old, _, y_old, _ = train_test_split(
        x_tr, y_tr, train_size=0.3, stratify=y_tr, random_state=seed
    )
    role = np.where(np.arange(len(y_te)) % 4 == 0, "query", "gallery").astype(object)

    step(f"old model: trained on {len(y_old)} images (30% of the training split)")
    old_model = fit_old_model(x_old, y_old, seed)
    old_tr, old_te = embed(old_model, x_tr), embed(old_model, x_te)
    write_table(workdir / "train.parquet", {"label": y_tr, "old": old_tr, "x": x_tr})
    write_table(workdir / "eval.parquet", {"label": y_te, "old": old_te, "x": x_te, "role": role})

    db = workdir / DATABASE
    gallery = role == "gallery"
    store_gallery(db, old_te[gallery], y_te[gallery])
    step(f"Milvus Lite: {int(gallery.sum())} old vectors in '{OLD_COLLECTION}', alias '{ALIAS}'")

    step(f"train: new model + adapter on {len(y_tr)} images (100% of the training split)")
    config = TrainConfig(epochs=epochs, batch_size=128, hidden=256, seed=seed)
    report = train_upgrade(
        workdir / "train.parquet",
        workdir / "adapters",
        "digits-v2",
        config,
        on_epoch=on_epoch,
        threads=threads,
    )

    step("evolve: old vectors -> adapter -> new collection, then the alias moves")
    store = MilvusStore.connect(str(db))
    try:
        result = evolve_collection(store, ALIAS, [report.artifact])
    finally:
        store.close()

    evaluation = evaluate(workdir / "eval.parquet", report.artifact)
    encoder = OnnxModel(report.artifact.path / NEW_MODEL)  # train always exports it
    queries = encoder(x_te[~gallery])
    # The gallery's own images through the new model, by gallery id: what a partial
    # backfill writes for the items whose raw data is at hand (docs/backfill.md).
    native = {"id": np.arange(int(gallery.sum())), "vector": encoder(x_te[gallery])}
    write_table(workdir / "gallery-native.parquet", native)
    search = search_check(db, queries, y_te[~gallery])
    return DemoResult(workdir, report, result, evaluation, search)
