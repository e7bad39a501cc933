"""A tiny finished pipeline (train -> evaluate -> report -> register) shared by the evaluation tests."""

from __future__ import annotations

import pytest

from clinfuse.pipeline.cli import main
from tests.fixtures.cohorts import write_cohort
from tests.fixtures.tracking import tracking_store


@pytest.fixture(scope="session")
def pipeline_built(tmp_path_factory):
    """(root, base arguments, cohort) of the finished pipeline; its MLflow store is root/mlflow.db,
    current only while it is built (tests get it through `pipeline_run`)."""
    root = tmp_path_factory.mktemp("e2e")
    params = root / "params.yaml"
    params.write_text(
        "sweep:\n  methods: [late_fusion, masam]\n  seeds: [1]\n"
        "train:\n  epochs: 2\n  batch_size: 8\n  num_threads: 1\n  device: cpu\n"
        "evaluate:\n  n_resamples: 50\n  min_subgroup_patients: 3\n"
    )
    cohort = write_cohort(root / "data" / "mimic-phenotype", "mimic", n=48)
    base = ["--params", str(params)]
    with tracking_store(f"sqlite:///{root / 'mlflow.db'}"):
        for method in ("late_fusion", "masam"):
            assert main(base + ["train", "--cohort", str(cohort), "--method", method, "--seed", "1",
                                "--out", str(root / "runs" / f"{method}-s1")]) == 0
        assert main(base + ["evaluate", "--runs-dir", str(root / "runs"), "--out", str(root / "eval")]) == 0
        assert main(base + ["report", "--cohort", str(cohort), "--runs", str(root / "eval"),
                            "--out", str(root / "report")]) == 0
        assert main(base + ["register", "--cohort", str(cohort), "--runs", str(root / "runs"), "--evaluations",
                            str(root / "eval"), "--out", str(root / "registry.json"), "--report",
                            str(root / "report")]) == 0
    return root, base, cohort


@pytest.fixture
def pipeline_run(pipeline_built):
    """The finished pipeline, with its MLflow store current for the test."""
    root, _, _ = pipeline_built
    with tracking_store(f"sqlite:///{root / 'mlflow.db'}"):
        yield pipeline_built
