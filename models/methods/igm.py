"""IGM: Interactive Multimodal Learning via Flat Gradient Modification.

Jiang, Chi, Yang, IJCAI 2025 (doi:10.24963/ijcai.2025/611). A late-fusion method
without a fusion head: the modalities are trained in alternation, and each
modality's update is bent towards the flat directions of the previous
modality's features, with SAM on every modality. Notation: encoder phi_j with
features z_j = phi_j(x_j) `[B, d]`, classifier c_j (Linear(d, h) - ReLU -
Linear(h, K)), theta_j the parameters of phi_j and c_j, m modalities.

Model and prediction (the paper's late fusion):
  p_j = g(c_j(z_j)), g = softmax (multiclass) or sigmoid (binary, multilabel: the
  analogue of the paper's softmax rule, applied label by label); the prediction
  is the mean of p_j over the modalities PRESENT for the sample (option
  `fusion: mean`, `models.fusion.average_probabilities`), returned as logits in
  `FusionOutput.fused`, so evaluation, export, the registry and `predict` use it.
  The loss of modality j is its own task loss L_j (BCE or CE) over the samples
  where j is present.

Flat-projection gradient modification (Eqs. 2-5): after modality k's phase, one
pass over the training data (eval mode, no gradient, mini-batches in row order)
accumulates
  Y_k = sum_batches zbar zbar^T,   zbar = batch mean of z_k over present samples
(`[d, d]`, uncentred; a batch where k is absent for every sample adds nothing).
With Y_k = U Lambda V^T (symmetric: `eigh`),
  T_k = V Sigma V^T,  Sigma = exp(-tau (Lambda - lambda_min I) / (lambda_max - lambda_min)),
so directions of large feature energy are shrunk by up to exp(-tau) and the
flattest keep weight 1 (all eigenvalues equal: Sigma = I). Initially T_k = I.
When modality j trains, the gradient of its classifier's first Linear weight
W_j `[h, d]` becomes grad_W T_k, with k the previous modality in cyclic order,
k = mod(j + m - 2, m) + 1 (1-based; two modalities: the other one). T_k acts on
the input side, so every modality's feature width d must be the same
(`build_model` checks it; `feature_dim` adds a linear projection to phi_j).

SAM on each modality (Eqs. 6-8): g = grad L_j(theta_j); eps = rho g / ||g||
(one norm over theta_j); g' = grad L_j(theta_j + eps) with the same dropout
masks and BatchNorm statistics untouched; theta_j restored; the
second-order term is dropped as in the paper. The T modification applies to g'
and the base optimizer steps theta_j only (the other modalities get no
gradient). rho = 0 skips the second pass.

Algorithm 1 on the project's trainer. An outer iteration t trains every modality
once, in the cohort's order: `inner_iters` mini-batches of modality j, then the
pass for Y_j, T_j. With `inner_iters=None` (default) ONE TRAINER EPOCH IS ONE
OUTER ITERATION: the epoch's shuffled batches are shared out in order, modality
j's phase ending once (j+1)/m of the epoch's samples were seen (the last phase
ends in `on_epoch_end`), so the trainer's validation of the fused prediction,
early stopping (`patience`) and the learning-rate schedule all count outer
iterations, and each modality takes about N/m of the epoch's N steps (a late
fusion epoch's step count, so runs of equal `epochs` take comparable time). With an integer `inner_iters` the phases run `inner_iters` steps
each regardless of epoch boundaries (the epoch then only sets when validation
happens). Step metrics: `loss_total` and `loss_<j>` of the modality trained (the
trainer averages each key over the steps that report it); epoch metrics
(`epoch/igm_<k>_...`): the spectrum of the latest Y_k behind T_k, lambda_max,
lambda_min, effective rank exp(H(Lambda / sum Lambda)) and the mean of Sigma.

Options: `inner_iters`, `tau` (0.4, the released code's value), `rho` (0.05: the
released code's 1e-10 does not move float32 parameters at all), `fusion`,
`hidden` (classifier width), `feature_dim`.

Where the released code (github njustkmg/IJCAI25-IGM) departs from the paper;
this module follows the paper and does none of it:
  a. mixup (alpha 1) on the input of the modality being trained;
  b. the loss is 0.7 L_ori + 0.3 L_flat, L_flat the loss of the classifier at
     the ascended parameters on the unperturbed features;
  c. the ascent is per tensor (each tensor normalised by its own norm) and is
     never undone, with rho = 1e-10, a numerical no-op in float32;
  d. projections on every Linear weight whose shape matches one in the other
     modality (encoder and classifier layers, each with its own input
     covariance), not only the classifier's first layer;
  e. alternation per stage of tens of epochs with a new model copy, optimizer
     and StepLR(40, 0.1) each stage, two modalities only;
  f. the best model is selected on the test set (here: on validation).
Data-parallel training (torchrun, `models.distributed`): SAM's first gradient is
averaged over ranks before eps is computed (every rank ascends to the same point)
and g' before the T modification and the step (one collective each); the pass for
Y_k sums each mini-batch's feature sum and present count over ranks (one
collective per pass) before zbar is formed, so Y_k, T_k and the spectra are the
whole data's on every rank. Each rank passes over its own shard, its k-th batch
being its part of the k-th global batch. The phase schedule counts this rank's
samples and needs equal shards (checked once per epoch).
Missing modalities, which the paper does not consider, are masked as above; the
encoders still see the zero-filled inputs of absent samples, as in every other
method of the project.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from clinfuse.etl.errors import ConfigError

from ..distributed import (
    all_reduce_mean_,
    all_reduce_sum_,
    check_same_on_every_rank,
    min_max_over_ranks,
    world_size,
)
from ..fusion import FusionOutput, average_probabilities
from ..losses import task_loss
from .base import Method, autocast_off, frozen_batchnorm_stats, grads_or_zeros, norm, rng_state, set_rng_state

FUSION_RULES = {"mean": average_probabilities}  # name -> rule(logits, present, task_type) -> fused logits


class _Projected(nn.Module):
    """An encoder followed by a Linear to `out_dim` (aligns feature widths across modalities)."""

    def __init__(self, encoder: nn.Module, out_dim: int):
        super().__init__()
        self.encoder = encoder
        self.projection = nn.Linear(encoder.out_dim, out_dim)
        self.out_dim = out_dim

    def forward(self, x):
        return self.projection(self.encoder(x))


class IGMModel(nn.Module):
    """One encoder and one MLP classifier per modality; `fused` is the fusion rule of their probabilities.

    Args:
        encoders: modality -> encoder mapping its batch to `[B, d]` (same d for all).
        num_outputs: K.
        task_type: "multilabel", "binary" or "multiclass" (picks sigmoid or softmax).
        hidden: width h of the classifier's hidden layer.
        fusion: name of the fusion rule in `FUSION_RULES`.
    """

    def __init__(self, encoders: dict[str, nn.Module], num_outputs: int, task_type: str, hidden: int = 64,
                 fusion: str = "mean"):
        super().__init__()
        self.modalities = list(encoders)
        self.num_outputs = num_outputs
        self.task_type = task_type
        self.fusion = fusion
        self.encoders = nn.ModuleDict(encoders)
        self.classifiers = nn.ModuleDict({
            m: nn.Sequential(nn.Linear(e.out_dim, hidden), nn.ReLU(), nn.Linear(hidden, num_outputs))
            for m, e in encoders.items()
        })

    def encode(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """Features z `[B, d]`: the classifier's input."""
        return self.encoders[modality](x)

    def classify(self, modality: str, z: torch.Tensor) -> torch.Tensor:
        """Unimodal logits `[B, K]`."""
        return self.classifiers[modality](z)

    def first_linear(self, modality: str) -> nn.Linear:
        """The classifier layer whose weight gradient IGM right-multiplies by T."""
        return self.classifiers[modality][0]

    def forward(self, inputs: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> FusionOutput:
        features = {m: self.encode(m, inputs[m]) for m in self.modalities}
        unimodal = {m: self.classify(m, features[m]) for m in self.modalities}
        fused = FUSION_RULES[self.fusion](unimodal, present, self.task_type)
        return FusionOutput(fused, unimodal, features)


def flat_projection(y: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """T = V Sigma V^T from the accumulated feature matrix Y (Eqs. 3-4).

    Args:
        y: `[d, d]` symmetric positive semi-definite Y_k.
        tau: temperature; Sigma runs from 1 (lambda_min) down to exp(-tau) (lambda_max).
    Returns:
        T `[d, d]` and the eigenvalues Lambda `[d]` (ascending) of Y.
    """
    lam, v = torch.linalg.eigh(y)
    spread = lam[-1] - lam[0]
    # all eigenvalues equal: no direction is flatter than another, so Sigma = I
    scaled = torch.where(spread > 0, (lam - lam[0]) / spread.clamp(min=torch.finfo(lam.dtype).tiny),
                         torch.zeros_like(lam))
    sigma = torch.exp(-tau * scaled)
    return (v * sigma) @ v.T, lam


def spectrum_summary(lam: torch.Tensor, tau: float) -> torch.Tensor:
    """`[4]`: lambda_max, lambda_min, effective rank exp(H(p)) with p = Lambda / sum Lambda, mean Sigma."""
    lam = lam.clamp(min=0)
    p = lam / lam.sum().clamp(min=torch.finfo(lam.dtype).tiny)
    erank = torch.exp(-(p * torch.log(p.clamp(min=torch.finfo(lam.dtype).tiny))).sum())
    spread = lam[-1] - lam[0]
    scaled = torch.where(spread > 0, (lam - lam[0]) / spread.clamp(min=torch.finfo(lam.dtype).tiny),
                         torch.zeros_like(lam))
    return torch.stack([lam[-1], lam[0], erank, torch.exp(-tau * scaled).mean()])


SPECTRUM_KEYS = ("lambda_max", "lambda_min", "effective_rank", "mean_sigma")


class IGM(Method):
    """Alternating unimodal SAM steps with flat gradient modification (module docstring).

    Args:
        inner_iters: mini-batches per modality phase; None: one epoch is one outer
            iteration, its batches shared evenly among the modalities in order.
        tau: temperature of Sigma (> 0; 0 makes T = I).
        rho: SAM radius on theta_j (0: no perturbation).
        fusion: fusion rule of the prediction ("mean": mean of present modalities' probabilities).
        hidden: hidden width of each modality's classifier (a `build_model` option).
        feature_dim: None: encoders must share out_dim; an int: encoders whose out_dim differs
            get a Linear projection to it (a `build_model` option).
    """

    name = "igm"

    @classmethod
    def build_model(cls, encoders, num_outputs, task_type, options):
        defaults = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()}
        options = {**defaults, **options}
        fusion = options["fusion"]
        if fusion not in FUSION_RULES:
            raise ConfigError(f"igm: options.fusion: unknown rule {fusion!r}; known: {sorted(FUSION_RULES)}")
        feature_dim = options["feature_dim"]
        if feature_dim is not None:
            encoders = {m: e if e.out_dim == feature_dim else _Projected(e, int(feature_dim))
                        for m, e in encoders.items()}
        widths = {m: e.out_dim for m, e in encoders.items()}
        first = next(iter(widths))
        for m, d in widths.items():
            if d != widths[first]:
                raise ConfigError(
                    f"igm: encoder feature widths differ ({first} out_dim {widths[first]}, {m} out_dim {d}); "
                    "T_k acts on the classifier input, so set the same out_dim in the model preset or "
                    "options.feature_dim to add a projection"
                )
        return IGMModel(encoders, num_outputs, task_type, hidden=int(options["hidden"]), fusion=fusion)

    def __init__(
        self,
        model: IGMModel,
        optimizer,
        task_type,
        inner_iters: int | None = None,
        tau: float = 0.4,
        rho: float = 0.05,
        fusion: str = "mean",
        hidden: int = 64,
        feature_dim: int | None = None,
    ):
        super().__init__(model, optimizer, task_type)
        if not isinstance(model, IGMModel):
            raise ValueError("igm: the model must come from IGM.build_model (one classifier per modality)")
        if inner_iters is not None and int(inner_iters) < 1:
            raise ValueError(f"igm: inner_iters must be >= 1 or null, got {inner_iters}")
        if fusion != model.fusion:
            raise ValueError(f"igm: fusion {fusion!r} differs from the model's {model.fusion!r}")
        if tau < 0 or rho < 0:
            raise ValueError(f"igm: tau and rho must be >= 0, got tau={tau}, rho={rho}")
        self.inner_iters = None if inner_iters is None else int(inner_iters)
        self.tau, self.rho = float(tau), float(rho)
        mods = model.modalities
        device = model.first_linear(mods[0]).weight.device
        d = model.first_linear(mods[0]).in_features
        # accumulated across steps (all in state_dict): T_k, its spectrum, the phase position
        self.projections = {m: torch.eye(d, dtype=torch.float64, device=device) for m in mods}
        self.spectra: dict[str, torch.Tensor] = {}
        self.active = 0  # index of the modality being trained
        self.phase_steps = 0  # steps taken in the current phase
        self.phases_done = 0  # phases completed since the run began (outer iteration = phases_done // m)
        self.epoch_phase = 0  # phases completed in the current epoch (default inner_iters)
        self.epoch_seen = 0  # training samples seen in the current epoch
        self.epoch_size = 0
        self.pass_batch_size = 0  # the training mini-batch size, reused by the pass for Y
        self.train_tensors = None

    # ----------------------------------------------------------------------------------
    def previous(self, j: int) -> int:
        """0-based index of the modality before j in cyclic order (Eq. 5's k = mod(j + m - 2, m) + 1)."""
        return (j - 1) % len(self.model.modalities)

    def modality_params(self, modality: str) -> list[torch.Tensor]:
        """theta_j: modality j's encoder and classifier parameters."""
        modules = (self.model.encoders[modality], self.model.classifiers[modality])
        return [p for module in modules for p in module.parameters() if p.requires_grad]

    def _loss(self, modality: str, batch) -> torch.Tensor:
        z = self.model.encode(modality, batch["inputs"][modality])
        logits = self.model.classify(modality, z)
        return task_loss(logits, batch["y"], self.task_type, batch["present"][modality])

    def step(self, batch):
        model, mods = self.model, self.model.modalities
        j = mods[self.active]
        model.train()
        params = self.modality_params(j)
        device = params[0].device
        self.optimizer.zero_grad(set_to_none=True)  # other modalities get no gradient, so no update

        state = rng_state(device)
        loss = self._loss(j, batch)
        if self.rho > 0:
            # Eqs. 6-8: ascend to theta_j + rho g/||g||, take the gradient there, come back.
            g = grads_or_zeros(torch.autograd.grad(loss, params, allow_unused=True), params)
            all_reduce_mean_(g)  # the global batch's ascent direction
            after_first = rng_state(device)
            eps = torch._foreach_mul(g, self.rho / (norm(g) + 1e-12))
            saved = [p.detach().clone() for p in params]
            with torch.no_grad():
                torch._foreach_add_(params, eps)
            set_rng_state(state, device)  # the same dropout masks as the first pass
            with frozen_batchnorm_stats(model):
                grads = grads_or_zeros(
                    torch.autograd.grad(self._loss(j, batch), params, allow_unused=True), params
                )
            with torch.no_grad():
                torch._foreach_copy_(params, saved)
            set_rng_state(after_first, device)
        else:
            grads = grads_or_zeros(torch.autograd.grad(loss, params, allow_unused=True), params)
        all_reduce_mean_(grads)

        # Eq. 5: the first classifier layer's weight gradient, right-multiplied by T_k.
        weight = model.first_linear(j).weight
        t_k = self.projections[mods[self.previous(self.active)]]
        with autocast_off(weight):
            for p, gp in zip(params, grads, strict=True):
                p.grad = gp @ t_k.to(gp.dtype) if p is weight else gp
        self.apply_gradients(averaged=True)
        self.optimizer.zero_grad(set_to_none=True)

        self.phase_steps += 1
        self.epoch_seen += len(batch["y"])
        # the pass for Y cuts GLOBAL batches (a rank's part of each: RankSplit.batches); a rank steps on
        # its share of a global batch, batch_size / world (the trainer requires it to divide evenly)
        self.pass_batch_size = max(self.pass_batch_size, len(batch["y"]) * world_size())
        if self._phase_over():
            self._end_phase()
        return {"loss_total": loss.detach(), f"loss_{j}": loss.detach()}

    def _phase_over(self) -> bool:
        if self.inner_iters is not None:
            return self.phase_steps >= self.inner_iters
        # default: the epoch is one outer iteration; the last phase ends in on_epoch_end
        m = len(self.model.modalities)
        return (self.epoch_size > 0 and self.epoch_phase < m - 1
                and self.epoch_seen * m >= (self.epoch_phase + 1) * self.epoch_size)

    def _end_phase(self) -> None:
        """One pass for Y_j and T_j (Eqs. 2-4), then the next modality's phase."""
        j = self.model.modalities[self.active]
        y = self.feature_matrix(j)
        self.projections[j], lam = flat_projection(y, self.tau)
        self.spectra[j] = spectrum_summary(lam, self.tau)
        self.active = (self.active + 1) % len(self.model.modalities)
        self.phase_steps = 0
        self.phases_done += 1
        self.epoch_phase += 1

    @torch.no_grad()
    def feature_matrix(self, modality: str, train_tensors=None) -> torch.Tensor:
        """Y `[d, d]` (float64): sum over the training mini-batches of zbar zbar^T (Eq. 2).

        zbar is the mean of the features over the samples where the modality is
        present; batches are taken in row order at the training batch size.
        """
        tensors = train_tensors if train_tensors is not None else self.train_tensors
        if tensors is None:
            raise RuntimeError("igm: no training data for the feature pass (the trainer calls on_epoch_start)")
        was_training = self.model.training
        self.model.eval()
        d = self.model.first_linear(modality).in_features
        device = self.model.first_linear(modality).weight.device
        sums, counts = [], []  # per mini-batch: feature sum over present samples [d], their number
        # full precision whether the pass runs inside the trainer's bf16 autocast (a phase ending
        # mid-epoch) or outside it (on_epoch_end), so every T_k is computed alike
        with torch.autocast(device.type, enabled=False):
            for batch in tensors.batches(self.pass_batch_size or 256):
                z = self.model.encode(modality, batch["inputs"][modality]).double()  # [B, d]
                w = batch["present"][modality].to(z.dtype)  # [B]
                sums.append((w[:, None] * z).sum(0))
                counts.append(w.sum())
        self.model.train(was_training)
        # data parallel: the k-th global batch is the union of every rank's k-th batch, so sum
        # each batch's sum and count over ranks (a rank with fewer batches adds zeros)
        _, batches = min_max_over_ranks(len(sums))
        sums += [torch.zeros(d, dtype=torch.float64, device=device)] * (batches - len(sums))
        counts += [torch.zeros((), dtype=torch.float64, device=device)] * (batches - len(counts))
        y = torch.zeros(d, d, dtype=torch.float64, device=device)
        if batches:
            sums_t, counts_t = torch.stack(sums), torch.stack(counts)  # [N, d], [N]
            all_reduce_sum_([sums_t, counts_t])
            for s, n in zip(sums_t, counts_t, strict=True):
                zbar = s / n.clamp(min=1.0)  # zero when nobody is present
                y += torch.outer(zbar, zbar)
        return y

    # epoch hooks ----------------------------------------------------------------------
    def on_epoch_start(self, epoch: int, train_tensors) -> dict[str, torch.Tensor]:
        self.train_tensors = train_tensors
        # phases are cut on the samples THIS process steps on (its share under torchrun)
        self.epoch_size, self.epoch_seen, self.epoch_phase = train_tensors.rank_samples, 0, 0
        check_same_on_every_rank(self.epoch_size, "igm: the training shard size (which sets the phases)")
        return {}

    def on_epoch_end(self, epoch: int, train_tensors) -> dict[str, torch.Tensor]:
        self.train_tensors = train_tensors
        if self.inner_iters is None:
            self._end_phase()  # the epoch's last phase
        metrics = {}
        for m in self.model.modalities:
            if m in self.spectra:
                metrics.update({f"igm_{m}_{k}": v for k, v in zip(SPECTRUM_KEYS, self.spectra[m], strict=True)})
        device = self.model.first_linear(self.model.modalities[0]).weight.device
        metrics["igm_outer_iterations"] = torch.tensor(float(self.phases_done // len(self.model.modalities)),
                                                       device=device)
        return metrics

    # resumable state ------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "projections": {m: t.clone() for m, t in self.projections.items()},
            "spectra": {m: s.clone() for m, s in self.spectra.items()},
            "active": self.active, "phase_steps": self.phase_steps, "phases_done": self.phases_done,
            "epoch_phase": self.epoch_phase, "epoch_seen": self.epoch_seen, "epoch_size": self.epoch_size,
            "pass_batch_size": self.pass_batch_size,
        }

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        self.projections = {m: t.clone() for m, t in state["projections"].items()}
        self.spectra = {m: s.clone() for m, s in state["spectra"].items()}
        for key in ("active", "phase_steps", "phases_done", "epoch_phase", "epoch_seen", "epoch_size",
                    "pass_batch_size"):
            setattr(self, key, int(state[key]))


__all__ = ["FUSION_RULES", "IGM", "IGMModel", "flat_projection", "spectrum_summary"]
