"""OGM-GE: On-the-fly Gradient Modulation with Generalisation Enhancement (Peng et al., CVPR 2022).

One step, in the paper's notation, for a concat fusion head W[z_1||...||z_M] + b:

  1. One forward; the loss is the fused task loss (softmax CE / sigmoid BCE). The
     paper trains the fused output only, so `lambda_m` defaults to 0 (the unimodal
     heads of the network stay untrained); a positive `lambda_m` adds them.
  2. Unimodal scores from the fusion head's own slices, s_m = W_m z_m + b / M:
       S_m = mean over the samples where m is present of softmax(s_m)[y]
     (sigmoid tasks: the match score sum_c [y p + (1 - y)(1 - p)], p = sigmoid(s_m);
     see `modality_scores`). With every modality present the mean is the paper's
     batch sum divided by B, which leaves every ratio unchanged.
  3. Discrepancy ratio rho_m = S_m / S_other (M = 2: rho_a = S_a / S_v, rho_v = 1 / rho_a).
     For M >= 3 (not in the paper): rho_m = S_m / mean_{j != m} S_j, which is the
     paper's ratio at M = 2; more than one modality may then exceed 1.
  4. Coefficient k_m = 1 - tanh(alpha rho_m) if rho_m > 1, else 1 (Eq. 10).
  5. Within the modulation window (epochs `modulation_starts`..`modulation_ends`,
     counted from 0, both included, as the released code), every gradient tensor g of
     encoder m becomes (GE)
       g <- k_m g + h,   h ~ N(0, (std(g) + 1e-8)^2) elementwise,
     with std(g) the standard deviation of that tensor's unmodulated gradient (the
     "gradient's own std"); `ge=False` gives plain OGM (g <- k_m g). GE applies to every
     modality, the coefficient only to those with rho_m > 1. The fusion head's
     gradient is never modulated. Then one base-optimizer step.
  A batch in which some modality is present for no sample has no score for it: that
  step is not modulated (k = 1, no noise).

Data-parallel runs (torchrun): the scores are sums and counts over every rank's samples
(one collective, before any ratio), so every rank computes the coefficients of the whole
global batch; the encoder gradients are rank-averaged BEFORE they are modulated, because
the GE noise scale is the std of the whole batch's gradient, and are averaged only then.
The noise itself is rank 0's draw, summed with the other ranks' zeros in the scores'
collective, so every rank adds the same noise (an independent draw per rank would make
the replicas drift apart).

Prediction: the fused logits (the paper's). `alpha = 0` and `ge = False` is late fusion
with the same `lambda_m` (k = 1 everywhere).

Logged every step: `score_<m>`, `ratio_<m>`, `coeff_<m>` and the losses.

Where the released code (github GeWu-Lab/OGM-GE_CVPR2022 @343dc1d, main.py) departs:
  a. it modulates (and adds noise to) only 4-D gradients (convolution kernels) of each
     encoder; here every encoder parameter, as the paper's theta^u;
  b. it sums the scores over the batch (no missing modalities there); here a mean over
     present samples (same ratio when all are present);
  c. softmax CE only; the sigmoid analogue above is this project's.
BalanceBenchmark (GeWu-Lab/BalanceBenchmark) modulates every non-1-D parameter whose
name contains the modality and defaults to alpha 0.3, window epochs 10-80.
Defaults here: alpha 0.1 (the released README's example), window 0-50 (its code's).
"""

from __future__ import annotations

import torch

from ..distributed import average_gradients, rank
from .base import Method
from .modality_scores import masked_sum, match_score, mean_of_others, slice_logits, summed_over_ranks


class OGMGE(Method):
    """OGM-GE step. See the module docstring for the equations.

    Args:
        alpha: modulation strength in k = 1 - tanh(alpha rho).
        ge: add the generalisation-enhancement noise (False: plain OGM).
        modulation_starts: first epoch (from 0) of the modulation window.
        modulation_ends: last epoch (included) of the window.
        lambda_m: weight of the unimodal-head losses (0: the paper's fused loss only).
    """

    name = "ogm_ge"

    def __init__(
        self,
        model,
        optimizer,
        task_type,
        alpha: float = 0.1,
        ge: bool = True,
        modulation_starts: int = 0,
        modulation_ends: int = 50,
        lambda_m=0.0,
    ):
        super().__init__(model, optimizer, task_type, lambda_m)
        if len(model.modalities) < 2:
            raise ValueError("ogm_ge: needs at least two modalities")
        self.alpha, self.ge = float(alpha), bool(ge)
        self.modulation_starts, self.modulation_ends = int(modulation_starts), int(modulation_ends)
        self.epoch = 0

    def on_epoch_start(self, epoch: int, train_tensors) -> dict[str, torch.Tensor]:
        self.epoch = int(epoch)
        return {}

    def in_window(self) -> bool:
        return self.modulation_starts <= self.epoch <= self.modulation_ends

    def coefficients(self, features, batch, noise: list[torch.Tensor] = ()):
        """(scores S `[M]`, ratios rho `[M]`, coefficients k `[M]`, valid 0-d bool), all detached.

        S_m is the mean over the present samples of every data-parallel rank; `noise` tensors
        travel in the same collective (summed over ranks).
        """
        mods, present = self.model.modalities, batch["present"]
        with torch.no_grad():
            slices = slice_logits(self.model, features, present)
            sums, counts = zip(*(masked_sum(match_score(slices[m], batch["y"], self.task_type), present[m])
                                 for m in mods), strict=True)
            scores, counts = summed_over_ranks(torch.stack(sums), torch.stack(counts), noise)
            valid = (counts > 0).all()
            ratio = scores / mean_of_others(scores).clamp(min=1e-12)
            coeff = torch.where(ratio > 1, 1 - torch.tanh(self.alpha * ratio), torch.ones_like(ratio))
            coeff = torch.where(valid, coeff, torch.ones_like(coeff))
        return scores, ratio, coeff, valid

    def noise_draws(self) -> list[torch.Tensor]:
        """Standard normal draws, one per encoder parameter in modality then parameter order:
        rank 0's, zeros on the other ranks (summed over ranks, every rank gets rank 0's)."""
        draw = torch.randn_like if rank() == 0 else torch.zeros_like
        return [draw(p) for m in self.model.modalities for p in self.encoder_params(m)]

    def step(self, batch):
        mods = self.model.modalities
        out, l_fuse, l_uni, l_total = self.forward_losses(batch)
        modulate = self.in_window()
        noise = self.noise_draws() if modulate and self.ge else []
        scores, ratio, coeff, valid = self.coefficients(out.features, batch, noise)
        l_total.backward()
        # Averaged over ranks before the modulation (the noise scale is the std of the whole
        # batch's gradient); the optimizer then steps on it as it is (averaged once).
        average_gradients(self.model.parameters())
        if modulate:
            draws = iter(noise)
            for i, m in enumerate(mods):
                pairs = [(p.grad, next(draws) if self.ge else None) for p in self.encoder_params(m)]
                pairs = [(g, eps) for g, eps in pairs if g is not None]
                if not pairs:
                    continue
                grads = [g for g, _ in pairs]
                # std of the unmodulated gradient, taken before the gradient is scaled
                stds = [g.std() if g.numel() > 1 else torch.zeros((), device=g.device, dtype=g.dtype) for g in grads]
                torch._foreach_mul_(grads, coeff[i].to(grads[0].dtype))
                if self.ge:
                    noise_on = valid.to(coeff.dtype)
                    for (g, eps), s in zip(pairs, stds, strict=True):
                        g.add_(eps * ((s + 1e-8) * noise_on))
        self.optimizer.step()
        metrics = self.loss_metrics(l_total, l_fuse, l_uni)
        for i, m in enumerate(mods):
            metrics[f"score_{m}"], metrics[f"ratio_{m}"], metrics[f"coeff_{m}"] = scores[i], ratio[i], coeff[i]
        return metrics

    def state_dict(self) -> dict:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state.get("epoch", 0))
