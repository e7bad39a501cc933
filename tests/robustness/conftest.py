"""Tiny cohorts for the robustness tests (the same fixtures as the training tests), and one finished
run of each, trained and evaluated once per session (copy them before damaging them)."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.fixtures.cohorts import write_cohort
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
