"""Training settings (params.yaml `train:`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import StrictModel


class AugmentSettings(StrictModel):
    """Training-time random affine augmentation of image batches, on the device (MedFuse's chest-film
    recipe: rotation up to 45 degrees, scale 0.85-1.15, translation up to 15 % of the side).

    Drawn per sample with MONAI's `RandAffine` (which draws the scale per axis); seeded by the run
    seed and the optimizer step, so a resumed run augments as an uninterrupted one. Off by default.
    """

    enabled: bool = False
    modalities: list[str] = Field(default_factory=lambda: ["cxr"])  # image modalities to augment
    rotate_degrees: float = Field(45.0, ge=0, le=180)  # uniform in [-r, r] (about each axis in 3D)
    scale: float = Field(0.15, ge=0, lt=1)  # scale factor uniform in [1 - s, 1 + s]
    translate: float = Field(0.15, ge=0, lt=1)  # shift uniform in [-t, t] x the side, per axis


class TrainSettings(StrictModel):
    """Hyperparameters of every run. Defaults are the small CPU preset that `make demo`
    runs in minutes; which cohorts, methods and seeds run is `sweep:`.
    """

    preset: str = "small"  # configs/models/<preset>.yaml
    epochs: int = Field(12, ge=1)
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(256, ge=1)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0)
    schedule: Literal["none", "cosine"] = "cosine"
    patience: int = Field(6, ge=1)  # early stopping, in epochs without validation improvement
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: bool = True  # autocast on CUDA only
    num_threads: int = Field(2, ge=1)  # torch CPU threads
    log_every: int = Field(5, ge=1)  # MLflow step-metric interval, in optimizer steps
    # Gradient alignment probe (paper Fig. 15): every N optimizer steps, gamma_m =
    # cos(dL_fuse/dtheta_m, dL_m/dtheta_m) on a fixed training batch, for any method; 0 = off.
    alignment_every: int = Field(0, ge=0)
    # Label-noise robustness (paper Fig. 6): this fraction of TRAINING labels is flipped
    # (per label for multilabel/binary, to another class for multiclass), seeded by the run seed.
    label_noise: float = Field(0.0, ge=0.0, lt=1.0)
    augment: AugmentSettings = Field(default_factory=AugmentSettings)
