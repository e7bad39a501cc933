"""Calibration summary against scikit-learn: Brier, the logistic recalibration fit, and the bins."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss

from evaluation.calibration import calibration_summary

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
    assert got["none"] == {"brier": pytest.approx(np.mean(P[:, 2] ** 2), abs=1e-12), "slope": None, "intercept": None}


def test_pooled_calibration_stacks_every_label():
    pooled = calibration_summary(Y, P, ["a", "b", "none"])["pooled"]
    slope, intercept = sklearn_recalibration(Y.ravel(), P.ravel())
    assert pooled["brier"] == pytest.approx(brier_score_loss(Y.ravel(), P.ravel()), abs=1e-12)
    assert pooled["slope"] == pytest.approx(slope, abs=1e-5)
    assert pooled["intercept"] == pytest.approx(intercept, abs=1e-5)
    # ten equal-width bins of predicted probability, empty ones left out
    edges = np.linspace(0, 1, 11)
    count, _ = np.histogram(P.ravel(), edges)
    total_p, _ = np.histogram(P.ravel(), edges, weights=P.ravel())
    positives, _ = np.histogram(P.ravel(), edges, weights=Y.ravel())
    bins = [b for b in range(10) if count[b]]
    assert [r["bin"] for r in pooled["reliability"]] == bins
    for r in pooled["reliability"]:
        b = r["bin"]
        assert (r["lower"], r["upper"]) == pytest.approx((b / 10, (b + 1) / 10))
        assert r["count"] == count[b]
        assert r["mean_predicted"] == pytest.approx(total_p[b] / count[b], abs=1e-12)
        assert r["observed"] == pytest.approx(positives[b] / count[b], abs=1e-12)
