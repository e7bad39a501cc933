"""A training run's curves (loss and validation metric per epoch) as a PNG, for its MLflow run.

Kept apart from the report's figures (evaluation/plots.py): the training stage logs it, and
a change to a report figure must not invalidate every trained run in DVC.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def training_curves_png(history: list[dict], title: str = "Training curves") -> bytes:
    """Per-epoch training losses (left) and validation metrics (right) of one run, best epoch marked.

    history: the trainer's history.json records: {"epoch", "train_<loss>", "val_<metric>", ...};
    a metric that was not defined in an epoch (None) leaves a gap.
    """
    epochs = [r["epoch"] for r in history]
    losses = sorted({k for r in history for k in r if k.startswith("train_")})
    metrics = sorted({k for r in history for k in r if k.startswith("val_")})
    fig, (ax_l, ax_m) = plt.subplots(1, 2, figsize=(9.0, 3.4))
    for k in losses:
        ax_l.plot(epochs, [np.nan if r.get(k) is None else r[k] for r in history], marker="o", ms=3, lw=1.3,
                  label=k.removeprefix("train_"))
    for k in metrics:
        ax_m.plot(epochs, [np.nan if r.get(k) is None else r[k] for r in history], marker="o", ms=3, lw=1.3,
                  label=k.removeprefix("val_"))
    headline = next((k for k in metrics if k != "val_macro_auroc"), None)
    values = [r.get(headline) for r in history] if headline else []
    if any(v is not None for v in values):
        best = int(np.nanargmax([np.nan if v is None else v for v in values]))
        ax_m.axvline(epochs[best], c="grey", ls=":", lw=1, label=f"best epoch ({epochs[best]})")
    ax_l.set(xlabel="epoch", ylabel="mean training loss", title="training")
    ax_m.set(xlabel="epoch", ylabel="validation metric", title="validation")
    for ax in (ax_l, ax_m):
        if ax.lines:
            ax.legend(loc="best", frameon=False)
    fig.suptitle(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
