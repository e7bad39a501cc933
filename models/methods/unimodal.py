"""Unimodal baseline: train one encoder and its unimodal head on L_m alone.

Its predictions are that head's logits; the other encoders and the fusion head
get no gradient (and so no optimizer update).
"""

from __future__ import annotations

from ..losses import task_loss
from .base import Method


class Unimodal(Method):
    name = "unimodal"

    def __init__(self, model, optimizer, task_type, modality: str, lambda_m=1.0):
        super().__init__(model, optimizer, task_type, lambda_m)
        if modality not in model.modalities:
            raise ValueError(f"unimodal: modality {modality!r} not in the cohort's {model.modalities}")
        self.modality = modality

    def step(self, batch):
        m = self.modality
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        z = self.model.encode(m, batch["inputs"][m])
        logits = self.model.unimodal_heads[m](z)
        loss = task_loss(logits, batch["y"], self.task_type, batch["present"][m])
        loss.backward()
        self.apply_gradients()
        return {"loss_total": loss.detach(), f"loss_{m}": loss.detach()}

    def logits(self, out):
        return out.unimodal[self.modality]
