"""``--method adapter``: the new model is fixed; fit psi alone from paired (old, new) embeddings.

For an off-the-shelf model upgrade there is nothing to make compatible, only
stored vectors to carry over. Kinds: ``mlp`` (the residual adapter, trained
with PairedAdapterLoss), ``procrustes`` and ``affine`` (closed_form.py).
Labels are optional: without them every row is its own identity.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from dmu_migrate.distractors import PoolFor, describe
from dmu_migrate.errors import InputError
from dmu_migrate.quality import fit_calibration, measure
from dmu_migrate.training.backfill_score import fit_backfill_score
from dmu_migrate.training.checkpoint import Checkpoint
from dmu_migrate.training.closed_form import SELECT_FRACTION, fit_procrustes, select_affine
from dmu_migrate.training.config import TrainConfig
from dmu_migrate.training.loop import (
    EpochCallback,
    TrainResult,
    Validate,
    embed_rows,
    gate_pool,
    held_out_kind,
    map_score,
    pick_device,
    run_epochs,
    split_by_label,
)
from dmu_migrate.training.losses import PairedAdapterLoss, class_prototypes, discriminativeness
from dmu_migrate.training.models import LinearAdapter, ResidualAdapter


def fit_adapter(
    old: np.ndarray,
    new: np.ndarray,
    labels: np.ndarray | None,
    config: TrainConfig,
    on_epoch: EpochCallback | None = None,
    checkpoint: Checkpoint | None = None,
    distractors: PoolFor | None = None,
) -> TrainResult:
    """psi: old -> new space; ``labels`` are codes 0..C-1, or None for unlabelled pairs.

    ``distractors`` join the held-out gallery of the gate's figures (trainer.train)."""
    config.check()
    if len(old) != len(new):
        raise InputError(f"{len(old)} old vectors but {len(new)} new ones; pair them row by row")
    if len(old) < 4:
        raise InputError(f"the training table has {len(old)} rows; give at least a few pairs")
    ids = labels if labels is not None else np.arange(len(old))
    # Unlabelled rows are scored pairwise (each new vector finds its own item), so
    # single-row identities are fine there.
    min_rows = 2 if labels is not None else 1
    train_idx, val_idx = split_by_label(ids, config.val_fraction, config.seed, min_rows)
    torch.manual_seed(config.seed)
    device = pick_device(config.device)
    validation: dict[str, int | str] = {
        "rows": len(val_idx),
        "identities": len(np.unique(ids[val_idx])),
        "held_out": held_out_kind(ids),
    }

    if config.adapter_kind in ("procrustes", "affine"):
        o, n = old[train_idx], new[train_idx]
        entry: dict[str, float] = {"epoch": 1}
        if config.adapter_kind == "procrustes":
            adapter: nn.Module = LinearAdapter(fit_procrustes(o, n))
        else:
            select = _selection_rows(ids[train_idx], config.seed, min_rows)
            fitted, choice = select_affine(o, n, ids[train_idx], select, labels is not None)
            adapter = LinearAdapter(*fitted)
            entry["psi_ridge"] = float(choice["ridge"])
            entry["psi_identity_prior"] = float(choice["prior"] == "identity")
        adapter.eval()
        log: list[dict[str, float]] = []
        best_val = None
        if len(val_idx):
            best_val = _paired_map(adapter, old[val_idx], new[val_idx], ids[val_idx], labels)
            entry |= {"val_new_evolved": best_val, "val": best_val}
        log.append(entry)
        figures, crowd, calibrated = _figures(
            adapter, old, new, labels, (train_idx, val_idx), config.seed, distractors
        )
        return TrainResult(
            None,
            adapter,
            log,
            1,
            best_val,
            "cpu",
            new.shape[1],
            validation,
            None,
            figures,
            distractors=crowd,
            backfill_score=_score(adapter, old[train_idx], new[train_idx]),
            calibration=calibrated,
        )

    olds = torch.tensor(old[train_idx], dtype=torch.float32, device=device)
    news = torch.tensor(new[train_idx], dtype=torch.float32, device=device)
    q = ys = new_protos = None
    if labels is not None:
        classes, codes = np.unique(labels[train_idx], return_inverse=True)
        ys = torch.tensor(codes, dtype=torch.long, device=device)
        protos = class_prototypes(olds, ys, len(classes))
        q = discriminativeness(olds, ys, protos, config.scale, config.discriminativeness)
        new_protos = class_prototypes(news, ys, len(classes))
    adapter = ResidualAdapter(
        old.shape[1], new.shape[1], config.adapter_hidden, config.adapter_layers
    ).to(device)
    loss_fn = PairedAdapterLoss(config.tau, config.scale, config.beta)
    optimizer = torch.optim.AdamW(
        adapter.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )

    def step(idx: torch.Tensor) -> dict[str, torch.Tensor]:
        return loss_fn(
            adapter(olds[idx]),
            news[idx],
            None if q is None else q[idx],
            None if ys is None else ys[idx],
            new_protos,
        )

    validator: Validate | None = None
    if len(val_idx):

        def run_validation() -> dict[str, float]:
            score = _paired_map(adapter, old[val_idx], new[val_idx], ids[val_idx], labels)
            return {"val_new_evolved": score, "val": score}

        validator = run_validation

    loop = run_epochs(
        config,
        {"adapter": adapter},
        optimizer,
        len(train_idx),
        step,
        validator,
        checkpoint,
        on_epoch,
    )
    figures, crowd, calibrated = _figures(
        adapter, old, new, labels, (train_idx, val_idx), config.seed, distractors
    )
    return TrainResult(
        new_model=None,
        adapter=adapter,
        log=loop.log,
        best_epoch=loop.best_epoch,
        best_val=loop.best_val,
        device=str(device),
        new_dim=new.shape[1],
        validation=validation,
        q_mean=None if q is None else float(q.mean()),
        quality=figures,
        distractors=crowd,
        backfill_score=_score(adapter, old[train_idx], new[train_idx]),
        calibration=calibrated,
    )


def _selection_rows(ids: np.ndarray, seed: int, min_rows: int) -> np.ndarray:
    """A mask of training rows (whole identities where there are many) that picks psi's
    ridge; all False where the table is too small to spare any (the default ridge is kept)."""
    mask = np.zeros(len(ids), dtype=bool)
    try:
        _, held = split_by_label(ids, SELECT_FRACTION, seed + 1, min_rows)
    except InputError:  # too few identities or rows to hold any out
        return mask
    mask[held] = True
    return mask


def _score(adapter: nn.Module, old: np.ndarray, new: np.ndarray) -> nn.Module:
    """The backfill score fitted on the training pairs (backfill_score.py)."""
    device = next(iter(adapter.parameters())).device
    with torch.no_grad():
        evolved = embed_rows(adapter, torch.tensor(old, dtype=torch.float32, device=device))
    return fit_backfill_score(old, evolved.cpu().numpy(), new)


def _paired_map(
    adapter: nn.Module,
    old: np.ndarray,
    new: np.ndarray,
    ids: np.ndarray,
    labels: np.ndarray | None,
) -> float:
    """mAP of new queries against evolved vectors of the held-out rows.

    With labels: leave-one-out by identity, as evaluate scores. Without: each
    new vector must find the evolved vector of its own item.
    """
    device = next(iter(adapter.parameters())).device
    with torch.no_grad():
        evolved = embed_rows(adapter, torch.tensor(old, dtype=torch.float32, device=device))
    return map_score(torch.tensor(new), evolved, ids, leave_one_out=labels is not None)


def _figures(
    adapter: nn.Module,
    old: np.ndarray,
    new: np.ndarray,
    labels: np.ndarray | None,
    split: tuple[np.ndarray, np.ndarray],
    seed: int,
    distractors: PoolFor | None,
) -> tuple[dict[str, dict[str, float]], dict[str, object], dict[str, Any]]:
    """The deploy settings on the held-out rows, the distractors they saw and the
    calibrated offset (quality.fit_calibration); unlabelled pairs have no identities to score."""
    train_idx, val_idx = split
    if not len(val_idx) or labels is None:
        return {}, {}, {}
    device = next(iter(adapter.parameters())).device
    with torch.no_grad():
        rows = torch.tensor(old[val_idx], dtype=torch.float32, device=device)
        evolved = embed_rows(adapter, rows).cpu().numpy()
    pool = gate_pool(distractors, train_idx, val_idx, adapter, device)
    calibrated = fit_calibration(new[val_idx], evolved, labels[val_idx], seed)
    offset = float(calibrated.get("offset", 0.0))
    figures = measure(
        old[val_idx], new[val_idx], evolved, labels[val_idx], seed, distractors=pool, offset=offset
    )
    return figures, describe(pool, list(figures)), calibrated
