"""Gradient alignment over training (paper Fig. 15), measured the same way for every method.

gamma_m = cos(g_fuse,m, g_uni,m) with g_fuse,m = dL_fuse/dtheta_m and g_uni,m = dL_m/dtheta_m,
the gradients of the fused loss and of modality m's unimodal loss with respect to encoder m's
parameters, flattened over the whole encoder (MASAM's Eq. 9 definition). The probe runs on
one fixed training batch (the first `batch_size` training rows), so the curve shows how the
parameters change, not batch noise. It never changes training: gradients are taken with
`torch.autograd.grad` (no `.grad` written, no optimizer touched), BatchNorm statistics and
the RNG state (dropout) are restored afterwards.
"""

from __future__ import annotations

import torch
from torch import nn

from clinfuse.models.losses import task_loss
from clinfuse.models.methods.base import (
    cosine,
    frozen_batchnorm_stats,
    grads_or_zeros,
    rng_state,
    set_rng_state,
)


def model_encoders(model: nn.Module) -> dict[str, nn.Module] | None:
    """The per-modality encoders of a trained network, or None when it has none to name.

    Every model built by the methods' `build_model` exposes them as an `encoders`
    ModuleDict (the concat FusionModel does); an architecture that does not is skipped
    by the per-encoder analyses, with the reason recorded.
    """
    encoders = getattr(model, "encoders", None)
    return dict(encoders.items()) if isinstance(encoders, nn.ModuleDict) else None


def gradient_alignment(model: nn.Module, batch: dict, task_type: str) -> dict[str, torch.Tensor]:
    """{m: gamma_m} as 0-d tensors (no host sync) for one batch; {} when encoders are not named.

    Args:
        model: the network being trained (its forward returns a FusionOutput).
        batch: `{"inputs": {m: x}, "present": {m: [B] bool}, "y": y}`.
        task_type: "multilabel", "binary" or "multiclass".
    """
    encoders = model_encoders(model)
    if not encoders:
        return {}
    device = batch["y"].device
    saved_rng = rng_state(device)
    try:
        with frozen_batchnorm_stats(model):
            out = model(batch["inputs"], batch["present"])
            l_fuse = task_loss(out.fused, batch["y"], task_type)
            gammas = {}
            for m, encoder in encoders.items():
                params = [p for p in encoder.parameters() if p.requires_grad]
                if not params or m not in out.unimodal:
                    continue
                l_m = task_loss(out.unimodal[m], batch["y"], task_type, batch["present"][m])
                g_f = grads_or_zeros(torch.autograd.grad(l_fuse, params, retain_graph=True, allow_unused=True), params)
                g_u = grads_or_zeros(torch.autograd.grad(l_m, params, retain_graph=True, allow_unused=True), params)
                gammas[m] = cosine(g_f, g_u).detach()
    finally:
        set_rng_state(saved_rng, device)
    return gammas
