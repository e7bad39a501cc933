"""Tiny cohorts for the robustness tests (the same fixtures as the training tests)."""

from tests.training.conftest import adni_cohort, mimic_cohort  # noqa: F401
