"""Tiny processed cohorts written to disk in the DESIGN section 4 layout."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from etl.split import assign_patient_split


def write_cohort(path, kind: str, n: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    subjects = np.arange(n) // 2 + 100  # two samples per patient
    samples = pd.DataFrame({"subject_id": subjects, "split": assign_patient_split(subjects, seed=1)})
    latent = rng.normal(size=n)
    if kind == "mimic":
        labels = ["Sepsis", "Shock", "CHF"]
        for k, name in enumerate(labels):
            samples[name] = (latent + rng.normal(scale=1.0, size=n) > 0.3 * k).astype(np.int8)
        ehr = rng.normal(size=(n, 48, 24)).astype(np.float32)
        ehr[:, :, :12] += latent[:, None, None]
        ehr[:, :, 12:] = (rng.random((n, 48, 12)) > 0.5).astype(np.float32)
        cxr = (rng.random((n, 16, 16)) * 100 + 50 * (latent[:, None, None] > 0)).astype(np.uint8)
        np.save(path / "ehr.npy", ehr)
        np.save(path / "cxr.npy", cxr)
        samples["has_ehr"] = True
        samples["has_cxr"] = rng.random(n) > 0.2
        manifest = {"schema_version": 1, "dataset": "mimic", "task": "phenotype", "task_type": "multilabel",
                    "label_columns": labels, "modalities": ["ehr", "cxr"], "patient_column": "subject_id"}
    else:
        label = np.digitize(latent, [-0.4, 0.4])
        samples["label"] = label
        samples["label_name"] = np.array(["CN", "MCI", "AD"])[label]
        tab = rng.normal(size=(n, 6)).astype(np.float32)
        tab[:, 0] += latent
        mri = (rng.random((n, 8, 8, 8)) * 100 + 40 * (latent[:, None, None, None] > 0)).astype(np.uint8)
        np.save(path / "tabular.npy", tab)
        np.save(path / "mri.npy", mri)
        samples["has_tabular"] = True
        samples["has_mri"] = rng.random(n) > 0.2
        manifest = {"schema_version": 1, "dataset": "adni", "task": "diagnosis", "task_type": "multiclass",
                    "label_columns": ["label"], "class_names": ["CN", "MCI", "AD"],
                    "modalities": ["tabular", "mri"], "patient_column": "RID"}
    samples.to_parquet(path / "samples.parquet", index=False)
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


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
