"""MMPareto (Wei & Hu, ICML 2024): Pareto integration of the multimodal and unimodal gradients.

Model: the concat `FusionModel` (fusion head W[z_1 || ... || z_M] + b and one
unimodal head f_m per modality); the prediction is the fusion head.

One step, per encoder m with parameters theta_m:
  1. One forward; L_mm = L_fuse and every L_m.
  2. g_mm,m = dL_mm/dtheta_m and g_m = lambda_m dL_m/dtheta_m, separately (each
     loss backpropagated to z_m through the heads only, then one vector-Jacobian
     product through encoder m per loss).
  3. cos_m = cos(g_mm,m, g_m) over the whole flattened encoder.
     cos_m > 0 (no conflict): (c_mm, c_u) = (1/2, 1/2).
     cos_m <= 0 (conflict): the MinNorm (Pareto) weights of two vectors, in closed form
        c_mm = clip(<g_m - g_mm, g_m> / ||g_mm - g_m||^2, 0, 1),  c_u = 1 - c_mm,
     the minimiser of ||c g_mm + (1 - c) g_m|| over c in [0, 1].
  4. h_m = 2 (c_mm g_mm,m + c_u g_m): the sum g_mm + g_m when they agree. When they
     conflict the Pareto direction is shorter than the sum; the paper keeps the
     summed gradient's magnitude (larger SGD noise, better generalisation), so
     h_m <- h_m ||g_mm + g_m|| / ||h_m|| whenever ||h_m|| < ||g_mm + g_m||; then
     h_m <- scale h_m.
  5. Encoders get h_m; the fusion and unimodal heads keep their gradient of
     L_total = L_mm + sum_m lambda_m L_m; one base-optimizer step.

Logged per modality: `cos_<m>`, the chosen weights `weight_mm_<m>` and `weight_uni_<m>`,
and `conflict_<m>` (1 when cos <= 0).

Data-parallel runs (torchrun): the per-loss encoder gradients g_mm,m and g_m and the head
gradients are averaged over ranks in ONE collective before any cosine or weight is
computed (the Pareto weights of the averaged vectors are not the average of per-rank
weights), so every rank integrates the global batch's gradients alike; the integrated
gradient is then not averaged again.

Multilabel and binary tasks: the losses are sigmoid BCE instead of softmax CE;
nothing else in the rule depends on the loss, so it applies unchanged.

Switched off (`pareto=False`) every encoder gets g_mm + g_m, i.e. late fusion; with
`scale=1` a step whose gradients never conflict is also exactly late fusion.

Departures from the released code (GeWu-Lab/MMPareto_ICML2024 @a339db3), kept to
the paper: the released code rescales and multiplies by gamma = 1.5 per parameter
tensor; here the magnitude rescale is over the whole encoder, like the cosine, and
`scale` defaults to 1 (set `scale: 1.5` for the released factor). The released
MinNorm solver clips c to [0.001, 0.999]; the exact closed form clips to [0, 1]
(the bound can only bind when a gradient is zero, since cos <= 0 here).
BalanceBenchmark's MMPareto never zeroes gradients between the per-loss
backwards, so its cosine is always 1: not reproduced.
"""

from __future__ import annotations

import torch

from ..distributed import all_reduce_mean_
from .base import Method, dot, grads_or_zeros, norm


def min_norm_two(g1: list[torch.Tensor], g2: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """MinNorm weights (c, 1 - c) of two gradient vectors: argmin_c ||c g1 + (1 - c) g2||, c in [0, 1].

    Args:
        g1, g2: lists of tensors (the same shapes), each flattened into one vector.
    Returns:
        (c1, c2), 0-d tensors summing to 1.
    """
    diff = torch._foreach_sub(g1, g2)
    c1 = (dot(g2, g2) - dot(g1, g2)) / dot(diff, diff).clamp(min=1e-24)
    c1 = c1.clamp(0.0, 1.0)
    return c1, 1.0 - c1


class MMPareto(Method):
    """MMPareto step. See the module docstring for the rule.

    Args:
        lambda_m: weight of each unimodal loss (a number or {modality: weight}).
        scale: factor applied to every encoder's integrated gradient (the released code uses 1.5).
        pareto: False gives every encoder g_mm + g_m (late fusion), to switch the mechanism off.
    """

    name = "mmpareto"

    def __init__(self, model, optimizer, task_type, lambda_m=1.0, scale: float = 1.0, pareto: bool = True):
        super().__init__(model, optimizer, task_type, lambda_m)
        self.scale, self.pareto = float(scale), bool(pareto)

    def integrate(self, g_mm: list[torch.Tensor], g_u: list[torch.Tensor]):
        """(h, cos, c_mm, c_u) for one encoder from its multimodal and (lambda-weighted) unimodal gradients."""
        cos = dot(g_mm, g_u) / (norm(g_mm) * norm(g_u)).clamp(min=1e-12)
        half = torch.full_like(cos, 0.5)
        if self.pareto:
            c_mm, c_u = min_norm_two(g_mm, g_u)
            conflict = cos <= 0
            c_mm, c_u = torch.where(conflict, c_mm, half), torch.where(conflict, c_u, half)
        else:
            c_mm, c_u = half, half
        h = torch._foreach_add(torch._foreach_mul(g_mm, 2 * c_mm), torch._foreach_mul(g_u, 2 * c_u))
        summed = norm(torch._foreach_add(g_mm, g_u))
        h_norm = norm(h)
        grow = torch.where(h_norm < summed, summed / h_norm.clamp(min=1e-24), torch.ones_like(h_norm))
        return torch._foreach_mul(h, grow * self.scale), cos, c_mm, c_u

    def step(self, batch):
        model, mods = self.model, self.model.modalities
        model.train()
        params = {m: self.encoder_params(m) for m in mods}
        features = {m: model.encode(m, batch["inputs"][m]) for m in mods}
        out = model.heads(features, batch["present"])
        l_fuse, l_uni = self.fusion_loss(out, batch), self.unimodal_losses(out, batch)
        l_total = self.total_loss(l_fuse, l_uni)

        # dL/dz and head gradients through the heads only; then one VJP per loss and encoder.
        fusion_params = list(model.fusion_head.parameters())
        g = torch.autograd.grad(l_fuse, [features[m] for m in mods] + fusion_params, retain_graph=True)
        dz_mm = dict(zip(mods, g[: len(mods)], strict=True))
        head_grads = dict(zip(fusion_params, g[len(mods) :], strict=True))
        dz_uni = {}
        for m in mods:
            uni_params = list(model.unimodal_heads[m].parameters())
            gm = torch.autograd.grad(l_uni[m], [features[m]] + uni_params, retain_graph=True)
            dz_uni[m] = gm[0] * self.lambdas[m]
            head_grads.update({p: self.lambdas[m] * gp for p, gp in zip(uni_params, gm[1:], strict=True)})

        g_mm, g_u = {}, {}
        for m in mods:
            g_mm[m] = grads_or_zeros(
                torch.autograd.grad(features[m], params[m], dz_mm[m], retain_graph=True, allow_unused=True), params[m]
            )
            g_u[m] = grads_or_zeros(
                torch.autograd.grad(features[m], params[m], dz_uni[m], retain_graph=True, allow_unused=True), params[m]
            )
        # the global batch's gradients, before the Pareto weights (one collective for all of them)
        all_reduce_mean_([g for m in mods for g in g_mm[m] + g_u[m]] + list(head_grads.values()))

        metrics = self.loss_metrics(l_total, l_fuse, l_uni)
        for m in mods:
            h, cos, c_mm, c_u = self.integrate(g_mm[m], g_u[m])
            for p, gp in zip(params[m], h, strict=True):
                p.grad = gp
            metrics[f"cos_{m}"] = cos.detach()
            metrics[f"weight_mm_{m}"] = c_mm.detach()
            metrics[f"weight_uni_{m}"] = c_u.detach()
            metrics[f"conflict_{m}"] = (cos <= 0).float().detach()
        for p, gp in head_grads.items():
            p.grad = gp
        self.optimizer.step()  # every gradient was averaged over ranks above, once
        self.optimizer.zero_grad(set_to_none=True)
        return metrics
