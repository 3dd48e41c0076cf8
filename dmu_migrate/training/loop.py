"""The epoch loop shared by every trained method: batches, validation, early stopping, resume.

A method supplies a ``step`` (batch indices -> loss terms, "loss" being the
one to minimise) and optionally a ``validate`` (-> metrics, "val" being the
one early stopping maximises); this module owns everything else, so that
joint training and adapter-only training stop, log and resume alike.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from dmu_migrate.distractors import Pool, PoolFor
from dmu_migrate.errors import InputError
from dmu_migrate.metrics import retrieval_scores
from dmu_migrate.training import distributed
from dmu_migrate.training.checkpoint import Checkpoint
from dmu_migrate.training.config import TrainConfig

EpochCallback = Callable[[int, dict[str, float]], None]
Step = Callable[[torch.Tensor], dict[str, torch.Tensor]]
Validate = Callable[[], dict[str, float]]


def pick_device(name: str = "auto") -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA GPU is visible to torch; use --device auto or cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return distributed.local_device(torch.device(name))


# Below this many identities a table is a closed set of classes (digits,
# clothing types) that the gallery shares with training, so validation holds
# out rows; from it on, identities, as a gallery of unseen faces or products needs.
MIN_IDENTITIES_HELD_OUT = 50


def split_by_label(
    labels: np.ndarray, fraction: float, seed: int, min_rows: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, validation).

    With many identities, whole identities are held out: they are never seen
    in training, so early stopping measures retrieval of unseen identities,
    which is what a gallery holds. Only identities with ``min_rows`` rows are
    held out: a lone item has nothing to retrieve under leave-one-out, and
    would score as NaN. With few classes (see MIN_IDENTITIES_HELD_OUT) a
    seeded share of each class's rows is held out instead.
    """
    if fraction <= 0:
        return np.arange(len(labels)), np.zeros(0, dtype=np.int64)
    classes, counts = np.unique(labels, return_counts=True)
    rng = np.random.default_rng(seed)
    if len(classes) < MIN_IDENTITIES_HELD_OUT:
        return _split_rows(labels, fraction, rng)
    n_val = int(round(fraction * len(classes)))
    eligible = classes[counts >= min_rows]
    if len(eligible) < n_val:
        raise InputError(
            f"--val-fraction {fraction} needs {n_val} identities with {min_rows}+ rows but the "
            f"table has {len(eligible)}; lower --val-fraction or pass 0"
        )
    held = rng.choice(eligible, size=n_val, replace=False)
    is_val = np.isin(labels, held)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def held_out_kind(labels: np.ndarray) -> str:
    """What split_by_label holds out of this table: "identities" or "rows"."""
    return "identities" if len(np.unique(labels)) >= MIN_IDENTITIES_HELD_OUT else "rows"


def _split_rows(
    labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``fraction`` of each class's rows, keeping at least one row per class in
    training and two in validation (leave-one-out needs a partner)."""
    val: list[np.ndarray] = []
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        n = int(round(fraction * len(rows)))
        if n >= 2 and len(rows) - n >= 1:
            val.append(rows[:n])
    if not val:
        raise InputError(
            f"--val-fraction {fraction} holds out no rows: every class is too small to split; "
            f"raise --val-fraction or pass 0"
        )
    held = np.sort(np.concatenate(val))
    return np.setdiff1d(np.arange(len(labels)), held), held


def embed_rows(module: nn.Module, rows: torch.Tensor, batch: int = 2048) -> torch.Tensor:
    """module(rows) in chunks: a CNN over every validation image at once can need gigabytes."""
    return torch.cat([module(rows[i : i + batch]) for i in range(0, len(rows), batch)])


def map_score(
    queries: torch.Tensor, gallery: torch.Tensor, labels: np.ndarray, leave_one_out: bool
) -> float:
    """mAP of queries against the gallery (same rows): smoother than R@1 on small splits."""
    scores = retrieval_scores(
        queries.detach().float().cpu().numpy(),
        labels,
        gallery.detach().float().cpu().numpy(),
        labels,
        ks=(1,),
        leave_one_out=leave_one_out,
    )
    return float(scores.mean_ap)


@dataclass
class EarlyStopping:
    """Remembers the best validation score and its weights; says when to stop."""

    patience: int
    best: float = float("-inf")
    best_epoch: int = 0
    bad_epochs: int = 0
    best_states: dict[str, dict[str, Any]] = field(default_factory=dict)

    def update(self, epoch: int, score: float, modules: dict[str, nn.Module]) -> bool:
        if score > self.best:
            self.best, self.best_epoch, self.bad_epochs = score, epoch, 0
            self.best_states = {k: copy.deepcopy(m.state_dict()) for k, m in modules.items()}
        else:
            self.bad_epochs += 1
        return self.patience > 0 and self.bad_epochs >= self.patience


@dataclass
class TrainResult:
    new_model: nn.Module | None  # None in adapter-only mode: the new model is not ours
    adapter: nn.Module
    log: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val: float | None = None
    device: str = "cpu"
    new_dim: int = 0
    validation: dict[str, int | str] = field(default_factory=dict)  # rows/identities held out
    q_mean: float | None = None  # mean old discriminativeness of the training rows
    # R@1/mAP per deploy setting on the held-out rows, with the kept weights (quality.py)
    quality: dict[str, dict[str, float]] = field(default_factory=dict)
    fusion: dict[str, float] = field(default_factory=dict)  # transition weights (quality.py)
    # The distractors those figures saw, per setting (distractors.Pool.describe)
    distractors: dict[str, Any] = field(default_factory=dict)
    # Predicted alignment error from the old vector: the partial-backfill order (backfill_score.py)
    backfill_score: nn.Module | None = None
    # The evolved items' score offset in mixed galleries (calibration.Calibration.as_dict)
    calibration: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoopResult:
    log: list[dict[str, float]]
    best_epoch: int  # the epoch whose weights were kept (the last one without validation)
    best_val: float | None


def run_epochs(
    config: TrainConfig,
    modules: dict[str, nn.Module],
    optimizer: torch.optim.Optimizer,
    rows: int,
    step: Step,
    validate: Validate | None,
    checkpoint: Checkpoint | None,
    on_epoch: EpochCallback | None,
) -> LoopResult:
    device = next(p.device for m in modules.values() for p in m.parameters())
    # Every rank draws the same permutation and takes its own slice of each
    # global batch of ranks * batch rows, so all ranks take the same steps.
    generator = torch.Generator().manual_seed(config.seed)
    rank, ranks = distributed.shard()
    batch = min(config.batch_size, rows // ranks)
    if batch < 1:
        raise InputError(
            f"the training table has {rows} rows, fewer than the {ranks} training processes; "
            f"start fewer processes"
        )
    steps_per_epoch = max(1, rows // (batch * ranks))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch
    )
    stopper = EarlyStopping(config.patience)
    log: list[dict[str, float]] = []
    start, finished = 0, False
    state = distributed.from_main(checkpoint.load) if checkpoint is not None else None
    if state is not None:
        for key, module in modules.items():
            module.load_state_dict(state["modules"][key])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        stopper = EarlyStopping(config.patience, **state["stopper"])
        log, start, finished = state["log"], state["epoch"], state["finished"]
    step = distributed.data_parallel(step, modules, device)

    def judge(validate: Validate, epoch: int) -> tuple[dict[str, float], bool]:
        """Validation metrics and whether to stop: rank 0 decides for all."""
        for module in modules.values():
            module.eval()
        with torch.no_grad():
            metrics = validate()
        return metrics, stopper.update(epoch, metrics["val"], modules)

    for epoch in range(start, config.epochs):
        if finished:
            break
        for module in modules.values():
            module.train()
        sums: dict[str, float] = {}
        order = torch.randperm(rows, generator=generator).to(device)
        for i in range(steps_per_epoch):
            # Every step sees a full batch (InfoNCE needs in-batch negatives);
            # the remainder rows land in other epochs' batches.
            first = (i * ranks + rank) * batch
            terms = step(order[first : first + batch])
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()
            scheduler.step()
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach())
        entry = distributed.mean_over_ranks({k: v / steps_per_epoch for k, v in sums.items()})
        entry["epoch"] = epoch + 1
        if validate is not None:
            metrics, finished = distributed.from_main(partial(judge, validate, epoch + 1))
            entry.update(metrics)
        log.append(entry)
        if checkpoint is not None and rank == 0:
            # The RNG states matter only to layers that draw at train time
            # (dropout in a plug-in model); saving them keeps resume exact there too.
            rng = {"cuda_rng": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}
            checkpoint.save(
                {
                    **rng,
                    "modules": {k: m.state_dict() for k, m in modules.items()},
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "generator": generator.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "stopper": {
                        "best": stopper.best,
                        "best_epoch": stopper.best_epoch,
                        "bad_epochs": stopper.bad_epochs,
                        "best_states": stopper.best_states,
                    },
                    "log": log,
                    "epoch": epoch + 1,
                    "finished": finished,
                }
            )
        if on_epoch is not None:
            on_epoch(epoch + 1, entry)

    # Only rank 0 validated, so only its stopper holds the best weights (and
    # only rank 0 exports them).
    if stopper.best_states:
        for key, module in modules.items():
            module.load_state_dict(stopper.best_states[key])
    for module in modules.values():
        module.eval()
    if validate is None:
        return LoopResult(log, len(log), None)
    best_epoch, best = distributed.from_main(lambda: (stopper.best_epoch, stopper.best))
    return LoopResult(log, best_epoch, best)


def gate_pool(
    distractors: PoolFor | None,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    adapter: nn.Module,
    device: torch.device,
) -> Pool | None:
    """The distractors of the held-out gallery, evolved by the kept psi."""
    if distractors is None:
        return None
    pool = distractors(train_idx, val_idx)

    def evolve(old: np.ndarray) -> np.ndarray:
        rows = torch.tensor(old, dtype=torch.float32, device=device)
        with torch.no_grad():
            return embed_rows(adapter, rows).cpu().numpy()

    return pool.evolve(evolve)
