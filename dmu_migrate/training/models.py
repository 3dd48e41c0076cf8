"""Trainable networks: new-model encoders (MLP, CNN, plug-in) and the forward adapter psi."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from dmu_migrate.errors import InputError


class Standardize(nn.Module):
    """(x - mean) / std with the training table's statistics, frozen as buffers.

    Features arrive on arbitrary scales (pixel values, backbone activations
    whose few large dimensions would dominate a dot product). Standardising
    from training statistics makes one learning rate and one dropout rate work
    across inputs, and keeping the statistics as buffers bakes them into
    new_model.onnx, so the deployed encoder takes the raw features.
    """

    mean: torch.Tensor
    inv_std: torch.Tensor

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.dim = len(mean)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        # Constant features would divide by zero; they carry nothing, so scale them by 1.
        safe = np.where(std > 1e-6, std, 1.0)
        self.register_buffer("inv_std", torch.tensor(1.0 / safe, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.inv_std

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardize:
        x = np.asarray(x, dtype=np.float64)
        return cls(x.mean(axis=0), x.std(axis=0))


class LinearHead(nn.Module):
    """New-model encoder over a numeric feature vector: standardise, dropout, one linear map.

    A linear probe: over strong backbone features it generalises to unseen
    identities about as well as the default mlp head (docs/method.md has the sweep).
    """

    def __init__(self, standardize: Standardize, out_dim: int, dropout: float) -> None:
        super().__init__()
        in_dim = standardize.dim
        self.net = nn.Sequential(standardize, nn.Dropout(dropout), nn.Linear(in_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MLPHead(nn.Module):
    """The default new-model encoder: one hidden layer beside a linear path.

    The linear path keeps what a linear probe gets over strong features; the
    hidden layer adds what raw inputs (pixels) need; dropout on the
    standardised input and on the hidden layer keeps it from memorising the
    training identities, which a deeper head trained from scratch does.
    """

    def __init__(self, standardize: Standardize, hidden: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        in_dim = standardize.dim
        self.standardize = standardize
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_dim, out_dim)
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.standardize(x))
        return self.linear(x) + self.mlp(x)


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """F.normalize(x, dim=1), written so that its ONNX export divides by a broadcast norm.

    F.normalize expands the norm to the full batch x dim shape first, which
    onnxruntime then materialises: a fifth of the adapter's time at 1 thread.
    """
    return x / torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(1e-12)


class ResidualAdapter(nn.Module):
    """psi: old vector -> evolved vector, a residual MLP.

    The skip path (identity, or a linear projection when dims differ) starts
    psi close to "keep the old vector", so the MLP only has to learn the change.
    """

    def __init__(self, old_dim: int, new_dim: int, hidden: int, layers: int = 1) -> None:
        super().__init__()
        self.skip: nn.Module = (
            nn.Identity() if old_dim == new_dim else nn.Linear(old_dim, new_dim, bias=False)
        )
        blocks: list[nn.Module] = [nn.Linear(old_dim, hidden), nn.LayerNorm(hidden), nn.GELU()]
        for _ in range(layers - 1):
            blocks += [nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.GELU()]
        self.mlp = nn.Sequential(*blocks, nn.Linear(hidden, new_dim))

    def forward(self, old: torch.Tensor) -> torch.Tensor:
        old = l2_normalize(old)
        return self.skip(old) + self.mlp(old)


class Normalized(nn.Module):
    """Wraps a model so that its exported output is L2-normalised (cosine-ready)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return l2_normalize(self.inner(x))


class IdentityAdapter(nn.Module):
    """psi(o) = o: what BCT deploys, since BCT does not evolve stored vectors.

    Shipping it keeps every artifact the same shape (evolve re-normalises and
    re-tags the vectors), and new->evolved then honestly equals new->old.
    """

    def forward(self, old: torch.Tensor) -> torch.Tensor:
        return l2_normalize(old)


class LinearAdapter(nn.Module):
    """psi(o) = normalize(o) W + b, for the closed-form fits (Procrustes, affine)."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(weight, dtype=torch.float32), requires_grad=False)
        b = np.zeros(weight.shape[1], np.float32) if bias is None else bias
        self.bias = nn.Parameter(torch.tensor(b, dtype=torch.float32), requires_grad=False)

    def forward(self, old: torch.Tensor) -> torch.Tensor:
        return l2_normalize(old) @ self.weight + self.bias


class SmallCNN(nn.Module):
    """New-model encoder over flattened image pixels (the x column holds C*H*W values).

    Three conv blocks (16, 32, 64 channels), each halving the image while it is
    at least 4 pixels wide, then global average pooling: any size from 2x2 up
    works, and 28x28 costs ~2 MMAC per image, so CPU epochs stay short. The
    input stays a flat vector, so the ONNX model takes the same x as the MLP.
    """

    def __init__(self, image_shape: tuple[int, ...], hidden: int, out_dim: int) -> None:
        super().__init__()
        channels, height, width = image_shape
        self.image_shape = (channels, height, width)
        layers: list[nn.Module] = []
        size = min(height, width)
        for width_in, width_out in ((channels, 16), (16, 32), (32, 64)):
            layers += [nn.Conv2d(width_in, width_out, 3, padding=1), nn.GELU()]
            if size >= 4:
                layers.append(nn.MaxPool2d(2))
                size //= 2
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(
            nn.Linear(64, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, out_dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.unflatten(1, self.image_shape)))


def load_factory(spec: str) -> Callable[..., object]:
    """'package.module:factory' -> the callable, with one-line errors for each failure."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise InputError(f"--model '{spec}' is not 'package.module:factory'; e.g. mypkg.nets:build")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(
            f"--model '{spec}': cannot import '{module_name}' ({exc}); install it or fix PYTHONPATH"
        ) from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise InputError(
            f"--model '{spec}': '{module_name}' has no callable '{attr}'; check the name"
        )
    return factory


def build_new_model(
    kind: str,
    x: np.ndarray,
    out_dim: int,
    hidden: int,
    image_shape: tuple[int, ...] | None,
    dropout: float = 0.0,
) -> nn.Module:
    """The new encoder for training features ``x`` (rows x features).

    The built-in heads standardise with the statistics of ``x``; a plug-in
    factory is called as factory(input_dim=..., output_dim=...) and owns its input.
    """
    input_dim = x.shape[1]
    if kind == "linear":
        return LinearHead(Standardize.fit(x), out_dim, dropout)
    if kind == "mlp":
        return MLPHead(Standardize.fit(x), hidden, out_dim, dropout)
    if kind == "cnn":
        if image_shape is None or int(np.prod(image_shape)) != input_dim:
            raise InputError(
                f"--image-shape {image_shape} holds {int(np.prod(image_shape or (0,)))} pixels but "
                f"x has {input_dim} values per row; give C,H,W with C*H*W = {input_dim}"
            )
        return SmallCNN(image_shape, hidden, out_dim)
    factory = load_factory(kind)
    try:
        model = factory(input_dim=input_dim, output_dim=out_dim)
    except TypeError as exc:
        raise InputError(
            f"--model '{kind}' could not be called as factory(input_dim=..., output_dim=...) "
            f"({exc}); accept those two keyword arguments"
        ) from exc
    except ValueError as exc:
        # A factory that checks its inputs (e.g. "not a square image") speaks to the user.
        raise InputError(
            f"--model '{kind}' refused input_dim={input_dim}, output_dim={out_dim}: {exc}"
        ) from exc
    if not isinstance(model, nn.Module):
        raise InputError(
            f"--model '{kind}' returned {type(model).__name__}, not a torch nn.Module; "
            f"return the network itself"
        )
    with torch.no_grad():
        got = model.eval()(torch.zeros(2, input_dim))
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != (2, out_dim):
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        raise InputError(
            f"--model '{kind}' maps 2 rows of {input_dim} inputs to {shape}, expected (2, {out_dim}); "
            f"make it return one {out_dim}-d embedding per row"
        )
    return model
