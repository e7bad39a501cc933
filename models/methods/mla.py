"""MLA (Zhang et al., CVPR 2024): multimodal learning by alternating unimodal adaptation.

Model (`MLANet`): the encoders and ONE head H(z) = W z + b shared by every modality;
no fusion head. The prediction (`FusionOutput.fused`) is the paper's test-time
fusion of the unimodal predictions p_m = act(H(z_m)) (act = sigmoid or softmax):
  - `fusion="entropy"` (default, the paper's uncertainty-based fusion), per sample:
    e_m = entropy of p_m, w_m = exp(max_k e_k - e_m) / sum_j exp(max_k e_k - e_j),
    so the more certain modality weighs more;
  - `fusion="fixed"`: fixed weights `fusion_weights` ({modality: weight}, default equal).
  Absent modalities are left out (weights renormalised, `average_probabilities`).

One step (same batch), for each modality m in turn:
  1. L_m = loss(H(z_m), y) on the samples where m is present (no fused loss);
  2. backward; the shared head's weight gradient is projected (orthogonal weight
     modification, OWM): with r = mean over the batch of z_m (detached) and the
     persistent projector P (`[D, D]`, P_0 = I),
        k = P r,  P <- P - k k^T / (a + r^T k),  P <- P / ||P||_F,
        grad_W <- grad_W P^T                      (the bias is not projected),
     a = 0.1^(1 + t), t = fraction of the epoch's samples already seen, so that the
     head's update for one modality is (nearly) orthogonal to the feature directions
     the other modalities already taught it. P is not updated or applied on the very
     first head update of the run (nothing has been learned yet to protect);
  3. one base-optimizer step, gradients cleared.
So each step costs one forward and one backward per modality and M optimizer steps.

Multilabel and binary tasks: the loss is sigmoid BCE (label mean) and the entropy
of a prediction is the mean over the K labels of the binary entropy
-p log p - (1 - p) log(1 - p); softmax CE and the categorical entropy otherwise.

The shared head needs every encoder to emit the same width D. When widths differ,
`shared_dim` adds one linear projection per modality to D = shared_dim (not in the
paper, whose encoders share a width); without it the model refuses in one line.

Data-parallel training (torchrun, `models.distributed`): after each modality's
backward, ONE collective averages the gradients and the batch's feature sum and
present count over ranks (the ratio of the averaged sum and count is the global
batch's mean feature r, exactly), so every rank updates P with the same r, projects
the same averaged gradient and applies the same update; P stays identical on every
rank without being communicated. The alternation order and the alpha schedule are
the same on every rank as long as their shards have the same size (checked once per
epoch; DistributedSampler guarantees it).

Switched off (`projection=False`) MLA is plain alternating unimodal training of a
shared head (the released code's actual behaviour, see below).

Departures from the released code (Cecile-hi/Multimodal-Learning-with-Alternating-
Unimodal-Adaptation @ab6c184), kept to the paper: its projection never runs because
it matches the parameter name "module.weight" while the head's weight is named
"weight"; here it runs. Its entropy gating reduces over the batch (dim=0) and gives
one weight per batch; here weights are per sample. BalanceBenchmark ADDS the
projected gradient to the original (grad_W + grad_W P^T) instead of replacing it:
not reproduced. The alpha schedule uses the fraction of samples (not batches) seen
in the epoch, which is the same for full batches.
"""

from __future__ import annotations

import torch
from torch import nn

from clinfuse.etl.errors import ConfigError

from ..distributed import all_reduce_mean_, check_same_on_every_rank
from ..fusion import FusionOutput, average_probabilities
from ..losses import task_loss
from .base import Method, autocast_off, option, upcast

FUSIONS = ("entropy", "fixed")


def prediction_entropy(logits: torch.Tensor, task_type: str) -> torch.Tensor:
    """Entropy per sample `[B]` of the predictions `logits` `[B, K]` (mean binary entropy for sigmoid tasks)."""
    logits = upcast(logits)
    if task_type == "multiclass":
        logp = torch.log_softmax(logits, -1)
        return -(logp.exp() * logp).sum(-1)
    p = torch.sigmoid(logits)
    # -p log p - (1-p) log(1-p), written with logsigmoid so it stays finite at |logit| >> 0
    return -(p * nn.functional.logsigmoid(logits) + (1 - p) * nn.functional.logsigmoid(-logits)).mean(-1)


def entropy_weights(logits: dict[str, torch.Tensor], task_type: str) -> dict[str, torch.Tensor]:
    """Per-sample weights w_m = softmax_m(-e_m) `[B]` (= exp(max e - e_m) / sum_j exp(max e - e_j))."""
    mods = list(logits)
    e = torch.stack([prediction_entropy(logits[m], task_type) for m in mods])  # [M, B]
    w = torch.softmax(-e, dim=0)
    return dict(zip(mods, w.unbind(0), strict=True))


def owm_update(p: torch.Tensor, r: torch.Tensor, alpha: float) -> torch.Tensor:
    """One OWM projector update: P - k k^T / (alpha + r^T k) with k = P r, then P / ||P||_F.

    Args:
        p: `[D, D]` projector.
        r: `[D]` mean feature of the batch.
        alpha: regulariser a.
    """
    k = p @ r
    p = p - torch.outer(k, k) / (alpha + r @ k)
    return p / torch.linalg.matrix_norm(p)


class MLANet(nn.Module):
    """Encoders + one head shared by all modalities; `fused` is the test-time fusion rule.

    Args:
        encoders: modality -> encoder with `out_dim`.
        num_outputs: K.
        task_type: "multilabel", "binary" or "multiclass" (sets the activation of the rule).
        fusion: "entropy" (per-sample uncertainty gating) or "fixed".
        fusion_weights: {modality: weight} for "fixed" (default equal).
        shared_dim: width D of optional per-modality linear projections (None: encoders must agree).
    """

    def __init__(self, encoders: dict[str, nn.Module], num_outputs: int, task_type: str,
                 fusion: str = "entropy", fusion_weights: dict[str, float] | None = None,
                 shared_dim: int | None = None):
        super().__init__()
        self.modalities = list(encoders)
        self.num_outputs = num_outputs
        self.task_type = task_type
        self.fusion = fusion
        self.fusion_weights = None if fusion_weights is None else {m: float(fusion_weights[m]) for m in encoders}
        self.encoders = nn.ModuleDict(encoders)
        widths = {m: e.out_dim for m, e in encoders.items()}
        if shared_dim is None:
            if len(set(widths.values())) > 1:
                raise ConfigError(
                    "mla: the shared head needs equal encoder widths, got "
                    + ", ".join(f"{m}={w}" for m, w in widths.items())
                    + "; set the encoders' out_dim equal or options.shared_dim"
                )
            self.projections = None
            dim = next(iter(widths.values()))
        else:
            self.projections = nn.ModuleDict({m: nn.Linear(w, int(shared_dim)) for m, w in widths.items()})
            dim = int(shared_dim)
        self.shared_dim = dim
        self.head = nn.Linear(dim, num_outputs)

    def encode(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """Features `[B, D]` entering the shared head."""
        z = self.encoders[modality](x)
        return z if self.projections is None else self.projections[modality](z)

    def combine(self, unimodal: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> torch.Tensor:
        """The prediction rule as logits `[B, K]`."""
        if self.fusion == "entropy":
            weights = entropy_weights(unimodal, self.task_type)
        else:
            weights = self.fusion_weights
        return average_probabilities(unimodal, present, self.task_type, weights)

    def forward(self, inputs: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> FusionOutput:
        features = {m: self.encode(m, inputs[m]) for m in self.modalities}
        unimodal = {m: self.head(features[m]) for m in self.modalities}
        return FusionOutput(self.combine(unimodal, present), unimodal, features)


class MLA(Method):
    """MLA step. See the module docstring for the equations and departures.

    Args:
        projection: apply the OWM gradient projection to the shared head (False: plain alternation).
        fusion: test-time rule, "entropy" (default) or "fixed".
        fusion_weights: {modality: weight} for fusion="fixed" (default equal weights).
        shared_dim: width of per-modality projections before the shared head (None: none; widths must agree).
        order: the modalities' update order within a step (default: the cohort's order).
    """

    name = "mla"

    @classmethod
    def build_model(cls, encoders, num_outputs, task_type, options):
        fusion = option(cls, options, "fusion")
        if fusion not in FUSIONS:
            raise ConfigError(f"mla: options.fusion must be one of {FUSIONS}, got {fusion!r}")
        weights = options.get("fusion_weights")
        if weights is not None and set(weights) != set(encoders):
            raise ConfigError(f"mla: options.fusion_weights must name exactly {list(encoders)}, got {sorted(weights)}")
        return MLANet(encoders, num_outputs, task_type, fusion, weights, option(cls, options, "shared_dim"))

    def __init__(self, model: MLANet, optimizer, task_type, projection: bool = True, fusion: str = "entropy",
                 fusion_weights: dict[str, float] | None = None, shared_dim: int | None = None,
                 order: list[str] | None = None):
        super().__init__(model, optimizer, task_type)
        self.projection = bool(projection)
        self.order = list(order) if order is not None else list(model.modalities)
        if sorted(self.order) != sorted(model.modalities):
            raise ValueError(f"mla: order must list each of {model.modalities} once, got {self.order}")
        weight = model.head.weight
        self.P = torch.eye(model.shared_dim, dtype=weight.dtype, device=weight.device)  # OWM projector
        self.head_updates = 0  # projection starts from the second head update
        self.epoch_samples = 0  # N of the current epoch (0: unknown, alpha = 0.1)
        self.seen = 0  # samples already stepped on in this epoch

    def on_epoch_start(self, epoch: int, train_tensors) -> dict[str, torch.Tensor]:
        # alpha follows the samples THIS process steps on (its share under torchrun)
        self.epoch_samples, self.seen = train_tensors.rank_samples, 0
        check_same_on_every_rank(self.epoch_samples, "mla: the training shard size (which sets alpha)")
        return {}

    def alpha(self) -> float:
        fraction = self.seen / self.epoch_samples if self.epoch_samples else 0.0
        return 0.1 ** (1.0 + fraction)

    def step(self, batch):
        model = self.model
        model.train()
        present, alpha = batch["present"], self.alpha()
        metrics = {}
        for m in self.order:
            self.optimizer.zero_grad(set_to_none=True)
            z = model.encode(m, batch["inputs"][m])
            loss = task_loss(model.head(z), batch["y"], self.task_type, present[m])
            loss.backward()
            project = self.projection and self.head_updates > 0
            # the parameters L_m reaches (encoder m and the head): the same on every rank
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            with torch.no_grad():
                if project:
                    z_full = upcast(z.detach())  # a bf16 (autocast) count would be inexact past 256
                    mask = present[m].to(z_full.dtype)[:, None]
                    total = torch.cat([(z_full * mask).sum(0), mask.sum(0)])  # [D + 1]: sum, count
                    grads.append(total)
                all_reduce_mean_(grads)  # rank means; the sum/count ratio is unchanged by averaging both
            if project:
                with torch.no_grad(), autocast_off(total):
                    # mean over present samples; a batch with none gives 0 / tiny = 0
                    r = total[:-1] / total[-1].clamp(min=torch.finfo(total.dtype).tiny)
                    self.P = owm_update(self.P, r.to(self.P.dtype), alpha)
                    grad = model.head.weight.grad
                    model.head.weight.grad = (grad @ self.P.T.to(grad.dtype)).contiguous()
            self.head_updates += 1
            self.apply_gradients(averaged=True)
            metrics[f"loss_{m}"] = loss.detach()
        self.optimizer.zero_grad(set_to_none=True)
        self.seen += int(batch["y"].shape[0])
        metrics["loss_total"] = torch.stack([metrics[f"loss_{m}"] for m in self.order]).sum()
        metrics["projector_trace"] = torch.diagonal(self.P).sum()
        return metrics

    def state_dict(self) -> dict:
        return {"P": self.P.clone(), "head_updates": self.head_updates,
                "epoch_samples": self.epoch_samples, "seen": self.seen}

    def load_state_dict(self, state: dict) -> None:
        if "P" in state:
            self.P = state["P"].to(self.P.device, self.P.dtype)
            self.head_updates = int(state["head_updates"])
            self.epoch_samples, self.seen = int(state["epoch_samples"]), int(state["seen"])
