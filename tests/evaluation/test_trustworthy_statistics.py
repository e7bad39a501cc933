"""Small-sample honesty, the ADNI basics, calibration bins and operating points, on hand-checkable data."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import recall_score

from clinfuse.evaluation.bootstrap import (
    bootstrap_class_rates,
    bootstrap_label_cis,
    paired_bootstrap_difference,
    patient_weights,
    percentile_ci,
)
from clinfuse.evaluation.calibration import reliability_curve
from clinfuse.evaluation.comparison import mean_std_over_seeds
from clinfuse.evaluation.method_notes import method_note
from clinfuse.evaluation.metrics import confusion_matrix, multiclass_metrics, row_normalised
from clinfuse.evaluation.operating import choose_threshold, net_benefit, operating_points, rates_at_threshold
from clinfuse.evaluation.presence import presence_blocks
from clinfuse.evaluation.report import fmt_ci, fmt_std, metric_name
from clinfuse.evaluation.subgroups import subgroup_metrics


def _frame(sex, age):
    return pd.DataFrame({"patient_id": np.arange(len(sex)), "sex": sex, "age": age})


def test_a_subgroup_with_one_positive_is_too_small_and_has_no_ci():
    # 40 patients: men have exactly one death, women eight; one death ranked first would read 1.000 (1.000-1.000)
    n = 40
    sex = np.array(["M"] * 20 + ["F"] * 20)
    y = np.zeros((n, 1), int)
    y[0, 0] = 1
    y[20:28, 0] = 1
    s = np.linspace(0, 1, n)[:, None]
    s[0, 0] = 0.99  # the only male death has the highest score: AUROC 1.000 among men
    rec = subgroup_metrics(_frame(sex, np.full(n, 50.0)), y, s, ["death"], "mimic", [], n_resamples=50, seed=42, level=0.95,
                           min_patients=10, min_events=5)
    by = {(r["attribute"], r["group"]): r for r in rec}
    men, women = by[("sex", "M")], by[("sex", "F")]
    assert men["too_small"] and men["macro_auroc_ci"] is None and men["macro_auprc_ci"] is None
    assert men["macro_auroc"] == pytest.approx(1.0)  # shown (greyed), never with an interval
    assert men["too_small_reason"] == "1 positive, 19 negatives (< 5)"
    assert not women["too_small"] and women["macro_auroc_ci"][0] is not None


def test_the_too_small_rule_counts_negatives_too():
    n = 30
    y = np.ones((n, 1), int)
    y[:3, 0] = 0  # 27 positives, 3 negatives
    s = np.linspace(0, 1, n)[:, None]
    rec = subgroup_metrics(_frame(["F"] * n, np.full(n, 50.0)), y, s, ["x"], "mimic", [], n_resamples=20, seed=42, level=0.95,
                           min_patients=10, min_events=5)
    assert rec[0]["too_small"] and rec[0]["macro_auprc_ci"] is None


def test_a_multilabel_subgroup_averages_only_labels_with_enough_events():
    rng = np.random.default_rng(0)
    n = 60
    y = np.zeros((n, 2), int)
    y[rng.permutation(n)[:20], 0] = 1
    y[5, 1] = 1  # label b: a single positive
    s = rng.random((n, 2)) + 0.5 * y
    rec = subgroup_metrics(_frame(["F"] * n, np.full(n, 50.0)), y, s, ["a", "b"], "mimic", [], n_resamples=30, seed=42,
                           level=0.95, min_patients=10, min_events=5)
    r = rec[0]
    assert not r["too_small"] and r["labels_averaged"] == 1 and r["labels_left_out"] == ["b"]
    from sklearn.metrics import average_precision_score
    assert r["macro_auprc"] == pytest.approx(average_precision_score(y[:, 0], s[:, 0]))


def test_a_label_cell_with_too_few_events_gets_no_ci():
    y = np.zeros((50, 2), int)
    y[:20, 0] = 1
    y[:2, 1] = 1
    s = np.linspace(1, 0, 50)[:, None].repeat(2, axis=1)
    ci = bootstrap_label_cis(y, s, np.arange(50), ["common", "rare"], 100, seed=0, level=0.95, min_events=5)
    assert ci["per_label"]["rare"]["too_few_events"] and ci["per_label"]["rare"]["auroc_ci"] is None
    assert not ci["per_label"]["common"]["too_few_events"] and ci["per_label"]["common"]["auroc_ci"] is not None


def test_subgroups_use_the_resample_count_they_are_given():
    # no default of their own: the evaluation settings are the one source (the report states one number)
    import inspect
    for function in (subgroup_metrics, bootstrap_label_cis, presence_blocks, operating_points,
                     bootstrap_class_rates, paired_bootstrap_difference):
        for name in ("n_resamples", "seed", "level"):
            assert inspect.signature(function).parameters[name].default is inspect.Parameter.empty, (function, name)


def test_age_bands_sort_in_age_order():
    age = np.array([50, 70, 80, 90, 60, 72, 77, 88, 55, 66], float)
    rec = subgroup_metrics(_frame(["F"] * 10, age), np.eye(2, dtype=int)[np.arange(10) % 2],
                           np.random.default_rng(0).random((10, 2)), ["a", "b"], "adni", [], n_resamples=10, seed=42, level=0.95,
                           min_patients=10, min_events=5)
    bands = [r["group"] for r in rec if r["attribute"] == "age band"]
    assert bands == ["<65", "65-74", "75-84", "85+"]


def test_one_seed_shows_n_a_not_a_zero_std():
    t = pd.DataFrame({"method": ["a", "a", "b"], "seed": [1, 2, 1], "x": [0.5, 0.7, 0.4]})
    s = mean_std_over_seeds(t, ["x"]).set_index("method")
    assert np.isnan(s.loc["b", "x_std"])
    assert fmt_std(None, 1) == "n/a (1 seed)"
    assert fmt_std(s.loc["a", "x_std"], 2) == "0.141"


def test_intervals_read_as_words_with_true_minus_signs():
    assert fmt_ci(-0.0075, [-0.011, -0.004]) == "\u22120.007 (\u22120.011 to \u22120.004)"
    assert fmt_ci(0.41, [0.38, 0.44]) == "0.410 (0.380 to 0.440)"
    assert fmt_ci(0.41, None) == "0.410"
    assert fmt_ci(-0.0001, [-0.0004, 0.0002]) == "0.000 (0.000 to 0.000)"  # never "-0.000"


def test_multiclass_map_and_auprc_have_one_name():
    assert metric_name("macro_map") == metric_name("macro_auprc") == metric_name("val_macro_map") == "macro AUPRC"


def test_confusion_matrix_and_class_rates_match_sklearn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 90)
    p = rng.dirichlet([1, 1, 1], 90)
    p[np.arange(90), y] += 0.4
    pred = p.argmax(1)
    cm = confusion_matrix(y, pred, 3)
    assert (cm == sk_confusion_matrix(y, pred, labels=[0, 1, 2])).all()
    assert np.allclose(row_normalised(cm), sk_confusion_matrix(y, pred, labels=[0, 1, 2], normalize="true"))
    assert multiclass_metrics(y, p, ["CN", "MCI", "AD"])["confusion_matrix"] == cm.tolist()
    rates = bootstrap_class_rates(y, pred, np.arange(90) // 2, ["CN", "MCI", "AD"], 200, seed=0, level=0.95)
    sens = recall_score(y, pred, average=None, labels=[0, 1, 2])
    for c, name in enumerate(["CN", "MCI", "AD"]):
        r = rates["per_class"][name]
        specificity = recall_score(y != c, pred != c)  # one-vs-rest: recall of "not c"
        assert r["sensitivity"]["value"] == pytest.approx(sens[c])
        assert r["specificity"]["value"] == pytest.approx(specificity)
        lo, hi = r["sensitivity"]["ci"]
        assert lo <= sens[c] <= hi
    assert rates["accuracy"]["value"] == pytest.approx(np.mean(pred == y))


def test_quantile_calibration_bins_hold_equal_counts():
    rng = np.random.default_rng(1)
    p = rng.beta(0.5, 8, 1003)  # a rare outcome: most risks near 0
    y = (rng.random(1003) < p).astype(int)
    bins = reliability_curve(y, p, n_bins=10)
    counts = [b["count"] for b in bins]
    assert len(bins) == 10 and sum(counts) == 1003 and max(counts) - min(counts) <= 1
    assert all(b["lower"] <= b["mean_predicted"] <= b["upper"] for b in bins)
    uniform = reliability_curve(y, p, n_bins=10, strategy="uniform")
    assert max(b["count"] for b in uniform) > 500  # what quantile bins avoid


def test_quantile_bins_on_a_hand_made_case():
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    y = np.array([0, 0, 1, 0, 1, 1])
    bins = reliability_curve(y, p, n_bins=3)
    assert [(b["count"], b["mean_predicted"], b["observed"]) for b in bins] == [
        (2, pytest.approx(0.15), 0.0), (2, pytest.approx(0.35), 0.5), (2, pytest.approx(0.55), 1.0)]


def test_operating_threshold_is_taken_from_validation_not_test():
    # validation: Youden's J is maximal at 0.6; on the test split alone it would be 0.3
    y_val = np.array([0, 0, 0, 1, 1, 1])
    p_val = np.array([0.1, 0.2, 0.5, 0.6, 0.7, 0.9])
    y_test = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    p_test = np.array([0.05, 0.1, 0.2, 0.25, 0.65, 0.3, 0.4, 0.5, 0.7, 0.8])
    assert choose_threshold(y_val, p_val) == 0.6
    assert choose_threshold(y_test, p_test) == 0.3
    op = operating_points(y_val, p_val, y_test, p_test, np.arange(10), ["death"], "youden", 0.8, n_resamples=50, seed=42,
                          level=0.95, min_events=1)
    r = op["per_label"]["death"]
    assert r["threshold"] == 0.6
    # at 0.6 on test: TP 2 (0.7, 0.8), FN 3, FP 1 (0.65), TN 4
    assert r["sensitivity"]["value"] == pytest.approx(2 / 5) and r["specificity"]["value"] == pytest.approx(4 / 5)
    assert r["ppv"]["value"] == pytest.approx(2 / 3) and r["npv"]["value"] == pytest.approx(4 / 7)
    assert op["rule"] == "youden"


def test_target_sensitivity_rule_keeps_the_highest_threshold_reaching_the_target():
    y = np.array([0, 1, 0, 1, 1, 0, 1])
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8])
    # sensitivity at 0.4 is 3/4, at 0.2 it is 4/4
    assert choose_threshold(y, p, "target_sensitivity", 0.75) == 0.4
    assert choose_threshold(y, p, "target_sensitivity", 0.9) == 0.2


def test_operating_points_with_too_few_test_events_have_no_ci():
    y_val = np.array([0, 1, 0, 1])
    p_val = np.array([0.2, 0.8, 0.3, 0.7])
    y_test = np.array([0, 0, 0, 0, 0, 0, 1])
    p_test = np.linspace(0, 1, 7)
    r = operating_points(y_val, p_val, y_test, p_test, np.arange(7), ["x"], "youden", 0.8, n_resamples=20, seed=42,
                         level=0.95, min_events=5)["per_label"]["x"]
    assert r["too_few_events"] and r["sensitivity"]["ci"] is None and r["sensitivity"]["value"] == 1.0


def test_a_probability_equal_to_the_threshold_is_called_positive():
    # the rule is p >= threshold: at 0.6 the two 0.6 rows are called, so TP 1, FP 1, FN 1, TN 1
    y, p = np.array([1, 0, 1, 0]), np.array([0.6, 0.6, 0.2, 0.1])
    rates = rates_at_threshold(y, p, 0.6, np.ones((1, 4)))
    assert {k: float(v[0]) for k, v in rates.items()} == {"sensitivity": 0.5, "specificity": 0.5, "ppv": 0.5,
                                                         "npv": 0.5}
    # validation: only 0.6 separates the classes when a score equal to it counts as positive
    assert choose_threshold(np.array([0, 1]), np.array([0.1, 0.6])) == 0.6


def test_the_target_sensitivity_rule_aims_at_0_8_by_default():
    y = np.array([1, 1, 1, 1, 1, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.2, 0.1])
    # four of the five positives (sensitivity 0.8) are reached at 0.6
    assert choose_threshold(y, p, "target_sensitivity") == 0.6


def test_an_unknown_operating_point_rule_is_named():
    with pytest.raises(ValueError, match="operating-point rule 'best': expected one of youden, target_sensitivity"):
        choose_threshold(np.array([0, 1]), np.array([0.1, 0.6]), "best")


def test_operating_point_cis_are_percentiles_of_the_patient_bootstrap_rates():
    y_val, p_val = np.array([0, 0, 1, 1]), np.array([0.1, 0.3, 0.5, 0.9])
    y_test = np.array([1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0])
    p_test = np.array([0.9, 0.2, 0.4, 0.6, 0.8, 0.1, 0.3, 0.7, 0.95, 0.05, 0.55, 0.45])
    patients = np.repeat(np.arange(6), 2)  # two rows per patient: the bootstrap draws patients
    op = operating_points(y_val, p_val, y_test, p_test, patients, ["x"], "target_sensitivity", 0.75,
                          n_resamples=40, seed=3, level=0.9, min_events=2)
    r = op["per_label"]["x"]
    assert r["threshold"] == 0.5 and r["n_pos"] == 6 and not r["too_few_events"]
    assert op["target"] == 0.75 and op["n_resamples"] == 40 and op["min_events"] == 2
    # at 0.5 on test: positives 0.9, 0.8, 0.95, 0.55 called (TP 4 of 6), negatives 0.6, 0.7 called (FP 2 of 6)
    assert r["sensitivity"]["value"] == pytest.approx(4 / 6) and r["specificity"]["value"] == pytest.approx(4 / 6)
    # the intervals: 60 patients with two stays each, so that resamples (and their quantiles) differ by seed
    rng = np.random.default_rng(0)
    y_big = (rng.random(120) < 0.4).astype(int)
    p_big, patients_big = rng.random(120) * 0.6 + 0.4 * y_big, np.repeat(np.arange(60), 2)
    big = operating_points(y_val, p_val, y_big, p_big, patients_big, ["x"], "target_sensitivity", 0.75,
                           n_resamples=40, seed=3, level=0.9, min_events=2)["per_label"]["x"]
    resampled = rates_at_threshold(y_big, p_big, 0.5, patient_weights(patients_big, 40, 3))
    for metric in ("sensitivity", "specificity", "ppv", "npv"):
        lo, hi, _ = percentile_ci(resampled[metric], 0.9)
        assert big[metric]["ci"] == [pytest.approx(lo), pytest.approx(hi)], metric
    other_seed = rates_at_threshold(y_big, p_big, 0.5, patient_weights(patients_big, 40, 4))["sensitivity"]
    assert percentile_ci(other_seed, 0.9)[:2] != percentile_ci(resampled["sensitivity"], 0.9)[:2]
    youden = operating_points(y_val, p_val, y_test, p_test, patients, ["x"], "youden", 0.5, n_resamples=40, seed=3,
                              level=0.9, min_events=2)
    assert youden["target"] is None and youden["rule"] == "youden"


def test_youden_weighs_sensitivity_and_specificity_each_over_its_own_class():
    # J at 0.9: 1/2 + 1 - 1 = 0.5; at 0.8: 1/2 + 0 - 1; at 0.1: 1 + 0 - 1 = 0 -> 0.9, not the full-sensitivity 0.1
    assert choose_threshold(np.array([1, 0, 1]), np.array([0.9, 0.8, 0.1])) == 0.9
    # 2 positives, 4 negatives: J at 0.8 = 1/2 + 3/4 - 1 = 0.25, at 0.4 = 1 + 2/4 - 1 = 0.5 -> 0.4
    assert choose_threshold(np.array([1, 1, 0, 0, 0, 0]), np.array([0.8, 0.4, 0.9, 0.6, 0.3, 0.2])) == 0.4


def test_operating_points_pick_a_threshold_per_label_with_the_given_target():
    # label a: positives 0.9, 0.5 -> sensitivity 1/2 at 0.9 reaches the target 0.5; label b: every score a
    y_val = np.array([[0, 0], [0, 1], [1, 1], [1, 0]])
    p_val = np.array([[0.1, 0.1], [0.3, 0.3], [0.5, 0.5], [0.9, 0.9]])
    op = operating_points(y_val, p_val, y_val, p_val, np.arange(4), ["a", "b"], "target_sensitivity", 0.5,
                          n_resamples=10, seed=0, level=0.95, min_events=1)
    assert op["per_label"]["a"]["threshold"] == 0.9  # 0.8 by default would need both positives: 0.5
    assert op["per_label"]["b"]["threshold"] == 0.5  # positives 0.3 and 0.5: one of two at 0.5
    assert op["per_label"]["b"]["n_pos"] == 2


def test_a_rate_is_the_data_s_own_even_when_the_first_resample_calls_nobody_negative():
    # at 0.5 rows 0 and 3 are called negative (NPV 1/2); seed 6's first resample draws only rows 1 and 2
    assert patient_weights(np.arange(4), 5, 6)[0].tolist() == [0.0, 2.0, 2.0, 0.0]
    r = operating_points(np.array([0, 1]), np.array([0.1, 0.5]), np.array([1, 0, 1, 0]),
                         np.array([0.2, 0.9, 0.8, 0.1]), np.arange(4), ["x"], "youden", 0.8, n_resamples=5, seed=6,
                         level=0.95, min_events=1)["per_label"]["x"]
    assert r["threshold"] == 0.5 and r["npv"]["value"] == 0.5


def test_an_undefined_rate_is_none_without_a_warning():
    # a threshold above every test score calls nobody: PPV is 0 / 0, reported as None, silently
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = operating_points(np.array([0, 1]), np.array([0.1, 0.99]), np.array([0, 1, 0, 1]),
                             np.array([0.1, 0.2, 0.3, 0.4]), np.arange(4), ["x"], "youden", 0.8, n_resamples=10,
                             seed=0, level=0.95, min_events=1)["per_label"]["x"]
    assert r["ppv"]["value"] is None and r["sensitivity"]["value"] == 0.0 and r["npv"]["value"] == 0.5


def test_net_benefit_by_hand():
    y = np.array([1, 0, 0, 0])
    p = np.array([0.9, 0.6, 0.2, 0.1])
    nb = net_benefit(y, p, np.array([0.5]))
    # at pt 0.5: TP 1/4, FP 1/4, odds 1 -> 0; treat all: 1/4 - 3/4 = -0.5
    assert nb["model"] == [pytest.approx(0.0)] and nb["treat_all"] == [pytest.approx(-0.5)]
    # at pt 0.6 the 0.6 score is treated (p >= pt): TP 1/4, FP 1/4, odds 1.5 -> 1/4 - 3/8
    assert net_benefit(y, p, np.array([0.6]))["model"] == [pytest.approx(-0.125)]
    # two thresholds, 2 positives of 5: at 0.2 TP 2/5, FP 2/5, odds 1/4 -> 0.3; at 0.5 TP 2/5, FP 1/5, odds 1 -> 0.2;
    # treat all: 0.4 - 0.6 * odds
    nb = net_benefit(np.array([1, 1, 0, 0, 0]), np.array([0.9, 0.7, 0.6, 0.2, 0.1]), np.array([0.2, 0.5]))
    assert nb == {"threshold": [0.2, 0.5], "model": [pytest.approx(0.3), pytest.approx(0.2)],
                  "treat_all": [pytest.approx(0.25), pytest.approx(-0.2)]}
    # at pt 0 everyone is treated: NB = prevalence; a threshold given as an integer comes back as a float
    at_zero = net_benefit(np.array([1, 0, 0, 0]), np.array([0.9, 0.6, 0.2, 0.1]), np.array([0]))
    assert at_zero == {"threshold": [0.0], "model": [0.25], "treat_all": [0.25]}
    assert isinstance(at_zero["threshold"][0], float)


def test_paired_difference_reports_each_label():
    rng = np.random.default_rng(2)
    y = (rng.random((80, 2)) < 0.4).astype(int)
    a = rng.random((80, 2)) + y
    b = rng.random((80, 2))
    d = paired_bootstrap_difference(y, a, b, np.arange(80), 100, seed=0, level=0.95)
    assert len(d["per_label"]) == 2
    from sklearn.metrics import average_precision_score, roc_auc_score
    for k in range(2):
        assert d["per_label"][k]["auprc"]["difference"] == pytest.approx(
            average_precision_score(y[:, k], a[:, k]) - average_precision_score(y[:, k], b[:, k]))
        assert d["per_label"][k]["auroc"]["difference"] == pytest.approx(
            roc_auc_score(y[:, k], a[:, k]) - roc_auc_score(y[:, k], b[:, k]))
        lo, hi = d["per_label"][k]["auprc"]["ci"]
        assert lo <= d["per_label"][k]["auprc"]["difference"] <= hi and lo > 0  # a is clearly better


def test_every_method_gets_a_sentence_and_unknown_names_do_not_crash():
    for name in ("late_fusion", "unimodal", "sam", "masam", "igm", "ogm_ge", "agm", "gblend", "pmr", "inforeg",
                 "mla", "mmpareto", "aug", "medfuse", "drfuse"):
        note = method_note(name)
        assert note["description"] and note["reference"] != "—", name
    assert "ablation" in method_note("masam_no_aps")["description"]
    assert "variant" in method_note("ogm_ge_alpha_high")["description"]
    assert method_note("my_new_method")["reference"] == "—"


def test_registry_description_names_metric_and_split_to_three_decimals():
    from clinfuse.pipeline.registry import _card_summary

    card = {"task": "diagnosis", "training": {"method": "masam", "seed": 42},
            "evaluation": {"split": "test", "headline": {"macro_map": 0.70512345678901234},
                           "macro_auprc_ci": [0.6349, 0.7971], "validation": {"value": 0.74012345}}}
    assert _card_summary(card) == ("diagnosis: masam (seed 42); test macro AUPRC 0.705 (95% CI 0.635 to 0.797); "
                                   "validation macro AUPRC 0.740 (selects the champion)")


def test_risk_histogram_spans_the_predicted_range_and_counts_every_prediction():
    from clinfuse.evaluation.calibration import risk_histogram

    h = risk_histogram(np.array([0.01, 0.02, 0.05, 0.11, 0.29]), n_bins=6)
    assert h["edges"][0] == 0 and h["edges"][-1] == pytest.approx(0.3) and sum(h["counts"]) == 5
    assert h["counts"] == [2, 1, 1, 0, 0, 1]  # bins [0, 0.05), [0.05, 0.1), ... ; 0.3 in the last


def test_class_rates_record_the_positives_and_the_bootstrap_that_made_their_intervals():
    # 4 patients, classes CN/MCI/AD: truth 0, 1, 1, 2; predictions read back as floats (a parquet column)
    rates = bootstrap_class_rates(np.array([0, 1, 1, 2]), np.array([0.0, 1.0, 2.0, 2.0]), np.arange(4),
                                  ["CN", "MCI", "AD"], n_resamples=20, seed=5, level=0.9)
    assert {c: r["n_pos"] for c, r in rates["per_class"].items()} == {"CN": 1, "MCI": 2, "AD": 1}
    assert (rates["n_resamples"], rates["seed"], rates["level"]) == (20, 5, 0.9)
    assert rates["accuracy"]["value"] == 0.75  # 3 of 4 called right
    assert rates["per_class"]["MCI"]["sensitivity"]["value"] == 0.5  # one of the two MCI called AD
    assert rates["per_class"]["AD"]["specificity"]["value"] == 2 / 3  # the MCI called AD is AD's one false positive


def test_class_rate_intervals_are_quantiles_of_the_patient_resamples_and_an_absent_class_has_no_value():
    from clinfuse.evaluation.bootstrap import patient_weights

    y = np.array([0, 0, 1, 1, 0, 1, 0, 0])
    pred = np.array([0, 1, 1, 0, 0, 1, 0, 1])
    patients = np.array([1, 1, 2, 3, 4, 5, 6, 7])  # patient 1 has two stays: resampled together
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a class nobody has: 0 / 0 is expected, and silent
        rates = bootstrap_class_rates(y.astype(float), pred, patients, ["no", "yes", "never"],
                                      n_resamples=50, seed=11, level=0.8)
    w = patient_weights(patients, 50, 11)  # [R, N]: how often each row is drawn in each resample
    accuracy = (w @ (y == pred)) / w.sum(axis=1)
    assert rates["accuracy"]["value"] == 5 / 8
    assert rates["accuracy"]["ci"] == pytest.approx([np.quantile(accuracy, 0.1), np.quantile(accuracy, 0.9)])
    never = rates["per_class"]["never"]
    assert never["n_pos"] == 0 and never["sensitivity"]["value"] is None and never["sensitivity"]["ci"] == [None, None]
    assert never["specificity"]["value"] == 1.0  # nobody was called "never"


def test_a_class_rate_is_the_data_s_own_even_when_the_first_resample_misses_the_class():
    from clinfuse.evaluation.bootstrap import patient_weights

    # class "yes" belongs to one patient; find a seed whose first resample does not draw them
    y, pred, patients = np.array([0, 0, 0, 0, 1]), np.array([0, 0, 1, 0, 1]), np.arange(5)
    seed = next(s for s in range(100) if patient_weights(patients, 20, s)[0, 4] == 0)
    rates = bootstrap_class_rates(y, pred, patients, ["no", "yes"], n_resamples=20, seed=seed, level=0.9)
    assert rates["per_class"]["yes"]["sensitivity"]["value"] == 1.0  # the one "yes" was called "yes"


def test_row_normalised_rates_leave_an_empty_row_undefined_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rates = row_normalised(np.array([[2, 2], [0, 0], [1, 0]]))
    assert rates[0].tolist() == [0.5, 0.5] and rates[2].tolist() == [1.0, 0.0]  # a class of one patient
    assert np.isnan(rates[1]).all()
