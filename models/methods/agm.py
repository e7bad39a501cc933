"""AGM: Adaptive Gradient Modulation (Li et al., ICCV 2023).

One step, in the paper's notation, for modalities 1..M:

  1. One forward; encoder features z_m.
  2. Mono-modal responses by Shapley values over the modalities (a missing modality
     is "muted"): with f(S) the fusion head's logits when only the modalities in S
     are kept (the others' FEATURES zeroed, as the project's fusion head treats an
     absent modality),
       phi_m = sum_{S not containing m} |S|! (M - |S| - 1)! / M! [f(S u {m}) - f(S)],
     exactly, over all 2^M coalitions (head evaluations only, no extra encoder pass),
     with the paper's convention f(empty) = 0, so that sum_m phi_m = f(all modalities):
     the prediction IS the fused logits. For the linear concat head this gives
     phi_m = W_m z_m + b / M.
  3. Mono-modal losses s_m = task loss of phi_m (softmax CE; sigmoid tasks: BCE averaged
     over labels), averaged over the samples where m is present, detached.
  4. Competition ratios (the authors' code for M = 2 and 3):
       r_m  = exp( mean_{j != m} s_j - s_m ),
       r*_m = exp( mean_{j != m} t_j - t_m ),
     t_m the running mean of s_m over every step so far (kept across epochs, in the
     state dict); a modality learning faster than its own history (r_m > r*_m) is slowed.
  5. k_m = exp( alpha min(r*_m - r_m, cap) ); then t_m is updated with s_m.
  6. The loss is the task loss of sum_m phi_m with the gradient flowing back through
     phi_m multiplied by k_m (the paper's modulation of each mono-modal response's
     gradient); for the linear head encoder m's gradient is exactly k_m times the
     unmodulated one. `lambda_m > 0` adds the unimodal-head losses (default 0: the
     paper has none). One base-optimizer step.
  A batch in which some modality is present for no sample gives no s_m for it: that
  step is not modulated (k = 1) and the running means are not updated.

Data-parallel runs (torchrun): s_m is a mean over the present samples of every rank (sums
and counts added over ranks in one collective before r, r* and k), so every rank computes
the global batch's coefficients and updates the same running means t_m; k_m scales the
gradient linearly, so the gradients are then averaged once, as late fusion's.

`alpha = 0` is late fusion with the same `lambda_m` (k = 1).

Logged every step: `contribution_loss_<m>` (s_m), `ratio_<m>`, `target_ratio_<m>`,
`coeff_<m>` and the losses.

Where the released code (github lihong2303/AGM @5a65542, run/*_main.py, model/*_net.py)
departs:
  a. it mutes a modality by feeding a zero INPUT through its encoder in eval mode
     (2^M - 1 extra forwards of the whole network, their graphs kept); here features are
     zeroed (no extra encoder pass, so no dropout or BatchNorm side effects);
  b. it clips the gradient norm of all parameters to 1 (CREMA-D) or 5 (3 modalities) when
     any fusion-head weight gradient exceeds that value in magnitude: not done here;
  c. its cap is 10 for two modalities and 7 for three; here one `cap` (default 10);
  d. it modulates only inside an epoch window (0-20, longer than its 10 epochs); here always.
BalanceBenchmark (GeWu-Lab/BalanceBenchmark) flips the sign of the ratios
(r_m = exp(s_m - mean_{j != m} s_j)), drops the empty coalition's convention, caps at 7,
clips at 5 and defaults to alpha 0.1; this module follows the authors' sign.
"""

from __future__ import annotations

import itertools
import math

import torch

from ..losses import per_sample_loss, task_loss
from .base import Method
from .modality_scores import masked_sum, mean_of_others, scale_gradient, summed_over_ranks


def shapley_contributions(model, features: dict[str, torch.Tensor], present: dict[str, torch.Tensor]):
    """Exact Shapley values phi_m `[B, K]` of the fusion head's logits, f(empty) := 0.

    Args:
        model: a `FusionModel` (uses `model.fuse(features, present)`).
        features: modality -> `[B, H_m]`.
        present: modality -> `[B]` bool; a modality outside a coalition is marked absent.
    Returns:
        modality -> `[B, K]`; their sum is `model.fuse(features, present)`.
    """
    mods = list(model.modalities)
    n = len(mods)
    value: dict[frozenset, torch.Tensor | None] = {}
    for size in range(n + 1):
        for subset in itertools.combinations(mods, size):
            if not subset:
                value[frozenset()] = None  # the paper's convention: f(empty) = 0
                continue
            kept = {m: present[m] & (m in subset) for m in mods}
            value[frozenset(subset)] = model.fuse(features, kept)
    phi = {}
    for m in mods:
        others = [j for j in mods if j != m]
        total = 0
        for size in range(n):
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for subset in itertools.combinations(others, size):
                s = frozenset(subset)
                with_m, without = value[s | {m}], value[s]
                total = total + weight * (with_m if without is None else with_m - without)
        phi[m] = total
    return phi


class AGM(Method):
    """AGM step. See the module docstring for the equations.

    Args:
        alpha: modulation strength in k = exp(alpha min(r* - r, cap)).
        cap: upper bound on r* - r in the exponent.
        lambda_m: weight of the unimodal-head losses (0: the paper's loss only).
    """

    name = "agm"

    def __init__(self, model, optimizer, task_type, alpha: float = 1.0, cap: float = 10.0, lambda_m=0.0):
        super().__init__(model, optimizer, task_type, lambda_m)
        if len(model.modalities) < 2:
            raise ValueError("agm: needs at least two modalities")
        self.alpha, self.cap = float(alpha), float(cap)
        self.running_loss: torch.Tensor | None = None  # t_m, [M]
        self.steps: torch.Tensor | None = None  # number of steps averaged into t_m, 0-d

    def contributions(self, out, batch) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """(phi `{m: [B, K]}`, s `[M]` detached, valid 0-d bool); s and valid over every rank's samples."""
        mods, present = self.model.modalities, batch["present"]
        phi = shapley_contributions(self.model, out.features, present)
        with torch.no_grad():
            sums, counts = zip(*(masked_sum(per_sample_loss(phi[m], batch["y"], self.task_type), present[m])
                                 for m in mods), strict=True)
            s, counts = summed_over_ranks(torch.stack(sums), torch.stack(counts))
            valid = counts.gt(0).all()
        return phi, s, valid

    def coefficients(self, s: torch.Tensor, valid: torch.Tensor) -> dict[str, torch.Tensor]:
        """r, r*, k `[M]` from this step's s; updates the running means t (no host sync)."""
        if self.running_loss is None:
            self.running_loss = torch.zeros_like(s)
            self.steps = torch.zeros((), dtype=s.dtype, device=s.device)
        t = self.running_loss
        ratio = torch.exp(mean_of_others(s) - s)
        target = torch.exp(mean_of_others(t) - t)
        coeff = torch.exp(self.alpha * torch.clamp(target - ratio, max=self.cap))
        coeff = torch.where(valid, coeff, torch.ones_like(coeff))
        new_steps = self.steps + 1
        self.running_loss = torch.where(valid, t + (s - t) / new_steps, t)
        self.steps = torch.where(valid, new_steps, self.steps)
        return {"ratio": ratio, "target_ratio": target, "coeff": coeff}

    def step(self, batch):
        model, mods = self.model, self.model.modalities
        model.train()
        self.optimizer.zero_grad(set_to_none=True)
        out = model(batch["inputs"], batch["present"])
        phi, s, valid = self.contributions(out, batch)
        c = self.coefficients(s, valid)
        logits = sum(scale_gradient(phi[m], c["coeff"][i].to(phi[m].dtype)) for i, m in enumerate(mods))
        l_fuse = task_loss(logits, batch["y"], self.task_type)
        l_uni = self.unimodal_losses(out, batch)
        l_total = self.total_loss(l_fuse, l_uni)
        l_total.backward()
        self.apply_gradients()
        metrics = self.loss_metrics(l_total, l_fuse, l_uni)
        for i, m in enumerate(mods):
            metrics[f"contribution_loss_{m}"] = s[i]
            for key in ("ratio", "target_ratio", "coeff"):
                metrics[f"{key}_{m}"] = c[key][i]
        return metrics

    def state_dict(self) -> dict:
        if self.running_loss is None:
            return {}
        return {"running_loss": self.running_loss.clone(), "steps": self.steps.clone()}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.running_loss, self.steps = state["running_loss"].clone(), state["steps"].clone()
