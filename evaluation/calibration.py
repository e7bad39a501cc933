"""Calibration: Brier score, calibration slope and intercept, reliability curve."""

from __future__ import annotations

from typing import Any

import numpy as np


def brier(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((np.asarray(p, float) - np.asarray(y, float)) ** 2))


def calibration_slope_intercept(y: np.ndarray, p: np.ndarray, iterations: int = 50) -> tuple[float | None, float | None]:
    """Logistic recalibration y ~ a + b * logit(p), fitted by Newton's method (no penalty).

    b (slope) < 1 means over-confident predictions, a (intercept) != 0 systematic
    over/under-prediction. None when y has a single class.
    """
    y = np.asarray(y, float)
    if y.min() == y.max():
        return None, None
    q = np.clip(p, 1e-6, 1 - 1e-6)  # predictions of exactly 0 or 1 get a finite logit
    x = np.log(q / (1 - q))
    design = np.stack([np.ones_like(x), x], axis=1)
    beta = np.zeros(2)
    for _ in range(iterations):
        mu = 1 / (1 + np.exp(-(design @ beta)))
        grad = design.T @ (y - mu)
        hess = design.T @ (design * (mu * (1 - mu))[:, None]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        beta += step
        if np.max(np.abs(step)) < 1e-10:
            break
    return float(beta[1]), float(beta[0])


def reliability_curve(y: np.ndarray, p: np.ndarray, n_bins: int) -> list[dict[str, Any]]:
    """Equal-width bins of predicted probability: mean predicted, observed rate, count."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    out = []
    for b in range(n_bins):
        m = bins == b
        if m.any():
            out.append({"bin": b, "lower": b / n_bins, "upper": (b + 1) / n_bins, "mean_predicted": float(p[m].mean()),
                        "observed": float(y[m].mean()), "count": int(m.sum())})
    return out


def calibration_summary(y_true: np.ndarray, y_prob: np.ndarray, labels: list[str], n_bins: int = 10) -> dict:
    """Per-label and pooled (all labels stacked) Brier, slope, intercept and reliability."""
    y_true = np.asarray(y_true).reshape(len(y_true), -1)
    y_prob = np.asarray(y_prob, float).reshape(len(y_prob), -1)
    per_label = {}
    for k, name in enumerate(labels):
        slope, intercept = calibration_slope_intercept(y_true[:, k], y_prob[:, k])
        per_label[name] = {"brier": brier(y_true[:, k], y_prob[:, k]), "slope": slope, "intercept": intercept}
    flat_y, flat_p = y_true.ravel(), y_prob.ravel()
    slope, intercept = calibration_slope_intercept(flat_y, flat_p)
    return {"per_label": per_label, "pooled": {"brier": brier(flat_y, flat_p), "slope": slope, "intercept": intercept,
                                               "reliability": reliability_curve(flat_y, flat_p, n_bins)}}
