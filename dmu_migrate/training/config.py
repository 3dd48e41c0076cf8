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
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

from dmu_migrate.errors import InputError

METHODS = ("dmu", "bct", "independent", "adapter")
ADAPTER_KINDS = ("mlp", "procrustes", "affine")
MEASURES = ("probability", "margin", "entropy")
DEVICES = ("auto", "cpu", "cuda")


def flag(name: str) -> str:
    """The command-line flag of a config field, for error messages."""
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class Bounds:
    """The values a numeric setting takes: stated in its --help and checked by check()."""

    low: float
    high: float | None = None
    low_open: bool = False  # low itself is refused
    high_open: bool = False
    why: str = ""

    def text(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"

    def holds(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        if self.high is None:
            return above
        return above and (value < self.high if self.high_open else value <= self.high)


POSITIVE = Bounds(0, low_open=True)
NON_NEGATIVE = Bounds(0)
SHARE = Bounds(0, 1, high_open=True)


def setting(
    default: Any, help: str, choices: tuple[str, ...] | None = None, bounds: Bounds | None = None
) -> Any:
    """A TrainConfig field with its help text: the one place a setting is written.

    ``train``'s flags are generated from these fields (cli/training.py), so a
    default, a help text, its choices or its range never has a second copy to
    drift from; the range is appended to the help.
    """
    if bounds is not None:
        help = f"{help.rstrip('.')} ({bounds.text()})."
    metadata = {"help": help, "choices": choices, "bounds": bounds}
    if isinstance(default, tuple):
        return dataclasses.field(default_factory=lambda: default, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


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
        None, "C,H,W of the flattened pixels in X_COL, e.g. 1,28,28."
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
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            allowed = f.metadata.get("choices")
            if allowed and value not in allowed:
                raise InputError(
                    f"{flag(f.name)} '{value}' is unknown; use one of {', '.join(allowed)}"
                )
        if self.model not in ("linear", "mlp", "cnn") and ":" not in self.model:
            raise InputError(
                f"--model '{self.model}' is unknown; use linear, mlp, cnn or 'package.module:factory'"
            )
        if self.model == "cnn" and self.image_shape is None:
            raise InputError("--model cnn needs --image-shape C,H,W (e.g. 1,28,28)")
        for f in dataclasses.fields(self):
            value, bounds = getattr(self, f.name), f.metadata.get("bounds")
            if bounds is not None and value is not None and not bounds.holds(value):
                why = f" {bounds.why}" if bounds.why else ""
                raise InputError(f"{flag(f.name)} must be {bounds.text()}{why} (got {value})")


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


def _field_types() -> dict[str, tuple[type, ...]]:
    defaults = TrainConfig()
    types: dict[str, tuple[type, ...]] = {}
    for f in dataclasses.fields(TrainConfig):
        default = getattr(defaults, f.name)
        if isinstance(default, bool):
            types[f.name] = (bool,)
        elif isinstance(default, float):
            types[f.name] = (float, int)  # TOML writes 1 for 1.0
        elif isinstance(default, int):
            types[f.name] = (int,)
        elif isinstance(default, str):
            types[f.name] = (str,)
    types["dim"] = (int,)
    types["image_shape"] = (list, str)
    return types


def load_config_file(path: str | Path) -> dict[str, Any]:
    """TrainConfig fields from a TOML file, type-checked, with one-line errors."""
    path = Path(path)
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python 3.10 only
        try:
            import tomli as tomllib
        except ImportError:
            raise InputError(
                "--config needs Python >= 3.11 or the tomli package: pip install tomli"
            ) from None
    if not path.is_file():
        raise InputError(f"--config '{path}' does not exist; give the path of a TOML file")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"--config '{path}' is not valid TOML ({exc}); fix the file") from exc
    values = raw["train"] if isinstance(raw.get("train"), dict) else raw
    types = _field_types()
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in types:
            raise InputError(
                f"--config '{path}' has unknown key '{key}'; valid keys: {', '.join(sorted(types))}"
            )
        allowed = types[name]
        # bool is an int in Python; a true/false where a number belongs is a typo.
        wrong_bool = isinstance(value, bool) and bool not in allowed
        if wrong_bool or not isinstance(value, allowed):
            raise InputError(
                f"--config '{path}': '{key}' is {type(value).__name__} {value!r}; "
                f"expected {' or '.join(t.__name__ for t in allowed)}"
            )
        out[name] = parse_image_shape(cast(Any, value)) if name == "image_shape" else value
    return out


def build_config(file_values: dict[str, Any], flag_values: dict[str, Any]) -> TrainConfig:
    """Defaults, then the config file, then the flags the user actually typed; checked."""
    config = TrainConfig(**{**file_values, **flag_values})
    config.check()
    return config
