"""Tiny processed cohorts for the training tests."""

from __future__ import annotations

import pytest

from tests.fixtures.cohorts import write_cohort


@pytest.fixture(scope="session")
def mimic_cohort(tmp_path_factory):
    return write_cohort(tmp_path_factory.mktemp("cohorts") / "mimic-phenotype", "mimic")


@pytest.fixture(scope="session")
def adni_cohort(tmp_path_factory):
    return write_cohort(tmp_path_factory.mktemp("cohorts") / "adni", "adni")


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory):
    """One SQLite store for the session (creating one runs MLflow's migrations: seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
