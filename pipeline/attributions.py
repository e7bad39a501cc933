"""Attributions inside a modality with Captum, through the method's own prediction rule.

- Integrated Gradients (Sundararajan et al. 2017) on a non-image input (the hourly EHR
  `[B, 48, 24]` or ADNI's tabular row `[B, F]`). Baseline: every z-scored value at its training
  mean (0), with the channels named in `fixed` held at the sample's own value: for the EHR its
  observation masks, so the path changes what was measured, never whether it was; ADNI's row
  goes to all zeros. The presence flag stays True and the other modalities stay the sample's own.
  Why the masks are held: the EHR encoders read them as 0/1 facts (the transformer pools only
  the hours whose mask exceeds 0.5), so a path from masks 0 to 1 crosses a step that no
  gradient sees: attributions then miss most of p(x) - p(baseline) and follow the
  untrained parts of the network (see tests/explain/test_known_answers.py).
  Riemann/Gauss-Legendre path with `steps` points (Captum's default method).
- LayerGradCam (Selvaraju et al. 2017) on the image encoder's LAST convolution, ReLU applied,
  upsampled (bilinear / trilinear) to the film's stored resolution.
Both explain the predicted PROBABILITY of one label (the output of `probabilities`), the scale
of the modality Shapley values.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from clinfuse.models.build import build_model

from .inference import probabilities, select_logits
from .modality_shapley import Predict


def model_predict(model: nn.Module, head: str, task_type: str) -> Predict:
    """`(inputs, present) -> [B, K]` probabilities by the run's prediction rule (its `fused` logits or head)."""
    def predict(inputs, present):
        return probabilities(select_logits(model(inputs, present), head), task_type)
    return predict


def untrained_model(config: dict, seed: int) -> nn.Module:
    """The run's network with freshly initialised weights (seeded): the randomisation check's control."""
    torch.manual_seed(seed)
    shapes = {m: tuple(s) for m, s in config["input_shapes"].items()}
    model = build_model(config["encoders"], config["modalities"], shapes, len(config["label_names"]),
                        method=config["method"]["method"], task_type=config["task_type"],
                        options=config["method"]["options"])
    return model.eval()


def last_convolution(module: nn.Module) -> nn.Module | None:
    """The last Conv2d/Conv3d registered in `module` (the image encoder's last convolution), or None."""
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d | nn.Conv3d)]
    return convs[-1] if convs else None


def _forward(predict: Predict, modalities: list[str], explained: str):
    """A Captum forward `f(x_explained, *others, *present) -> [B, K]` (Captum expands the extra args per step)."""
    others = [m for m in modalities if m != explained]

    def f(x, *rest):
        inputs = {explained: x, **dict(zip(others, rest[: len(others)], strict=True))}
        present = dict(zip(modalities, rest[len(others):], strict=True))
        return predict(inputs, present)
    return f, others


def ig_baseline(x: torch.Tensor, fixed: np.ndarray | None = None) -> torch.Tensor:
    """The IG baseline of `x` `[B, ..., C]`: zeros, except the channels where `fixed` `[C]` is True, which keep `x`."""
    if fixed is None or not np.any(fixed):
        return torch.zeros_like(x)
    fixed = np.asarray(fixed, dtype=bool)
    if fixed.shape != (x.shape[-1],):
        raise ValueError(f"fixed has {fixed.shape[0]} channel flags for an input with {x.shape[-1]} channels")
    return x * torch.as_tensor(fixed, dtype=x.dtype, device=x.device)


def integrated_gradients(predict: Predict, inputs: dict[str, torch.Tensor], present: dict[str, torch.Tensor],
                         modality: str, targets: list[int], steps: int,
                         fixed: np.ndarray | None = None) -> np.ndarray:
    """IG attributions `[B, ...]` (the modality's input shape) of each sample's target probability.

    They sum (up to the integration error) to p(x) - p(`ig_baseline(x, fixed)`) per sample, and a
    channel in `fixed` gets exactly 0.

    Args:
        predict: the method's prediction rule (`model_predict`).
        inputs, present: a batch (`SplitTensors.batch`), modality -> `[B, ...]` / `[B]`.
        modality: the input explained (a non-image modality).
        targets: `[B]` the label index explained for each sample.
        steps: integration points.
        fixed: `[C]` booleans over the last axis: channels held at the sample's own value (the EHR's
            observation masks, `evaluation.attributions.mask_channels`); None: an all-zero baseline.
    """
    from captum.attr import IntegratedGradients

    f, others = _forward(predict, list(present), modality)
    x = inputs[modality].float()
    extra = tuple(inputs[m] for m in others) + tuple(present[m] for m in present)
    with torch.enable_grad():
        attr = IntegratedGradients(f).attribute(x, baselines=ig_baseline(x, fixed), target=list(targets),
                                                additional_forward_args=extra, n_steps=steps)
    return attr.detach().float().numpy()


def grad_cam(predict: Predict, model: nn.Module, inputs: dict[str, torch.Tensor], present: dict[str, torch.Tensor],
             modality: str, targets: list[int]) -> np.ndarray | None:
    """LayerGradCam on the last convolution of `model.encoders[modality]`, upsampled to the input: `[B, *spatial]`.

    None when the model has no such convolution.
    """
    from captum.attr import LayerAttribution, LayerGradCam

    encoders = getattr(model, "encoders", None)
    layer = last_convolution(encoders[modality]) if encoders is not None and modality in encoders else None
    if layer is None:
        return None
    f, others = _forward(predict, list(present), modality)
    x = inputs[modality].float()
    extra = tuple(inputs[m] for m in others) + tuple(present[m] for m in present)
    with torch.enable_grad():
        cam = LayerGradCam(f, layer).attribute(x, target=list(targets), additional_forward_args=extra,
                                               relu_attributions=True)
    spatial = tuple(x.shape[2:])
    cam = LayerAttribution.interpolate(cam.detach().float(), spatial,
                                       interpolate_mode="bilinear" if len(spatial) == 2 else "trilinear")
    return cam[:, 0].numpy()
