"""Search spaces (configs/search/<method>.yaml) and the configuration a study selects.

A search space names, per hyperparameter, the values a grid visits (a list) or the range a
sampler draws from (`{low, high, log}`). A bare name is a method option (a keyword of the
method's constructor, as in configs/methods/); `train.<key>` is a training setting (the
learning rate, `train.lr`, for every method). Unknown names fail at load time naming the file
and key, as method configs do.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from clinfuse.etl.errors import ConfigError

from .base import StrictModel
from .methods import CONFIG_DIR, NOT_OPTIONS
from .train import TrainSettings

# Training settings a study may tune: scalars that change what a run computes (not where it runs).
TUNABLE_TRAIN = ("lr", "weight_decay", "momentum", "batch_size", "epochs", "patience")


class Range(StrictModel):
    """A continuous range a sampler draws from (a grid cannot visit it)."""

    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0 (got {self.low})")
        return self


Scalar = bool | int | float | str


class SearchSpace(StrictModel):
    """configs/search/<name>.yaml: what a study of one method config tunes, and where the ranges come from."""

    method: str  # the method class (configs/methods/<name>.yaml's `method:`)
    sources: list[str] = Field(min_length=1)  # where each range comes from (paper section, released code)
    space: dict[str, list[Scalar] | Range] = Field(min_length=1)

    def check(self, source: str, config_method: str, fixed: dict[str, Any]) -> SearchSpace:
        """Fail naming `source` and the key when a name is unknown or a value list is empty or repeated.

        Args:
            source: the file, for messages.
            config_method: the method class of the config this space tunes.
            fixed: the config's own options (a space may not tune what the config fixes, e.g. the
                ablation's `aps: false`).
        """
        from clinfuse.models.methods import METHODS

        if self.method != config_method:
            raise ConfigError(f"{source}: method: {self.method!r}, but the method config trains {config_method!r}")
        accepted = set(inspect.signature(METHODS[self.method].__init__).parameters) - NOT_OPTIONS
        for key, values in self.space.items():
            where = f"{source}: space.{key}"
            if key.startswith("train."):
                name = key.split(".", 1)[1]
                if name not in TUNABLE_TRAIN:
                    raise ConfigError(f"{where}: not a tunable training setting; tunable: "
                                      f"{', '.join('train.' + k for k in TUNABLE_TRAIN)}")
                for value in values if isinstance(values, list) else [values.low, values.high]:
                    try:
                        TrainSettings.model_validate({name: value})
                    except Exception as exc:  # pydantic's message names the constraint
                        raise ConfigError(f"{where}: {value!r} is not a valid train.{name}: "
                                          f"{str(exc).splitlines()[-1].strip()}") from None
            elif key not in accepted:
                raise ConfigError(f"{where}: unknown option for method {self.method!r}; accepted: {sorted(accepted)}")
            elif key in fixed:
                raise ConfigError(f"{where}: the method config fixes {key} = {fixed[key]!r}; tune another config "
                                  "or drop the key")
            if isinstance(values, list):
                if not values:
                    raise ConfigError(f"{where}: empty list of values")
                if len({json.dumps(v) for v in values}) != len(values):
                    raise ConfigError(f"{where}: repeated values {values}")
        return self

    def grid_size(self) -> int | None:
        """Number of grid points, or None when a range makes the space continuous."""
        size = 1
        for values in self.space.values():
            if isinstance(values, Range):
                return None
            size *= len(values)
        return size

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:12]


def search_path(config_name: str) -> Path:
    """configs/search/<config name>.yaml (shipped with the package, never the CWD)."""
    return CONFIG_DIR / "search" / f"{config_name}.yaml"


def split_params(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A trial's parameters as (method options, train overrides): {"rho": .3, "train.lr": 1e-3} ->
    ({"rho": .3}, {"lr": 1e-3})."""
    options = {k: v for k, v in params.items() if not k.startswith("train.")}
    train = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith("train.")}
    return options, train


class SelectedConfig(StrictModel):
    """What `clinfuse tune` writes for `clinfuse train --tuned`: the method config with the selected
    options, the training settings the study tuned, and how they were chosen."""

    method: str
    options: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)  # overrides of params.yaml `train:` (e.g. lr)
    tuning: dict[str, Any] = Field(default_factory=dict)  # study, budget, trials, validation score (shown only)

    @model_validator(mode="after")
    def _train_keys(self) -> SelectedConfig:
        unknown = sorted(set(self.train) - set(TUNABLE_TRAIN))
        if unknown:
            raise ValueError(f"train: {unknown} are not tunable training settings; tunable: {list(TUNABLE_TRAIN)}")
        return self
