"""Training configuration: every (choice) of ../shared/method.md as a field.

Precedence is defaults < ``--config upgrade.toml`` < flags given explicitly.
The TOML file holds TrainConfig fields, at top level or under ``[train]``:

    method = "dmu"
    discriminativeness = "margin"
    gamma = 2.0
    image_shape = [1, 8, 8]
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dmu_migrate.errors import InputError
from dmu_migrate.settings import (
    NON_NEGATIVE,
    POSITIVE,
    SHARE,
    Bounds,
    build,
    check_all,
    load_toml,
    setting,
)

METHODS = ("dmu", "bct", "independent", "adapter")
ADAPTER_KINDS = ("mlp", "procrustes", "affine")
MEASURES = ("probability", "margin", "entropy")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainConfig:
    method: str = setting(
        "dmu",
        "dmu (selective compatibility + adapter); bct (gamma 0, lambda_f 0, identity "
        "adapter); independent (lambda_b 0: the full-backfill reference); adapter (fixed "
        "new model: fit psi on the NEW_COL embeddings, no new_model.onnx).",
        METHODS,
    )
    adapter_kind: str = setting(
        "affine",
        "The form of psi when it is fitted to a fixed new model (after it, with --no-joint, "
        "or alone, with --method adapter): affine and procrustes are closed forms, mlp is "
        "trained.",
        ADAPTER_KINDS,
    )
    discriminativeness: str = setting(
        "probability", "Old-feature quality q (entropy is label-free).", MEASURES
    )
    model: str = setting(
        "mlp",
        "New model: linear or mlp (over X_COL features, standardised), cnn (X_COL holds "
        "pixels; needs --image-shape) or package.module:factory returning an nn.Module, "
        "called as factory(input_dim=..., output_dim=...).",
    )
    image_shape: tuple[int, ...] | None = setting(
        None, "C,H,W of the flattened pixels in X_COL, e.g. 1,28,28.", typed_as=str | None
    )
    dim: int | None = setting(
        None, "New embedding size (default: the old size, which BCT/DMU need).", bounds=Bounds(1)
    )
    hidden: int = setting(256, "Hidden width of the mlp and cnn heads.", bounds=POSITIVE)
    dropout: float = setting(
        0.2, "Dropout on the standardised input of the linear/mlp heads.", bounds=SHARE
    )
    adapter_hidden: int = setting(256, "Hidden width of the adapter psi.", bounds=POSITIVE)
    adapter_layers: int = setting(1, "Hidden blocks of the adapter psi.", bounds=POSITIVE)
    epochs: int = setting(30, "Most epochs; early stopping usually ends sooner.", bounds=POSITIVE)
    batch_size: int = setting(
        256,
        "Rows per step (per process under torchrun).",
        bounds=Bounds(2, why="for in-batch negatives"),
    )
    lr: float = setting(2e-3, "Peak learning rate of AdamW's one-cycle schedule.", bounds=POSITIVE)
    weight_decay: float = setting(1e-4, "AdamW weight decay.", bounds=NON_NEGATIVE)
    scale: float = setting(20.0, "Logit scale s of the cosine losses.", bounds=POSITIVE)
    margin: float = setting(0.2, "CosFace margin of the new classifier.", bounds=NON_NEGATIVE)
    gamma: float = setting(
        1.0, "Selectivity of backward compatibility: w = q**gamma; 0 = BCT.", bounds=NON_NEGATIVE
    )
    beta: float = setting(
        1.0, "Extra adaptation weight of poor old features: 1 + beta (1 - q).", bounds=NON_NEGATIVE
    )
    lambda_b: float = setting(1.0, "Weight of backward compatibility.", bounds=NON_NEGATIVE)
    lambda_f: float = setting(1.0, "Weight of forward adaptation.", bounds=NON_NEGATIVE)
    tau: float = setting(0.05, "InfoNCE temperature.", bounds=POSITIVE)
    detach: bool = setting(True, "Adapter targets are detached: psi cannot drag the new model.")
    joint: bool = setting(
        False,
        "Train psi (a residual mlp) in the new model's loop, in one stage, instead of "
        "fitting it (--adapter-kind) after the new model is kept.",
    )
    val_fraction: float = setting(
        0.1,
        "Share held out for early stopping and the quality gate: identities (50+ classes) "
        "or rows of each class; 0 = none.",
        bounds=SHARE,
    )
    patience: int = setting(
        5, "Stop after this many epochs without validation gain; 0 = never.", bounds=NON_NEGATIVE
    )
    device: str = setting("auto", "auto (CUDA when present), cpu or cuda.", DEVICES)
    seed: int = setting(0, "Seed of the split, initialisation and batches.")

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def resolved(self) -> TrainConfig:
        """The settings each method implies, so that the manifest records what really ran.

        bct: uniform inheritance (gamma 0) and no forward adaptation. independent:
        no backward compatibility, and psi, if trained, only ever reads the new
        model (detach), so the new model is exactly the one trained alone.
        """
        if self.method == "bct":
            return dataclasses.replace(self, gamma=0.0, lambda_f=0.0)
        if self.method == "independent":
            return dataclasses.replace(self, lambda_b=0.0, detach=True)
        return self

    def fingerprint(self, data_fingerprint: str) -> str:
        """Identity of a training run, so that --resume refuses another run's checkpoint."""
        payload = json.dumps([self.as_dict(), data_fingerprint], sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()

    def check(self) -> None:
        """One-line errors for values that cannot train, naming the flag and the fix."""
        check_all(self)
        if self.model not in ("linear", "mlp", "cnn") and ":" not in self.model:
            raise InputError(
                f"--model '{self.model}' is unknown; use linear, mlp, cnn or 'package.module:factory'"
            )
        if self.model == "cnn" and self.image_shape is None:
            raise InputError("--model cnn needs --image-shape C,H,W (e.g. 1,28,28)")


def parse_image_shape(value: str | list[int] | tuple[int, ...] | None) -> tuple[int, ...] | None:
    """'1,28,28' or [1, 28, 28] -> (1, 28, 28); 'H,W' means one channel."""
    if value is None:
        return None
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        shape = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        raise InputError(
            f"--image-shape '{value}' is not a list of integers; write C,H,W such as 1,28,28"
        ) from None
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(
            f"--image-shape '{value}' needs three positive sizes C,H,W such as 1,28,28"
        )
    return shape


def load_config_file(path: str | Path) -> dict[str, Any]:
    """TrainConfig fields from a TOML file, type-checked, with one-line errors."""
    return load_toml(
        path,
        TrainConfig,
        "train",
        types={"image_shape": (list, str)},
        convert={"image_shape": parse_image_shape},
    )


def build_config(
    file_values: dict[str, Any], flag_values: dict[str, Any], config_file: str | Path | None = None
) -> TrainConfig:
    """Defaults, then the config file, then the flags the user actually typed; checked."""
    config = build(TrainConfig, file_values, flag_values, config_file)
    config.check()
    return config
