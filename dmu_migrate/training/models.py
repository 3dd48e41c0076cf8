"""Trainable networks: the new model's MLP head and the forward adapter psi."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLPHead(nn.Module):
    """New-model encoder over a numeric feature vector."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Linear(hidden, out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ResidualAdapter(nn.Module):
    """psi: old vector -> evolved vector, a residual MLP.

    The skip path (identity, or a linear projection when dims differ) starts
    psi close to "keep the old vector", so the MLP only has to learn the change.
    """

    def __init__(self, old_dim: int, new_dim: int, hidden: int) -> None:
        super().__init__()
        self.skip: nn.Module = (
            nn.Identity() if old_dim == new_dim else nn.Linear(old_dim, new_dim, bias=False)
        )
        self.mlp = nn.Sequential(
            nn.Linear(old_dim, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Linear(hidden, new_dim),
        )

    def forward(self, old: torch.Tensor) -> torch.Tensor:
        old = F.normalize(old, dim=1)
        return self.skip(old) + self.mlp(old)


class Normalized(nn.Module):
    """Wraps a model so that its exported output is L2-normalised (cosine-ready)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.inner(x), dim=1)
