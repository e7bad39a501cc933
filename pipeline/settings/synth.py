"""Synthetic export settings (params.yaml `synth:`)."""

from __future__ import annotations

from pydantic import Field

from .base import StrictModel


class SynthSettings(StrictModel):
    """Sizes of the synthetic MIMIC-IV / MIMIC-CXR-JPG / ADNI exports (the demo default)."""

    subjects: int = Field(800, ge=1)  # MIMIC patients
    seed: int = 42
    scale: int = Field(1, ge=1)  # multiplies MIMIC patients (and chartevents rows) for ETL benchmarks
    cxr_height: int = Field(96, ge=16)
    cxr_width: int = Field(80, ge=16)
    dicom_copies: int = Field(12, ge=0)  # AP films also written as DICOM (half MONOCHROME1)
    adni_subjects: int = Field(500, ge=1)
    mri_size: int = Field(24, ge=8)
