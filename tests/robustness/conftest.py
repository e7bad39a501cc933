"""Tiny cohorts for the robustness tests (the same fixtures as the training tests), and one finished
run of each, trained and evaluated once per session (copy them before damaging them)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.fixtures.cohorts import write_cohort
from tests.fixtures.tracking import tracking_store
from tests.training.conftest import adni_cohort, mimic_cohort  # noqa: F401

FAST_PARAMS = ("train:\n  epochs: 1\n  batch_size: 8\n  num_threads: 1\n  device: cpu\n"
               "evaluate:\n  n_resamples: 20\n  min_subgroup_patients: 3\n")


@pytest.fixture(scope="session")
def fast_params(tmp_path_factory):
    """A params.yaml for one-epoch runs and a quick bootstrap."""
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    path.write_text(FAST_PARAMS)
    return path


def _train_and_evaluate(cohort, root, params):
    from clinfuse.pipeline.cli import main

    run, evaluation = root / "runs" / "late_fusion-s1", root / "eval"
    assert main(["--params", str(params), "train", "--cohort", str(cohort), "--method", "late_fusion", "--seed", "1",
                 "--out", str(run), "--no-tracking"]) == 0
    assert main(["--params", str(params), "evaluate", "--run", str(run), "--out", str(evaluation)]) == 0
    return run, evaluation


@pytest.fixture(scope="session")
def finished_run(mimic_cohort, fast_params, tmp_path_factory):  # noqa: F811 - the imported fixture
    """(run folder, its evaluation folder) of late_fusion on the tiny MIMIC cohort."""
    return _train_and_evaluate(mimic_cohort, tmp_path_factory.mktemp("finished"), fast_params)


@pytest.fixture(scope="session")
def no_positive_test_cohort(tmp_path_factory):
    """A tiny MIMIC cohort whose test split has no positive label at all (every test metric undefined)."""
    path = write_cohort(tmp_path_factory.mktemp("cohorts") / "mimic-nopos", "mimic")
    samples = pd.read_parquet(path / "samples.parquet")
    samples.loc[samples["split"] == "test", ["Sepsis", "Shock", "CHF"]] = 0
    samples.to_parquet(path / "samples.parquet", index=False)
    return path


@pytest.fixture(scope="session")
def registered_models_built(tmp_path_factory, fast_params):
    """One MLflow store holding two registered models of late_fusion, trained for one epoch:
    `paired` (every training stay has a film: has_cxr = 0 never seen) and `partial` (about 20 %
    without one). Returns (tracking URI, {"paired"|"partial": (cohort folder, model URI)})."""
    from clinfuse.pipeline.cli import main

    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    models = {}
    with tracking_store(uri):
        for kind, missing in (("paired", 0.0), ("partial", 0.2)):
            cohort = write_cohort(root / kind / "mimic-phenotype", "mimic", missing_image=missing)
            run, evaluation = _train_and_evaluate(cohort, root / kind, fast_params)
            assert main(["--params", str(fast_params), "register", "--cohort", str(cohort), "--runs",
                         str(run.parent), "--evaluations", str(evaluation), "--out",
                         str(root / kind / "registry.json"), "--name", f"{kind}-model"]) == 0
            models[kind] = (cohort, f"models:/{kind}-model@champion")
    return uri, models


@pytest.fixture
def registered_models(registered_models_built):
    """The two registered models, with their store current for the test."""
    with tracking_store(registered_models_built[0]):
        yield registered_models_built


MIMIC_GOLDEN = Path(__file__).resolve().parents[1] / "mimic" / "golden" / "input"


@pytest.fixture()
def raw(tmp_path):
    """A fresh copy of the hand-made MIMIC golden export to damage (ADNI test modules define their own)."""
    shutil.copytree(MIMIC_GOLDEN, tmp_path / "raw")
    return tmp_path / "raw"
