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
        accepted = set(inspect.signature(METHODS[self.method].__init__).parameters) - NOT_OPTIONS
        for key in self.options:
            if key not in accepted:
                raise ConfigError(
                    f"{source}: options.{key}: unknown option for method {self.method!r}; accepted: {sorted(accepted)}"
                )
        return self

    def resolved_options(self) -> dict[str, Any]:
        """Every option the method runs with: the constructor's defaults, then this config's values
        (what a run records, so its record does not depend on the defaults of a later version)."""
        from clinfuse.models.methods import METHODS

        parameters = inspect.signature(METHODS[self.method].__init__).parameters
        defaults = {k: p.default for k, p in parameters.items()
                    if k not in NOT_OPTIONS and p.default is not inspect.Parameter.empty}
        return {**defaults, **self.options}


def preset_path(preset: str) -> Path:
    return CONFIG_DIR / "models" / f"{preset}.yaml"


def method_path(method: str) -> Path:
    return CONFIG_DIR / "methods" / f"{method}.yaml"
