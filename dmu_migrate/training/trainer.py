"""The training loop: new model + forward adapter, trained jointly (DMU).

L = L_new + lambda_b * L_sbc + lambda_f * L_fa   (../shared/method.md)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from dmu_migrate.errors import InputError
from dmu_migrate.training.losses import (
    CosFaceLoss,
    ForwardAdaptationLoss,
    SelectiveCompatibilityLoss,
    class_prototypes,
    discriminativeness,
)
from dmu_migrate.training.models import MLPHead, ResidualAdapter


@dataclass
class TrainConfig:
    dim: int | None = None  # new embedding size; None = the old size (needed for new->old)
    hidden: int = 256
    adapter_hidden: int = 256
    epochs: int = 30
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    scale: float = 30.0
    margin: float = 0.2
    gamma: float = 1.0  # selective weighting of backward compatibility; 0 = plain BCT
    beta: float = 1.0  # extra forward-adaptation weight for poor old features
    lambda_b: float = 1.0
    lambda_f: float = 1.0
    tau: float = 0.05
    detach: bool = True
    seed: int = 0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class TrainResult:
    new_model: MLPHead
    adapter: ResidualAdapter
    log: list[dict[str, float]] = field(default_factory=list)


EpochCallback = Callable[[int, dict[str, float]], None]


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
            f"the old dimension {old_dim} (got {new_dim}); drop --dim or pass --lambda-b 0"
        )
    if config.epochs < 1 or config.batch_size < 2:
        raise InputError("--epochs must be >= 1 and --batch-size >= 2")
    return new_dim


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train(
    x: np.ndarray,
    old: np.ndarray,
    labels: np.ndarray,
    config: TrainConfig,
    on_epoch: EpochCallback | None = None,
) -> TrainResult:
    """Train the new model and psi on (x_i, o_i, y_i); labels are codes 0..C-1."""
    num_classes = int(labels.max()) + 1
    new_dim = validate(config, old.shape[1], num_classes, len(labels))
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    device = pick_device()

    # torch.tensor copies: Arrow-backed arrays are read-only.
    xs = torch.tensor(x, dtype=torch.float32, device=device)
    olds = torch.tensor(old, dtype=torch.float32, device=device)
    ys = torch.tensor(labels, dtype=torch.long, device=device)

    # Frozen statistics of the old model: prototypes and per-sample discriminativeness.
    prototypes = class_prototypes(olds, ys, num_classes)
    q = discriminativeness(olds, ys, prototypes, config.scale)

    model = MLPHead(x.shape[1], config.hidden, new_dim).to(device)
    adapter = ResidualAdapter(old.shape[1], new_dim, config.adapter_hidden).to(device)
    classifier = CosFaceLoss(new_dim, num_classes, config.scale, config.margin).to(device)
    sbc = SelectiveCompatibilityLoss(config.scale, config.gamma)
    fa = ForwardAdaptationLoss(classifier, config.tau, config.beta, config.detach)
    params = [*model.parameters(), *adapter.parameters(), *classifier.parameters()]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, len(ys) // config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch
    )

    result = TrainResult(model, adapter)
    for epoch in range(config.epochs):
        model.train()
        adapter.train()
        sums = {"loss": 0.0, "new": 0.0, "sbc": 0.0, "fa": 0.0}
        order = torch.randperm(len(ys), generator=generator).to(device)
        for step in range(steps_per_epoch):
            # Every step sees a full batch (InfoNCE needs in-batch negatives);
            # the remainder rows land in other epochs' batches.
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            if len(idx) < 2:
                idx = order[: min(len(order), config.batch_size)]
            f = model(xs[idx])
            l_new = classifier(f, ys[idx])
            l_sbc = sbc(f, ys[idx], prototypes, q[idx]) if config.lambda_b > 0 else f.new_zeros(())
            if config.lambda_f > 0:
                l_fa = fa(adapter(olds[idx]), f, ys[idx], q[idx])
            else:
                l_fa = f.new_zeros(())
            loss = l_new + config.lambda_b * l_sbc + config.lambda_f * l_fa
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            for key, value in (("loss", loss), ("new", l_new), ("sbc", l_sbc), ("fa", l_fa)):
                sums[key] += float(value.detach())
        entry = {key: value / steps_per_epoch for key, value in sums.items()}
        entry["epoch"] = epoch + 1
        result.log.append(entry)
        if on_epoch is not None:
            on_epoch(epoch + 1, entry)
    model.eval()
    adapter.eval()
    return result
