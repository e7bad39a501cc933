"""Task losses: sigmoid BCE for multi-label and binary tasks, softmax CE for multi-class."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .precision import upcast

TASK_TYPES = ("multilabel", "binary", "multiclass")


def per_sample_loss(logits: torch.Tensor, y: torch.Tensor, task_type: str) -> torch.Tensor:
    """Loss per sample `[B]` (BCE averaged over the K labels).

    Half-precision logits (bf16 autocast) are upcast: the loss is computed in fp32.
    """
    logits = upcast(logits)
    if task_type == "multiclass":
        return F.cross_entropy(logits, y.long(), reduction="none")
    if task_type in ("multilabel", "binary"):
        return F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype), reduction="none").mean(dim=1)
    raise ValueError(f"unknown task_type {task_type!r}; expected one of {TASK_TYPES}")


def task_loss(
    logits: torch.Tensor, y: torch.Tensor, task_type: str, sample_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean loss over samples; with `sample_mask` `[B]`, over masked-in samples only.

    A batch where no sample is masked in gives 0 (and zero gradients), not NaN.
    """
    losses = per_sample_loss(logits, y, task_type)
    if sample_mask is None:
        return losses.mean()
    weight = sample_mask.to(losses.dtype)
    return (losses * weight).sum() / weight.sum().clamp(min=1.0)
