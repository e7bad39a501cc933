"""MLP encoder for tabular features `[B, F]` -> `[B, out_dim]`."""

from __future__ import annotations

from torch import nn


class TabularMLP(nn.Module):
    def __init__(self, in_features: int, hidden: int = 64, out_dim: int = 32, dropout: float = 0.1):
        super().__init__()
        self.out_dim = out_dim
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim), nn.ReLU()
        )

    def forward(self, x):
        return self.net(x)
