"""Differences between methods that include training variance, the verdict rule, the smallest
detectable difference and Holm's adjustment, on cases small enough to check by hand."""

from __future__ import annotations

import numpy as np
import pytest

from clinfuse.evaluation.bootstrap import paired_bootstrap_difference
from clinfuse.evaluation.seed_statistics import (
    holm_adjust,
    minimum_detectable_difference,
    t_interval,
    two_level_bootstrap_difference,
    verdict,
    wald_p_value,
)
from clinfuse.evaluation.verdicts import RunScores, champion_margin, compare_methods, comparison_pairs

# one label, four patients: two negatives then two positives
Y4 = np.array([[0], [0], [1], [1]])
PATIENTS4 = np.array(["p1", "p2", "p3", "p4"])
PERFECT = np.array([[0.1], [0.2], [0.3], [0.4]])  # AUROC 1
THREE_OF_FOUR = np.array([[0.1], [0.3], [0.2], [0.4]])  # positives 0.2, 0.4 vs negatives 0.1, 0.3: 3 of 4 pairs
REVERSED = np.array([[0.4], [0.3], [0.2], [0.1]])  # AUROC 0


def test_three_seeds_give_the_seed_level_mean_difference_with_its_t_interval_by_hand():
    # per-seed AUROC differences a - b: 0.75 - 1 = -0.25, 1 - 1 = 0, 0 - 1 = -1
    a = np.stack([THREE_OF_FOUR, PERFECT, REVERSED])
    b = np.stack([PERFECT, PERFECT, PERFECT])
    out = two_level_bootstrap_difference(Y4, a, b, PATIENTS4, n_resamples=50, seed=0, level=0.95)["macro_auroc"]
    assert out["per_seed"] == pytest.approx([-0.25, 0.0, -1.0])
    mean = -5 / 12  # (-0.25 + 0 - 1) / 3
    sd = np.sqrt(39) / 12  # deviations 1/6, 5/12, -7/12: squares sum to 78/144, over n - 1 = 2
    half = 4.302653 * sd / np.sqrt(3)  # t_{0.975, 2 df}
    assert out["difference"] == pytest.approx(mean)
    assert out["t_interval"]["difference"] == pytest.approx(mean)
    assert out["t_interval"]["ci"] == pytest.approx([mean - half, mean + half], abs=1e-5)
    assert out["t_interval"]["n_seeds"] == 3


def test_fewer_than_three_seeds_have_no_t_interval():
    assert t_interval(np.array([0.1, 0.2]), 0.95) is None
    assert t_interval(np.array([0.1, 0.2, np.nan]), 0.95) is None


def _scores(n_patients: int = 30):
    rng = np.random.default_rng(3)
    y = (rng.random((n_patients, 2)) < 0.4).astype(int)
    a = rng.random((n_patients, 2)) + 0.4 * y
    b = rng.random((n_patients, 2)) + 0.2 * y
    return y, a, b, np.arange(n_patients)


def test_when_every_seed_agrees_the_two_level_interval_is_the_patient_bootstraps():
    y, a, b, patients = _scores()
    two_level = two_level_bootstrap_difference(y, np.stack([a] * 3), np.stack([b] * 3), patients, 200, 5, 0.95)
    patient_only = paired_bootstrap_difference(y, a, b, patients, 200, 5, 0.95)
    for metric in ("macro_auprc", "macro_auroc"):
        assert two_level[metric]["ci"] == patient_only[metric]["ci"]
        assert two_level[metric]["difference"] == pytest.approx(patient_only[metric]["difference"])
    assert two_level["per_label"][1]["auprc"]["ci"] == patient_only["per_label"][1]["auprc"]["ci"]


def test_one_seed_is_the_patient_bootstrap():
    y, a, b, patients = _scores()
    one = two_level_bootstrap_difference(y, a[None], b[None], patients, 200, 5, 0.95)
    assert one["macro_auprc"]["ci"] == paired_bootstrap_difference(y, a, b, patients, 200, 5, 0.95)["macro_auprc"]["ci"]
    assert one["n_seeds"] == 1 and one["macro_auprc"]["t_interval"] is None


def test_the_two_level_interval_widens_when_seeds_disagree():
    y, a, b, patients = _scores()
    agree = two_level_bootstrap_difference(y, np.stack([a] * 3), np.stack([b] * 3), patients, 300, 5, 0.95)
    # the same mean quality, but seed 2 ranks far better and seed 3 far worse than seed 1
    spread = np.stack([a, a + 0.6 * y, a - 0.6 * y])
    disagree = two_level_bootstrap_difference(y, spread, np.stack([b] * 3), patients, 300, 5, 0.95)
    width = {k: v["macro_auroc"]["ci"][1] - v["macro_auroc"]["ci"][0] for k, v in (("agree", agree),
                                                                                  ("disagree", disagree))}
    assert width["disagree"] > 1.5 * width["agree"]
    assert disagree["macro_auroc"]["se"] > agree["macro_auroc"]["se"]


def test_the_methods_are_paired_on_the_same_seed_and_patients():
    # a is b plus a constant: every paired resample has a difference of exactly 0
    y, _, b, patients = _scores()
    bs = np.stack([b, b * 0.5, b ** 2])
    out = two_level_bootstrap_difference(y, bs + 0.1, bs, patients, 100, 1, 0.95)
    assert out["macro_auroc"]["ci"] == [0.0, 0.0] and out["macro_auroc"]["verdict"] == "no difference detectable"


def test_scores_must_be_seeds_by_rows_by_labels():
    y, a, b, patients = _scores()
    with pytest.raises(ValueError, match=r"\[S, N, K\]"):
        two_level_bootstrap_difference(y, a, b, patients, 10, 0, 0.95)


@pytest.mark.parametrize(("ci", "expected"), [
    ([0.001, 0.02], "better"), ([0.0, 0.02], "no difference detectable"),
    ([-0.02, -0.001], "worse"), ([-0.02, 0.0], "no difference detectable"),
    ([-0.01, 0.01], "no difference detectable"), (None, "no difference detectable"),
    ([None, None], "no difference detectable")])
def test_the_verdict_is_better_or_worse_only_when_the_interval_excludes_zero(ci, expected):
    assert verdict(ci) == expected


def test_the_smallest_detectable_difference_is_z_975_plus_z_80_times_the_se():
    assert minimum_detectable_difference(0.01) == pytest.approx((1.959964 + 0.841621) * 0.01, rel=1e-5)
    assert minimum_detectable_difference(0.01, alpha=0.01, power=0.9) == pytest.approx((2.575829 + 1.281552) * 0.01,
                                                                                       rel=1e-5)
    assert minimum_detectable_difference(None) is None


def test_holm_adjusts_by_hand_and_keeps_missing_p_values_missing():
    # sorted: 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> step-down max 0.06
    assert holm_adjust([0.01, 0.04, 0.03, None, 0.005]) == pytest.approx([0.03, 0.06, 0.06, None, 0.02])
    assert holm_adjust([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert holm_adjust([]) == []


def test_the_p_value_is_two_sided_from_the_bootstrap_standard_error():
    # z = 0.02 / 0.01 = 2 -> 2 * (1 - Phi(2)) = 0.0455
    assert wald_p_value(0.02, 0.01) == pytest.approx(0.0455003, rel=1e-5)
    assert wald_p_value(-0.02, 0.01) == wald_p_value(0.02, 0.01)
    assert wald_p_value(0.0, 0.0) == 1.0 and wald_p_value(0.01, 0.0) == 0.0
    assert wald_p_value(None, 0.01) is None and wald_p_value(0.01, None) is None


def test_every_method_meets_the_reference_and_the_proposed_method_each_baseline_once():
    assert comparison_pairs(["late_fusion", "sam", "masam"], ["masam"], "late_fusion") == [
        ("sam", "late_fusion"), ("masam", "late_fusion"), ("masam", "sam")]
    assert comparison_pairs(["sam", "masam"], ["masam"], "late_fusion") == [("masam", "sam")]


def _runs(methods_seeds):
    return [{"method": m, "seed": s, "run": f"{m}-s{s}", "validation": {"value": v}} for m, s, v in methods_seeds]


def test_a_verdict_line_names_the_interval_seeds_test_stays_and_detectable_difference():
    y, a, b, patients = _scores(40)
    runs = _runs([("late_fusion", 1, 0.4), ("late_fusion", 2, 0.4), ("masam", 1, 0.5), ("masam", 2, 0.5)])
    scores = [RunScores(y, b, patients), RunScores(y, b * 0.9, patients), RunScores(y, a + 2 * y, patients),
              RunScores(y, a + 2.5 * y, patients)]
    [c] = compare_methods(runs, scores, [("masam", "late_fusion")], ["x", "y"], 100, 0, 0.95)
    assert c["verdict"] == "better" and c["n_seeds"] == 2 and c["training_variance_measured"]
    assert c["line"].startswith("masam vs late_fusion: better; macro AUPRC difference +")
    assert "2 seeds × 40 test stays (40 patients)" in c["line"]
    assert f"smallest detectable difference ≈ {c['macro_auprc']['mde']:.3f}" in c["line"]
    assert "training variance not measured" not in c["line"]
    assert [r["label"] for r in c["per_label"]] == ["x", "y"] and c["n_labels_tested"] == 2
    # per-label AUPRC differences: Holm over the two labels, significant when the adjusted p < 0.05
    assert [r["p_holm"] for r in c["per_label"]] == holm_adjust([r["p"] for r in c["per_label"]])
    assert [r["significant_holm"] for r in c["per_label"]] == [r["p_holm"] < 0.05 for r in c["per_label"]]


def test_a_one_seed_verdict_says_training_variance_is_not_measured():
    y, a, b, patients = _scores(40)
    runs = _runs([("late_fusion", 1, 0.4), ("masam", 1, 0.5), ("masam", 2, 0.5)])
    scores = [RunScores(y, b, patients), RunScores(y, a, patients), RunScores(y, a, patients)]
    [c] = compare_methods(runs, scores, [("masam", "late_fusion")], ["x", "y"], 100, 0, 0.95)
    assert c["seeds"] == [1] and not c["training_variance_measured"]
    assert "(this one seed only: training variance not measured)" in c["line"]
    assert "lower bound" in c["line"]


def test_runs_whose_test_rows_differ_are_refused_by_name():
    y, a, b, patients = _scores(10)
    runs = _runs([("late_fusion", 1, 0.4), ("masam", 1, 0.5)])
    with pytest.raises(ValueError, match="run masam-s1: its test predictions do not cover the same rows"):
        compare_methods(runs, [RunScores(y, b, patients), RunScores(y, a, patients[::-1])],
                        [("masam", "late_fusion")], ["x", "y"], 10, 0, 0.95)


def test_the_champions_validation_margin_is_within_noise_when_its_interval_includes_zero():
    y, a, b, patients = _scores(40)
    runs = _runs([("late_fusion", 1, 0.40), ("masam", 1, 0.41)])
    tied = champion_margin(runs, [RunScores(y, a, patients), RunScores(y, a, patients)], 100, 0, 0.95)
    assert tied["champion"]["method"] == "masam" and tied["runner_up"]["method"] == "late_fusion"
    assert tied["within_noise"] and tied["ci"] == [0.0, 0.0]
    clear = champion_margin(runs, [RunScores(y, b, patients), RunScores(y, b + 3 * y, patients)], 100, 0, 0.95)
    assert not clear["within_noise"] and clear["ci"][0] > 0
    assert champion_margin(runs[:1], [RunScores(y, a, patients)], 100, 0, 0.95) is None
    assert champion_margin(runs, None, 100, 0, 0.95) is None
