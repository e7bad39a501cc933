"""MASAM: Multimodal Adaptive Sharpness-Aware Minimization, one training step.

Follows the paper's Eqs. 8-13 (docs/methods.md). Notation:
theta_m are encoder m's parameters, z_m its features, L_fuse the fusion loss,
L_m the unimodal loss of head f_m, L_total = L_fuse + sum_m lambda_m L_m.

  1. One forward; L_fuse and every L_m.
  2. g_f,m = dL_fuse/dtheta_m and g_u,m = dL_m/dtheta_m, separately: backprop
     L_fuse and L_m to z_m through the (cheap) heads, then each through
     encoder m as a vector-Jacobian product; gamma_m = cos(g_f,m, g_u,m) over
     the whole flattened encoder (MDPS).
  3. MA_m = beta MA_m + (1 - beta) L_m; Decay_m = max(0, L_m(t-1) - MA_m)
     (first step: MA_m = L_m, Decay_m = 0); APS_m = alpha Decay_m +
     (1 - alpha) gamma_m; the dominant modality is d = argmax_m APS_m.
  4. eps = rho gamma_d g_f,d / ||g_f,d||, on theta_d only. Taken literally, a
     negative gamma_d reverses the ascent direction; `negative_gamma` in the
     returned metrics counts it.
  5. g' = dL_fuse/dtheta_d at theta_d + eps: only encoder d runs again (same
     dropout masks, BatchNorm statistics untouched); the other encoders'
     features are reused. theta_d is restored.
  6. theta_d <- g' + lambda_d g_u,d; theta_m (m != d) <- g_f,m + lambda_m g_u,m;
     heads <- their unperturbed gradient of L_total; one base-optimizer step.

Cost: one forward, two encoder backwards per modality, one forward/backward of
encoder d, plus head-only backwards. Each encoder's first-pass activations are
freed after its second backward, so step 5 runs encoder d again without them
held (benchmarks/masam_memory.py). The single host sync per step is reading
d (to know which encoder to run again); norms, dots, perturb and restore are
`torch._foreach_*` ops on the device.

Ablations (paper Table 2): `aps=False` perturbs every modality m with its own
eps_m (each recomputed with the others' features fixed); `mdps=False` replaces
gamma by 1 in the perturbation; `rho=0` is late fusion.

Design alternatives (paper Table 8), as options (`direction` of the paper variant only):
  - `score`: how the dominant modality is chosen.
      "aps" (default): APS as above.
      "gamma": gradient alignment only, APS_m = gamma_m (alpha = 0).
      "ogm": OGM-GE's modality score instead of APS: s_m = mean over the samples
        where m is present of the probability its unimodal head gives the correct
        answer (softmax p_y; sigmoid tasks: the label mean of y p + (1 - y)(1 - p));
        d = argmax_m s_m, the currently stronger modality (OGM-GE sums over the
        batch and uses the fused head's slices; the unimodal heads exist here).
  - `direction`: the unit direction of eps_d (its length stays rho gamma_d, or rho
    with mdps=False):
      "fusion" (default, MDPS): g_f,d;
      "difference": g_f,d - g_u,d;
      "orthogonal": the component of g_u,d orthogonal to g_f,d,
        g_u,d - (<g_u,d, g_f,d> / ||g_f,d||^2) g_f,d.
  Each direction is normalised over the whole flattened encoder.

`variant="reference"` reproduces the released code (github
Orange2107/MASAM-Multimodal-Adaptive-SAM @713f931) where it departs from the
paper:
  a. gamma_m is the MEAN over encoder tensors of per-tensor cosines, not the
     cosine of the flattened gradients;
  b. the perturbation direction is built per tensor: u = projection of g_u
     onto g_f when <g_u, g_f> >= 0, else g_f; u is then divided by ONE norm
     over all of encoder d's projected tensors together (not per tensor) and
     scaled by the cosine of the LAST tensor of the encoder (a cosine <= 0
     becomes 1), so it never reverses;
  c. the second backward is of L_total (not L_fuse) at the perturbed point,
     and its gradient replaces the gradient of EVERY encoder (not only d);
     heads keep their unperturbed gradients.
Both variants replay dropout masks and freeze BatchNorm statistics in the
second pass (the released code intends to but never calls its fix).

Data-parallel training (torchrun, `models.distributed`). The per-encoder gradients
come from `torch.autograd.grad`, which DDP's reducer never sees, so the step
averages over ranks explicitly, in two collectives and no added host sync:
  1. after step 2: g_f,m and g_u,m of every encoder, the heads' gradients, the
     unimodal losses L_m that feed MA_m and Decay_m (step 3) and, with score
     "ogm", the modality scores. So gamma_m, APS_m, the dominant modality d and
     eps (steps 2-4, the paper's Eqs. 8-13) are computed from the global batch's
     gradients and are identical on every rank: every rank picks the same d and
     perturbs encoder d by the same eps (gamma is a cosine, not linear in the
     gradients: a mean of per-rank gammas is neither the whole batch's gamma nor
     sure to give every rank the same d);
  2. after step 5: the perturbed-point gradient g' (of every perturbed encoder;
     of every encoder in the reference variant).
The update of step 6 is then assembled from averaged terms only, and the
optimizer steps without averaging again. Averages are means of per-rank means,
as DDP's: with equal shards (DistributedSampler) and every modality present they
equal the whole-batch values; where shards differ in presence counts, L_m and
g_u,m are means of each rank's mean over its present samples.
"""

from __future__ import annotations

import torch

from ..distributed import all_reduce_mean_
from .base import (
    Method,
    check_range,
    cosine,
    dot,
    frozen_batchnorm_stats,
    grads_or_zeros,
    norm,
    rng_state,
    set_rng_state,
    upcast,
)

VARIANTS = ("paper", "reference")
SCORES = ("aps", "ogm", "gamma")
DIRECTIONS = ("fusion", "difference", "orthogonal")


def perturbation_direction(g_f: list[torch.Tensor], g_u: list[torch.Tensor], direction: str) -> list[torch.Tensor]:
    """The (unnormalised) direction of eps for one encoder (paper Table 8 alternatives).

    Args:
        g_f: dL_fuse/dtheta_m, one tensor per parameter.
        g_u: dL_m/dtheta_m, shaped like g_f.
        direction: "fusion" (g_f), "difference" (g_f - g_u) or "orthogonal" (g_u minus its projection on g_f).
    """
    if direction == "fusion":
        return list(g_f)
    if direction == "difference":
        return torch._foreach_sub(g_f, g_u)
    coeff = dot(g_u, g_f) / dot(g_f, g_f).clamp(min=1e-24)
    return torch._foreach_sub(g_u, torch._foreach_mul(g_f, coeff))


def ogm_scores(out, batch, modalities: list[str], task_type: str) -> torch.Tensor:
    """OGM-GE's score per modality `[M]`: mean probability of the correct answer over present samples."""
    scores = []
    for m in modalities:
        logits, y = upcast(out.unimodal[m].detach()), batch["y"]
        if task_type == "multiclass":
            p = torch.softmax(logits, -1).gather(1, y.long()[:, None])[:, 0]
        else:
            prob, y = torch.sigmoid(logits), y.to(logits.dtype)
            p = (y * prob + (1 - y) * (1 - prob)).mean(1)
        mask = batch["present"][m].to(p.dtype)
        scores.append((p * mask).sum() / mask.sum().clamp(min=1.0))
    return torch.stack(scores)


class MASAM(Method):
    """MASAM step. See the module docstring for the equations and the reference variant.

    Args:
        rho: SAM radius; 0.3 as in the released code (plain SAM's usual default is 0.05).
        alpha: weight of the loss-decay term in APS (1 - alpha weighs gamma).
        beta: moving-average factor of the unimodal losses.
        variant: "paper" (default) or "reference".
        aps: pick one dominant modality by APS (False: perturb every modality).
        mdps: scale the perturbation by gamma (False: by 1).
        dominant: force the dominant modality (benchmarks, tests); None lets APS decide.
        score: "aps", "ogm" or "gamma": the rule choosing the dominant modality (paper Table 8).
        direction: "fusion", "difference" or "orthogonal": the perturbation direction (paper Table 8).
    """

    name = "masam"

    def __init__(
        self,
        model,
        optimizer,
        task_type,
        rho: float = 0.3,
        alpha: float = 0.5,
        beta: float = 0.9,
        lambda_m=1.0,
        variant: str = "paper",
        aps: bool = True,
        mdps: bool = True,
        dominant: str | None = None,
        score: str = "aps",
        direction: str = "fusion",
    ):
        super().__init__(model, optimizer, task_type, lambda_m)
        if variant not in VARIANTS:
            raise ValueError(f"masam: variant must be one of {VARIANTS}, got {variant!r}")
        if dominant is not None and dominant not in model.modalities:
            raise ValueError(f"masam: dominant {dominant!r} is not one of {model.modalities}")
        check_range("rho", rho, 0.0)
        check_range("alpha", alpha, 0.0, 1.0)
        check_range("beta", beta, 0.0, 1.0, high_open=True)  # beta = 1 would freeze the moving average
        if score not in SCORES:
            raise ValueError(f"masam: score must be one of {SCORES}, got {score!r}")
        if direction not in DIRECTIONS:
            raise ValueError(f"masam: direction must be one of {DIRECTIONS}, got {direction!r}")
        if variant == "reference" and direction != "fusion":
            raise ValueError("masam: direction alternatives apply to variant 'paper' only")
        self.score, self.direction = score, direction
        self.rho, self.alpha, self.beta = float(rho), float(alpha), float(beta)
        self.variant, self.aps, self.mdps, self.dominant = variant, bool(aps), bool(mdps), dominant
        self.moving_average: torch.Tensor | None = None  # MA_m, [M]
        self.previous_loss: torch.Tensor | None = None  # L_m(t-1), [M]

    # ----------------------------------------------------------------------------------
    def step(self, batch):
        model, mods = self.model, self.model.modalities
        inputs, present = batch["inputs"], batch["present"]
        model.train()
        device = model.fusion_head.weight.device
        params = {m: self.encoder_params(m) for m in mods}

        # 1. One forward. The RNG state before each encoder lets step 5 replay its dropout.
        rng_before, features = {}, {}
        for m in mods:
            rng_before[m] = rng_state(device)
            features[m] = model.encode(m, inputs[m])
        out = model.heads(features, present)
        rng_after = rng_state(device)
        l_fuse, l_uni = self.fusion_loss(out, batch), self.unimodal_losses(out, batch)
        l_total = self.total_loss(l_fuse, l_uni)

        # 2. dL/dz through the heads only (cheap), head gradients of L_total, then
        #    g_f,m and g_u,m as two vector-Jacobian products through encoder m.
        fusion_params = list(model.fusion_head.parameters())
        g_fusion_head = torch.autograd.grad(
            l_fuse, [features[m] for m in mods] + fusion_params, retain_graph=True
        )
        dz_fuse = dict(zip(mods, g_fusion_head[: len(mods)], strict=True))
        head_grads = dict(zip(fusion_params, g_fusion_head[len(mods) :], strict=True))
        dz_uni = {}
        for m in mods:
            uni_params = list(model.unimodal_heads[m].parameters())
            g = torch.autograd.grad(l_uni[m], [features[m]] + uni_params, retain_graph=True)
            dz_uni[m] = g[0]
            head_grads.update({p: self.lambdas[m] * gp for p, gp in zip(uni_params, g[1:], strict=True)})
        g_f, g_u = {}, {}
        for m in mods:
            g_f[m] = grads_or_zeros(
                torch.autograd.grad(features[m], params[m], dz_fuse[m], retain_graph=True, allow_unused=True),
                params[m],
            )
            # the last pass through encoder m's first-pass graph: free its activations now, before
            # step 5 runs encoder d (or, in the reference variant, the whole model) again
            g_u[m] = grads_or_zeros(
                torch.autograd.grad(features[m], params[m], dz_uni[m], retain_graph=False, allow_unused=True),
                params[m],
            )
        # Rank averages (one collective) of everything the decisions below are computed from.
        stats = [l_uni[m].detach() for m in mods]  # L_m for the moving averages, [M]
        if self.score == "ogm":
            stats += list(ogm_scores(out, batch, mods, self.task_type).unbind())
        stats = torch.stack(stats)
        all_reduce_mean_(list(head_grads.values()) + [t for m in mods for t in g_f[m] + g_u[m]] + [stats])
        gamma = torch.stack([self._gamma(g_f[m], g_u[m]) for m in mods])  # [M]

        # 3. Adaptive Perturbation Score.
        losses = stats[: len(mods)]  # [M]
        if self.moving_average is None:
            self.moving_average = losses.clone()
            decay = torch.zeros_like(losses)
        else:
            self.moving_average = self.beta * self.moving_average + (1 - self.beta) * losses
            decay = (self.previous_loss - self.moving_average).clamp(min=0)
        self.previous_loss = losses
        aps = self._score(decay, gamma, stats[len(mods):])
        if self.dominant is not None:
            d_index = torch.tensor(mods.index(self.dominant), device=device)
        else:
            d_index = torch.argmax(aps)
        perturbed = [mods[int(d_index)]] if self.aps else list(mods)  # the one host sync

        # 4-5. Perturb, recompute, restore.
        scale = gamma if self.mdps else torch.ones_like(gamma)
        saved = {m: [p.detach().clone() for p in params[m]] for m in perturbed}
        eps = {m: self._perturbation(g_f[m], g_u[m], scale[mods.index(m)]) for m in perturbed}
        if self.variant == "paper":
            g_sharp = {}
            for m in perturbed:
                with torch.no_grad():
                    torch._foreach_add_(params[m], eps[m])
                set_rng_state(rng_before[m], device)
                with frozen_batchnorm_stats(model.encoders[m]):  # restored after the backward
                    z_m = model.encode(m, inputs[m])
                    feats = {k: (z_m if k == m else features[k].detach()) for k in mods}
                    l_fuse_perturbed = self.fusion_loss(model.heads(feats, present), batch)
                    g_sharp[m] = grads_or_zeros(
                        torch.autograd.grad(l_fuse_perturbed, params[m], allow_unused=True), params[m]
                    )
                with torch.no_grad():
                    torch._foreach_copy_(params[m], saved[m])
        else:  # reference: L_total at the perturbed point, gradient to every encoder
            with torch.no_grad():
                for m in perturbed:
                    torch._foreach_add_(params[m], eps[m])
            set_rng_state(rng_before[mods[0]], device)
            all_params = [p for m in mods for p in params[m]]
            with frozen_batchnorm_stats(model):
                out_p = model(inputs, present)
                l_total_p = self.total_loss(self.fusion_loss(out_p, batch), self.unimodal_losses(out_p, batch))
                flat = grads_or_zeros(torch.autograd.grad(l_total_p, all_params, allow_unused=True), all_params)
            g_sharp, i = {}, 0
            for m in mods:
                g_sharp[m], i = flat[i : i + len(params[m])], i + len(params[m])
            with torch.no_grad():
                for m in perturbed:
                    torch._foreach_copy_(params[m], saved[m])
        set_rng_state(rng_after, device)
        all_reduce_mean_([t for m in g_sharp for t in g_sharp[m]])  # the perturbed-point gradient

        # 6. Assemble gradients and take one base-optimizer step.
        for m in mods:
            if self.variant == "reference":
                grads = g_sharp[m]
            else:
                base = g_sharp[m] if m in g_sharp else g_f[m]
                grads = torch._foreach_add(base, g_u[m], alpha=self.lambdas[m])
            for p, g in zip(params[m], grads, strict=True):
                p.grad = g
        for p, g in head_grads.items():
            p.grad = g
        self.apply_gradients(averaged=True)  # every term above is already rank-averaged
        self.optimizer.zero_grad(set_to_none=True)

        metrics = self.loss_metrics(l_total, l_fuse, l_uni)
        for i, m in enumerate(mods):
            metrics[f"gamma_{m}"] = gamma[i].detach()
            metrics[f"aps_{m}"] = aps[i].detach()
            metrics[f"decay_{m}"] = decay[i].detach()
        metrics["dominant"] = d_index.detach()
        metrics["negative_gamma"] = torch.stack([(gamma[mods.index(m)] < 0) for m in perturbed]).float().mean()
        metrics["perturbation_norm"] = norm([t for m in perturbed for t in eps[m]]).detach()
        return metrics

    # ----------------------------------------------------------------------------------
    def _gamma(self, g_f, g_u) -> torch.Tensor:
        """gamma_m: cosine over the flattened encoder (paper) or mean per-tensor cosine (reference)."""
        if self.variant == "paper":
            return cosine(g_f, g_u)
        return self._per_tensor_cosines(g_f, g_u).mean()

    @staticmethod
    def _per_tensor_cosines(a, b) -> torch.Tensor:
        dots = torch.stack([t.sum() for t in torch._foreach_mul(a, b)])
        norms = torch.stack(torch._foreach_norm(a)) * torch.stack(torch._foreach_norm(b))
        return dots / norms.clamp(min=1e-12)

    def _perturbation(self, g_f, g_u, gamma_m) -> list[torch.Tensor]:
        """eps_m for one encoder (a list of tensors shaped like its parameters)."""
        if self.variant == "paper":
            u = perturbation_direction(g_f, g_u, self.direction)
            return torch._foreach_mul(u, self.rho * gamma_m / norm(u).clamp(min=1e-12))
        # reference: per-tensor projection of g_u onto g_f (g_f itself when they disagree),
        # divided by one norm over the whole encoder's u (the released optimizer's group norm),
        # scaled by the last tensor's cosine (<= 0 -> 1).
        dots = torch.stack([t.sum() for t in torch._foreach_mul(g_u, g_f)])
        f_sq = torch.stack(torch._foreach_norm(g_f)) ** 2
        coeff = torch.where(dots >= 0, dots / f_sq.clamp(min=1e-24), torch.ones_like(dots))
        u = torch._foreach_mul(g_f, list(coeff.unbind()))
        u_norm = norm(u).clamp(min=1e-12)
        if self.mdps:
            c_last = self._per_tensor_cosines(g_f[-1:], g_u[-1:])[0]
            c = torch.where(c_last > 0, c_last, torch.ones_like(c_last))
        else:
            c = torch.ones((), device=u_norm.device, dtype=u_norm.dtype)
        return torch._foreach_mul(u, self.rho * c / u_norm)

    def _score(self, decay, gamma, ogm) -> torch.Tensor:
        """The dominant-modality score `[M]`: APS, gamma alone, or OGM-GE's score `ogm` (paper Table 8)."""
        if self.score == "gamma":
            return gamma
        if self.score == "ogm":
            return ogm
        return self.alpha * decay + (1 - self.alpha) * gamma

    # resumable state ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"moving_average": self.moving_average, "previous_loss": self.previous_loss}

    def load_state_dict(self, state: dict) -> None:
        self.moving_average = state.get("moving_average")
        self.previous_loss = state.get("previous_loss")
