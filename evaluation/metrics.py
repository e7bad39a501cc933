"""Discrimination metrics with an explicit rule for degenerate labels.

A label with no positives or no negatives in the evaluated rows has no AUROC
or AUPRC; it is excluded from macro averages and named in `excluded_labels`,
never averaged in as 0 or NaN.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def is_degenerate(y: np.ndarray) -> bool:
    """True when a binary label vector has no positives or no negatives."""
    positives = int(np.sum(y))
    return positives == 0 or positives == len(y)


def too_few_events(n_pos: int, n: int, min_events: int) -> bool:
    """True when positives or negatives (n - n_pos) are below `min_events` (`evaluate.min_events`).

    Such a label (or subgroup) gets no confidence interval: with one or two events a bootstrap
    resample either repeats the same ranking (a CI of zero width around 1.000) or is degenerate.
    """
    return n_pos < min_events or n - n_pos < min_events


def binary_metrics(y_true: np.ndarray, y_score: np.ndarray) -> dict[str, Any]:
    """AUPRC/AUROC of one binary label (None when degenerate)."""
    y_true = np.asarray(y_true).astype(int)
    base = {"prevalence": float(y_true.mean()) if len(y_true) else None, "n_pos": int(y_true.sum()), "n": len(y_true),
            "n_neg": int(len(y_true) - y_true.sum())}
    if is_degenerate(y_true):
        return {**base, "auprc": None, "auroc": None}
    return {
        **base,
        "auprc": float(average_precision_score(y_true, y_score)),
        "auroc": float(roc_auc_score(y_true, y_score)),
    }


def multilabel_metrics(y_true: np.ndarray, y_score: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Per-label, macro (over non-degenerate labels) and micro AUPRC/AUROC.

    Args:
        y_true: `[N, K]` 0/1.
        y_score: `[N, K]` probabilities or scores.
        labels: K names.
    """
    y_true = np.asarray(y_true).astype(int)
    y_score = np.asarray(y_score, dtype=float)
    per_label = {name: binary_metrics(y_true[:, k], y_score[:, k]) for k, name in enumerate(labels)}
    valid = [n for n in labels if per_label[n]["auprc"] is not None]
    flat_true, flat_score = y_true.ravel(), y_score.ravel()
    micro = binary_metrics(flat_true, flat_score)
    return {
        "per_label": per_label,
        "macro_auprc": float(np.mean([per_label[n]["auprc"] for n in valid])) if valid else None,
        "macro_auroc": float(np.mean([per_label[n]["auroc"] for n in valid])) if valid else None,
        "micro_auprc": micro["auprc"],
        "micro_auroc": micro["auroc"],
        "excluded_labels": [n for n in labels if n not in valid],
        "n": int(y_true.shape[0]),
    }


def multiclass_metrics(y_true: np.ndarray, y_prob: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Accuracy, macro mAP (one-vs-rest AP, i.e. the macro AUPRC), macro one-vs-rest AUROC, confusion matrix.

    Args:
        y_true: `[N]` class indices.
        y_prob: `[N, C]` class probabilities.
        classes: C names.
    """
    y_true = np.asarray(y_true).astype(int)
    y_prob = np.asarray(y_prob, dtype=float)
    onehot = np.eye(len(classes), dtype=int)[y_true]
    ovr = multilabel_metrics(onehot, y_prob, classes)
    predicted = y_prob.argmax(1)
    return {
        "accuracy": float(np.mean(predicted == y_true)) if len(y_true) else None,
        "confusion_matrix": confusion_matrix(y_true, predicted, len(classes)).tolist(),
        "macro_map": ovr["macro_auprc"],
        "macro_auroc": ovr["macro_auroc"],
        "per_class": ovr["per_label"],
        "excluded_labels": ovr["excluded_labels"],
        "n": int(len(y_true)),
    }


def headline_metric(task_type: str) -> str:
    """The model-selection metric: macro AUPRC (mAP over classes for multi-class tasks)."""
    return "macro_map" if task_type == "multiclass" else "macro_auprc"


def task_metrics(task_type: str, y_true: np.ndarray, y_score: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Metrics for a task; `headline` names the model-selection metric's key."""
    if task_type == "multiclass":
        out = multiclass_metrics(y_true, y_score, labels)
    else:
        out = multilabel_metrics(np.asarray(y_true).reshape(len(y_true), -1), np.asarray(y_score).reshape(len(y_score), -1), labels)
    out["headline"] = headline_metric(task_type)
    return out


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """`[C, C]` counts; row = true class, column = predicted class (scikit-learn's convention)."""
    flat = np.asarray(y_true, int) * n_classes + np.asarray(y_pred, int)
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def row_normalised(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its total (the true class's size): the diagonal is the per-class sensitivity."""
    matrix = np.asarray(matrix, float)
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.full_like(matrix, np.nan), where=totals > 0)
