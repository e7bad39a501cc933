"""Encoders for the hourly EHR tensor `[B, T, 2V]` (V values then V masks).

V comes from the cohort (`models.build` reads it from the input shape); the sizes come from the
model preset (configs/models/*.yaml), so neither has a default here.
"""

from __future__ import annotations

import torch
from torch import nn


def observed_steps(x: torch.Tensor, n_vars: int) -> torch.Tensor:
    """`[B, T]` float: 1 where any variable was observed in the hour (mask channels)."""
    return (x[..., n_vars : 2 * n_vars] > 0.5).any(dim=-1).to(x.dtype)


class EHRTransformer(nn.Module):
    """Linear embedding + learned positions + Transformer encoder + masked mean pool.

    As in the MASAM/DrFuse EHR encoder: every hour is a token; the pooled
    representation averages only hours with at least one observation, so
    forward-filled hours of an empty stay do not dominate. No key-padding mask
    is used (every stay has T bins), which keeps the graph exportable.

    Input `[B, T, 2V]`, output `[B, d_model]`.

    Args:
        n_vars: V, the EHR variables (the input has 2V channels).
        d_model, nhead, num_layers, dropout: Transformer sizes (the model preset).
        max_len: the longest T the learned positions cover.
    """

    def __init__(
        self,
        n_vars: int,
        d_model: int,
        nhead: int,
        num_layers: int,
        dropout: float,
        max_len: int = 350,
    ):
        super().__init__()
        self.n_vars = n_vars
        self.out_dim = d_model
        self.embed = nn.Linear(2 * n_vars, d_model)
        self.position = nn.Parameter(torch.zeros(1, max_len, d_model))
        nn.init.normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(
            d_model, nhead, dim_feedforward=2 * d_model, dropout=dropout, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=num_layers, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = x.shape[1]
        h = self.encoder(self.embed(x) + self.position[:, :steps])
        weight = observed_steps(x, self.n_vars).unsqueeze(-1)
        return (h * weight).sum(1) / weight.sum(1).clamp(min=1.0)


class EHRLSTM(nn.Module):
    """LSTM over hours; the last hidden state is the representation. `[B, T, 2V]` -> `[B, hidden]`.

    Args:
        n_vars: V, the EHR variables (the input has 2V channels).
        hidden: LSTM width (the model preset).
        num_layers, dropout: stacked layers and the dropout between them and on the output.
    """

    def __init__(self, n_vars: int, hidden: int, num_layers: int = 1, dropout: float = 0.0):
        super().__init__()
        self.out_dim = hidden
        self.lstm = nn.LSTM(2 * n_vars, hidden, num_layers=num_layers, batch_first=True, dropout=dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(x)
        return self.dropout(h[-1])
