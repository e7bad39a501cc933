"""Training-time augmentation of image batches on the device (MONAI's `RandAffine`).

MedFuse trains its chest-film encoder on randomly rotated, scaled and shifted films. Here the
transform runs on the batch where it already is (the GPU when training there): each image of
the configured modalities gets its own affine drawn by MONAI's `RandAffine` and is resampled
bilinearly with zero padding. Labels, presence flags and other modalities are untouched.

Randomness comes from a NumPy generator seeded by (run seed, optimizer step, rank), not from
torch's global generator: dropout masks are the same with augmentation on or off, and a killed
and resumed run draws the same affines as an uninterrupted one.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from clinfuse.etl.errors import ConfigError
from clinfuse.models.distributed import rank

from .settings.train import AugmentSettings


class BatchAugment:
    """Callable `(batch, step) -> batch` applying `AugmentSettings` to a training batch.

    Args:
        settings: `train.augment`.
        seed: the run seed.
        input_shapes: modality -> per-sample input shape (`[1, S, S]` or `[1, D, D, D]` for images).
    """

    def __init__(self, settings: AugmentSettings, seed: int, input_shapes: dict[str, tuple[int, ...]]):
        self.settings, self.seed = settings, seed
        self.shapes: dict[str, tuple[int, ...]] = {}
        if not settings.enabled:
            return
        images = sorted(m for m, s in input_shapes.items() if len(s) in (3, 4) and s[0] == 1)
        for m in settings.modalities:
            if m not in images:
                raise ConfigError(f"train.augment.modalities: {m!r} is not an image modality of this cohort "
                                  f"(image modalities: {images})")
            self.shapes[m] = tuple(input_shapes[m][1:])
        self._transforms: dict[tuple[str, str], Any] = {}

    def _transform(self, modality: str, device: torch.device):
        """One `RandAffine` per (modality, device), built on first use."""
        key = (modality, str(device))
        if key not in self._transforms:
            from monai.transforms import RandAffine

            spatial = self.shapes[modality]
            s = self.settings
            angle = math.radians(s.rotate_degrees)
            self._transforms[key] = RandAffine(
                prob=1.0,
                rotate_range=(angle,) if len(spatial) == 2 else (angle, angle, angle),
                scale_range=(s.scale,) * len(spatial),
                translate_range=tuple(s.translate * n for n in spatial),  # MONAI shifts in pixels
                mode="bilinear", padding_mode="zeros", device=device,
            )
        return self._transforms[key]

    def __call__(self, batch: dict[str, Any], step: int) -> dict[str, Any]:
        """The batch with its images augmented; the same object when augmentation is off.

        Args:
            batch: the batch contract (`inputs[m]` `[B, 1, ...]` float in [0, 1] for images).
            step: the optimizer step this batch feeds (seeds the draw).
        """
        if not self.shapes:
            return batch
        inputs = dict(batch["inputs"])
        for i, m in enumerate(self.shapes):
            x = inputs[m]
            transform = self._transform(m, x.device)
            state = np.random.SeedSequence([self.seed, step, rank(), i]).generate_state(1)[0]
            transform.set_random_state(seed=int(state))
            out = [transform(xi) for xi in x]  # MONAI transforms take one channel-first image
            inputs[m] = torch.stack([o.as_tensor() if hasattr(o, "as_tensor") else o for o in out]).to(x.dtype)
        return {**batch, "inputs": inputs}
