"""AUG (Jiang, Huang & Yang, NeurIPS 2025): sustained boosting with adaptive classifier assignment.

Model (`AUGNet`): per modality m, encoder z_m `[B, H_m]` -> base branch
b_m(z) = ReLU(A_m z + a_m) `[B, hidden]` -> a classifier C(.) `[B, K]` SHARED by all
modalities and branches. Boosting adds extra branches x_m,j(z) = ReLU(E_m,j z + e_m,j)
to the weaker modality; modality m's logits are the sum over its active branches
    out_m = C(b_m(z_m)) + sum_{j < n_m} C(x_m,j(z_m)).
The network allocates `max_classifiers` extra branches per modality up front
(xavier weights, zero bias) and keeps the active counts n_m in a buffer, so a
network rebuilt from its config loads any checkpoint, and the optimizer (built
once, over every parameter) optimises each branch from the step it is added.
The prediction (`fused`) is the paper's weighted combination of the modalities'
logits, fused = sum_m w_m 1[m present] out_m / sum_m w_m 1[m present]
(`fusion_weights`, default equal; a sample with no modality present gets the plain
weighted mean).

One step (same batch), for each modality m in turn, one backward and one
optimizer step (alternating, as MLA):
  - n_m = 0: L = loss(out_m, y).
  - n_m >= 1 (sustained boosting): o = out_m without the newest branch, d = C(newest
    branch) its logits alone; with p_i the (detached) probability o gives sample i's
    correct answer,
        L = loss(out_m, y) + loss(o, y) + mean_i (1 - beta p_i) loss_i(d, y)
    i.e. the whole ensemble and the ensemble before the newest branch both fit y
    (classification error), and the newest branch fits y with each sample weighted
    by how badly the earlier branches did (residual error); beta = `boost_weight`.
    All losses are over the samples where m is present.

Adaptive classifier assignment, at the start of every epoch e >= 1 with
(e - 1) % check_every == 0, from the scores accumulated over epoch e - 1's steps:
S_m = mean over present samples of the probability out_m gives the correct answer.
If max_m S_m / min_m S_m > 1 + tolerance, the weakest modality argmin_m S_m gets one
more branch (at most one per check, at most `max_classifiers` per modality). For
two modalities this is the paper's test rho = S_a / S_v against lambda = 1.
(Checking at the start of the next epoch rather than at the end of this one lets the
new branch train for an epoch before validation sees it.)

Multilabel and binary tasks: "probability of the correct answer" is the mean over
labels of y p + (1 - y)(1 - p), p = sigmoid; the boosted loss weights each label's
BCE by (1 - beta (y p + (1 - y)(1 - p))) before the label mean; softmax CE and
p_y otherwise.

Data-parallel runs (torchrun): each modality's update averages its gradients over ranks
(one step per modality, as in one process), and the epoch's score sums and counts are
added over ranks at the epoch's end (one collective), so every rank makes the same
assignment and grows the same network; the checkpoint written after the epoch holds the
global sums, so a run resumes alike on any number of processes.

Switched off (`max_classifiers=0`) AUG is alternating unimodal training of the
base branches with the shared classifier.

Logged: per step `boost_weight_<m>` (mean sample weight of the newest branch, 1
when m has none); per check `score_<m>`, `classifiers_<m>` and `boosted` (index of
the modality given a branch, -1 for none).

Departures from the released code (njustkmg/NeurIPS25-AUG @841d079), kept to the
paper: the released optimizer is built once before any branch exists, so added
branches are never optimised (bug; here they are); the released loss writes the
weight term as loss(d, y) - 0.5 loss(d, y * softmax(o)) (the same weights) while
its comment says 0.2 (`boost_weight` sets beta); S_m is a mean over present samples,
not a sum over the epoch (equal for complete modalities); inference weights default
to equal instead of the CREMA-D 0.4 / 0.6 (set `fusion_weights`).
"""

from __future__ import annotations

import torch
from torch import nn

from clinfuse.etl.errors import ConfigError

from ..distributed import all_reduce_sum_
from ..fusion import FusionOutput
from ..losses import per_sample_loss
from .base import Method, option, upcast


def correct_probability(logits: torch.Tensor, y: torch.Tensor, task_type: str) -> torch.Tensor:
    """Probability the prediction gives the correct answer `[B]` (sigmoid tasks: `[B, K]` per label)."""
    logits = upcast(logits)
    if task_type == "multiclass":
        return torch.softmax(logits, -1).gather(1, y.long()[:, None])[:, 0]
    p = torch.sigmoid(logits)
    y = y.to(p.dtype)
    return y * p + (1 - y) * (1 - p)


def boosted_loss(d: torch.Tensor, o: torch.Tensor, y: torch.Tensor, task_type: str, beta: float) -> torch.Tensor:
    """Per-sample residual loss `[B]` of the newest branch: (1 - beta p_correct(o)) times its loss on y.

    Args:
        d: `[B, K]` logits of the newest branch alone.
        o: `[B, K]` logits of the earlier branches (detached inside).
        y: labels (`[B]` class indices or `[B, K]` 0/1).
        beta: weight of the earlier branches' correctness.
    """
    p = correct_probability(o.detach(), y, task_type)
    if task_type == "multiclass":
        return (1 - beta * p) * per_sample_loss(d, y, task_type)
    d = upcast(d)
    bce = nn.functional.binary_cross_entropy_with_logits(d, y.to(d.dtype), reduction="none")
    return ((1 - beta * p) * bce).mean(1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weight = mask.to(values.dtype)
    return (values * weight).sum() / weight.sum().clamp(min=1.0)


class AUGNet(nn.Module):
    """Encoders, per-modality branches (base + up to `max_classifiers` extra), one shared classifier.

    Args:
        encoders: modality -> encoder with `out_dim`.
        num_outputs: K.
        hidden: width of every branch (input of the shared classifier).
        max_classifiers: extra branches allocated per modality.
        fusion_weights: {modality: weight} of the inference combination (default equal).
    """

    def __init__(self, encoders: dict[str, nn.Module], num_outputs: int, hidden: int = 256,
                 max_classifiers: int = 10, fusion_weights: dict[str, float] | None = None):
        super().__init__()
        self.modalities = list(encoders)
        self.num_outputs = num_outputs
        self.encoders = nn.ModuleDict(encoders)
        self.base = nn.ModuleDict({m: nn.Linear(e.out_dim, hidden) for m, e in encoders.items()})
        self.extra = nn.ModuleDict({
            m: nn.ModuleList([nn.Linear(e.out_dim, hidden) for _ in range(max_classifiers)])
            for m, e in encoders.items()
        })
        for branches in self.extra.values():
            for layer in branches:
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
        self.classifier = nn.Linear(hidden, num_outputs)
        self.max_classifiers = int(max_classifiers)
        self.register_buffer("active", torch.zeros(len(self.modalities), dtype=torch.long))  # n_m
        weights = fusion_weights or {m: 1.0 for m in self.modalities}
        self.register_buffer("fusion_weights", torch.tensor([float(weights[m]) for m in self.modalities]))

    def branch_logits(self, modality: str, z: torch.Tensor, n: int) -> list[torch.Tensor]:
        """Logits `[B, K]` of the base branch and the first n extra branches of one modality (training)."""
        out = [self.classifier(torch.relu(self.base[modality](z)))]
        out += [self.classifier(torch.relu(self.extra[modality][j](z))) for j in range(n)]
        return out

    def modality_logits(self, modality: str, z: torch.Tensor) -> torch.Tensor:
        """out_m `[B, K]`: the active branches summed. Masks instead of a host read of the count,
        so the forward exports (`torch.export`) and never syncs."""
        out = self.classifier(torch.relu(self.base[modality](z)))
        if self.max_classifiers == 0:
            return out
        extra = torch.stack([self.classifier(torch.relu(layer(z))) for layer in self.extra[modality]])  # [J, B, K]
        n = self.active[self.modalities.index(modality)]
        mask = (torch.arange(self.max_classifiers, device=z.device) < n).to(extra.dtype)
        return out + (extra * mask[:, None, None]).sum(0)

    def forward(self, inputs: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> FusionOutput:
        features = {m: self.encoders[m](inputs[m]) for m in self.modalities}
        unimodal = {m: self.modality_logits(m, features[m]) for m in self.modalities}
        return FusionOutput(self.combine(unimodal, present), unimodal, features)

    def combine(self, unimodal: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> torch.Tensor:
        """Weighted mean of the present modalities' logits `[B, K]`."""
        logits = torch.stack([unimodal[m] for m in self.modalities])  # [M, B, K]
        w = self.fusion_weights.to(logits.dtype)[:, None]
        mask = torch.stack([present[m].to(logits.dtype) for m in self.modalities]) * w  # [M, B]
        mask = torch.where((mask.sum(0) == 0)[None, :], w.expand_as(mask), mask)
        return (logits * mask[..., None]).sum(0) / mask.sum(0)[:, None]


class AUG(Method):
    """AUG step and classifier assignment. See the module docstring.

    Args:
        boost_weight: beta in the newest branch's sample weights 1 - beta p_correct.
        max_classifiers: extra branches each modality may receive (0 switches boosting off).
        check_every: epochs between assignment checks (the released code: total epochs / 10).
        tolerance: a check adds a branch when max S / min S > 1 + tolerance.
        hidden: branch width.
        fusion_weights: {modality: weight} of the inference combination (default equal).
        order: the modalities' update order within a step (default: the cohort's order).
    """

    name = "aug"

    @classmethod
    def build_model(cls, encoders, num_outputs, task_type, options):
        weights = options.get("fusion_weights")
        if weights is not None and set(weights) != set(encoders):
            raise ConfigError(f"aug: options.fusion_weights must name exactly {list(encoders)}, got {sorted(weights)}")
        return AUGNet(encoders, num_outputs, int(option(cls, options, "hidden")),
                      int(option(cls, options, "max_classifiers")), weights)

    def __init__(self, model: AUGNet, optimizer, task_type, boost_weight: float = 0.5, max_classifiers: int = 10,
                 check_every: int = 1, tolerance: float = 0.01, hidden: int = 256,
                 fusion_weights: dict[str, float] | None = None, order: list[str] | None = None):
        super().__init__(model, optimizer, task_type)
        if check_every < 1:
            raise ValueError(f"aug: check_every must be >= 1, got {check_every}")
        self.beta, self.check_every, self.tolerance = float(boost_weight), int(check_every), float(tolerance)
        self.order = list(order) if order is not None else list(model.modalities)
        if sorted(self.order) != sorted(model.modalities):
            raise ValueError(f"aug: order must list each of {model.modalities} once, got {self.order}")
        # in the model's dtype (a float64 model accumulates in float64) and on its device
        like = {"device": model.classifier.weight.device, "dtype": model.classifier.weight.dtype}
        self.score_sum = torch.zeros(len(model.modalities), **like)  # sum of S over present samples
        self.score_count = torch.zeros(len(model.modalities), **like)

    # --- training step ---------------------------------------------------------------
    def modality_loss(self, m: str, z: torch.Tensor, batch, n: int):
        """(loss, ensemble logits out_m, mean boost weight) for modality m with n active extra branches."""
        y, present = batch["y"], batch["present"][m]
        branches = self.model.branch_logits(m, z, n)
        out = torch.stack(branches).sum(0)
        losses = per_sample_loss(out, y, self.task_type)
        weight = torch.ones((), device=z.device, dtype=self.score_sum.dtype)
        if n >= 1:
            o = torch.stack(branches[:-1]).sum(0)
            losses = losses + per_sample_loss(o, y, self.task_type) + boosted_loss(
                branches[-1], o, y, self.task_type, self.beta)
            p = correct_probability(o.detach(), y, self.task_type)
            weight = masked_mean((1 - self.beta * p).reshape(len(y), -1).mean(1), present)
        return masked_mean(losses, present), out, weight

    def step(self, batch):
        model = self.model
        model.train()
        counts = model.active.tolist()  # the one host read per step: which branches to run
        metrics = {}
        for m in self.order:
            i = model.modalities.index(m)
            self.optimizer.zero_grad(set_to_none=True)
            z = model.encoders[m](batch["inputs"][m])
            loss, out, weight = self.modality_loss(m, z, batch, counts[i])
            loss.backward()
            self.apply_gradients()
            metrics[f"loss_{m}"] = loss.detach()
            metrics[f"boost_weight_{m}"] = weight.detach()
            with torch.no_grad():
                p = correct_probability(out.detach(), batch["y"], self.task_type).reshape(len(batch["y"]), -1).mean(1)
                mask = batch["present"][m].to(p.dtype)
                self.score_sum[i] += (p * mask).sum()
                self.score_count[i] += mask.sum()
        self.optimizer.zero_grad(set_to_none=True)
        metrics["loss_total"] = torch.stack([metrics[f"loss_{m}"] for m in self.order]).sum()
        return metrics

    # --- adaptive classifier assignment ------------------------------------------------
    def assign(self) -> dict[str, torch.Tensor]:
        """Give the weakest modality one more branch when the score ratio exceeds 1 + tolerance."""
        model = self.model
        scores = self.score_sum / self.score_count.clamp(min=1.0)  # S_m, [M]
        weakest = torch.argmin(scores)
        ratio = scores.max() / scores.min().clamp(min=1e-12)
        room = model.active[weakest] < model.max_classifiers
        boost = (ratio > 1 + self.tolerance) & room & (self.score_count > 0).all()
        with torch.no_grad():
            model.active[weakest] += boost.long()
        metrics = {f"score_{m}": scores[i] for i, m in enumerate(model.modalities)}
        metrics.update({f"classifiers_{m}": model.active[i].float() for i, m in enumerate(model.modalities)})
        metrics["ratio"] = ratio
        metrics["boosted"] = torch.where(boost, weakest, torch.full_like(weakest, -1)).float()
        return metrics

    def on_epoch_start(self, epoch: int, train_tensors) -> dict[str, torch.Tensor]:
        metrics = {}
        if epoch >= 1 and (epoch - 1) % self.check_every == 0:
            metrics = self.assign()
        self.score_sum.zero_()
        self.score_count.zero_()
        return metrics

    def on_epoch_end(self, epoch: int, train_tensors) -> dict[str, torch.Tensor]:
        # the epoch's scores over every rank's samples, before the next epoch's assignment
        all_reduce_sum_([self.score_sum, self.score_count])
        return {}

    def state_dict(self) -> dict:
        return {"score_sum": self.score_sum.clone(), "score_count": self.score_count.clone()}

    def load_state_dict(self, state: dict) -> None:
        if "score_sum" in state:
            self.score_sum.copy_(state["score_sum"])
            self.score_count.copy_(state["score_count"])
