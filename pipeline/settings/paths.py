"""Where raw inputs and generated outputs live (the defaults of docs/architecture.md)."""

from __future__ import annotations

from .base import StrictModel


class PathsSettings(StrictModel):
    """Input and output locations, relative to the repository root unless absolute.

    Point `mimic_iv`, `mimic_cxr` and `adni` at real exports to run on credentialed
    data; the `CLINFUSE_MIMIC_IV`, `CLINFUSE_MIMIC_CXR` and `CLINFUSE_ADNI`
    environment variables override them for CLI runs.
    """

    raw: str = "data/raw"
    mimic_iv: str = "data/raw/mimic-iv"
    mimic_cxr: str = "data/raw/mimic-cxr-jpg"
    adni: str = "data/raw/adni"
    processed: str = "data/processed"
    runs: str = "runs"
    reports: str = "reports"
    tuning: str = "tuning"  # <tuning>/<cohort>/<method>/: a study, its trials and selected.yaml (clinfuse tune)
