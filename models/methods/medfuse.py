"""MedFuse (Hayat, Geras and Shamout, MLHC 2022): an LSTM reads the modalities as a sequence.

Network (`MedFuseModel`). Each modality m has its encoder phi_m (the cohort's
configured encoders, as for every method of the comparison; the paper's EHR
encoder is a 2-layer LSTM, hidden 256: `ehr_lstm` with `num_layers: 2` in a model
preset). The first modality (EHR, or ADNI's tabular) is the anchor: its feature
z_1 enters the fusion module as it is; every other modality's feature is
projected to the anchor's width, v_m = P_m z_m. The fusion module is a 1-layer
LSTM over the sequence of the PRESENT modalities, in cohort order:

    [z_ehr]               a stay without a film (sequence length 1),
    [z_ehr, P z_cxr]      a stay with one (length 2),

and its last hidden state h goes through a linear classifier: fused = W h + b.
A missing film shortens the sequence; it is never read as a zero image. This is
implemented by stepping an LSTM cell over the modalities and keeping the previous
state where a modality is absent, which equals running the LSTM on the sequence
of present modalities (packed sequences) without a host sync and stays
exportable (`torch.export`). Unimodal heads f_m(z_m) give each encoder its own
prediction for the pretraining stage.

Training (`MedFuse`). The paper trains in stages: unimodal encoders first, then
the fusion module with the encoders fine-tuned (nothing frozen). Here the stages
are epochs of one run:
  - epochs 0 .. pretrain_epochs-1: L = sum_m L_m, each unimodal loss averaged
    over the samples where m is present (encoders and unimodal heads learn; the
    projection, fusion LSTM and classifier get no gradient);
  - later epochs: L = L_fuse on every sample (all parameters).
The trainer says which epoch it is through `on_epoch_start`; the stage depends
only on the epoch, so a resumed run is in the same stage as an uninterrupted one.
Pretraining epochs count towards early stopping's patience (the fused prediction
is untrained during them): keep `pretrain_epochs` below `train.patience`.

Where the released code (nyuad-cai/MedFuse @3f8b54e) departs, and what this
module does instead:
  - the CXR encoder is pretrained on the 14 MIMIC-CXR radiology labels over all
    of MIMIC-CXR, the EHR encoder on all EHR stays, in separate runs whose
    weights must be loaded by hand (the shipped scripts omit the flags). Here
    both are pretrained on the task's own labels, on the training stays where
    the modality is present: the cohort holds no radiology labels.
  - a missing film is a zero image whose projected feature is zeroed; the
    sequence length is then 1, as here.
  - Adam with betas (0.9, 0.9) (beta2 = 0.9, an unusual value, in the code
    only); ReduceLROnPlateau. Here the trainer's optimizer and schedule are used,
    as for every other method (set `train:` to match if wanted).
  - the projection is Linear(512 -> 256) and the fusion LSTM hidden size 512;
    here the projection maps to the anchor encoder's width w and `hidden`
    (default 2 w: 512 for the paper-size w = 256) is the fusion LSTM's size.
"""

from __future__ import annotations

import torch
from torch import nn

from ..fusion import FusionOutput
from ..losses import task_loss
from .base import Method


class MedFuseModel(nn.Module):
    """Encoders, projections to the anchor width, a fusion LSTM over present modalities.

    Args:
        encoders: modality -> encoder with `out_dim`; the first is the anchor.
        num_outputs: K, the number of logits.
        hidden: hidden size of the fusion LSTM (default twice the anchor width, the paper's 512 for 256).

    Forward: inputs `{m: [B, ...]}`, present `{m: [B] bool}` -> FusionOutput with
    fused `[B, K]`, unimodal `{m: [B, K]}`, features `{m: [B, H_m]}` and extras
    `sequence_length` `[B]` (how many modalities the fusion LSTM read).
    """

    def __init__(self, encoders: dict[str, nn.Module], num_outputs: int, hidden: int | None = None):
        super().__init__()
        self.modalities = list(encoders)
        self.num_outputs = num_outputs
        self.encoders = nn.ModuleDict(encoders)
        width = encoders[self.modalities[0]].out_dim
        hidden = int(hidden or 2 * width)
        self.projections = nn.ModuleDict({m: nn.Linear(e.out_dim, width) for m, e in list(encoders.items())[1:]})
        self.unimodal_heads = nn.ModuleDict({m: nn.Linear(e.out_dim, num_outputs) for m, e in encoders.items()})
        self.fusion_lstm = nn.LSTMCell(width, hidden)
        self.classifier = nn.Linear(hidden, num_outputs)

    def sequence(self, features: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """The fusion module's tokens `[B, width]`, one per modality in cohort order."""
        first = self.modalities[0]
        return [features[first]] + [self.projections[m](features[m]) for m in self.modalities[1:]]

    def fuse(self, features: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> torch.Tensor:
        """Fused logits `[B, K]`: the LSTM's last state over the present modalities' tokens."""
        tokens = self.sequence(features)
        b = tokens[0].shape[0]
        h = tokens[0].new_zeros(b, self.fusion_lstm.hidden_size)
        c = torch.zeros_like(h)
        for m, x in zip(self.modalities, tokens, strict=True):
            h_new, c_new = self.fusion_lstm(x, (h, c))
            keep = present[m].unsqueeze(1)  # an absent modality is not a step of the sequence
            h, c = torch.where(keep, h_new, h), torch.where(keep, c_new, c)
        return self.classifier(h)

    def forward(self, inputs: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> FusionOutput:
        features = {m: self.encoders[m](inputs[m]) for m in self.modalities}
        unimodal = {m: self.unimodal_heads[m](features[m]) for m in self.modalities}
        length = torch.stack([present[m] for m in self.modalities]).sum(0)
        return FusionOutput(self.fuse(features, present), unimodal, features, {"sequence_length": length})


class MedFuse(Method):
    """MedFuse's staged training. See the module docstring.

    Args:
        pretrain_epochs: how many first epochs train only the encoders and unimodal
            heads (sum of the masked unimodal losses); 0 trains the fusion stage throughout.
        hidden: fusion LSTM hidden size (a network option, read by `build_model`; default twice
            the anchor encoder's width).
    """

    name = "medfuse"

    @classmethod
    def build_model(cls, encoders, num_outputs, task_type, options):
        return MedFuseModel(encoders, num_outputs, hidden=options.get("hidden"))

    def __init__(self, model, optimizer, task_type, pretrain_epochs: int = 4, hidden: int | None = None):
        super().__init__(model, optimizer, task_type)
        if int(pretrain_epochs) < 0:
            raise ValueError(f"medfuse: pretrain_epochs must be >= 0, got {pretrain_epochs}")
        self.pretrain_epochs = int(pretrain_epochs)
        self.epoch = 0

    @property
    def pretraining(self) -> bool:
        return self.epoch < self.pretrain_epochs

    def on_epoch_start(self, epoch: int, train_tensors) -> dict[str, torch.Tensor]:
        self.epoch = int(epoch)
        return {"pretraining": torch.tensor(float(self.pretraining))}

    def step(self, batch):
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        out = self.model(batch["inputs"], batch["present"])
        l_uni = {m: task_loss(out.unimodal[m], batch["y"], self.task_type, batch["present"][m])
                 for m in self.model.modalities}
        if self.pretraining:
            l_fuse = task_loss(out.fused.detach(), batch["y"], self.task_type)  # logged, not trained
            loss = sum(l_uni.values())
        else:
            l_fuse = task_loss(out.fused, batch["y"], self.task_type)
            loss = l_fuse
        loss.backward()
        self.apply_gradients()
        metrics = {"loss_total": loss.detach(), "loss_fuse": l_fuse.detach(),
                   "pretraining": torch.tensor(float(self.pretraining), device=loss.device)}
        metrics.update({f"loss_{m}": v.detach() for m, v in l_uni.items()})
        metrics["sequence_length"] = out.extras["sequence_length"].float().mean()
        return metrics
