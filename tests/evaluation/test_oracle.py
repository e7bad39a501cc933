"""The oracle ceiling of synthetic cohorts, on a 4-stay cohort whose figures are computed by hand.

One label with logit h0 + h3; the EHR sees h0, the film sees h3. Stays (h0, h3, y):
  s1 ( 2,  1, 1)   all 3, EHR 2, film 1
  s2 (-1,  3, 1)   all 2, EHR -1, film 3
  s3 ( 1, -2, 0)   all -1, EHR 1, film -2
  s4 (-2,  2, 0)   all 0, EHR -2, film 2
Each oracle's posterior is increasing in the visible part of the logit (the unseen part adds
the same N(0, 1) noise to every stay), so it ranks the stays as that part does:
  all factors  s1 > s2 > s4 > s3   both positives first: AUROC 1, AUPRC 1
  EHR (h0)     s1 > s3 > s2 > s4   AUROC 3/4 (s2 < s3); AUPRC (1 + 2/3) / 2 = 5/6
  film (h3)    s2 > s4 > s1 > s3   AUROC 3/4 (s1 < s4); AUPRC (1 + 2/3) / 2 = 5/6
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import integrate

from clinfuse.evaluation.oracle import ceiling_rows, expected_sigmoid, oracle_metrics, oracle_probabilities
from clinfuse.pipeline.data import load_cohort
from clinfuse.pipeline.stages.evaluate import SYNTHETIC_FACTORS, SYNTHETIC_LABEL_MODEL, oracle_block
from tests.fixtures.cohorts import fixture_manifest, write_cohort

FACTORS = np.array([[2.0, 0, 0, 1], [-1, 0, 0, 3], [1, 0, 0, -2], [-2, 0, 0, 2]])
Y = np.array([[1], [1], [0], [0]])
MODEL = {"labels": {"y": {"bias": 0.0, "weights": [1.0, 0.0, 0.0, 1.0]}}, "visible": {"ehr": [0], "cxr": [3]}}


def _by_quad(mean: float, scale: float) -> float:
    f = lambda z: np.exp(-z * z / 2) / np.sqrt(2 * np.pi) * 0.5 * (1 + np.tanh((mean + scale * z) / 2))  # noqa: E731
    return integrate.quad(f, -np.inf, np.inf, epsabs=1e-13)[0]


def test_expected_sigmoid_is_the_logistic_without_noise_and_the_gaussian_integral_with_it():
    assert expected_sigmoid(np.array([0.0, 2.0]), 0.0) == pytest.approx([0.5, 1 / (1 + np.exp(-2))], abs=1e-12)
    for mean, scale in [(2.0, 1.0), (-1.0, 1.0), (-2.4, 0.7), (0.3, 3.0)]:
        assert expected_sigmoid(np.array([mean]), scale)[0] == pytest.approx(_by_quad(mean, scale), abs=1e-9)


def test_the_ehr_oracle_integrates_the_film_factor_out():
    p = oracle_probabilities(FACTORS, np.array([0.0]), np.array([[1.0, 0, 0, 1]]), [0])
    assert p[:, 0] == pytest.approx([_by_quad(m, 1.0) for m in (2, -1, 1, -2)], abs=1e-9)
    full = oracle_probabilities(FACTORS, np.array([0.0]), np.array([[1.0, 0, 0, 1]]), None)
    assert full[:, 0] == pytest.approx(1 / (1 + np.exp(-np.array([3.0, 2, -1, 0]))))


def test_oracle_metrics_on_the_hand_computed_cohort():
    o = oracle_metrics("binary", Y, FACTORS, MODEL, ["y"])
    assert (o["all"]["macro_auroc"], o["all"]["macro_auprc"]) == pytest.approx((1.0, 1.0))
    assert (o["ehr"]["macro_auroc"], o["ehr"]["macro_auprc"]) == pytest.approx((0.75, 5 / 6))
    assert (o["cxr"]["macro_auroc"], o["cxr"]["macro_auprc"]) == pytest.approx((0.75, 5 / 6))
    assert o["seen"] == {"all": ["h0", "h1", "h2", "h3"], "ehr": ["h0"], "cxr": ["h3"]}


def test_ceiling_rows_give_each_runs_gap_and_its_film_loss_against_the_oracles():
    o = oracle_metrics("binary", Y, FACTORS, MODEL, ["y"])
    c = ceiling_rows(o, [{"method": "m", "seed": 1, "score": 0.9, "paired": 0.9, "withheld": 0.85},
                         {"method": "u", "seed": 1, "score": 0.7, "paired": None, "withheld": None}], "cxr", "ehr")
    assert c["oracle_withheld_loss"] == pytest.approx(1 - 5 / 6)
    m, u = c["rows"]
    assert m["gap_to_ceiling"] == pytest.approx(0.1) and m["withheld_loss"] == pytest.approx(0.05)
    assert m["share_of_oracle_loss"] == pytest.approx(0.05 / (1 / 6))
    assert u["withheld_loss"] is None and u["gap_to_ceiling"] == pytest.approx(0.3)


@pytest.mark.parametrize("bad", [{"labels": {}}, {"labels": {"y": {"bias": 0.0, "weights": [1.0, 2.0]}}},
                                 {"labels": {"y": {"bias": float("nan"), "weights": [1.0] * 4}}},
                                 {"link": "probit", "labels": {"y": {"bias": 0.0, "weights": [1.0] * 4}}}])
def test_a_malformed_label_model_is_refused_naming_what_is_wrong(bad):
    with pytest.raises(ValueError, match="label|link"):
        oracle_metrics("binary", Y, FACTORS, bad, ["y"])


def _plant(path, n):
    np.save(path / SYNTHETIC_FACTORS, np.random.default_rng(0).normal(size=(n, 4)))
    model = {"labels": {k: {"bias": -1.0, "weights": [1.0, 0.5, 0.0, 1.0]} for k in ("Sepsis", "Shock", "CHF")},
             "visible": {"ehr": [0, 1, 2], "cxr": [1, 3]}}
    (path / SYNTHETIC_LABEL_MODEL).write_text(json.dumps(model))


def test_a_cohort_not_marked_synthetic_gets_no_oracle_even_with_factor_files_planted(tmp_path):
    path = write_cohort(tmp_path / "c", "mimic", n=20)
    _plant(path, 20)
    cohort = load_cohort(path)
    rows = cohort.rows("test")
    y = cohort.samples[cohort.label_names].to_numpy(int)[rows]
    assert not cohort.manifest.synthetic
    assert oracle_block(cohort, rows, y, "cxr") is None


def test_a_synthetic_cohort_with_factors_gets_the_oracle_on_its_paired_rows_too(tmp_path):
    path = write_cohort(tmp_path / "c", "mimic", n=40, missing_image=0.25)
    manifest = fixture_manifest("mimic", n_samples=40, synthetic=True).to_json()
    (path / "manifest.json").write_text(json.dumps(manifest))
    _plant(path, 40)
    cohort = load_cohort(path)
    rows = np.arange(40)
    y = cohort.samples[cohort.label_names].to_numpy(int)
    block = oracle_block(cohort, rows, y, "cxr")
    assert set(block) >= {"all", "ehr", "cxr", "paired", "seen", "n"}
    assert block["n"] == 40 and block["paired"]["n"] == int(cohort.samples["has_cxr"].sum())
