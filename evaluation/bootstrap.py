"""Patient-level bootstrap confidence intervals, vectorised over resamples.

A resample draws patients with replacement and keeps all their rows; it is
expressed as integer weights per row (the multiplicity of the row's patient),
so AUROC and AUPRC of R resamples are computed at once from one sort of the
scores: `[R, N]` weights, no Python loop over resamples.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .metrics import too_few_events


def patient_weights(patients: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """`[R, N]` row weights: how often each row's patient was drawn in each resample."""
    _, inverse = np.unique(np.asarray(patients), return_inverse=True)
    n_patients = inverse.max() + 1 if len(inverse) else 0
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_patients, size=(n_resamples, n_patients))
    counts = np.zeros((n_resamples, n_patients), dtype=np.float64)
    np.add.at(counts, (np.arange(n_resamples)[:, None], draws), 1.0)
    return counts[:, inverse]


def weighted_auroc_auprc(y: np.ndarray, score: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUROC and average precision for each row of `weights` `[R, N]` (NaN where degenerate).

    Equal to sklearn's roc_auc_score / average_precision_score with sample_weight:
    ties are grouped (scores sorted descending, thresholds at distinct values).
    """
    y = np.asarray(y).astype(bool)
    order = np.argsort(-np.asarray(score, dtype=float), kind="mergesort")
    s, yy, w = np.asarray(score, dtype=float)[order], y[order], weights[:, order]
    distinct = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each tie group
    tp = np.cumsum(w * yy, axis=1)[:, distinct]
    fp = np.cumsum(w * ~yy, axis=1)[:, distinct]
    pos, neg = tp[:, -1], fp[:, -1]
    valid = (pos > 0) & (neg > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = tp / pos[:, None]
        fpr = fp / neg[:, None]
        tpr0 = np.concatenate([np.zeros((len(w), 1)), tpr], axis=1)
        fpr0 = np.concatenate([np.zeros((len(w), 1)), fpr], axis=1)
        auroc = np.sum(np.diff(fpr0, axis=1) * (tpr0[:, 1:] + tpr0[:, :-1]) / 2, axis=1)
        precision = tp / np.maximum(tp + fp, 1e-300)
        recall0 = np.concatenate([np.zeros((len(w), 1)), tpr], axis=1)
        auprc = np.sum(np.diff(recall0, axis=1) * precision, axis=1)
    return np.where(valid, auroc, np.nan), np.where(valid, auprc, np.nan)


def _nanmean_rows(per_label: list[np.ndarray]) -> np.ndarray:
    """Mean over labels per resample, ignoring degenerate (NaN) labels; NaN if all are."""
    if not per_label:
        return np.array([])
    stacked = np.stack(per_label)
    valid = np.isfinite(stacked)
    total = np.where(valid, stacked, 0.0).sum(axis=0)
    count = valid.sum(axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def percentile_ci(values: np.ndarray, level: float) -> tuple[float | None, float | None, int]:
    """(low, high, n_valid) of the finite values."""
    v = values[np.isfinite(values)]
    if len(v) == 0:
        return None, None, 0
    alpha = (1 - level) / 2
    return float(np.quantile(v, alpha)), float(np.quantile(v, 1 - alpha)), int(len(v))


def bootstrap_label_cis(y_true: np.ndarray, y_score: np.ndarray, patients: np.ndarray, labels: list[str],
                        n_resamples: int, seed: int, level: float,
                        min_valid: int = 100, *, min_events: int) -> dict[str, Any]:
    """95 % CIs of per-label AUROC/AUPRC and of the macro averages, resampling patients.

    `y_true`, `y_score` `[N, K]`. A resample where a label has no positives or no
    negatives is skipped for that label (`n_valid` reports how many remained);
    the macro average of a resample averages its non-degenerate labels. A label
    with fewer than `min_valid` valid resamples, or with fewer than `min_events`
    positives or negatives in the evaluated rows (`too_few_events`), gets no CI (None).
    """
    y_true = np.asarray(y_true).reshape(len(y_true), -1)
    y_score = np.asarray(y_score, dtype=float).reshape(len(y_score), -1)
    weights = patient_weights(patients, n_resamples, seed)
    per_label, aurocs, auprcs = {}, [], []
    for k, name in enumerate(labels):
        auroc, auprc = weighted_auroc_auprc(y_true[:, k], y_score[:, k], weights)
        aurocs.append(auroc)
        auprcs.append(auprc)
        lo_r, hi_r, n_r = percentile_ci(auroc, level)
        lo_p, hi_p, n_p = percentile_ci(auprc, level)
        few = too_few_events(int(y_true[:, k].sum()), len(y_true), min_events)
        ok = n_r >= min_valid and not few
        per_label[name] = {"auroc_ci": [lo_r, hi_r] if ok else None, "auprc_ci": [lo_p, hi_p] if ok else None,
                           "n_valid_resamples": n_r, "too_few_events": few}
    macro_r, macro_p = _nanmean_rows(aurocs), _nanmean_rows(auprcs)
    lo_r, hi_r, _ = percentile_ci(macro_r, level)
    lo_p, hi_p, _ = percentile_ci(macro_p, level)
    return {"per_label": per_label, "macro_auroc_ci": [lo_r, hi_r], "macro_auprc_ci": [lo_p, hi_p],
            "n_resamples": n_resamples, "seed": seed, "level": level, "min_events": min_events}


def paired_bootstrap_difference(y_true: np.ndarray, score_a: np.ndarray, score_b: np.ndarray,
                                patients: np.ndarray, n_resamples: int, seed: int,
                                level: float) -> dict[str, Any]:
    """Difference (a - b) of macro and per-label AUPRC and AUROC with CIs: both methods on the SAME
    resampled patients.

    `p_le_zero`: share of valid resamples where the difference is <= 0 (a one-sided
    bootstrap p-value for "a beats b"). `per_label[k]` (k = column index) holds the
    label's difference and CI; None where the label is degenerate.
    """
    y_true = np.asarray(y_true).reshape(len(y_true), -1)
    a = np.asarray(score_a, dtype=float).reshape(len(score_a), -1)
    b = np.asarray(score_b, dtype=float).reshape(len(score_b), -1)
    # row 0: the data itself (the point estimate); rows 1..R: the resamples. Two sorts per label in all.
    weights = np.vstack([np.ones((1, len(y_true))), patient_weights(patients, n_resamples, seed)])
    per_method = [[weighted_auroc_auprc(y_true[:, k], s[:, k], weights) for k in range(y_true.shape[1])]
                  for s in (a, b)]
    out: dict[str, Any] = {"per_label": [{} for _ in range(y_true.shape[1])]}
    for metric, idx in (("auroc", 0), ("auprc", 1)):
        diffs, point = [], []
        for k in range(y_true.shape[1]):
            diff = per_method[0][k][idx] - per_method[1][k][idx]
            diffs.append(diff[1:])
            point.append(diff[0])
            lo_k, hi_k, _ = percentile_ci(diff[1:], level)
            out["per_label"][k][metric] = {"difference": float(diff[0]) if np.isfinite(diff[0]) else None,
                                           "ci": [lo_k, hi_k]}
        d = _nanmean_rows(diffs)
        est = float(np.nanmean(point)) if np.isfinite(point).any() else None
        lo, hi, n = percentile_ci(d, level)
        valid = d[np.isfinite(d)]
        out[f"macro_{metric}"] = {"difference": est, "ci": [lo, hi], "n_valid_resamples": n,
                                  "p_le_zero": float(np.mean(valid <= 0)) if n else None}
    return out


def bootstrap_class_rates(y_true: np.ndarray, y_pred: np.ndarray, patients: np.ndarray, classes: list[str],
                          n_resamples: int, seed: int, level: float) -> dict[str, Any]:
    """Accuracy and per-class (one-vs-rest) sensitivity and specificity of hard predictions, with CIs.

    Args:
        y_true: `[N]` class indices.
        y_pred: `[N]` predicted class indices (the argmax of the probabilities).
        patients: `[N]` patient ids (the resampling unit).
        classes: C names.
    Sensitivity of class c = TP_c / (TP_c + FN_c) (recall of c), specificity = TN_c / (TN_c + FP_c),
    as scikit-learn's confusion matrix gives them. All resamples at once: `[R, N] @ [N, C]`.
    """
    y_true, y_pred = np.asarray(y_true, int), np.asarray(y_pred, int)
    n_classes = len(classes)
    truth = np.eye(n_classes)[y_true]  # [N, C]
    called = np.eye(n_classes)[y_pred]
    weights = np.vstack([np.ones((1, len(y_true))), patient_weights(patients, n_resamples, seed)])  # row 0: the data
    tp = weights @ (truth * called)  # [1 + R, C]
    pos = weights @ truth
    fp = weights @ ((1 - truth) * called)
    neg = weights @ (1 - truth)
    with np.errstate(invalid="ignore", divide="ignore"):
        sensitivity, specificity = tp / pos, (neg - fp) / neg
        accuracy = tp.sum(axis=1) / weights.sum(axis=1)

    def summary(values: np.ndarray) -> dict[str, Any]:
        lo, hi, _ = percentile_ci(values[1:], level)
        return {"value": float(values[0]) if np.isfinite(values[0]) else None, "ci": [lo, hi]}

    return {"accuracy": summary(accuracy),
            "per_class": {name: {"sensitivity": summary(sensitivity[:, c]), "specificity": summary(specificity[:, c]),
                                 "n_pos": int(truth[:, c].sum())} for c, name in enumerate(classes)},
            "n_resamples": n_resamples, "seed": seed, "level": level}
