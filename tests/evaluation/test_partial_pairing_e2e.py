"""Partially paired cohort (half the stays without a film): every method trains, evaluates and reports."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from clinfuse.pipeline.cli import main
from clinfuse.pipeline.settings.etl_mimic import MimicEtlSettings
from tests.evaluation.test_report_registry_e2e import Tables
from tests.fixtures.cohorts import fixture_manifest, write_cohort
from tests.fixtures.tracking import tracking_store

METHODS = ["late_fusion", "sam", "masam", "unimodal", "medfuse", "drfuse"]


@pytest.fixture(scope="module")
def partial_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("partial")
    params = root / "params.yaml"
    params.write_text(
        f"sweep:\n  methods: [{', '.join(METHODS)}]\n  seeds: [1]\n"
        "train:\n  epochs: 3\n  batch_size: 8\n  num_threads: 1\n  device: cpu\n"
        "evaluate:\n  n_resamples: 50\n  min_subgroup_patients: 3\n"
    )
    medfuse = root / "medfuse.yaml"
    medfuse.write_text("method: medfuse\noptions:\n  pretrain_epochs: 1\n")
    cohort = write_cohort(root / "data" / "mimic-phenotype-partial", "mimic", n=60, missing_image=0.5)
    base = ["--params", str(params)]
    with tracking_store(f"sqlite:///{root / 'mlflow.db'}"):
        for method in METHODS:
            extra = ["--config", str(medfuse)] if method == "medfuse" else []
            assert main(base + ["train", "--cohort", str(cohort), "--method", method, "--seed", "1", "--no-tracking",
                                "--out", str(root / "runs" / f"{method}-s1"), *extra]) == 0
        assert main(base + ["evaluate", "--runs-dir", str(root / "runs"), "--out", str(root / "eval")]) == 0
        assert main(base + ["report", "--cohort", str(cohort), "--runs", str(root / "eval"), "--out", str(root / "report")]) == 0
    return root, cohort


def test_half_of_the_stays_have_no_film_and_those_films_are_blank(partial_run):
    import numpy as np

    _, cohort = partial_run
    has = pd.read_parquet(cohort / "samples.parquet")["has_cxr"].to_numpy()
    assert has.sum() == 30
    assert not np.load(cohort / "cxr.npy")[~has].any()


@pytest.mark.parametrize("method", METHODS)
def test_each_method_is_scored_on_paired_and_ehr_only_stays_and_with_the_film_withheld(partial_run, method):
    root, cohort = partial_run
    metrics = json.loads((root / "eval" / f"{method}-s1" / "metrics.json").read_text())
    test = pd.read_parquet(cohort / "samples.parquet").query("split == 'test'")
    presence = metrics["presence"]
    assert presence["image"] == "cxr" and presence["anchor"] == "ehr"
    assert presence["paired"]["n"] == int(test["has_cxr"].sum())
    assert presence["image_absent"]["n"] == int((~test["has_cxr"]).sum()) > 0
    assert presence["withheld"]["n"] == presence["paired"]["n"]
    withheld = pd.read_parquet(root / "eval" / f"{method}-s1" / "predictions_test_withheld.parquet")
    full = pd.read_parquet(root / "eval" / f"{method}-s1" / "predictions_test.parquet")
    absent = ~full["has_cxr"].to_numpy()
    # a stay that has no film is predicted the same whether or not the film is withheld
    assert (withheld.loc[absent, "prob__Sepsis"] - full.loc[absent, "prob__Sepsis"]).abs().max() < 1e-6


def test_report_shows_every_method_in_the_presence_and_comparison_tables(partial_run):
    root, _ = partial_run
    parser = Tables()
    parser.feed((root / "report" / "report.html").read_text())
    t = parser.tables
    assert t["presence"]["rows"] == 1 + len(METHODS)
    assert t["comparison"]["rows"] == 1 + len(METHODS)
    assert "cxr withheld AUPRC" in t["presence"]["headers"] and "ehr only n" in t["presence"]["headers"]


def test_a_partially_paired_cohort_registers_under_its_own_name():
    assert fixture_manifest("mimic", config=MimicEtlSettings(require_cxr=False)).registered_model_name == \
        "mimic-phenotype-partial"
    assert fixture_manifest("mimic", config=MimicEtlSettings(require_cxr=True)).registered_model_name == \
        "mimic-phenotype"
    assert fixture_manifest("adni").registered_model_name == "adni-diagnosis"
