"""Plain SAM (Foret et al. 2021) on all parameters, following davda54/sam's two steps.

1. g = dL_total/dtheta at theta; e = rho * g / ||g|| (one global norm).
2. g' = dL_total/dtheta at theta + e; restore theta; base-optimizer step with g'.
Data-parallel (torchrun): g is averaged over ranks BEFORE e is computed, so every
rank ascends to the same theta + e; g' is averaged before the step. Each is one
collective (`models.distributed.all_reduce_mean_`), no host sync.
Unlike the reference optimizer, the second pass replays the first pass's
dropout masks and leaves BatchNorm running statistics untouched, so the only
difference between the passes is the perturbation.
"""

from __future__ import annotations

import torch

from ..distributed import all_reduce_mean_
from .base import Method, check_range, frozen_batchnorm_stats, grads_or_zeros, norm, rng_state, set_rng_state


class SAM(Method):
    name = "sam"

    def __init__(self, model, optimizer, task_type, rho: float = 0.05, lambda_m=1.0):
        super().__init__(model, optimizer, task_type, lambda_m)
        self.rho = check_range("rho", rho, 0.0)

    def _loss(self, batch):
        out = self.model(batch["inputs"], batch["present"])
        l_fuse, l_uni = self.fusion_loss(out, batch), self.unimodal_losses(out, batch)
        return self.total_loss(l_fuse, l_uni), l_fuse, l_uni

    def step(self, batch):
        self.model.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        device = params[0].device
        state = rng_state(device)
        l_total, l_fuse, l_uni = self._loss(batch)
        g = grads_or_zeros(torch.autograd.grad(l_total, params, allow_unused=True), params)
        all_reduce_mean_(g)  # the ascent direction of the whole global batch
        after_first = rng_state(device)

        g_norm = norm(g)
        eps = torch._foreach_mul(g, self.rho / (g_norm + 1e-12))
        saved = [p.detach().clone() for p in params]
        with torch.no_grad():
            torch._foreach_add_(params, eps)
        set_rng_state(state, device)
        with frozen_batchnorm_stats(self.model):
            l_perturbed, _, _ = self._loss(batch)
            g_sharp = grads_or_zeros(torch.autograd.grad(l_perturbed, params, allow_unused=True), params)
        with torch.no_grad():
            torch._foreach_copy_(params, saved)
        set_rng_state(after_first, device)

        all_reduce_mean_(g_sharp)
        for p, gp in zip(params, g_sharp, strict=True):
            p.grad = gp
        self.apply_gradients(averaged=True)
        self.optimizer.zero_grad(set_to_none=True)
        metrics = self.loss_metrics(l_total, l_fuse, l_uni)
        metrics["perturbation_norm"] = (self.rho * g_norm / (g_norm + 1e-12)).detach()
        return metrics
