"""Bootstrap CIs recomputed independently: resample patients with numpy, score each resample with
scikit-learn on the repeated rows, take numpy's 2.5 % and 97.5 % quantiles.

Model A sees the labels, model B mostly noise, so A strictly beats B: the paired difference
(A - B) must be positive, with the sign, the 95 % endpoints and the one-sided p-value equal
to the ones computed here.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from clinfuse.evaluation.bootstrap import bootstrap_label_cis, paired_bootstrap_difference

R, SEED, LEVEL = 100, 11, 0.95  # 100 valid resamples: the least bootstrap_label_cis reports a CI for
PATIENTS = np.repeat(np.arange(100, 120), 2)  # 20 patients, 2 rows each
_rng = np.random.default_rng(5)
Y = (_rng.random((40, 2)) < [0.4, 0.5]).astype(int)
A = np.round(0.55 * Y + 0.45 * _rng.random((40, 2)), 2)  # informative, with ties
B = np.round(0.15 * Y + 0.85 * _rng.random((40, 2)), 2)


def resample_rows():
    """Per resample, the row indices of the drawn patients (a patient drawn twice counts twice)."""
    ids, inverse = np.unique(PATIENTS, return_inverse=True)
    rows_of = [np.flatnonzero(inverse == p) for p in range(len(ids))]
    draws = np.random.default_rng(SEED).integers(0, len(ids), size=(R, len(ids)))
    return [np.concatenate([rows_of[p] for p in draw]) for draw in draws]


def sklearn_scores(score):
    """`[R, K]` AUROC and AUPRC of each resample (NaN where the label has one class)."""
    auroc, auprc = np.full((R, Y.shape[1]), np.nan), np.full((R, Y.shape[1]), np.nan)
    for r, rows in enumerate(resample_rows()):
        for k in range(Y.shape[1]):
            y, s = Y[rows, k], score[rows, k]
            if 0 < y.sum() < len(y):
                auroc[r, k], auprc[r, k] = roc_auc_score(y, s), average_precision_score(y, s)
    return auroc, auprc


def ci95(values):
    v = values[np.isfinite(values)]
    return list(np.quantile(v, [0.025, 0.975]))


@pytest.fixture(scope="module")
def resampled():
    return {"a": sklearn_scores(A), "b": sklearn_scores(B)}


def test_label_and_macro_cis_are_95_percent_quantiles_of_sklearn_resample_scores(resampled):
    auroc, auprc = resampled["a"]
    got = bootstrap_label_cis(Y, A, PATIENTS, ["x", "y"], R, SEED, LEVEL, min_events=5)
    for k, name in enumerate(["x", "y"]):
        assert got["per_label"][name]["auroc_ci"] == pytest.approx(ci95(auroc[:, k]), abs=1e-12)
        assert got["per_label"][name]["auprc_ci"] == pytest.approx(ci95(auprc[:, k]), abs=1e-12)
        assert got["per_label"][name]["n_valid_resamples"] == int(np.isfinite(auroc[:, k]).sum())
    assert got["macro_auroc_ci"] == pytest.approx(ci95(np.nanmean(auroc, axis=1)), abs=1e-12)
    assert got["macro_auprc_ci"] == pytest.approx(ci95(np.nanmean(auprc, axis=1)), abs=1e-12)
    assert got["level"] == 0.95


def test_paired_difference_is_a_minus_b_with_95_percent_endpoints_and_p_value(resampled):
    got = paired_bootstrap_difference(Y, A, B, PATIENTS, R, SEED, LEVEL)
    for metric, i, score in (("auroc", 0, roc_auc_score), ("auprc", 1, average_precision_score)):
        point = np.mean([score(Y[:, k], A[:, k]) - score(Y[:, k], B[:, k]) for k in range(2)])
        diff = np.nanmean(resampled["a"][i] - resampled["b"][i], axis=1)
        out = got[f"macro_{metric}"]
        assert out["difference"] == pytest.approx(point, abs=1e-12) and out["difference"] > 0
        assert out["ci"] == pytest.approx(ci95(diff), abs=1e-12)
        assert out["ci"][0] > 0  # A strictly beats B on every resample's tail
        assert out["p_le_zero"] == pytest.approx(float(np.mean(diff[np.isfinite(diff)] <= 0)))
        assert out["n_valid_resamples"] == int(np.isfinite(diff).sum())
        for k in range(2):  # each label's own difference and CI, over every resample
            per_label = got["per_label"][k][metric]
            label_diff = resampled["a"][i][:, k] - resampled["b"][i][:, k]
            assert per_label["difference"] == pytest.approx(score(Y[:, k], A[:, k]) - score(Y[:, k], B[:, k]),
                                                            abs=1e-12)
            assert per_label["ci"] == pytest.approx(ci95(label_diff), abs=1e-12)


def test_the_resample_count_seed_and_level_are_recorded_and_change_the_draws():
    cis = bootstrap_label_cis(Y, A, PATIENTS, ["x", "y"], 1000, 42, 0.95, min_events=5)
    assert (cis["n_resamples"], cis["seed"], cis["level"]) == (1000, 42, 0.95)
    paired = paired_bootstrap_difference(Y, A, B, PATIENTS, 1000, 42, 0.95)
    assert paired == paired_bootstrap_difference(Y, A, B, PATIENTS, 1000, 42, 0.95)
    assert paired != paired_bootstrap_difference(Y, A, B, PATIENTS, 1001, 42, 0.95)
    assert paired != paired_bootstrap_difference(Y, A, B, PATIENTS, 1000, 43, 0.95)


def test_paired_difference_without_any_scorable_label_is_none_not_nan():
    no_positives = np.zeros_like(Y)
    got = paired_bootstrap_difference(no_positives, A, B, PATIENTS, 20, SEED, LEVEL)
    for metric in ("macro_auroc", "macro_auprc"):
        assert got[metric] == {"difference": None, "ci": [None, None], "n_valid_resamples": 0, "p_le_zero": None}


def test_a_label_without_positives_has_no_paired_difference_and_a_rare_one_keeps_its_own():
    # label 0: nobody positive, so no AUROC/AUPRC for either model: the difference is None, not NaN.
    # label 1: positive for one patient whom the first resample does not draw: the point difference
    # exists (the data holds both classes) although the first resample cannot score it.
    first_draw = {int(PATIENTS[r]) for r in resample_rows()[0]}
    absent = next(p for p in np.unique(PATIENTS) if int(p) not in first_draw)
    y = np.zeros_like(Y)
    y[:, 1] = (PATIENTS == absent).astype(int)
    got = paired_bootstrap_difference(y, A, B, PATIENTS, R, SEED, LEVEL)
    for metric, score in (("auroc", roc_auc_score), ("auprc", average_precision_score)):
        assert got["per_label"][0][metric] == {"difference": None, "ci": [None, None]}
        expected = score(y[:, 1], A[:, 1]) - score(y[:, 1], B[:, 1])
        assert got["per_label"][1][metric]["difference"] == pytest.approx(expected, abs=1e-12)


def test_a_label_with_fewer_valid_resamples_than_min_valid_gets_no_ci():
    got = bootstrap_label_cis(Y, A, PATIENTS, ["x", "y"], 20, SEED, LEVEL, min_events=5)  # 20 valid resamples < min_valid 100
    assert got["per_label"]["x"] == {"auroc_ci": None, "auprc_ci": None, "n_valid_resamples": 20,
                                     "too_few_events": False}
    assert got["macro_auroc_ci"][0] is not None  # the macro CI has no such floor


def test_macro_ci_averages_only_the_labels_scorable_in_each_resample():
    # label 1 is positive for one patient only: about a third of the resamples miss it, and there
    # the macro average is label 0 alone (never label 1 counted as 0 or 1, never halved)
    y = Y.copy()
    y[:, 1] = np.isin(PATIENTS, [100]).astype(int)
    n = 50
    rows = resample_rows()[:n]  # the same draws: the first n of R resamples with the same seed
    auroc = np.full((n, 2), np.nan)
    for r, idx in enumerate(rows):
        for k in range(2):
            if 0 < y[idx, k].sum() < len(idx):
                auroc[r, k] = roc_auc_score(y[idx, k], A[idx, k])
    assert np.isnan(auroc[:, 1]).any() and np.isfinite(auroc[:, 1]).any()
    got = bootstrap_label_cis(y, A, PATIENTS, ["x", "y"], n, SEED, LEVEL, min_events=5)
    assert got["macro_auroc_ci"] == pytest.approx(ci95(np.nanmean(auroc, axis=1)), abs=1e-12)
    assert got["per_label"]["y"]["auroc_ci"] is None  # fewer than min_valid scorable resamples


def test_no_labels_give_no_macro_ci():
    got = bootstrap_label_cis(Y[:, :0], A[:, :0], PATIENTS, [], 10, SEED, LEVEL, min_events=5)
    assert got["per_label"] == {} and got["macro_auroc_ci"] == [None, None]
