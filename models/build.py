"""Build a FusionModel from a model config (one encoder spec per modality)."""

from __future__ import annotations

from typing import Any

from etl.errors import ConfigError

from .encoders import ENCODERS
from .fusion import FusionModel

# Options that depend on the cohort's data, filled in from input shapes.
_SHAPE_OPTIONS = {"tabular_mlp": lambda shape: {"in_features": int(shape[-1])}}


def build_model(
    encoder_specs: dict[str, dict[str, Any]],
    modalities: list[str],
    input_shapes: dict[str, tuple[int, ...]],
    num_outputs: int,
) -> FusionModel:
    """Build encoders for `modalities` (in that order) and the fusion model.

    Args:
        encoder_specs: modality -> {"name": registry name, **constructor options}.
        modalities: modalities of the cohort, in the cohort's order.
        input_shapes: modality -> per-sample input shape (e.g. ehr (48, 24)).
        num_outputs: K, the number of logits.
    """
    encoders = {}
    for m in modalities:
        if m not in encoder_specs:
            raise ConfigError(f"model config has no encoder for modality '{m}' (has: {sorted(encoder_specs)})")
        spec = dict(encoder_specs[m])
        name = spec.pop("name", None)
        if name not in ENCODERS:
            raise ConfigError(f"model config: encoders.{m}.name: unknown encoder {name!r}; known: {sorted(ENCODERS)}")
        spec.update(_SHAPE_OPTIONS.get(name, lambda shape: {})(input_shapes[m]))
        try:
            encoders[m] = ENCODERS[name](**spec)
        except TypeError as exc:
            raise ConfigError(f"model config: encoders.{m}: {exc}") from None
    return FusionModel(encoders, num_outputs)
