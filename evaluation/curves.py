"""PR and ROC curve points per label, decimated, as tidy records for `dvc plots`."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from .metrics import is_degenerate


def _decimate(n: int, max_points: int) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, min(n, max_points)).round().astype(int))


def curve_records(y_true: np.ndarray, y_score: np.ndarray, labels: list[str], max_points: int = 200
                  ) -> tuple[list[dict], list[dict]]:
    """(pr records {label, recall, precision}, roc records {label, fpr, tpr}); degenerate labels skipped."""
    y_true = np.asarray(y_true).reshape(len(y_true), -1)
    y_score = np.asarray(y_score, float).reshape(len(y_score), -1)
    pr, roc = [], []
    for k, name in enumerate(labels):
        if is_degenerate(y_true[:, k]):
            continue
        precision, recall, _ = precision_recall_curve(y_true[:, k], y_score[:, k])
        for i in _decimate(len(recall), max_points):
            pr.append({"label": name, "recall": round(float(recall[i]), 5), "precision": round(float(precision[i]), 5)})
        fpr, tpr, _ = roc_curve(y_true[:, k], y_score[:, k])
        for i in _decimate(len(fpr), max_points):
            roc.append({"label": name, "fpr": round(float(fpr[i]), 5), "tpr": round(float(tpr[i]), 5)})
    return pr, roc


def curves_by_label(curves: dict[str, list[dict]], seeds: dict[str, int]) -> dict[str, list[dict]]:
    """Every method's curve records, grouped by label: one `dvc plots` file per label, a curve per method.

    Args:
        curves: method -> that method's tidy records (`curve_records`: {label, recall, precision} or
            {label, fpr, tpr}), in the order the methods are shown (the chart's legend keeps it).
        seeds: method -> the seed of the run the records come from (shown in the chart's tooltip).

    Returns:
        label -> records with `method` and `seed` added, labels in first-seen order. A label a method
        skipped (degenerate in its test split) has no curve of that method.
    """
    by_label: dict[str, list[dict]] = {}
    for method, records in curves.items():
        for r in records:
            by_label.setdefault(r["label"], []).append({**r, "method": method, "seed": seeds[method]})
    return by_label
