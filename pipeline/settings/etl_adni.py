"""ADNI ETL settings (params.yaml `etl_adni:`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import StrictModel


class AdniEtlSettings(StrictModel):
    """Labels, tabular features, MRI preprocessing and split.

    `exclude_features`: ADNI assigns CN/MCI/AD partly from MMSE and the CDR, so by
    default MMSE and CDR-SB are not features (a model given them learns the
    diagnostic rule, not the disease).
    """

    smc: Literal["cn", "exclude"] = "cn"
    exclude_features: list[str] = Field(default_factory=lambda: ["MMSE", "CDRSB"])
    max_missing: float = Field(0.9, ge=0, le=1)  # drop a column missing in more than this share of training rows
    mri_window_days: int = Field(183, ge=0)  # nearest scan within 6 months if no baseline scan
    require_mri: bool = True
    mri_size: int = Field(24, ge=8)  # cube side; 96-128 for the paper preset
    mri_spacing_mm: float = Field(1.5, gt=0)
    split: tuple[float, float, float] = (0.7, 0.1, 0.2)
    split_seed: int = 42
    workers: int = Field(2, ge=1)
