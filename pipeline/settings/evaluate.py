"""Evaluation settings (params.yaml `evaluate:`)."""

from __future__ import annotations

from pydantic import Field

from .base import StrictModel


class EvaluateSettings(StrictModel):
    n_resamples: int = Field(1000, ge=10)  # patient-level bootstrap resamples for 95 % CIs
    subgroup_resamples: int = Field(200, ge=10)
    seed: int = 42
    ci_level: float = Field(0.95, gt=0, lt=1)
    min_subgroup_patients: int = Field(10, ge=1)  # smaller groups are marked too_small (no CI)
    calibration_bins: int = Field(10, ge=2)
    curve_points: int = Field(200, ge=10)
