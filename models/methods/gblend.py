"""G-Blend: Gradient Blending (Wang, Tran and Feiszli, CVPR 2020), online.

The loss blends the fused head and every unimodal head (each modality's own classifier
f_m on its encoder's features):

    L = w_fused L_fuse + sum_m w_m L_m,   sum of the weights = 1,

with weights from each head's overfitting-to-generalisation behaviour (the paper's weight
estimate w_k proportional to Delta G_k / Delta O_k^2, and its online algorithm):

  GB-Estimate(theta, n): for each head k in {fused, m_1, ..., m_M}, train a copy of the
  network from theta for n epochs on the loss L_k alone; with L^T the training loss and
  L^V the loss on a held-out set V, at theta (start) and after the n epochs (end),
      Delta G_k = L^V_start - L^V_end                 (generalisation gained)
      Delta O_k = (L^V_end - L^T_end) - (L^V_start - L^T_start)   (overfitting gained)
      w_k = Delta G_k / Delta O_k^2,  normalised to sum 1.
  Online G-Blend: every super-epoch of n epochs (epochs 0, n, 2n, ...), re-estimate the
  weights from the current parameters, then train n epochs with them. Offline G-Blend
  (weights estimated once) is `super_epoch` >= the number of epochs.

V is a held-out part of the TRAINING split, never the validation split the trainer
selects models on, never test: `holdout_fraction` of the training split's patients
(whole patients, drawn with `holdout_seed`; rows when the cohort names no patient
column), chosen at the first epoch and kept in the state dict. Those rows are removed
from every batch of the main training and of the estimation runs; the trainer's batches
carry each row's split position (`batch["index"]`) to find them.

Details the paper leaves open, fixed here:
  - a head whose held-out loss did not fall (Delta G <= 0) gets weight 0 (the formula
    would give a negative weight, i.e. gradient ascent); Delta O^2 is floored at 1e-8;
    if every weight is 0, all heads get equal weights;
  - each estimation copy starts a fresh optimizer of the main one's class and current
    hyperparameters; shuffling and dropout inside the estimate use their own seeded
    random stream (`holdout_seed`, the epoch), so the main run's stream is untouched;
  - L^T and L^V are mean per-sample losses in eval mode over the whole training part and
    held-out part; unimodal losses over samples where the modality is present;
  - before the first estimate (or with an empty held-out part) the weights are equal.
Sigmoid tasks use BCE (averaged over labels) where the paper has softmax CE.

Data-parallel runs (torchrun): every rank holds the whole training split (the same
held-out rows, drawn with `holdout_seed`) and does 1/W of every estimation pass: the L^T
and L^V passes add each rank's loss sums and counts (one collective per pass), and each
estimation copy is trained data-parallel on the same global batches (the same seeded
order on every rank), its gradients averaged over ranks at every step, so every rank
gets the weights one process would and the estimate costs 1/W of its time. The blended
loss of a main step is the mean over the training rows of the whole global batch (the
kept-row counts of every rank are added in one collective before the loss), since
removing held-out rows leaves the ranks' shards unequal; then its gradient is averaged.

Estimation cost: each re-estimation trains M + 1 copies for n epochs on the training
part (the unimodal copies run one encoder only) plus 2 (M + 1) eval passes, so a run
of E epochs costs about E (main) + (M + 1) E (estimates, ~half of it with one encoder)
epochs: roughly 3x late fusion for two modalities, independent of n when n divides E.

Logged: `epoch/weight_<head>` each time the weights are estimated, and `weight_<head>`
with every step's losses. Prediction: the fused logits (the paper's multi-modal head).

Released implementations (no official code exists): MultiBench
(pliang279/MultiBench, gradient_blend.py) holds out the first 8 % of the training set,
uses w = |L^V_N| / O_N^2 (absolute level, not the change) and fine-tunes a copy of the
fused head for 25 epochs before inference; BalanceBenchmark (GeWu-Lab/BalanceBenchmark)
estimates on the validation loader (the split used for model selection), uses
w = |Delta G| / Delta O^2 with batch-summed losses and slice logits of the fused head as
the unimodal outputs. Neither is followed where it departs from the paper.
"""

from __future__ import annotations

import copy
import inspect
import math

import numpy as np
import torch

from ..distributed import all_reduce_sum_, average_gradients, rank, world_size
from ..losses import per_sample_loss
from .base import Method

FUSED = "fused"


class GBlend(Method):
    """Online Gradient Blending. See the module docstring.

    Args:
        super_epoch: n, epochs between re-estimations and length of each estimation run.
        holdout_fraction: share of the training split's patients held out as V.
        holdout_seed: seed of the held-out draw and of the estimation runs' randomness.
        estimate_batch_size: batch size of the estimation runs and loss passes.
    """

    name = "gblend"

    def __init__(
        self,
        model,
        optimizer,
        task_type,
        super_epoch: int = 4,
        holdout_fraction: float = 0.1,
        holdout_seed: int = 0,
        estimate_batch_size: int = 32,
    ):
        super().__init__(model, optimizer, task_type)
        if super_epoch < 1:
            raise ValueError(f"gblend: super_epoch must be >= 1, got {super_epoch}")
        if not 0 < holdout_fraction < 1:
            raise ValueError(f"gblend: holdout_fraction must be in (0, 1), got {holdout_fraction}")
        self.super_epoch, self.holdout_fraction = int(super_epoch), float(holdout_fraction)
        self.holdout_seed, self.estimate_batch_size = int(holdout_seed), int(estimate_batch_size)
        self.heads = [FUSED, *model.modalities]
        head = model.fusion_head.weight  # the blending weights live in the model's dtype, on its device
        self.weights = torch.full((len(self.heads),), 1.0 / len(self.heads), device=head.device, dtype=head.dtype)
        self.holdout: torch.Tensor | None = None  # [N_train] bool, True = held out

    # --- the held-out part of the training split -------------------------------------
    def choose_holdout(self, train) -> torch.Tensor:
        """`[N]` bool: whole patients (or rows), `holdout_fraction` of them, drawn with `holdout_seed`."""
        n = len(train)
        groups = np.asarray(train.groups) if getattr(train, "groups", None) is not None else np.arange(n)
        unique = np.unique(groups)
        rng = np.random.default_rng(self.holdout_seed)
        k = min(max(1, math.ceil(self.holdout_fraction * len(unique))), len(unique) - 1)
        chosen = rng.permutation(unique)[:k] if k > 0 else unique[:0]
        return torch.from_numpy(np.isin(groups, chosen)).to(train.y.device)

    def on_epoch_start(self, epoch: int, train_tensors) -> dict[str, torch.Tensor]:
        if self.holdout is None:
            self.holdout = self.choose_holdout(train_tensors)
        elif len(self.holdout) != len(train_tensors):
            raise ValueError(
                f"gblend: the held-out mask covers {len(self.holdout)} rows but the training split has "
                f"{len(train_tensors)}; resume with the cohort the run started with"
            )
        if epoch % self.super_epoch != 0:
            return {}
        self.weights = self.estimate(train_tensors, epoch)
        return {f"weight_{h}": self.weights[i] for i, h in enumerate(self.heads)}

    # --- losses -------------------------------------------------------------------------
    def head_masks(self, batch) -> list[torch.Tensor]:
        """`[B]` bool per head: the samples its loss averages over (every one; those with m present)."""
        everyone = torch.ones(len(batch["y"]), dtype=torch.bool, device=batch["y"].device)
        return [everyone] + [batch["present"][m] for m in self.model.modalities]

    def head_losses(self, out, batch, counts: torch.Tensor | None = None) -> list[torch.Tensor]:
        """[L_fuse, L_m1, ...] for a batch (unimodal losses over present samples).

        Args:
            counts: `[H]` each head's number of samples in the global batch (every rank's);
                default this batch's. Each loss is this batch's sum over the count, times the
                number of ranks, so that the rank average of the losses (and of their gradients)
                is the global batch's mean.
        """
        masks = self.head_masks(batch)
        if counts is None:
            counts = torch.stack([mask.sum() for mask in masks])
        logits = [out.fused] + [out.unimodal[m] for m in self.model.modalities]
        losses = []
        for i, (lg, mask) in enumerate(zip(logits, masks, strict=True)):
            per = per_sample_loss(lg, batch["y"], self.task_type)
            losses.append((per * mask.to(per.dtype)).sum() / counts[i].clamp(min=1).to(per.dtype) * world_size())
        return losses

    def blended(self, losses: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
        return sum(weights[i] * loss for i, loss in enumerate(losses))

    @torch.no_grad()
    def mean_losses(self, model, train, rows: torch.Tensor) -> torch.Tensor:
        """`[H]` mean per-sample loss of every head over `rows` of `train`, in eval mode.

        Each rank evaluates its contiguous part of `rows`; sums and counts are added over ranks.
        """
        was_training = model.training
        model.eval()
        sums = torch.zeros(len(self.heads), dtype=torch.float64, device=rows.device)
        counts = torch.zeros_like(sums)
        mine = torch.tensor_split(rows, world_size())[rank()]
        for start in range(0, len(mine), self.estimate_batch_size):
            b = train.batch(mine[start : start + self.estimate_batch_size])
            out = model(b["inputs"], b["present"])
            masks = self.head_masks(b)
            logits = [out.fused] + [out.unimodal[m] for m in self.model.modalities]
            for i, (lg, mask) in enumerate(zip(logits, masks, strict=True)):
                per = per_sample_loss(lg, b["y"], self.task_type).double()
                sums[i] += (per * mask).sum()
                counts[i] += mask.sum()
        model.train(was_training)
        all_reduce_sum_([sums, counts])  # one collective: every rank's rows
        return sums / counts.clamp(min=1)

    # --- GB-Estimate ----------------------------------------------------------------------
    def fresh_optimizer(self, params) -> torch.optim.Optimizer:
        group = self.optimizer.param_groups[0]
        accepted = set(inspect.signature(type(self.optimizer).__init__).parameters) - {"self", "params"}
        return type(self.optimizer)(params, **{k: v for k, v in group.items() if k in accepted})

    def train_copy(self, head: str, train, rows: torch.Tensor, generator: torch.Generator):
        """A copy of the network trained `super_epoch` epochs on loss `head` alone.

        Data parallel: every rank draws the same order; each takes its contiguous part of every
        batch and the gradients are averaged over ranks, so the copy trains on whole batches.
        """
        net = copy.deepcopy(self.model)
        net.train()
        opt = self.fresh_optimizer(net.parameters())
        for _ in range(self.super_epoch):
            order = rows[torch.randperm(len(rows), generator=generator).to(rows.device)]
            for start in range(0, len(order), self.estimate_batch_size):
                whole = order[start : start + self.estimate_batch_size]
                mine = torch.tensor_split(whole, world_size())[rank()]
                opt.zero_grad(set_to_none=True)
                if len(mine):  # (a batch smaller than the number of ranks leaves some idle)
                    b = train.batch(mine)
                    if head == FUSED:
                        logits, mask, count = net(b["inputs"], b["present"]).fused, None, len(whole)
                    else:  # only encoder `head` and its own classifier take part
                        logits = net.unimodal_heads[head](net.encode(head, b["inputs"][head]))
                        mask, count = b["present"][head], train.present[head][whole].sum()
                    per = per_sample_loss(logits, b["y"], self.task_type)
                    if mask is not None:
                        per = per * mask.to(per.dtype)
                    # the whole batch's mean once the ranks' gradients are averaged
                    loss = per.sum() / torch.as_tensor(count, device=per.device).clamp(min=1) * world_size()
                    loss.backward()
                average_gradients(net.parameters())
                opt.step()
        return net

    def estimate(self, train, epoch: int) -> torch.Tensor:
        """Blending weights `[H]` (heads: fused, then each modality) from the current parameters."""
        device = self.weights.device
        rows_train = torch.nonzero(~self.holdout).squeeze(1)
        rows_held = torch.nonzero(self.holdout).squeeze(1)
        if len(rows_train) == 0 or len(rows_held) == 0:
            return torch.full_like(self.weights, 1.0 / len(self.heads))
        start_t = self.mean_losses(self.model, train, rows_train)
        start_v = self.mean_losses(self.model, train, rows_held)
        end_t, end_v = torch.zeros_like(start_t), torch.zeros_like(start_v)
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.holdout_seed * 1_000_003 + epoch)
            generator = torch.Generator().manual_seed(self.holdout_seed * 1_000_003 + epoch)
            for i, head in enumerate(self.heads):
                net = self.train_copy(head, train, rows_train, generator)
                end_t[i] = self.mean_losses(net, train, rows_train)[i]
                end_v[i] = self.mean_losses(net, train, rows_held)[i]
                del net
        return blend_weights(start_t, start_v, end_t, end_v).to(self.weights.dtype)

    # --- the training step ------------------------------------------------------------------
    def step(self, batch):
        model = self.model
        model.train()
        self.optimizer.zero_grad(set_to_none=True)
        if self.holdout is not None:
            if "index" not in batch:
                raise ValueError("gblend: batches need 'index' (split positions) to leave out the held-out rows")
            keep = torch.nonzero(~self.holdout[batch["index"]]).squeeze(1)  # one host sync
            batch = _select(batch, keep)
        # every head's sample count over every rank's kept rows (one collective; a no-op in one process)
        counts = torch.stack([mask.sum() for mask in self.head_masks(batch)]).to(self.weights.dtype)
        all_reduce_sum_([counts])
        if len(batch["y"]) == 0:  # every row of this shard is held out: nothing to learn from here
            zero = torch.zeros((), device=self.weights.device, dtype=self.weights.dtype)
            losses = [zero] * len(self.heads)
        else:
            out = model(batch["inputs"], batch["present"])
            losses = self.head_losses(out, batch, counts)
        l_total = self.blended(losses, self.weights)
        if l_total.requires_grad:
            l_total.backward()
        self.apply_gradients()  # on every rank, even one with nothing to learn from (the average needs it)
        metrics = self.loss_metrics(l_total, losses[0], dict(zip(self.model.modalities, losses[1:], strict=True)))
        metrics.update({f"weight_{h}": self.weights[i] for i, h in enumerate(self.heads)})
        return metrics

    def state_dict(self) -> dict:
        return {"weights": self.weights.clone(), "holdout": None if self.holdout is None else self.holdout.clone()}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.weights = state["weights"].clone()
            self.holdout = None if state["holdout"] is None else state["holdout"].clone()


def blend_weights(start_t, start_v, end_t, end_v, floor: float = 1e-8) -> torch.Tensor:
    """w_k = max(Delta G_k, 0) / max(Delta O_k^2, floor), normalised (equal if all are 0).

    Args:
        start_t, start_v: `[H]` training / held-out loss of each head at the start.
        end_t, end_v: `[H]` the same after each head's estimation run.
    """
    gain = start_v - end_v
    overfit = (end_v - end_t) - (start_v - start_t)
    w = gain.clamp(min=0) / (overfit**2).clamp(min=floor)
    total = w.sum()
    equal = torch.full_like(w, 1.0 / len(w))
    return torch.where(total > 0, w / total.clamp(min=1e-300), equal)


def _select(batch: dict, keep: torch.Tensor) -> dict:
    """The rows `keep` of a batch (every tensor of the batch contract)."""
    return {
        "inputs": {m: x.index_select(0, keep) for m, x in batch["inputs"].items()},
        "present": {m: p.index_select(0, keep) for m, p in batch["present"].items()},
        "y": batch["y"].index_select(0, keep),
        "index": batch["index"].index_select(0, keep),
    }
