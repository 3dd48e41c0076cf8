"""The new model of the WordNet example, as a ``--model nets:residual`` plug-in.

x is already the all-MiniLM-L6-v2 sentence embedding, a strong general-purpose
space. A plain MLP trained from scratch on a few thousand synsets forgets that
knowledge on unseen synsets; a residual head whose correction starts at zero
starts from the backbone's own space and only learns what the training
objective (classification, compatibility) adds.
"""

from __future__ import annotations

import torch
from torch import nn


class ResidualHead(nn.Module):
    def __init__(self, input_dim: int, output_dim: int, hidden: int = 512) -> None:
        super().__init__()
        self.skip: nn.Module = (
            nn.Identity() if input_dim == output_dim else nn.Linear(input_dim, output_dim)
        )
        self.mlp = nn.Sequential(
            nn.Linear(input_dim, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Linear(hidden, output_dim),
        )
        nn.init.zeros_(self.mlp[-1].weight)  # start exactly at the backbone's space
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.mlp(x)


def residual(input_dim: int, output_dim: int) -> nn.Module:
    """factory(input_dim=..., output_dim=...)."""
    return ResidualHead(input_dim, output_dim)
