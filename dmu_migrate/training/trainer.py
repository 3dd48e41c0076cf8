"""Joint training of the new model and the forward adapter: dmu, bct, independent.

L = L_new + lambda_b * L_sbc + lambda_f * L_fa   (../shared/method.md)

The methods are settings of one loss (TrainConfig.resolved): bct is gamma 0
without forward adaptation; independent drops L_sbc and trains psi, if at
all, on detached targets. Adapter-only training lives in adapter_only.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from dmu_migrate.distractors import PoolFor, describe
from dmu_migrate.errors import InputError
from dmu_migrate.quality import fit_calibration, fit_fusion, measure
from dmu_migrate.training import distributed
from dmu_migrate.training.adapter_only import fit_adapter
from dmu_migrate.training.backfill_score import fit_backfill_score
from dmu_migrate.training.checkpoint import Checkpoint
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
from dmu_migrate.training.losses import (
    CosFaceLoss,
    ForwardAdaptationLoss,
    SelectiveCompatibilityLoss,
    class_prototypes,
    discriminativeness,
)
from dmu_migrate.training.models import IdentityAdapter, ResidualAdapter, build_new_model

__all__ = ["EpochCallback", "TrainConfig", "TrainResult", "pick_device", "train", "validate"]


def validate(config: TrainConfig, old_dim: int, num_classes: int, rows: int) -> int:
    """Refuse settings that cannot train; return the new embedding size."""
    new_dim = config.dim or old_dim
    if num_classes < 2:
        raise InputError("the training table has a single class; retrieval needs at least 2 labels")
    if rows < 4:
        raise InputError(f"the training table has {rows} rows; give at least a few per class")
    if config.lambda_b > 0 and new_dim != old_dim:
        raise InputError(
            f"backward compatibility compares new and old vectors directly, so --dim must equal "
            f"the old dimension {old_dim} (got {new_dim}); drop --dim, pass --lambda-b 0 "
            f"or --method independent"
        )
    if config.epochs < 1 or config.batch_size < 2:
        raise InputError("--epochs must be >= 1 and --batch-size >= 2")
    return new_dim


def train(
    x: np.ndarray,
    old: np.ndarray,
    labels: np.ndarray,
    config: TrainConfig,
    on_epoch: EpochCallback | None = None,
    checkpoint: Checkpoint | None = None,
    distractors: PoolFor | None = None,
) -> TrainResult:
    """Train the new model and psi on (x_i, o_i, y_i); labels are codes 0..C-1.

    ``distractors(train_rows, held_out_rows)`` gives the pool that joins the held-out
    gallery when the gate's figures are measured (distractors.py); None: no pool.
    """
    config.check()
    config = config.resolved()
    if config.method == "adapter":
        raise InputError("--method adapter trains psi only; call adapter_only.fit_adapter")
    train_idx, val_idx = split_by_label(labels, config.val_fraction, config.seed)
    # Classifier rows exist for training identities only, numbered 0..C'-1.
    train_classes, codes = np.unique(labels[train_idx], return_inverse=True)
    num_classes = len(train_classes)
    new_dim = validate(config, old.shape[1], num_classes, len(train_idx))
    torch.manual_seed(config.seed)
    device = pick_device(config.device)

    # torch.tensor copies: Arrow-backed arrays are read-only.
    xs = torch.tensor(x[train_idx], dtype=torch.float32, device=device)
    olds = torch.tensor(old[train_idx], dtype=torch.float32, device=device)
    ys = torch.tensor(codes, dtype=torch.long, device=device)

    # Frozen statistics of the old model: prototypes and per-sample discriminativeness.
    prototypes = class_prototypes(olds, ys, num_classes)
    q = discriminativeness(olds, ys, prototypes, config.scale, config.discriminativeness)

    # The new model and its classifier are built first, so their initial
    # weights do not depend on whether (or how) psi is built after them.
    model = build_new_model(
        config.model, x[train_idx], new_dim, config.hidden, config.image_shape, config.dropout
    )
    model = model.to(device)
    classifier = CosFaceLoss(new_dim, num_classes, config.scale, config.margin).to(device)
    train_psi = config.lambda_f > 0
    joint = train_psi and config.joint
    # psi draws its initial weights from a generator of its own, so that the
    # dropout masks of the new model are the same whether psi exists or not.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed + 1)
        adapter: nn.Module = (
            ResidualAdapter(old.shape[1], new_dim, config.adapter_hidden, config.adapter_layers)
            if joint
            else IdentityAdapter()
        ).to(device)
    sbc = SelectiveCompatibilityLoss(config.scale, config.gamma)
    fa = ForwardAdaptationLoss(classifier, config.tau, config.beta, config.detach)
    modules = {"model": model, "classifier": classifier, "adapter": adapter}
    params = [p for m in modules.values() for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)

    def step(idx: torch.Tensor) -> dict[str, torch.Tensor]:
        f = model(xs[idx])
        zero = f.new_zeros(())
        l_new = classifier(f, ys[idx])
        l_sbc = sbc(f, ys[idx], prototypes, q[idx]) if config.lambda_b > 0 else zero
        l_fa = fa(adapter(olds[idx]), f, ys[idx], q[idx]) if joint else zero
        loss = l_new + config.lambda_b * l_sbc + config.lambda_f * l_fa
        return {"loss": loss, "new": l_new, "sbc": l_sbc, "fa": l_fa}

    validator: Validate | None = None
    if len(val_idx):
        x_val = torch.tensor(x[val_idx], dtype=torch.float32, device=device)
        old_val = torch.tensor(old[val_idx], dtype=torch.float32, device=device)
        y_val = labels[val_idx]

        def run_validation() -> dict[str, float]:
            f = embed_rows(model, x_val)
            metrics = {"val_new_new": map_score(f, f, y_val, leave_one_out=True)}
            metrics["val"] = metrics["val_new_new"]
            if joint:
                evolved = embed_rows(adapter, old_val)
                metrics["val_new_evolved"] = map_score(f, evolved, y_val, leave_one_out=True)
                # independent stops on new->new alone, so that its new model is
                # exactly the one trained without any adapter in the loop.
                if config.method != "independent":
                    metrics["val"] = (metrics["val_new_new"] + metrics["val_new_evolved"]) / 2
            return metrics

        validator = run_validation

    loop = run_epochs(
        config, modules, optimizer, len(train_idx), step, validator, checkpoint, on_epoch
    )
    log, best_epoch, best_val = loop.log, loop.best_epoch, loop.best_val
    if train_psi and not joint:
        # Stage two: psi learns the kept new model's embeddings of every row,
        # with a validation and early stopping of its own (on new->evolved).
        # Under torchrun only rank 0 holds the kept weights: its targets go to every rank.
        targets = distributed.from_main(lambda: _embed_all(model, x, device))
        stage = None if checkpoint is None else checkpoint.stage("adapter")
        fitted = fit_adapter(old, targets, labels, config, on_epoch, stage)
        adapter = fitted.adapter
        # best_epoch/best_val stay the new model's; psi's are in its stage-2 log entries.
        log = log + [{**entry, "stage": 2} for entry in fitted.log]
    with torch.no_grad():
        # Training rows only: the held-out rows judge the ranking as they judge psi.
        evolved, embedded = embed_rows(adapter, olds), embed_rows(model, xs)
    score = None
    if evolved.shape[1] == embedded.shape[1]:  # an identity psi across sizes evolves nothing
        score = fit_backfill_score(old[train_idx], evolved.cpu().numpy(), embedded.cpu().numpy())
    figures: dict[str, dict[str, float]] = {}
    fusion: dict[str, float] = {}
    crowd: dict[str, object] = {}
    calibrated: dict[str, Any] = {}
    if len(val_idx):
        with torch.no_grad():
            held_out = (
                old[val_idx],
                embed_rows(model, x_val).cpu().numpy(),
                embed_rows(adapter, old_val).cpu().numpy(),
                labels[val_idx],
            )
        pool = gate_pool(distractors, train_idx, val_idx, adapter, device)
        calibrated = fit_calibration(*held_out[1:], seed=config.seed)
        offset = float(calibrated.get("offset", 0.0))
        figures = measure(*held_out, seed=config.seed, distractors=pool, offset=offset)
        fusion = fit_fusion(*held_out, distractors=pool)
        crowd = describe(pool, list(figures))
    return TrainResult(
        new_model=model,
        adapter=adapter,
        log=log,
        best_epoch=best_epoch,
        best_val=best_val,
        device=str(device),
        new_dim=new_dim,
        validation={
            "rows": len(val_idx),
            "identities": len(np.unique(labels[val_idx])),
            "held_out": held_out_kind(labels),
        },
        q_mean=float(q.mean()),
        quality=figures,
        fusion=fusion,
        distractors=crowd,
        backfill_score=score,
        calibration=calibrated,
    )


def _embed_all(model: nn.Module, x: np.ndarray, device: torch.device) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        rows = torch.tensor(x, dtype=torch.float32, device=device)
        return embed_rows(model, rows).cpu().numpy()
