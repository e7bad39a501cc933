"""Late-fusion model: per-modality encoders, a linear fusion head over the
concatenated features, and one linear unimodal head per modality.

A modality absent for a sample (present flag False) has its features zeroed
before the fusion head, so the fusion head sees no spurious signal from the
zero-filled input; its unimodal loss is masked out by the method.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .precision import upcast


@dataclass
class FusionOutput:
    """What every model of the project returns.

    Attributes:
        fused: `[B, K]` the model's PREDICTION logits: sigmoid (multilabel/binary) or
            softmax (multiclass) of them are the predicted probabilities. For a fusion
            head this is its output; for a method without one (IGM, MLA, AUG, DrFuse) it
            is the method's prediction rule written as logits (see
            `average_probabilities`). Evaluation, export, the registry and `predict`
            read only this (or one unimodal head for the unimodal method).
        unimodal: `{m: [B, K]}` logits of each modality's own head.
        features: `{m: [B, H_m]}` encoder features.
        extras: anything else a method's loss needs (e.g. DrFuse's shared features).
    """

    fused: torch.Tensor
    unimodal: dict[str, torch.Tensor]
    features: dict[str, torch.Tensor]
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


def average_probabilities(
    logits: dict[str, torch.Tensor],
    present: dict[str, torch.Tensor],
    task_type: str,
    weights: dict[str, float] | None = None,
) -> torch.Tensor:
    """Late fusion of unimodal predictions, returned as logits.

    p = sum_m w_m 1[m present] p_m / sum_m w_m 1[m present], with p_m = sigmoid or
    softmax of `logits[m]`; a sample with no modality present gets the unweighted mean.
    The result is `logit(p)` (sigmoid tasks) or `log(p)` (multiclass), so that the
    usual activation of the returned tensor gives back p exactly.

    Args:
        logits: modality -> `[B, K]` logits.
        present: modality -> `[B]` bool presence flags.
        task_type: "multilabel", "binary" or "multiclass".
        weights: modality -> non-negative weight, a number or per-sample weights `[B]`
            (default: equal weights, the mean).
    Returns:
        `[B, K]` logits of the fused probabilities.
    """
    mods = list(logits)
    first = logits[mods[0]]
    probs = torch.stack(
        [torch.softmax(upcast(logits[m]), -1) if task_type == "multiclass" else torch.sigmoid(upcast(logits[m]))
         for m in mods]
    )  # [M, B, K]
    w = torch.stack([
        torch.as_tensor(1.0 if weights is None else weights[m], dtype=probs.dtype, device=first.device)
        .expand(first.shape[0]) for m in mods
    ])  # [M, B]: a number per modality or per-sample weights
    mask = torch.stack([present[m].to(probs.dtype) for m in mods]) * w  # [M, B]
    none = mask.sum(0) == 0
    mask = torch.where(none[None, :], w, mask)
    p = (probs * mask[..., None]).sum(0) / mask.sum(0).clamp(min=1e-12)[:, None]
    eps = torch.finfo(p.dtype).eps
    p = p.clamp(eps, 1 - eps) if task_type != "multiclass" else p.clamp(min=eps)
    return torch.log(p) if task_type == "multiclass" else torch.logit(p)


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
