"""Build a method's network from a model config (one encoder spec per modality)."""

from __future__ import annotations

from typing import Any

from torch import nn

from clinfuse.etl.errors import ConfigError

from .encoders import ENCODERS


def _ehr_variables(shape: tuple[int, ...]) -> dict[str, int]:
    """V from an EHR input `(T, 2V)`: V values then their V observation masks."""
    if shape[-1] % 2:
        raise ConfigError(f"EHR input has {shape[-1]} channels per hour; expected V values then V masks (an even number)")
    return {"n_vars": int(shape[-1]) // 2}


# Options that depend on the cohort's data, filled in from input shapes (never set in a preset).
_SHAPE_OPTIONS = {
    "tabular_mlp": lambda shape: {"in_features": int(shape[-1])},
    "ehr_transformer": _ehr_variables,
    "ehr_lstm": _ehr_variables,
}


def build_model(
    encoder_specs: dict[str, dict[str, Any]],
    modalities: list[str],
    input_shapes: dict[str, tuple[int, ...]],
    num_outputs: int,
    method: str = "late_fusion",
    task_type: str = "multilabel",
    options: dict[str, Any] | None = None,
) -> nn.Module:
    """Build encoders for `modalities` (in that order) and the method's network.

    Args:
        encoder_specs: modality -> {"name": registry name, **constructor options}.
        modalities: modalities of the cohort, in the cohort's order.
        input_shapes: modality -> per-sample input shape (e.g. ehr (48, 24)).
        num_outputs: K, the number of logits.
        method: `models.methods.METHODS` key; its `build_model` makes the network
            (the concat `FusionModel` unless the method defines its own).
        task_type: "multilabel", "binary" or "multiclass".
        options: the method config's options.
    """
    from .methods import METHODS

    encoders = build_encoders(encoder_specs, modalities, input_shapes)
    return METHODS[method].build_model(encoders, num_outputs, task_type, dict(options or {}))


def build_encoders(
    encoder_specs: dict[str, dict[str, Any]],
    modalities: list[str],
    input_shapes: dict[str, tuple[int, ...]],
) -> dict[str, nn.Module]:
    """One encoder per modality (in `modalities` order) from the registry `ENCODERS`."""
    encoders = {}
    for m in modalities:
        if m not in encoder_specs:
            raise ConfigError(f"model config has no encoder for modality '{m}' (has: {sorted(encoder_specs)})")
        spec = dict(encoder_specs[m])
        name = spec.pop("name", None)
        if name not in ENCODERS:
            raise ConfigError(f"model config: encoders.{m}.name: unknown encoder {name!r}; known: {sorted(ENCODERS)}")
        from_data = _SHAPE_OPTIONS.get(name, lambda shape: {})(input_shapes[m])
        if set(from_data) & set(spec):
            raise ConfigError(f"model config: encoders.{m}: {sorted(set(from_data) & set(spec))} come from the "
                              "cohort's input shape; remove them from the preset")
        spec.update(from_data)
        try:
            encoders[m] = ENCODERS[name](**spec)
        except TypeError as exc:
            raise ConfigError(f"model config: encoders.{m}: {exc}") from None
    return encoders
