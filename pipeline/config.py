"""Load params.yaml and configs/*.yaml into validated, typed settings.

Every default lives on the section models in `pipeline/settings/`; a YAML file
only overrides. An unknown or mistyped key fails with a `ConfigError` that names
the key path and the file, e.g. ``params.yaml: train.epochs: Input should be a
valid integer (got 'ten')``.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from clinfuse.etl.errors import ConfigError

from .settings.base import StrictModel
from .settings.paths import PathsSettings

M = TypeVar("M", bound=BaseModel)

ENV_PATH_OVERRIDES = {
    "CLINFUSE_MIMIC_IV": "mimic_iv",
    "CLINFUSE_MIMIC_CXR": "mimic_cxr",
    "CLINFUSE_ADNI": "adni",
}


def _optional_section(module: str, cls: str) -> type[StrictModel] | None:
    """Import a stage's settings model if that stage exists in this checkout."""
    try:
        return getattr(importlib.import_module(f"clinfuse.pipeline.settings.{module}"), cls)
    except ModuleNotFoundError:
        return None


def _build_params_model() -> type[StrictModel]:
    from pydantic import create_model

    fields: dict[str, Any] = {"paths": (PathsSettings, PathsSettings())}
    for key, module, cls in [
        ("synth", "synth", "SynthSettings"),
        ("etl_mimic", "etl_mimic", "MimicEtlSettings"),
        ("etl_adni", "etl_adni", "AdniEtlSettings"),
        ("sweep", "sweep", "SweepSettings"),
        ("train", "train", "TrainSettings"),
        ("evaluate", "evaluate", "EvaluateSettings"),
        ("analyze", "analyze", "AnalyzeSettings"),
        ("registry", "registry", "RegistrySettings"),
        ("tune", "tune", "TuneSettings"),
    ]:
        model = _optional_section(module, cls)
        if model is not None:
            fields[key] = (model, model())
    return create_model("Params", __base__=StrictModel, **fields)


Params = _build_params_model()


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line per problem: `<file>: <dotted.key>: <message> (got <value>)`."""
    lines = []
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"]) or "<root>"
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            msg = "unknown key"
        got = item.get("input")
        suffix = "" if item["type"] in ("extra_forbidden", "missing") else f" (got {got!r})"
        lines.append(f"{source}: {key}: {msg}{suffix}")
    return "; ".join(lines)


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or a non-mapping is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    return data


def validate(model: type[M], data: dict[str, Any], source: str) -> M:
    """Validate `data` against `model`, turning pydantic errors into a ConfigError."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def load_params(path: str | os.PathLike = "params.yaml", *, apply_env: bool = True) -> Any:
    """Load params.yaml (DVC params) into the typed `Params` model.

    A missing params.yaml gives all defaults. With `apply_env`, the
    CLINFUSE_MIMIC_IV / CLINFUSE_MIMIC_CXR / CLINFUSE_ADNI variables override
    the raw-data paths.
    """
    path = Path(path)
    data = read_yaml(path) if path.exists() else {}
    params = validate(Params, data, str(path))
    if apply_env:
        for var, key in ENV_PATH_OVERRIDES.items():
            if os.environ.get(var):
                setattr(params.paths, key, os.environ[var])
    return params


def load_section(model: type[M], path: str | os.PathLike) -> M:
    """Load one YAML file (e.g. configs/methods/masam.yaml) into `model`."""
    return validate(model, read_yaml(path), str(path))
