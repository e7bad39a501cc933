"""MLP encoder for tabular features `[B, F]` -> `[B, out_dim]`."""

from __future__ import annotations

from torch import nn


class TabularMLP(nn.Module):
    """Two linear layers with ReLU. `[B, F]` -> `[B, out_dim]`.

    Args:
        in_features: F, from the cohort's input shape (`models.build`).
        hidden, out_dim, dropout: sizes from the model preset (configs/models/*.yaml).
    """

    def __init__(self, in_features: int, hidden: int, out_dim: int, dropout: float):
        super().__init__()
        self.out_dim = out_dim
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim), nn.ReLU()
        )

    def forward(self, x):
        return self.net(x)
