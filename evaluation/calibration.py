"""Calibration: Brier score, calibration slope and intercept, reliability curve.

The reliability curve uses quantile bins (equal numbers of predictions per bin) by
default: with a rare outcome, equal-width bins leave most bins holding a handful of
predictions whose observed rate jumps between 0 and 1. Each bin carries its count.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def brier(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((np.asarray(p, float) - np.asarray(y, float)) ** 2))


SEPARATED = "not estimable: classes separated"
SINGLE_CLASS = "not estimable: one class only"
CONSTANT = "not estimable: predictions all equal"
NOT_CONVERGED = "not estimable: the fit did not converge"


def recalibration_fit(y: np.ndarray, p: np.ndarray, iterations: int = 50) -> dict[str, Any]:
    """Logistic recalibration y ~ a + b * logit(p), fitted by Newton's method (no penalty).

    b (slope) < 1 means predictions too extreme (over-confident: high risks too high, low
    risks too low); b > 1 means predictions too moderate (under-confident, squeezed
    towards the average). a (intercept) != 0 systematic over/under-prediction.

    The maximum-likelihood fit does not exist when a threshold on logit(p) separates the
    outcomes (complete or quasi-complete separation, Albert & Anderson 1984): the
    likelihood keeps rising as b grows, and Newton's iterates stop wherever the iteration
    count runs out (slope 21 after 50 steps on a perfectly ranked sample). With one
    predictor and an intercept this happens exactly when every negative's logit is <= every
    positive's (or the reverse), which is checked before fitting.

    Returns:
        {"slope", "intercept": float or None, "note": None when estimated, else why not
        (SEPARATED, SINGLE_CLASS, CONSTANT or NOT_CONVERGED)}.
    """
    y = np.asarray(y, float)
    if len(y) == 0 or y.min() == y.max():
        return {"slope": None, "intercept": None, "note": SINGLE_CLASS}
    q = np.clip(p, 1e-6, 1 - 1e-6)  # predictions of exactly 0 or 1 get a finite logit
    x = np.log(q / (1 - q))
    if x.min() == x.max():  # logit(p) collinear with the intercept: no slope to fit
        return {"slope": None, "intercept": None, "note": CONSTANT}
    pos, neg = x[y == 1], x[y == 0]
    if neg.max() <= pos.min() or pos.max() <= neg.min():
        return {"slope": None, "intercept": None, "note": SEPARATED}
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
    if not np.all(np.isfinite(beta)):
        return {"slope": None, "intercept": None, "note": NOT_CONVERGED}
    return {"slope": float(beta[1]), "intercept": float(beta[0]), "note": None}


def calibration_slope_intercept(y: np.ndarray, p: np.ndarray, iterations: int = 50) -> tuple[float | None, float | None]:
    """(slope, intercept) of `recalibration_fit`; (None, None) where it is not estimable."""
    fit = recalibration_fit(y, p, iterations)
    return fit["slope"], fit["intercept"]


def reliability_curve(y: np.ndarray, p: np.ndarray, n_bins: int = 10, strategy: str = "quantile"
                      ) -> list[dict[str, Any]]:
    """Bins of predicted probability: bounds, mean predicted, observed rate, count.

    `strategy="quantile"`: predictions sorted and cut into `n_bins` groups of equal size
    (sizes differ by at most one; tied probabilities may straddle a cut so the counts
    stay equal); `"uniform"`: equal-width bins on [0, 1] (empty bins left out).
    """
    y, p = np.asarray(y, float), np.asarray(p, float)
    if strategy == "quantile":
        order = np.argsort(p, kind="mergesort")
        bins = np.empty(len(p), dtype=int)
        bins[order] = np.arange(len(p)) * min(n_bins, max(len(p), 1)) // max(len(p), 1)
    elif strategy == "uniform":
        bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    else:
        raise ValueError(f"reliability strategy {strategy!r}: expected 'quantile' or 'uniform'")
    counts = np.bincount(bins, minlength=n_bins)
    sum_p, sum_y = np.bincount(bins, p, n_bins), np.bincount(bins, y, n_bins)
    out = []
    for b in np.flatnonzero(counts):
        m = bins == b
        lower, upper = (float(p[m].min()), float(p[m].max())) if strategy == "quantile" else (b / n_bins,
                                                                                             (b + 1) / n_bins)
        out.append({"bin": int(b), "lower": lower, "upper": upper, "mean_predicted": float(sum_p[b] / counts[b]),
                    "observed": float(sum_y[b] / counts[b]), "count": int(counts[b])})
    return out


def risk_histogram(p: np.ndarray, n_bins: int = 20) -> dict[str, list]:
    """Counts of predicted probabilities in `n_bins` equal-width bins on [0, top], top = max(p) rounded up to
    a multiple of 0.1 (a rare outcome's risks all sit near 0: bins over [0, 1] would lump them together)."""
    p = np.asarray(p, float)
    top = min(1.0, max(0.1, float(np.ceil(p.max() * 10 - 1e-9) / 10))) if len(p) else 1.0
    counts, edges = np.histogram(p, bins=n_bins, range=(0.0, top))
    return {"edges": edges.round(6).tolist(), "counts": counts.tolist()}


def calibration_summary(y_true: np.ndarray, y_prob: np.ndarray, labels: list[str], n_bins: int = 10) -> dict:
    """Per-label and pooled (all labels stacked) Brier, slope, intercept, quantile reliability and risk histogram.

    `slope_note` is None where slope and intercept were estimated, else why not (e.g. SEPARATED).
    """
    y_true = np.asarray(y_true).reshape(len(y_true), -1)
    y_prob = np.asarray(y_prob, float).reshape(len(y_prob), -1)
    per_label = {}
    for k, name in enumerate(labels):
        fit = recalibration_fit(y_true[:, k], y_prob[:, k])
        per_label[name] = {"brier": brier(y_true[:, k], y_prob[:, k]), "slope": fit["slope"],
                           "intercept": fit["intercept"], "slope_note": fit["note"]}
    flat_y, flat_p = y_true.ravel(), y_prob.ravel()
    fit = recalibration_fit(flat_y, flat_p)
    return {"per_label": per_label, "pooled": {"brier": brier(flat_y, flat_p), "slope": fit["slope"],
                                               "intercept": fit["intercept"], "slope_note": fit["note"],
                                               "reliability": reliability_curve(flat_y, flat_p, n_bins),
                                               "reliability_strategy": "quantile",
                                               "histogram": risk_histogram(flat_p)}}
