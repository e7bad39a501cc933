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
        head: which logits to return: "fused" or "unimodal:<modality>".

    Inputs, in `input_names` order: one tensor per modality in
    `model.modalities` order (shapes as in the batch contract, e.g. ehr
    `[B, 48, 24]`, cxr `[B, 1, S, S]` in [0, 1]), then one float32 presence
    flag `[B]` per modality (1.0 present, 0.0 absent).
    Output: probabilities `[B, K]`.
    """

    def __init__(self, model: nn.Module, task_type: str, head: str = "fused"):
        super().__init__()
        if task_type not in ("multilabel", "binary", "multiclass"):
            raise ValueError(f"unknown task_type {task_type!r}")
        self.model = model
        self.task_type = task_type
        self.head = head  # "fused", or "unimodal:<modality>" for a unimodal run
        self.modalities = list(model.modalities)

    @property
    def input_names(self) -> list[str]:
        return list(self.modalities) + [f"has_{m}" for m in self.modalities]

    def __new__(cls, model: nn.Module, task_type: str, head: str = "fused"):
        # torch.export needs named positional parameters (not *args): pick the class
        # whose forward has exactly 2 M arguments.
        if cls is ExportableFusion:
            cls = _BY_ARITY[len(model.modalities)]
        return super().__new__(cls)

    def probabilities(self, *tensors: torch.Tensor) -> torch.Tensor:
        n = len(self.modalities)
        inputs = dict(zip(self.modalities, tensors[:n], strict=True))
        present = {m: flag > 0.5 for m, flag in zip(self.modalities, tensors[n:], strict=True)}
        out = self.model(inputs, present)
        logits = out.fused if self.head == "fused" else out.unimodal[self.head.split(":", 1)[1]]
        if self.task_type == "multiclass":
            return torch.softmax(logits, dim=-1)
        return torch.sigmoid(logits)


class _One(ExportableFusion):
    def forward(self, x1, has_1):
        return self.probabilities(x1, has_1)


class _Two(ExportableFusion):
    def forward(self, x1, x2, has_1, has_2):
        return self.probabilities(x1, x2, has_1, has_2)


class _Three(ExportableFusion):
    def forward(self, x1, x2, x3, has_1, has_2, has_3):
        return self.probabilities(x1, x2, x3, has_1, has_2, has_3)


_BY_ARITY = {1: _One, 2: _Two, 3: _Three}
