"""Synthetic export settings (params.yaml `synth:`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import StrictModel


class SynthSettings(StrictModel):
    """Sizes of the synthetic MIMIC-IV / MIMIC-CXR-JPG / ADNI exports (the demo default)."""

    # demo: the generator's own sizes below; hundredth / tenth / full: MIMIC-IV v3.1 and
    # MIMIC-CXR-JPG 2.1.0 row counts (full) or a 1/10, 1/100 of them, real-resolution films
    # (etl/synth/sizes.py); subjects, scale and the cxr_* sizes apply to the demo only
    size: Literal["demo", "hundredth", "tenth", "full"] = "demo"
    subjects: int = Field(800, ge=1)  # MIMIC patients
    seed: int = 42
    scale: int = Field(1, ge=1)  # multiplies MIMIC patients (and chartevents rows) for ETL benchmarks
    cxr_height: int = Field(96, ge=16)
    cxr_width: int = Field(80, ge=16)
    dicom_copies: int = Field(12, ge=0)  # AP films also written as DICOM (half MONOCHROME1)
    adni_subjects: int = Field(500, ge=1)
    mri_size: int = Field(24, ge=8)

    @model_validator(mode="after")
    def _scale_is_for_the_demo(self):
        if self.size != "demo" and self.scale != 1:
            raise ValueError(f"scale multiplies the demo export; size {self.size!r} sets its own row counts "
                             "(leave scale at 1)")
        return self
