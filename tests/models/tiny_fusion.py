"""A float64 fusion model small enough to check every number by hand (linear encoders)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from clinfuse.models.fusion import FusionModel


class ScalarEncoder(nn.Module):
    """z = a x + c with one float64 weight and bias: every gradient is a line of arithmetic."""

    def __init__(self, a: float, c: float):
        super().__init__()
        self.a = nn.Parameter(torch.tensor([a], dtype=torch.float64))
        self.c = nn.Parameter(torch.tensor([c], dtype=torch.float64))
        self.out_dim = 1

    def forward(self, x):
        return x * self.a + self.c


class LinearEncoder(nn.Linear):
    """z = x A^T + c, with `out_dim` as the encoders' contract requires."""

    def __init__(self, in_features: int, out_dim: int):
        super().__init__(in_features, out_dim)
        self.out_dim = out_dim


def tiny_model(mods=("a", "v"), in_features=3, hidden=2, k=3, seed=0) -> FusionModel:
    torch.manual_seed(seed)
    model = FusionModel({m: LinearEncoder(in_features, hidden) for m in mods}, k).double()
    return model


def tiny_batch(mods=("a", "v"), b=4, in_features=3, k=3, task_type="multiclass", seed=1, present=None):
    g = torch.Generator().manual_seed(seed)
    inputs = {m: torch.randn(b, in_features, generator=g, dtype=torch.float64) for m in mods}
    if task_type == "multiclass":
        y = torch.randint(0, k, (b,), generator=g)
    else:
        y = (torch.rand(b, k, generator=g) > 0.5).double()
    present = present or {m: torch.ones(b, dtype=torch.bool) for m in mods}
    return {"inputs": inputs, "present": present, "y": y, "index": torch.arange(b)}


def numpy_params(model: FusionModel):
    """(encoder (A, c) per modality, fusion W, fusion b) as numpy arrays."""
    enc = {m: (e.weight.detach().numpy(), e.bias.detach().numpy()) for m, e in model.encoders.items()}
    return enc, model.fusion_head.weight.detach().numpy(), model.fusion_head.bias.detach().numpy()


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def sgd(model, lr=1.0):
    return torch.optim.SGD(model.parameters(), lr=lr)


def deltas(before: FusionModel, after: FusionModel) -> dict[str, torch.Tensor]:
    a = dict(before.named_parameters())
    return {n: p.detach() - a[n].detach() for n, p in after.named_parameters()}
