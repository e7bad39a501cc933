"""Model presets (configs/models/*.yaml) and method configs (configs/methods/*.yaml)."""

from __future__ import annotations

import inspect
from importlib.resources import files
from pathlib import Path
from typing import Any

from pydantic import Field

from clinfuse.etl.errors import ConfigError

from .base import StrictModel

# The shipped configs package (a folder in a checkout, package data in an installed wheel), never the CWD.
CONFIG_DIR = Path(str(files("clinfuse.configs")))
NOT_OPTIONS = {"self", "model", "optimizer", "task_type"}  # a method constructor's non-option arguments


class ModelPreset(StrictModel):
    """One encoder spec per modality: {"name": <models.encoders.ENCODERS key>, **options}."""

    encoders: dict[str, dict[str, Any]]


class MethodConfig(StrictModel):
    """A training method and its options (constructor keywords of the method class)."""

    method: str
    options: dict[str, Any] = Field(default_factory=dict)

    def check(self, source: str) -> MethodConfig:
        """Fail with the file and key when the method or an option is unknown."""
        from clinfuse.models.methods import METHODS

        if self.method not in METHODS:
            raise ConfigError(f"{source}: method: unknown method {self.method!r}; known: {sorted(METHODS)}")
        parameters = inspect.signature(METHODS[self.method].__init__).parameters
        accepted = set(parameters) - NOT_OPTIONS
        for key, value in self.options.items():
            if key not in accepted:
                raise ConfigError(
                    f"{source}: options.{key}: unknown option for method {self.method!r}; accepted: {sorted(accepted)}"
                )
            expected = _KINDS.get(str(parameters[key].annotation))
            if expected is not None and not _is_kind(value, expected):
                raise ConfigError(f"{source}: options.{key}: expected {expected} (default "
                                  f"{parameters[key].default!r}), got {_short(value)}")
        return self

    def resolved_options(self) -> dict[str, Any]:
        """Every option the method runs with: the constructor's defaults, then this config's values
        (what a run records, so its record does not depend on the defaults of a later version)."""
        from clinfuse.models.methods import METHODS

        parameters = inspect.signature(METHODS[self.method].__init__).parameters
        defaults = {k: p.default for k, p in parameters.items()
                    if k not in NOT_OPTIONS and p.default is not inspect.Parameter.empty}
        return {**defaults, **self.options}


# An option's annotation on the method constructor -> what the config must give (other annotations,
# such as `float | None` or per-modality dicts, are checked by the method itself)
_KINDS = {"float": "a number", "int": "an integer", "bool": "true or false", "str": "a string"}


def _is_kind(value: Any, kind: str) -> bool:
    if kind == "true or false":
        return isinstance(value, bool)
    if kind == "a number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "an integer":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, str)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:80] + "..."


def preset_path(preset: str) -> Path:
    return CONFIG_DIR / "models" / f"{preset}.yaml"


def method_path(method: str) -> Path:
    return CONFIG_DIR / "methods" / f"{method}.yaml"
