"""Late fusion: one backward of L_total = L_fuse + sum_m lambda_m L_m, one optimizer step."""

from __future__ import annotations

from .base import Method


class LateFusion(Method):
    name = "late_fusion"

    def step(self, batch):
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        out = self.model(batch["inputs"], batch["present"])
        l_fuse, l_uni = self.fusion_loss(out, batch), self.unimodal_losses(out, batch)
        l_total = self.total_loss(l_fuse, l_uni)
        l_total.backward()
        self.optimizer.step()
        return self.loss_metrics(l_total, l_fuse, l_uni)
