"""Operating points and decision curves: what a fixed threshold does for a clinician.

The threshold is chosen on the VALIDATION split and then applied unchanged to the
test split (choosing it on the test split would report an optimistic sensitivity).
Rules:
  youden               maximise sensitivity + specificity - 1 (Youden's J) on validation
  target_sensitivity   the highest threshold whose validation sensitivity is >= `target`
A sample is called positive when its probability is >= the threshold.

Net benefit (Vickers & Elkin 2006, "Decision curve analysis"): at threshold probability
pt, NB = TP/N - FP/N * pt / (1 - pt), compared with "treat all" (everyone positive)
and "treat none" (NB = 0).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .bootstrap import patient_weights, percentile_ci
from .metrics import is_degenerate, too_few_events

RULES = ("youden", "target_sensitivity")


def choose_threshold(y: np.ndarray, p: np.ndarray, rule: str = "youden", target: float = 0.8) -> float | None:
    """Threshold from one split's labels `[N]` and probabilities `[N]`; None when the split is degenerate."""
    y, p = np.asarray(y).astype(bool), np.asarray(p, float)
    if rule not in RULES:
        raise ValueError(f"operating-point rule {rule!r}: expected one of {', '.join(RULES)}")
    if is_degenerate(y):
        return None
    candidates = np.unique(p)[::-1]  # descending: each distinct score is a threshold
    called = p[None, :] >= candidates[:, None]  # [T, N]
    sensitivity = (called & y).sum(axis=1) / y.sum()
    specificity = (~called & ~y).sum(axis=1) / (~y).sum()
    if rule == "youden":
        return float(candidates[np.argmax(sensitivity + specificity - 1)])  # ties: the highest threshold
    reached = np.flatnonzero(sensitivity >= target)
    return float(candidates[reached[0]])  # sensitivity reaches 1 at the lowest score, so never empty


def rates_at_threshold(y: np.ndarray, p: np.ndarray, threshold: float, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Sensitivity, specificity, PPV and NPV for each row of `weights` `[R, N]` (NaN where undefined)."""
    y = np.asarray(y).astype(float)
    called = (np.asarray(p, float) >= threshold).astype(float)
    tp, fp = weights @ (y * called), weights @ ((1 - y) * called)
    fn, tn = weights @ (y * (1 - called)), weights @ ((1 - y) * (1 - called))
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"sensitivity": tp / (tp + fn), "specificity": tn / (tn + fp), "ppv": tp / (tp + fp),
                "npv": tn / (tn + fn)}


def operating_points(y_val: np.ndarray, p_val: np.ndarray, y_test: np.ndarray, p_test: np.ndarray,
                     patients_test: np.ndarray, labels: list[str], rule: str, target: float,
                     n_resamples: int, seed: int, level: float,
                     min_events: int) -> dict[str, Any]:
    """Per label: the validation-chosen threshold and test sensitivity/specificity/PPV/NPV with CIs.

    Args:
        y_val, p_val: `[Nv, K]` validation labels and probabilities (only used to pick thresholds).
        y_test, p_test: `[Nt, K]` test labels and probabilities.
        patients_test: `[Nt]` patient ids (bootstrap unit).
        labels: K names.
    A label degenerate on validation gets no threshold; one with fewer than `min_events`
    test positives or negatives gets point values but no CI (`too_few_events`).
    """
    y_val = np.asarray(y_val).reshape(len(y_val), -1)
    p_val = np.asarray(p_val, float).reshape(len(p_val), -1)
    y_test = np.asarray(y_test).reshape(len(y_test), -1)
    p_test = np.asarray(p_test, float).reshape(len(p_test), -1)
    weights = np.vstack([np.ones((1, len(y_test))), patient_weights(patients_test, n_resamples, seed)])
    per_label = {}
    for k, name in enumerate(labels):
        threshold = choose_threshold(y_val[:, k], p_val[:, k], rule, target)
        few = too_few_events(int(y_test[:, k].sum()), len(y_test), min_events)
        entry: dict[str, Any] = {"threshold": threshold, "too_few_events": few, "n_pos": int(y_test[:, k].sum())}
        if threshold is not None:
            for metric, values in rates_at_threshold(y_test[:, k], p_test[:, k], threshold, weights).items():
                lo, hi, _ = percentile_ci(values[1:], level)
                entry[metric] = {"value": float(values[0]) if np.isfinite(values[0]) else None,
                                 "ci": None if few or lo is None else [lo, hi]}
        per_label[name] = entry
    return {"rule": rule, "target": target if rule == "target_sensitivity" else None, "per_label": per_label,
            "n_resamples": n_resamples, "min_events": min_events}


def net_benefit(y: np.ndarray, p: np.ndarray, thresholds: np.ndarray) -> dict[str, list[float]]:
    """Decision curve: net benefit of the model and of "treat all" at each threshold probability `[T]`."""
    y = np.asarray(y).astype(bool)
    p = np.asarray(p, float)
    thresholds = np.asarray(thresholds, float)
    n = len(y)
    called = p[None, :] >= thresholds[:, None]  # [T, N]
    tp, fp = (called & y).sum(axis=1) / n, (called & ~y).sum(axis=1) / n
    odds = thresholds / (1 - thresholds)
    prevalence = y.mean()
    return {"threshold": thresholds.tolist(), "model": (tp - fp * odds).tolist(),
            "treat_all": (prevalence - (1 - prevalence) * odds).tolist()}
