"""Late fusion: one backward of L_total = L_fuse + sum_m lambda_m L_m, one optimizer step."""

from __future__ import annotations

from .base import Method


class LateFusion(Method):
    name = "late_fusion"

    def step(self, batch):
        _, l_fuse, l_uni, l_total = self.forward_losses(batch)
        l_total.backward()
        self.apply_gradients()
        return self.loss_metrics(l_total, l_fuse, l_uni)
