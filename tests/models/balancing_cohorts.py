"""Tiny cohorts and run specs shared by the PMR and InfoReg tests (multilabel, binary, multiclass)."""

from __future__ import annotations

import json

import pandas as pd

from clinfuse.pipeline.config import load_section
from clinfuse.pipeline.settings.methods import MethodConfig, method_path
from clinfuse.pipeline.settings.train import TrainSettings
from clinfuse.pipeline.trainer import RunSpec
from tests.fixtures.cohorts import write_cohort

TINY = {
    "ehr": {"name": "ehr_transformer", "d_model": 8, "nhead": 2, "num_layers": 1, "dropout": 0.1},
    "cxr": {"name": "small_cnn", "channels": [4], "out_dim": 8},
    "tabular": {"name": "tabular_mlp", "hidden": 8, "out_dim": 8, "dropout": 0.1},
    "mri": {"name": "small_cnn_3d", "channels": [2], "out_dim": 8},
}


def write_binary_cohort(path):
    """The tiny MIMIC cohort turned into a mortality-style binary task (one label column)."""
    write_cohort(path, "mimic")
    samples = pd.read_parquet(path / "samples.parquet")
    samples["in_hospital_mortality"] = samples["Sepsis"]
    samples = samples.drop(columns=["Sepsis", "Shock", "CHF"])
    samples.to_parquet(path / "samples.parquet", index=False)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest.update(task="mortality", task_type="binary", label_columns=["in_hospital_mortality"])
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def run_spec(cohort, method, out, epochs=2, seed=3, **options):
    cfg = load_section(MethodConfig, method_path(method)).check(method)
    cfg.options.update(options)
    settings = TrainSettings(epochs=epochs, batch_size=8, num_threads=1, patience=10, device="cpu")
    return RunSpec(cohort, method, cfg, "tiny", TINY, settings, seed, out)
