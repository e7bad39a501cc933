"""Calibration summary against scikit-learn: Brier, the logistic recalibration fit, and the bins."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss

from clinfuse.evaluation.calibration import (
    CONSTANT,
    NOT_CONVERGED,
    SEPARATED,
    SINGLE_CLASS,
    calibration_slope_intercept,
    calibration_summary,
    recalibration_fit,
    reliability_curve,
    risk_histogram,
)

_rng = np.random.default_rng(3)
P = _rng.uniform(0.01, 0.99, (80, 3))  # no value on a bin edge
Y = (_rng.random((80, 3)) < P ** 1.5).astype(int)  # over-predicted risk: slope and intercept away from 1 and 0
Y[:, 2] = 0  # one label without positives: no recalibration fit, Brier still defined


def sklearn_recalibration(y, p):
    """(slope, intercept) of an unpenalised logistic regression of y on logit(p)."""
    logit = np.log(p / (1 - p)).reshape(-1, 1)
    fit = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(logit, y)
    return float(fit.coef_[0, 0]), float(fit.intercept_[0])


def test_per_label_brier_slope_and_intercept_match_sklearn():
    got = calibration_summary(Y, P, ["a", "b", "none"])["per_label"]
    for k, name in enumerate(["a", "b"]):
        slope, intercept = sklearn_recalibration(Y[:, k], P[:, k])
        assert got[name]["brier"] == pytest.approx(brier_score_loss(Y[:, k], P[:, k]), abs=1e-12)
        assert got[name]["slope"] == pytest.approx(slope, abs=1e-5)
        assert got[name]["intercept"] == pytest.approx(intercept, abs=1e-5)
    assert got["none"] == {"brier": pytest.approx(np.mean(P[:, 2] ** 2), abs=1e-12), "slope": None, "intercept": None,
                           "slope_note": "not estimable: one class only"}
    assert got["a"]["slope_note"] is None and got["b"]["slope_note"] is None


def test_pooled_calibration_stacks_every_label():
    pooled = calibration_summary(Y, P, ["a", "b", "none"])["pooled"]
    slope, intercept = sklearn_recalibration(Y.ravel(), P.ravel())
    assert pooled["brier"] == pytest.approx(brier_score_loss(Y.ravel(), P.ravel()), abs=1e-12)
    assert pooled["slope"] == pytest.approx(slope, abs=1e-5)
    assert pooled["intercept"] == pytest.approx(intercept, abs=1e-5)
    # the pooled curve uses quantile bins; the equal-width strategy is checked against numpy here
    assert pooled["reliability"] == reliability_curve(Y.ravel(), P.ravel(), 10)
    uniform = reliability_curve(Y.ravel(), P.ravel(), 10, strategy="uniform")
    # ten equal-width bins of predicted probability, empty ones left out
    edges = np.linspace(0, 1, 11)
    count, _ = np.histogram(P.ravel(), edges)
    total_p, _ = np.histogram(P.ravel(), edges, weights=P.ravel())
    positives, _ = np.histogram(P.ravel(), edges, weights=Y.ravel())
    bins = [b for b in range(10) if count[b]]
    assert [r["bin"] for r in uniform] == bins
    for r in uniform:
        b = r["bin"]
        assert (r["lower"], r["upper"]) == pytest.approx((b / 10, (b + 1) / 10))
        assert r["count"] == count[b]
        assert r["mean_predicted"] == pytest.approx(total_p[b] / count[b], abs=1e-12)
        assert r["observed"] == pytest.approx(positives[b] / count[b], abs=1e-12)


def test_one_newton_step_from_zero_is_the_weighted_least_squares_step():
    # at beta = 0 every mu is 1/2: H = X'X / 4, g = X'(y - 1/2), so beta_1 = 4 (X'X)^-1 X'(y - 1/2)
    y, p = Y[:, 0], P[:, 0]
    design = np.stack([np.ones(len(p)), np.log(p / (1 - p))], axis=1)
    intercept, slope = 4 * np.linalg.solve(design.T @ design, design.T @ (y - 0.5))
    got = calibration_slope_intercept(y, p, iterations=1)
    assert got == pytest.approx((slope, intercept), rel=1e-6)


def test_predictions_of_exactly_zero_and_one_are_clipped_to_a_finite_logit():
    y = np.array([0, 1, 1, 0, 1, 0, 0, 1, 1, 0])  # not separable: the fit has a finite optimum
    p = np.array([0.0, 0.2, 1.0, 0.7, 0.4, 0.6, 0.9, 0.5, 0.3, 0.1])
    q = np.clip(p, 1e-6, 1 - 1e-6)
    slope, intercept = sklearn_recalibration(y, q)
    got = calibration_slope_intercept(y, p)
    assert got == pytest.approx((slope, intercept), abs=1e-5)


def test_a_prediction_of_one_falls_in_the_last_bin():
    bins = reliability_curve(np.array([1, 0, 1]), np.array([1.0, 0.95, 0.05]), 10, strategy="uniform")
    assert [(b["bin"], b["count"]) for b in bins] == [(0, 1), (9, 2)]
    assert bins[1]["mean_predicted"] == pytest.approx(0.975) and bins[1]["observed"] == 0.5


def test_perfectly_separated_classes_have_no_slope_and_say_why():
    # every positive's risk is above every negative's: the likelihood rises without bound in the slope
    # (the unguarded Newton solver stopped at slope 21 after its 50 iterations)
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.05, 0.1, 0.2, 0.3, 0.6, 0.7, 0.8, 0.9])
    assert recalibration_fit(y, p) == {"slope": None, "intercept": None, "note": SEPARATED}
    assert recalibration_fit(1 - y, p)["note"] == SEPARATED  # separated the other way round
    assert calibration_slope_intercept(y, p) == (None, None)
    summary = calibration_summary(y[:, None], p[:, None], ["a"])
    assert summary["pooled"]["slope_note"] == SEPARATED and summary["pooled"]["slope"] is None
    assert summary["per_label"]["a"]["slope_note"] == SEPARATED


def test_quasi_separated_classes_tied_at_the_threshold_have_no_slope():
    # one negative and one positive share the threshold risk 0.5; all others are on their own side
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.5, 0.5, 0.8, 0.9])
    assert recalibration_fit(y, p)["note"] == SEPARATED


def test_one_overlapping_pair_is_enough_for_a_finite_slope_equal_to_sklearns():
    # the separated sample above with the middle two outcomes swapped: a finite maximum-likelihood fit
    y = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    p = np.array([0.05, 0.1, 0.2, 0.3, 0.6, 0.7, 0.8, 0.9])
    fit = recalibration_fit(y, p)
    slope, intercept = sklearn_recalibration(y, p)
    assert fit["note"] is None
    assert (fit["slope"], fit["intercept"]) == pytest.approx((slope, intercept), abs=1e-5)
    # and against a plain numpy Newton fit of the same likelihood
    x = np.stack([np.ones(len(p)), np.log(p / (1 - p))], axis=1)
    beta = np.zeros(2)
    for _ in range(100):
        mu = 1 / (1 + np.exp(-x @ beta))
        beta += np.linalg.solve(x.T @ (x * (mu * (1 - mu))[:, None]), x.T @ (y - mu))
    assert (fit["intercept"], fit["slope"]) == pytest.approx(tuple(beta), abs=1e-8)


def test_equal_predictions_for_both_classes_have_no_slope():
    assert recalibration_fit(np.array([0, 1, 0, 1]), np.full(4, 0.3))["note"] == "not estimable: predictions all equal"


def test_risk_histogram_spans_zero_to_the_top_risk_rounded_up_to_a_tenth_in_twenty_bins():
    h = risk_histogram(np.array([0.02, 0.1, 0.3]))
    assert h["edges"][0] == 0.0 and h["edges"][-1] == 0.3  # 0.3 exactly: not pushed up to 0.4
    assert len(h["counts"]) == 20 and sum(h["counts"]) == 3
    assert risk_histogram(np.array([0.31]))["edges"][-1] == 0.4
    empty = risk_histogram(np.array([]))
    assert empty["edges"][-1] == 1.0 and sum(empty["counts"]) == 0


def test_pooled_calibration_says_how_it_binned_and_uses_the_bins_asked_for():
    rng = np.random.default_rng(0)
    p = rng.random((200, 2))
    y = (rng.random((200, 2)) < p).astype(int)
    pooled = calibration_summary(y, p, ["a", "b"], n_bins=4)["pooled"]
    assert pooled["reliability_strategy"] == "quantile"
    assert len(pooled["reliability"]) == 4
    assert sum(pooled["histogram"]["counts"]) == 400


def test_quantile_reliability_cuts_ten_equal_groups_by_default_in_order_of_risk():
    p = np.linspace(0.95, 0.0, 20)  # given in descending order: the bins follow the risk, not the row
    y = (np.arange(20) % 2).astype(float)
    bins = reliability_curve(y, p)
    assert [b["count"] for b in bins] == [2] * 10
    assert bins[0]["upper"] == pytest.approx(0.05) and bins[-1]["lower"] == pytest.approx(0.90)


def test_tied_risks_keep_their_row_order_across_a_cut():
    # three risk levels over 60 rows; within a level, the earlier rows are the events. A stable sort
    # keeps row order among ties, so a cut inside a level takes its earliest rows (the events) first.
    p = np.tile([0.2, 0.5, 0.8], 20)[np.random.default_rng(0).permutation(60)]
    y = np.zeros(60)
    for level in (0.2, 0.5, 0.8):
        y[np.flatnonzero(p == level)[:10]] = 1.0  # the first 10 of each level's 20 rows
    bins = reliability_curve(y, p, n_bins=6)  # 10 rows per bin: each level split into events, then not
    assert [b["observed"] for b in bins] == [1.0, 0.0] * 3


def test_an_unknown_binning_strategy_is_refused_by_name():
    with pytest.raises(ValueError, match="reliability strategy 'deciles'"):
        reliability_curve(np.array([0.0]), np.array([0.5]), strategy="deciles")


def test_a_constant_risk_or_no_outcomes_leave_slope_and_intercept_unestimated_with_the_reason():
    y = np.array([0, 1, 0, 1])
    assert recalibration_fit(y, np.full(4, 0.3)) == {"slope": None, "intercept": None, "note": CONSTANT}
    assert recalibration_fit(np.array([]), np.array([])) == {"slope": None, "intercept": None, "note": SINGLE_CLASS}


def test_positives_that_never_outrank_negatives_are_separated_too_ties_included():
    # every positive's risk <= every negative's, with one tie at 0.3: quasi-complete separation, reversed
    y = np.array([1, 1, 0, 0])
    fit = recalibration_fit(y, np.array([0.1, 0.3, 0.3, 0.5]))
    assert fit == {"slope": None, "intercept": None, "note": SEPARATED}


def test_a_risk_that_is_not_a_number_leaves_the_fit_unestimated():
    fit = recalibration_fit(np.array([0, 1, 0, 1]), np.array([0.2, np.nan, 0.6, 0.7]))
    assert fit == {"slope": None, "intercept": None, "note": NOT_CONVERGED}
