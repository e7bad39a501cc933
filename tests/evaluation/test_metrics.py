"""Every metric against scikit-learn on fixed data; the degenerate-label rule; bootstrap and calibration."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, average_precision_score, brier_score_loss, roc_auc_score

from clinfuse.evaluation.bootstrap import (
    bootstrap_label_cis,
    paired_bootstrap_difference,
    patient_weights,
    weighted_auroc_auprc,
)
from clinfuse.evaluation.calibration import brier, calibration_slope_intercept, reliability_curve
from clinfuse.evaluation.comparison import average_rank, mean_std_over_seeds
from clinfuse.evaluation.metrics import (
    binary_metrics,
    multiclass_metrics,
    multilabel_metrics,
    task_metrics,
    too_few_events,
)

RNG = np.random.default_rng(7)
Y = (RNG.random((60, 3)) < [0.3, 0.5, 0.2]).astype(int)
S = np.round(RNG.random((60, 3)) * 0.7 + 0.3 * Y, 3)


def test_per_label_macro_and_micro_match_sklearn():
    m = multilabel_metrics(Y, S, ["a", "b", "c"])
    for k, name in enumerate("abc"):
        assert m["per_label"][name]["auprc"] == pytest.approx(average_precision_score(Y[:, k], S[:, k]))
        assert m["per_label"][name]["auroc"] == pytest.approx(roc_auc_score(Y[:, k], S[:, k]))
    assert m["macro_auprc"] == pytest.approx(average_precision_score(Y, S, average="macro"))
    assert m["macro_auroc"] == pytest.approx(roc_auc_score(Y, S, average="macro"))
    assert m["micro_auprc"] == pytest.approx(average_precision_score(Y, S, average="micro"))
    assert m["micro_auroc"] == pytest.approx(roc_auc_score(Y, S, average="micro"))


def test_degenerate_label_is_excluded_from_macro_and_named():
    y = Y.copy()
    y[:, 2] = 0  # no positives
    m = multilabel_metrics(y, S, ["a", "b", "c"])
    assert m["excluded_labels"] == ["c"]
    assert m["per_label"]["c"]["auprc"] is None
    assert m["macro_auprc"] == pytest.approx(np.mean([average_precision_score(y[:, k], S[:, k]) for k in (0, 1)]))


def test_multiclass_accuracy_and_macro_map_match_sklearn():
    y = RNG.integers(0, 3, 50)
    p = RNG.dirichlet([1, 1, 1], 50)
    p[np.arange(50), y] += 0.3
    p /= p.sum(1, keepdims=True)
    m = multiclass_metrics(y, p, ["CN", "MCI", "AD"])
    onehot = np.eye(3)[y]
    assert m["accuracy"] == pytest.approx(accuracy_score(y, p.argmax(1)))
    assert m["macro_map"] == pytest.approx(average_precision_score(onehot, p, average="macro"))
    assert m["macro_auroc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))


def test_brier_matches_sklearn():
    assert brier(Y[:, 0], S[:, 0]) == pytest.approx(brier_score_loss(Y[:, 0], S[:, 0]))


def test_vectorised_bootstrap_equals_sklearn_with_weights():
    w = patient_weights(np.arange(60) // 3, 20, seed=1)
    auroc, auprc = weighted_auroc_auprc(Y[:, 1], S[:, 1], w)
    for r in range(20):
        assert auroc[r] == pytest.approx(roc_auc_score(Y[:, 1], S[:, 1], sample_weight=w[r]))
        assert auprc[r] == pytest.approx(average_precision_score(Y[:, 1], S[:, 1], sample_weight=w[r]))


def test_patients_are_the_resampling_unit():
    patients = np.repeat(np.arange(20), 3)
    w = patient_weights(patients, 50, seed=0)
    # rows of one patient always carry the same weight, and each resample draws 20 patients
    assert (w.reshape(50, 20, 3).std(axis=2) == 0).all()
    assert (w.reshape(50, 20, 3)[:, :, 0].sum(1) == 20).all()


def test_bootstrap_ci_contains_estimate_and_is_seeded():
    a = bootstrap_label_cis(Y, S, np.arange(60), ["a", "b", "c"], 300, seed=3, level=0.95, min_events=5)
    b = bootstrap_label_cis(Y, S, np.arange(60), ["a", "b", "c"], 300, seed=3, level=0.95, min_events=5)
    assert a == b
    lo, hi = a["per_label"]["b"]["auroc_ci"]
    assert lo <= roc_auc_score(Y[:, 1], S[:, 1]) <= hi


def test_paired_difference_of_identical_predictions_is_zero():
    d = paired_bootstrap_difference(Y, S, S, np.arange(60), 100, seed=1, level=0.95)
    assert d["macro_auprc"]["difference"] == 0 and d["macro_auprc"]["ci"] == [0.0, 0.0]


def test_calibration_slope_one_when_calibrated_and_below_one_when_overconfident():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.02, 0.98, 20000)
    y = (rng.random(20000) < p).astype(int)
    slope, intercept = calibration_slope_intercept(y, p)
    assert slope == pytest.approx(1.0, abs=0.06) and intercept == pytest.approx(0.0, abs=0.06)
    logit = np.log(p / (1 - p))
    overconfident = 1 / (1 + np.exp(-3 * logit))
    assert calibration_slope_intercept(y, overconfident)[0] < 0.5
    bins = reliability_curve(y, p, 10)
    assert sum(b["count"] for b in bins) == 20000 and all(abs(b["observed"] - b["mean_predicted"]) < 0.05 for b in bins)


def test_average_rank_on_a_hand_made_table():
    import pandas as pd

    rows = [("A", "l1", 0.9), ("B", "l1", 0.8), ("C", "l1", 0.7),
            ("A", "l2", 0.5), ("B", "l2", 0.6), ("C", "l2", 0.6),
            ("A", "l3", 0.1), ("B", "l3", 0.3), ("C", "l3", 0.2)]
    t = pd.DataFrame(rows, columns=["method", "label", "auprc"])
    r = average_rank(t, "auprc")
    assert r["A"] == pytest.approx((1 + 3 + 3) / 3)
    assert r["B"] == pytest.approx((2 + 1.5 + 1) / 3)
    assert r["C"] == pytest.approx((3 + 1.5 + 2) / 3)


def test_mean_std_over_seeds():
    import pandas as pd

    t = pd.DataFrame({"method": ["a", "a", "b"], "seed": [1, 2, 1], "x": [0.5, 0.7, 0.4]})
    s = mean_std_over_seeds(t, ["x"]).set_index("method")
    assert s.loc["a", "x_mean"] == pytest.approx(0.6) and s.loc["a", "x_std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert s.loc["b", "n_seeds"] == 1


def test_mean_std_over_seeds_keeps_the_methods_in_the_order_of_their_runs():
    import pandas as pd

    t = pd.DataFrame({"method": ["sam", "late_fusion", "sam"], "seed": [1, 1, 2], "x": [0.5, 0.4, 0.7]})
    assert mean_std_over_seeds(t, ["x"])["method"].tolist() == ["sam", "late_fusion"]


def test_without_a_label_every_method_has_a_value_for_the_ranking_is_empty_and_numeric():
    import pandas as pd

    t = pd.DataFrame([("A", "l1", 0.9), ("B", "l1", None)], columns=["method", "label", "auprc"])
    r = average_rank(t, "auprc")
    assert r.empty and r.dtype == float


def test_a_design_alternative_without_a_headline_has_no_difference():
    from clinfuse.evaluation.comparison import design_alternatives

    rows = [{"method": "masam", "headline_mean": 0.5}, {"method": "masam_score_ogm", "headline_mean": None},
            {"method": "masam_gamma_only", "headline_mean": 0.4}]
    assert [r["delta"] for r in design_alternatives(rows)] == [0.0, None, pytest.approx(-0.1)]
    rows[0]["headline_mean"] = None  # no reference value: no difference for anyone
    assert [r["delta"] for r in design_alternatives(rows)] == [None, None, None]


def test_an_empty_split_has_no_metrics_rather_than_nan():
    m = multiclass_metrics(np.array([], dtype=int), np.zeros((0, 3)), ["CN", "MCI", "AD"])
    assert m["accuracy"] is None and m["macro_map"] is None and m["n"] == 0
    assert m["excluded_labels"] == ["CN", "MCI", "AD"] and m["per_class"]["AD"]["auprc"] is None


def test_weighted_scores_match_sklearn_down_to_one_positive_and_one_negative():
    y = np.array([1, 0, 1, 0, 1])
    s = np.array([0.9, 0.8, 0.3, 0.4, 0.1])  # the lowest score is a positive
    w = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [0, 2, 1, 0, 0], [1, 0, 1, 0, 1], [0, 1, 0, 1, 0]], float)
    auroc, auprc = weighted_auroc_auprc(y, s, w)
    for r in range(3):  # scorable: both classes present (row 1: one positive, one negative, weight 1 each)
        assert auroc[r] == pytest.approx(roc_auc_score(y, s, sample_weight=w[r]))
        assert auprc[r] == pytest.approx(average_precision_score(y, s, sample_weight=w[r]))
    assert np.isnan(auroc[3:]).all() and np.isnan(auprc[3:]).all()  # no negatives / no positives


def test_binary_metrics_report_prevalence_positives_negatives_and_size():
    m = binary_metrics(np.array([1, 0, 0, 1, 0]), np.array([0.9, 0.2, 0.4, 0.3, 0.1]))
    assert {k: m[k] for k in ("prevalence", "n_pos", "n_neg", "n")} == {"prevalence": 0.4, "n_pos": 2, "n_neg": 3, "n": 5}
    assert binary_metrics(np.array([]), np.array([]))["prevalence"] is None


def test_task_metrics_name_the_headline_and_count_rows():
    y = np.array([[1, 0], [0, 1], [1, 1]])
    s = np.array([[0.8, 0.1], [0.3, 0.7], [0.6, 0.9]])
    m = task_metrics("multilabel", y, s, ["a", "b"])
    assert m["headline"] == "macro_auprc" and m["n"] == 3
    b = task_metrics("binary", y[:, 0], s[:, 0], ["a"])
    assert b["headline"] == "macro_auprc" and b["n"] == 3 and b["per_label"]["a"]["n_pos"] == 2
    c = task_metrics("multiclass", np.array([0, 1, 2, 1]), np.eye(3)[[0, 1, 2, 0]] * 0.8 + 0.05, ["x", "y", "z"])
    assert c["headline"] == "macro_map"


def test_no_scorable_label_gives_no_macro_average():
    m = multilabel_metrics(np.zeros((4, 2), int), np.full((4, 2), 0.5), ["a", "b"])
    assert m["macro_auprc"] is None and m["macro_auroc"] is None and m["excluded_labels"] == ["a", "b"]


def test_patient_weights_of_an_empty_split_are_an_empty_table_per_resample():
    w = patient_weights(np.array([], dtype=int), 4, seed=0)
    assert w.shape == (4, 0)


def test_too_few_events_means_fewer_than_min_events_positives_or_negatives():
    # exactly min_events of each is enough; one short on either side is too few
    assert not too_few_events(n_pos=5, n=10, min_events=5)
    assert too_few_events(n_pos=4, n=10, min_events=5)
    assert too_few_events(n_pos=6, n=10, min_events=5)  # 4 negatives
    assert not too_few_events(n_pos=0, n=0, min_events=0)


def test_the_confusion_matrix_counts_class_indices_read_back_as_floats():
    # predictions and labels come back from parquet as floats; row = truth, column = prediction
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix

    from clinfuse.evaluation.metrics import confusion_matrix

    y_true, y_pred = np.array([0.0, 1.0, 2.0, 2.0]), np.array([0.0, 2.0, 2.0, 1.0])
    got = confusion_matrix(y_true, y_pred, 3)
    assert got.tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 1]]
    assert got.tolist() == sk_confusion_matrix(y_true.astype(int), y_pred.astype(int), labels=[0, 1, 2]).tolist()
