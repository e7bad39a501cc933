"""PMR: Prototypical Modal Rebalance (Fan et al., CVPR 2023), one training step.

Notation: z_m `[B, H_m]` are encoder m's features, y the class of each sample,
K the number of classes, L_total = L_fuse + sum_m lambda_m L_m the late-fusion loss.

  1. Prototypes (at the start of every epoch, `on_epoch_start`): c_{m,k} is the mean
     of z_m over the training samples of class k in a random subset (a fraction
     `prototype_fraction` of each class, at least one sample), computed in eval mode
     without gradients (no dropout, BatchNorm statistics untouched), then smoothed
     across epochs: c <- (1 - mu) c_new + mu c_old (`prototype_momentum` = mu; the
     first epoch takes c_new).
  2. Prototype classifier: d_{m,k} = ||z_m - c_{m,k}||_2 (Euclidean), and
     p_m = softmax_k(-d_m) `[B, K]`. Prototypical cross-entropy
     PCE_m = mean_i -log p_m[i, y_i]; prototype entropy H_m = mean_i -sum_k p log p.
  3. Imbalance ratio from prototype scores: s_m = mean_i p_m[i, y_i] (detached);
     the dominant modality d = argmax_m s_m; rho_m = s_d / s_m >= 1.
  4. Rebalancing coefficient of modality m: b_m = min(max(rho_m - 1, 0), 1) (0 for
     the dominant one, 0 when the modalities are balanced, at most 1).
  5. Loss, while `start_epoch <= epoch <= end_epoch` (the paper's early window):
        L = L_total + alpha * sum_m b_m PCE_m  -  mu_per * b_max H_d,
     i.e. the prototypical cross-entropy accelerates each slower modality and the
     prototype-entropy regulariser (PER, the entropy of the dominant modality's
     prototype prediction, maximised) slows the dominant modality's premature
     convergence, during the first `per_epochs` epochs of the window;
     b_max = max_m b_m (for two modalities, the weak modality's b). Outside the
     window L = L_total. The prediction is the fusion head's (fused logits).
With two modalities this is the paper's rule: the weak modality gets the PCE, the
dominant one the PER, both scaled by how far the ratio is from 1. With three or
more, every modality behind the leader gets its own PCE term.

Tasks. Prototypes need single-label classes: multiclass uses the K classes, and
binary uses two prototypes, class 0 (negative) and class 1 (positive), from the
single label column, with the two-way softmax over -d as the prototype classifier
(the fusion head keeps its one sigmoid logit). Multilabel has no class of a
sample to average over, so PMR refuses it (`check_task`), as the MASAM paper
reports PMR as not applicable to the phenotype task.

Missing modalities: a sample without modality m enters neither c_m nor PCE_m,
H_m or s_m (means over the samples where m is present). A class with no training
sample that has modality m (after falling back from the subset to the whole
training split) has no prototype: that is an error naming the modality and class.

Data-parallel runs (torchrun): every rank holds the whole training split; each averages
the features of its contiguous part of the prototype subset and the class sums and
counts are added over ranks (one collective), so every rank has the same prototypes,
those of one process over the whole subset (which is the same on every rank when the
ranks share the run's seed; were it not, the prototypes would still agree across ranks).
The scores s_m of a step are sums and counts over every rank's samples (one collective),
so the dominant modality and b agree on every rank; the gradients are averaged once.

Where the released code (github fanyunfeng-bit/Modal-Imbalance-PMR @3615e48,
main_Prototype_grad.py) departs from the paper, and what this module does:
  a. It has no PER term (main_Proto_PER.py is named in bash.sh but not
     released); the PCE coefficient is a constant alpha once the ratio differs
     from 1, where the paper scales it with the imbalance (step 4).
  b. Prototypes come from the first floor(#batches/10) shuffled batches, not a
     per-class fraction, so a class can be missing from them (its mean is 0/0).
  c. Scores and ratio are batch SUMS over all samples; with every modality present
     their ratio equals the ratio of the means used here; with missing modalities
     the means compare modalities fairly.
  d. It trains only CE(fused); this module adds the unimodal heads' losses
     (lambda_m; set lambda_m: 0 for the released code's objective).
  e. The window is epochs 0-100 of 150 (scripts: 0-70 of 130) and the prototype
     momentum 0.2 (scripts 0.0), alpha 1.0 by default (2.0 for CREMA-D concat).
BalanceBenchmark's PMR trainer (GeWu-Lab/BalanceBenchmark) clips the coefficient
to [0, 1] as here, but sums PER over the batch, computes it for the dominant
modality's features against every modality's prototypes, picks the dominant
modality by unimodal loss for PER, and uses momentum 0.5 and alpha 0.1.
The exact coefficient functions of the paper could not be checked against its
text here: step 4's clipped ratio follows BalanceBenchmark; `mu_per` and
`per_epochs` are this module's choices (see the configs).
"""

from __future__ import annotations

import math

import torch

from ..distributed import all_reduce_sum_, rank, world_size
from ..precision import upcast
from .base import Method
from .modality_scores import summed_over_ranks


class PMR(Method):
    """Prototypical Modal Rebalance. See the module docstring for the equations.

    Args:
        alpha: weight of the prototypical cross-entropy of the slower modalities.
        mu_per: weight of the prototype-entropy regulariser of the dominant modality.
        start_epoch: first epoch (0-based) of the rebalancing window.
        end_epoch: last epoch (inclusive) of the rebalancing window.
        per_epochs: PER is active during the first `per_epochs` epochs of the window.
        prototype_momentum: mu in c <- (1 - mu) c_new + mu c_old.
        prototype_fraction: fraction of each class's training samples averaged
            into the prototypes each epoch.
        lambda_m: weight of each unimodal head's loss in L_total.
    """

    name = "pmr"

    @classmethod
    def check_task(cls, task_type: str) -> None:
        if task_type == "multilabel":
            raise ValueError(
                "PMR needs single-label classes for its prototypes (class means of features); "
                "it is not defined for multilabel tasks (use a binary or multiclass cohort)"
            )

    def __init__(
        self,
        model,
        optimizer,
        task_type,
        alpha: float = 1.0,
        mu_per: float = 1.0,
        start_epoch: int = 0,
        end_epoch: int = 100,
        per_epochs: int = 10,
        prototype_momentum: float = 0.2,
        prototype_fraction: float = 0.1,
        lambda_m=1.0,
    ):
        super().__init__(model, optimizer, task_type, lambda_m)
        self.check_task(task_type)
        if not 0.0 < prototype_fraction <= 1.0:
            raise ValueError(f"pmr: prototype_fraction must be in (0, 1], got {prototype_fraction}")
        if not 0.0 <= prototype_momentum < 1.0:
            raise ValueError(f"pmr: prototype_momentum must be in [0, 1), got {prototype_momentum}")
        self.alpha, self.mu_per = float(alpha), float(mu_per)
        self.start_epoch, self.end_epoch, self.per_epochs = int(start_epoch), int(end_epoch), int(per_epochs)
        self.momentum, self.fraction = float(prototype_momentum), float(prototype_fraction)
        self.num_classes = 2 if task_type == "binary" else model.num_outputs
        self.prototypes: dict[str, torch.Tensor] | None = None  # {m: [K, H_m]}
        self.epoch = 0

    # --- labels as class indices -----------------------------------------------------------
    def classes(self, y: torch.Tensor) -> torch.Tensor:
        """Class index `[B]` (int64): the class for multiclass, the 0/1 label for binary."""
        return y.reshape(-1).long() if self.task_type == "binary" else y.long()

    # --- prototypes (once per epoch) ---------------------------------------------------------
    @torch.no_grad()
    def compute_prototypes(self, train_tensors, generator: torch.Generator, chunk: int = 256):
        """Class means `{m: [K, H_m]}` of the features over a per-class random subset."""
        model = self.model
        was_training = model.training
        model.eval()
        try:
            labels = self.classes(train_tensors.y).cpu()
            chosen = []
            for k in range(self.num_classes):
                rows = torch.nonzero(labels == k).flatten()
                if len(rows) == 0:
                    raise ValueError(f"pmr: class {k} has no training sample; its prototype is undefined")
                take = max(1, math.ceil(self.fraction * len(rows)))
                chosen.append(rows[torch.randperm(len(rows), generator=generator)[:take]])
            subset = torch.cat(chosen).sort().values
            sums, counts = self._class_sums(train_tensors, subset, chunk)
            missing = {(m, k) for m in model.modalities for k in range(self.num_classes) if counts[m][k] == 0}
            if missing:  # a class without this modality in the subset: use the whole training split
                all_sums, all_counts = self._class_sums(train_tensors, torch.arange(len(labels)), chunk)
                for m, k in sorted(missing):
                    if all_counts[m][k] == 0:
                        raise ValueError(f"pmr: no training sample of class {k} has modality '{m}'; "
                                         "its prototype is undefined")
                    sums[m][k], counts[m][k] = all_sums[m][k], all_counts[m][k]
            return {m: sums[m] / counts[m].clamp(min=1).unsqueeze(1) for m in model.modalities}
        finally:
            model.train(was_training)

    def _class_sums(self, train_tensors, rows: torch.Tensor, chunk: int):
        """Per modality, class sums `[K, H_m]` and counts `[K]` of the features of `rows`, over every rank
        (each rank encodes its contiguous part of `rows`; one collective adds them up)."""
        model, device = self.model, train_tensors.y.device
        sums, counts = {}, {}
        for m in model.modalities:
            params = [p for p in model.encoders[m].parameters() if p.is_floating_point()]
            dtype = upcast(params[0]).dtype if params else torch.float32
            sums[m] = torch.zeros(self.num_classes, model.encoders[m].out_dim, dtype=dtype, device=device)
            counts[m] = torch.zeros(self.num_classes, dtype=dtype, device=device)
        mine = torch.tensor_split(rows, world_size())[rank()]
        for start in range(0, len(mine), chunk):
            batch = train_tensors.batch(mine[start : start + chunk].to(device))
            onehot = torch.nn.functional.one_hot(self.classes(batch["y"]), self.num_classes)
            for m in model.modalities:
                z = upcast(model.encode(m, batch["inputs"][m]))
                w = onehot * batch["present"][m].unsqueeze(1)  # [B, K]: present samples of class k
                sums[m] += (w.T.to(z.dtype) @ z).to(sums[m].dtype)
                counts[m] += w.sum(0).to(counts[m].dtype)
        all_reduce_sum_([*sums.values(), *counts.values()])
        return sums, counts

    def on_epoch_start(self, epoch: int, train_tensors) -> dict[str, torch.Tensor]:
        self.epoch = epoch
        # A generator of its own: the subset is reproducible from the run's seed and the
        # epoch, and the training RNG stream (dropout, shuffling) is left untouched.
        generator = torch.Generator().manual_seed((torch.initial_seed() * 1_000_003 + epoch) % 2**63)
        new = self.compute_prototypes(train_tensors, generator)
        if self.prototypes is None:
            self.prototypes = new
        else:
            self.prototypes = {m: (1 - self.momentum) * new[m] + self.momentum * self.prototypes[m] for m in new}
        return {"in_window": torch.tensor(float(self.in_window()))}

    def in_window(self) -> bool:
        return self.start_epoch <= self.epoch <= self.end_epoch

    # --- the prototype classifier ------------------------------------------------------------
    @staticmethod
    def prototype_logits(z: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        """-||z - c_k||_2 `[B, K]` (the tiny floor keeps the gradient finite at z = c_k)."""
        sq = (z.unsqueeze(1) - prototypes.to(z.dtype).unsqueeze(0)).pow(2).sum(-1)
        return -sq.clamp(min=1e-12).sqrt()

    def prototype_terms(self, features, present, y):
        """Per modality: PCE_m, H_m (means over this rank's present samples) and s_m (over every rank's), 0-d."""
        cls = self.classes(y)
        pce, entropy, score = {}, {}, {}
        for m in self.model.modalities:
            logits = self.prototype_logits(upcast(features[m]), self.prototypes[m])
            logp = torch.log_softmax(logits, dim=1)
            w = present[m].to(logp.dtype)
            n = w.sum().clamp(min=1.0)
            nll = -logp.gather(1, cls.unsqueeze(1)).squeeze(1)
            pce[m] = (nll * w).sum() / n
            entropy[m] = (-(logp.exp() * logp).sum(1) * w).sum() / n
            score[m] = (((-nll).exp().detach() * w).sum(), w.sum())
        # s_m over every rank's present samples (one collective), so that all ranks rebalance alike
        means, _ = summed_over_ranks(*(torch.stack(t) for t in zip(*score.values(), strict=True)))
        return pce, entropy, dict(zip(self.model.modalities, means, strict=True))

    @staticmethod
    def coefficients(score: torch.Tensor):
        """From scores `[M]`: b `[M]` = clip(s_max / s_m - 1, 0, 1), the dominant index, rho `[M]`."""
        dominant = torch.argmax(score)
        rho = score[dominant] / score.clamp(min=1e-12)
        return (rho - 1).clamp(0.0, 1.0), dominant, rho

    # --- one step ------------------------------------------------------------------------------
    def step(self, batch):
        if self.prototypes is None:
            raise RuntimeError("pmr: prototypes are computed in on_epoch_start; call it before step")
        mods = self.model.modalities
        out, l_fuse, l_uni, l_total = self.forward_losses(batch)
        pce, entropy, score = self.prototype_terms(out.features, batch["present"], batch["y"])
        scores = torch.stack([score[m] for m in mods])
        b, dominant, rho = self.coefficients(scores)
        loss = l_total
        per_on = self.in_window() and self.epoch < self.start_epoch + self.per_epochs
        if self.in_window():
            loss = loss + self.alpha * sum(b[i] * pce[m] for i, m in enumerate(mods))
        if per_on:
            h_dominant = torch.stack([entropy[m] for m in mods])[dominant]
            loss = loss - self.mu_per * b.max() * h_dominant
        loss.backward()
        self.apply_gradients()

        metrics = self.loss_metrics(l_total, l_fuse, l_uni)
        metrics["loss_pmr"] = loss.detach()
        for i, m in enumerate(mods):
            metrics[f"score_{m}"] = scores[i]
            metrics[f"ratio_{m}"] = rho[i].detach()
            metrics[f"coef_{m}"] = (b[i] * float(self.in_window())).detach()
            metrics[f"pce_{m}"] = pce[m].detach()
            metrics[f"entropy_{m}"] = entropy[m].detach()
        metrics["dominant"] = dominant.detach().float()
        metrics["per_active"] = torch.tensor(float(per_on), device=l_total.device)
        return metrics

    # --- resumable state -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"prototypes": self.prototypes, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.prototypes = state.get("prototypes")
        self.epoch = int(state.get("epoch", 0))
