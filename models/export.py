"""A flat-tensor view of a FusionModel for `torch.export` / MLflow's `pt2` format.

`torch.export` (and so MLflow's default `pt2` serialisation) takes positional
tensors, not dicts, and the registry's signature is a list of named
TensorSpecs. `ExportableFusion` fixes one argument order, documented in
`input_names`, and returns probabilities, which is what a user of the
registered model wants.
"""

from __future__ import annotations

import torch
from torch import nn


class ExportableFusion(nn.Module):
    """Wrap a FusionModel as `forward(x_1, ..., x_M, present_1, ..., present_M) -> probs`.

    Args:
        model: a `models.fusion.FusionModel` (eval mode is set by the caller).
        task_type: "multilabel" / "binary" (sigmoid) or "multiclass" (softmax).

    Inputs, in `input_names` order: one tensor per modality in
    `model.modalities` order (shapes as in the batch contract, e.g. ehr
    `[B, 48, 24]`, cxr `[B, 1, S, S]` in [0, 1]), then one float32 presence
    flag `[B]` per modality (1.0 present, 0.0 absent).
    Output: probabilities `[B, K]`.
    """

    def __init__(self, model: nn.Module, task_type: str):
        super().__init__()
        if task_type not in ("multilabel", "binary", "multiclass"):
            raise ValueError(f"unknown task_type {task_type!r}")
        self.model = model
        self.task_type = task_type
        self.modalities = list(model.modalities)

    @property
    def input_names(self) -> list[str]:
        return list(self.modalities) + [f"has_{m}" for m in self.modalities]

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        n = len(self.modalities)
        inputs = dict(zip(self.modalities, tensors[:n], strict=True))
        present = {m: flag > 0.5 for m, flag in zip(self.modalities, tensors[n:], strict=True)}
        logits = self.model(inputs, present).fused
        if self.task_type == "multiclass":
            return torch.softmax(logits, dim=-1)
        return torch.sigmoid(logits)
