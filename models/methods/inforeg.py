"""InfoReg: information acquisition regulation (Huang et al., CVPR 2025), one training step.

Notation: theta_m are encoder m's parameters, L_total = L_fuse + sum_m lambda_m L_m
(fusion head plus unimodal heads), e the epoch (0-based), W the history length.

  1. Information acquired by modality m in epoch e: the trace of the (empirical)
     Fisher information of its encoder, F_m(e) = mean over the epoch's steps of
     sum_{theta in theta_m} (dL_total/dtheta)^2, accumulated on the device from the
     step's gradients before any regularisation is added (`on_epoch_end` closes it).
  2. Prime learning window, per modality, decided at the start of epoch e
     (`on_epoch_start`) from the relative growth of the W-epoch moving average of
     the trace: k_m(e) = (F_m(e-1) - F_m(e-1-W)) / sum_{j=e-W}^{e-1} F_m(j), with
     F_m(j) = 0 for j < 0 and k_m = 1 while the sum is 0 (epoch 0). Modality m is
     in its prime learning window while k_m(e) > tau (`threshold`).
  3. Which modality acquires too much: per step, scores S_m from the unimodal
     heads (below); the leader d = argmax_m S_m with its gap
     g = S_d - max_{m != d} S_m.
  4. Regulation, only for the leader and only while it is in its own window and
     strictly ahead (g > 0): beta = alpha_d exp(tanh(g)) and the proximal term
     (beta / 2) ||theta_d - theta_d^0||^2 is added to the loss, i.e. its gradient
     beta (theta_d - theta_d^0) is added to theta_d's gradient, where theta_d^0 is
     theta_d at the start of the epoch (the previous epoch's end point). It slows
     the leader's information acquisition during the window so that the other
     modalities can acquire theirs. The prediction is the fusion head's (fused logits).

Scores. Multiclass: p_m = softmax of head m, a sample's score is p_m[y]. Binary
and multilabel (sigmoid): the match score of each label, y p + (1 - y)(1 - p)
with p = sigmoid, summed over the K labels. With `score_reduction="sum"` S_m is
the sum over the batch's samples where m is present (the paper's and released
code's batch sum; for sigmoid tasks S_m = sum_i sum_c [y p + (1 - y)(1 - p)]).
The default `"mean"` divides by the number of those samples and, for sigmoid
tasks, by K, so S_m is in [0, 1] for every task: with missing modalities a batch
sum favours the modality present in more samples, and a sum saturates tanh(g) so
that beta is alpha*e whenever one modality leads (a batch of 64 gives gaps of
several units).

Data-parallel runs (torchrun): the scores S_m are sums (and counts) over every rank's
samples, added in one collective before the leader and beta are chosen; the gradient is
averaged over ranks BEFORE its squared norm enters the trace, so F_m is the information
of the global batch (the mean of per-rank squared norms would not be) and the epoch
windows agree on every rank; the proximal term, the same on every rank (identical
parameters, anchor and beta), is added to the averaged gradient, which is not averaged again.

Where the released code (github GeWu-Lab/InfoReg_CVPR2025 @939b2ed, main.py)
departs from the paper, and what this module does:
  a. Only the audio encoder's trace decides the window of BOTH modalities; here
     each modality has its own trace and window and the leader is regulated only
     inside its own window.
  b. The coefficients are hard-coded for CREMA-D: 0.95 exp(tanh(g)) for audio,
     0.1 exp(tanh(g)) for video; here `alpha` is one number or a {modality: value}
     mapping (alpha: {audio: 0.95, video: 0.1} reproduces it).
  c. Its trace sums only conv/linear weights (no biases or norms) and squares the
     gradient after the proximal term was added; here every encoder parameter and
     the gradient of L_total alone (the information the data gives).
  d. Unimodal logits are slices of the fusion head (W_m z_m + b/2); here the
     model's unimodal heads, which also give L_m.
  e. Scores are batch sums (see above), two modalities only; here M >= 2 (gap to
     the runner-up).
  f. Defaults there: W = 10, tau = 0.05, 50 epochs, SGD lr 2e-3; W and tau are the
     defaults here too.
"""

from __future__ import annotations

import torch

from ..distributed import all_reduce_sum_, average_gradients
from ..precision import upcast
from .base import Method

REDUCTIONS = ("mean", "sum")


class InfoReg(Method):
    """InfoReg step. See the module docstring for the equations.

    Args:
        alpha: base coefficient of the proximal regulariser, a number for every
            modality or a {modality: value} mapping.
        threshold: tau; a modality is in its prime learning window while k_m > tau.
        history: W, the number of epochs of the trace's moving average.
        score_reduction: "mean" (per sample, and per label for sigmoid tasks) or
            "sum" (over the batch, as the paper's code).
        lambda_m: weight of each unimodal head's loss in L_total.
    """

    name = "inforeg"

    def __init__(
        self,
        model,
        optimizer,
        task_type,
        alpha=0.95,
        threshold: float = 0.05,
        history: int = 10,
        score_reduction: str = "mean",
        lambda_m=1.0,
    ):
        super().__init__(model, optimizer, task_type, lambda_m)
        if score_reduction not in REDUCTIONS:
            raise ValueError(f"inforeg: score_reduction must be one of {REDUCTIONS}, got {score_reduction!r}")
        if int(history) < 1:
            raise ValueError(f"inforeg: history must be >= 1, got {history}")
        mods = model.modalities
        if isinstance(alpha, dict):
            unknown = set(alpha) - set(mods)
            if unknown:
                raise ValueError(f"inforeg: alpha names unknown modalities {sorted(unknown)}")
            self.alphas = {m: float(alpha.get(m, 0.0)) for m in mods}
        else:
            self.alphas = {m: float(alpha) for m in mods}
        self.threshold, self.history, self.reduction = float(threshold), int(history), score_reduction
        self.traces: dict[str, list[float]] = {m: [] for m in mods}  # F_m(e), one per finished epoch
        self.window = {m: True for m in mods}
        self.anchor: dict[str, list[torch.Tensor]] | None = None  # theta_m^0
        self.fisher_sum: dict[str, torch.Tensor] | None = None  # sum over this epoch's steps
        self.steps = 0

    # --- per-epoch rules ----------------------------------------------------------------------
    def information_rate(self, trace: list[float]) -> float:
        """k(e) from the traces of epochs 0..e-1 (zeros before epoch 0)."""
        w = self.history
        padded = [0.0] * (w + 1) + list(trace)
        window_sum = sum(padded[-w:])
        if window_sum <= 0.0:
            return 1.0
        return (padded[-1] - padded[-1 - w]) / window_sum

    def on_epoch_start(self, epoch: int, train_tensors) -> dict[str, torch.Tensor]:
        metrics = {}
        for m in self.model.modalities:
            k = self.information_rate(self.traces[m])
            self.window[m] = k > self.threshold
            metrics[f"information_rate_{m}"] = torch.tensor(k)
            metrics[f"in_window_{m}"] = torch.tensor(float(self.window[m]))
        self.anchor = {m: [p.detach().clone() for p in self.encoder_params(m)] for m in self.model.modalities}
        self.fisher_sum, self.steps = None, 0
        return metrics

    def on_epoch_end(self, epoch: int, train_tensors) -> dict[str, torch.Tensor]:
        if self.fisher_sum is None or self.steps == 0:
            return {}
        values = torch.stack([self.fisher_sum[m] for m in self.model.modalities]).div(self.steps).tolist()
        metrics = {}
        for m, value in zip(self.model.modalities, values, strict=True):
            self.traces[m].append(float(value))
            metrics[f"fisher_trace_{m}"] = torch.tensor(float(value))
        self.fisher_sum, self.steps = None, 0
        return metrics

    # --- scores --------------------------------------------------------------------------------
    def scores(self, unimodal: dict[str, torch.Tensor], present, y) -> torch.Tensor:
        """S_m `[M]` (detached) from the unimodal heads' logits, over the samples of every rank."""
        sums, counts = [], []
        for m in self.model.modalities:
            logits = unimodal[m].detach()
            logits = upcast(logits)
            if self.task_type == "multiclass":
                per_sample = torch.softmax(logits, 1).gather(1, y.long().unsqueeze(1)).squeeze(1)
            else:
                p, t = torch.sigmoid(logits), y.to(logits.dtype)
                match = t * p + (1 - t) * (1 - p)
                per_sample = match.mean(1) if self.reduction == "mean" else match.sum(1)
            w = present[m].to(per_sample.dtype)
            sums.append((per_sample * w).sum())
            counts.append(w.sum())
        both = torch.stack([torch.stack(sums), torch.stack(counts)])
        all_reduce_sum_([both])  # one collective: the global batch's sums and counts
        return both[0] / both[1].clamp(min=1.0) if self.reduction == "mean" else both[0]

    def coefficients(self, scores: torch.Tensor) -> torch.Tensor:
        """beta_m `[M]`: alpha_d exp(tanh(g)) for the leader d when ahead and in its window, else 0."""
        mods = self.model.modalities
        d = torch.argmax(scores)
        others = scores.clone()
        others[d] = -torch.inf
        gap = scores[d] - others.max()
        alphas = torch.tensor([self.alphas[m] for m in mods], dtype=scores.dtype, device=scores.device)
        windows = torch.tensor([self.window[m] for m in mods], device=scores.device)
        leader = torch.arange(len(mods), device=scores.device) == d
        active = leader & windows & (gap > 0)
        return torch.where(active, alphas * torch.exp(torch.tanh(gap)), torch.zeros_like(alphas))

    # --- one step ------------------------------------------------------------------------------
    def step(self, batch):
        if self.anchor is None:
            raise RuntimeError("inforeg: the epoch anchor is set in on_epoch_start; call it before step")
        mods = self.model.modalities
        out, l_fuse, l_uni, l_total = self.forward_losses(batch)
        scores = self.scores(out.unimodal, batch["present"], batch["y"])
        l_total.backward()
        # the global batch's gradient: its squared norm is the step's information, and the
        # proximal term (the same on every rank) is added to it after the average
        average_gradients(self.model.parameters())

        params = {m: self.encoder_params(m) for m in mods}
        with torch.no_grad():
            fisher = {}
            for m in mods:
                grads = [p.grad for p in params[m] if p.grad is not None]
                fisher[m] = (torch.stack(torch._foreach_norm(grads)).pow(2).sum() if grads
                             else torch.zeros((), device=l_total.device))
            if self.fisher_sum is None:
                self.fisher_sum = fisher
            else:
                self.fisher_sum = {m: self.fisher_sum[m] + fisher[m] for m in mods}
            self.steps += 1

            beta = self.coefficients(scores)
            if any(self.window.values()):  # host-known: no proximal work outside every window
                for i, m in enumerate(mods):
                    if not self.window[m]:
                        continue
                    diff = torch._foreach_sub([p.detach() for p in params[m]], self.anchor[m])
                    for p in params[m]:
                        if p.grad is None:
                            p.grad = torch.zeros_like(p)
                    torch._foreach_add_([p.grad for p in params[m]], torch._foreach_mul(diff, beta[i]))
        self.optimizer.step()  # averaged once, above

        metrics = self.loss_metrics(l_total, l_fuse, l_uni)
        for i, m in enumerate(mods):
            metrics[f"score_{m}"] = scores[i]
            metrics[f"beta_{m}"] = beta[i]
            metrics[f"fisher_{m}"] = fisher[m]
        metrics["regulated"] = (beta > 0).any().float()
        return metrics

    # --- resumable state -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"traces": {m: list(v) for m, v in self.traces.items()}, "window": dict(self.window),
                "anchor": self.anchor, "fisher_sum": self.fisher_sum, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.traces = {m: list(v) for m, v in state.get("traces", self.traces).items()}
        self.window = dict(state.get("window", self.window))
        self.anchor = state.get("anchor")
        self.fisher_sum = state.get("fisher_sum")
        self.steps = int(state.get("steps", 0))
