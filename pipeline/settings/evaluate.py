"""Evaluation settings (params.yaml `evaluate:`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import StrictModel


class EvaluateSettings(StrictModel):
    n_resamples: int = Field(1000, ge=10)  # patient-level bootstrap resamples for every 95 % CI (subgroups too)
    seed: int = 42
    ci_level: float = Field(0.95, gt=0, lt=1)
    min_subgroup_patients: int = Field(10, ge=1)  # smaller groups are marked too_small (no CI)
    min_events: int = Field(5, ge=1)  # fewer positives or negatives: too small, no CI (labels and subgroups)
    # operating points: threshold chosen on the validation split, then applied to test
    threshold_rule: Literal["youden", "target_sensitivity"] = "youden"
    target_sensitivity: float = Field(0.8, gt=0, le=1)
    calibration_bins: int = Field(10, ge=2)
    curve_points: int = Field(200, ge=10)
