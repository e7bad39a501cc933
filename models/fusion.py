"""Late-fusion model: per-modality encoders, a linear fusion head over the
concatenated features, and one linear unimodal head per modality.

A modality absent for a sample (present flag False) has its features zeroed
before the fusion head, so the fusion head sees no spurious signal from the
zero-filled input; its unimodal loss is masked out by the method.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class FusionOutput:
    """fused `[B, K]` logits, unimodal `{m: [B, K]}` logits, features `{m: [B, H_m]}`."""

    fused: torch.Tensor
    unimodal: dict[str, torch.Tensor]
    features: dict[str, torch.Tensor]


class FusionModel(nn.Module):
    """W[z_1 || ... || z_M] + b with unimodal heads f_m(z_m); M >= 1 modalities."""

    def __init__(self, encoders: dict[str, nn.Module], num_outputs: int):
        super().__init__()
        self.modalities = list(encoders)
        self.num_outputs = num_outputs
        self.encoders = nn.ModuleDict(encoders)
        self.unimodal_heads = nn.ModuleDict({m: nn.Linear(e.out_dim, num_outputs) for m, e in encoders.items()})
        self.fusion_head = nn.Linear(sum(e.out_dim for e in encoders.values()), num_outputs)

    def encode(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """Encoder features `[B, H_m]`."""
        return self.encoders[modality](x)

    def fuse(self, features: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> torch.Tensor:
        """Fusion logits `[B, K]` from features, zeroing absent modalities."""
        parts = [features[m] * present[m].to(features[m].dtype).unsqueeze(1) for m in self.modalities]
        return self.fusion_head(torch.cat(parts, dim=1))

    def heads(self, features, present) -> FusionOutput:
        unimodal = {m: self.unimodal_heads[m](features[m]) for m in self.modalities}
        return FusionOutput(self.fuse(features, present), unimodal, features)

    def forward(self, inputs: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> FusionOutput:
        features = {m: self.encode(m, inputs[m]) for m in self.modalities}
        return self.heads(features, present)
