"""Figures for the report, returned as base64 PNG strings (embedded, so the HTML is self-contained)."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def pr_roc_figure(label: str, curves: dict[str, tuple[np.ndarray, np.ndarray]], prevalence: float) -> str:
    """PR and ROC curves of one label for several methods. curves: method -> (y_true, y_score)."""
    fig, (ax_pr, ax_roc) = plt.subplots(1, 2, figsize=(8.4, 3.4))
    for method, (y, s) in curves.items():
        precision, recall, _ = precision_recall_curve(y, s)
        ax_pr.plot(recall, precision, label=method, lw=1.6)
        fpr, tpr, _ = roc_curve(y, s)
        ax_roc.plot(fpr, tpr, label=method, lw=1.6)
    ax_pr.axhline(prevalence, ls=":", c="grey", lw=1, label=f"prevalence {prevalence:.2f}")
    ax_roc.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
    ax_pr.set(xlabel="recall", ylabel="precision", title="Precision-recall", xlim=(0, 1), ylim=(0, 1.02))
    ax_roc.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC", xlim=(0, 1), ylim=(0, 1.02))
    ax_pr.legend(fontsize=7, loc="upper right")
    fig.suptitle(label, fontsize=10)
    return _png(fig)


def reliability_figure(curves: dict[str, list[dict]]) -> str:
    """Reliability diagram: observed rate vs mean predicted probability per bin, per method."""
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1, label="perfect calibration")
    for method, bins in curves.items():
        ax.plot([b["mean_predicted"] for b in bins], [b["observed"] for b in bins], marker="o", ms=3, label=method)
    ax.set(xlabel="mean predicted probability", ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1),
           title="Reliability (all labels pooled)")
    ax.legend(fontsize=7)
    return _png(fig)
