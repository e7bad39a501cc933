"""Unimodal baseline: train one encoder and its unimodal head on L_m alone.

Its predictions are that head's logits; the other encoders and the fusion head
get no gradient (and so no optimizer update). `modality` is a modality name or a role
("primary": EHR / tabular, "image": chest film / MRI), resolved per cohort.
"""

from __future__ import annotations

from ..losses import task_loss
from .base import Method

# Cohort-relative modality names, so that one method config trains the same role on every cohort of a
# sweep: "primary" is the cohort's first modality (ehr, tabular), "image" its last (cxr, mri).
ROLES = {"primary": 0, "image": -1}


class Unimodal(Method):
    name = "unimodal"

    @classmethod
    def cohort_options(cls, options: dict, modalities: list[str]) -> dict:
        """`modality: primary | image` -> the cohort's modality of that role (recorded in the run's config)."""
        out = dict(options)
        if out.get("modality") in ROLES:
            if len(modalities) < 2:
                raise ValueError(f"unimodal: modality role {out['modality']!r} needs a cohort with two modalities, "
                                 f"got {modalities}")
            out["modality"] = modalities[ROLES[out["modality"]]]
        return out

    def __init__(self, model, optimizer, task_type, modality: str, lambda_m=1.0):
        super().__init__(model, optimizer, task_type, lambda_m)
        modality = self.cohort_options({"modality": modality}, list(model.modalities))["modality"]
        if modality not in model.modalities:
            raise ValueError(f"unimodal: modality {modality!r} not in the cohort's {model.modalities}")
        self.modality = modality

    def step(self, batch):
        m = self.modality
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        z = self.model.encode(m, batch["inputs"][m])
        logits = self.model.unimodal_heads[m](z)
        loss = task_loss(logits, batch["y"], self.task_type, batch["present"][m])
        loss.backward()
        self.apply_gradients()
        return {"loss_total": loss.detach(), f"loss_{m}": loss.detach()}

    def logits(self, out):
        return out.unimodal[self.modality]
