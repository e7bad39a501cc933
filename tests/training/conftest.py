"""Tiny processed cohorts for the training tests."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.fixtures.cohorts import write_cohort


@pytest.fixture(scope="session")
def mimic_cohort(tmp_path_factory):
    return write_cohort(tmp_path_factory.mktemp("cohorts") / "mimic-phenotype", "mimic")


@pytest.fixture(scope="session")
def adni_cohort(tmp_path_factory):
    return write_cohort(tmp_path_factory.mktemp("cohorts") / "adni", "adni")


@pytest.fixture(scope="session")
def binary_cohort(tmp_path_factory):
    """The MIMIC fixture reduced to one label: a mortality-like binary task."""
    path = write_cohort(tmp_path_factory.mktemp("cohorts") / "mimic-mortality", "mimic")
    samples = pd.read_parquet(path / "samples.parquet")
    samples["in_hospital_mortality"] = samples["Sepsis"]
    samples.drop(columns=["Sepsis", "Shock", "CHF"]).to_parquet(path / "samples.parquet", index=False)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest.update(task="mortality", task_type="binary", label_columns=["in_hospital_mortality"])
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory):
    """One SQLite store for the session (creating one runs MLflow's migrations: seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
