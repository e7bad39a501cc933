"""Tuning settings (params.yaml `tune:`): budget, sampler, pruner, storage (docs/tuning.md).

Search spaces and the selected configuration are `pipeline/settings/search.py` (kept apart: they
read the method classes' signatures, and every stage imports this params section).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import StrictModel


class TuneSettings(StrictModel):
    """How `clinfuse tune` (and the DVC `tune@<cohort>-<method>` stages) search.

    `budget: 0` (the default) runs no trial: each method trains with its config as it is, so
    `make demo` does not slow down. With `budget: N` every method gets the same N trials (a grid
    larger than N is visited in a seeded random order; a smaller grid caps the study at its size).
    """

    budget: int = Field(0, ge=0)  # trials per (cohort, method) study, the same for every method
    sampler: Literal["grid", "tpe"] = "grid"  # grid: the MASAM paper's protocol; tpe: Optuna's TPE sampler
    pruner: Literal["none", "median"] = "none"  # median: stop a trial whose validation score per epoch is below
    # the median of earlier trials at that epoch (Optuna MedianPruner); none: every trial trains to the end
    seed: int = 0  # orders the grid / seeds TPE; the same in every worker so that they agree on the grid
    epochs: int | None = Field(None, ge=1)  # epochs per trial (default: train.epochs)
    storage: str | None = None  # Optuna RDB URL shared by the workers (default: SQLite in the study folder)
    heartbeat_seconds: int = Field(30, ge=1)  # a running trial's worker writes a heartbeat this often
    grace_seconds: int = Field(120, ge=2)  # a trial without a heartbeat for this long was killed: it is retried
    max_retries: int = Field(2, ge=0)  # times a killed trial is retried before it stays failed

    @model_validator(mode="after")
    def _grace_exceeds_heartbeat(self) -> TuneSettings:
        if self.grace_seconds <= self.heartbeat_seconds:
            raise ValueError(f"grace_seconds ({self.grace_seconds}) must exceed heartbeat_seconds "
                             f"({self.heartbeat_seconds}): a live worker would look dead")
        return self
