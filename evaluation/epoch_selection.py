"""What the selected (best-validation) epoch of a run was, next to its last epoch.

A run keeps the checkpoint of its best validation epoch; the epochs after it are the
early-stopping patience. A run whose best epoch is its last was still improving when its
epoch budget ran out: it is compared undertrained, and the report says so.
"""

from __future__ import annotations

from typing import Any


def still_improving(best_epoch: int | None, epochs_run: int | None, best_score: float | None) -> bool:
    """True when the epoch selected on its validation score is the last one run (training stopped while
    still improving). False without a score (`best_score` None: no validation rows, or a metric they
    leave undefined): the trainer then keeps the last epoch by rule, which says nothing of improvement."""
    return (best_score is not None and best_epoch is not None and epochs_run is not None and epochs_run > 0
            and best_epoch == epochs_run)


def best_epoch_metrics(history: list[dict[str, Any]], best_epoch: int | None) -> dict[str, float]:
    """The selected epoch's training and validation metrics as `best_<key>`, plus `best_epoch`,
    `last_epoch` and `still_improving` (0/1): the run's summary metrics in MLflow, next to the
    per-epoch metrics whose latest value is the last epoch's.

    Args:
        history: the trainer's per-epoch records {"epoch", "train_<loss>", "val_<metric>", ...}.
        best_epoch: the 1-based epoch whose checkpoint was kept (None: no epoch ran).
    """
    if not history or best_epoch is None:
        return {}
    record = next((r for r in history if r.get("epoch") == best_epoch), None)
    if record is None:
        raise ValueError(f"best epoch {best_epoch} is not in the history (epochs {[r.get('epoch') for r in history]})")
    last = int(history[-1]["epoch"])
    out = {f"best_{k}": float(v) for k, v in record.items()
           if k.startswith(("train_", "val_")) and v is not None}
    # the headline validation metric is the record's first val_ entry (the trainer writes it first)
    score = next((v for k, v in record.items() if k.startswith("val_")), None)
    out.update(best_epoch=float(best_epoch), last_epoch=float(last),
               still_improving=float(still_improving(best_epoch, last, score)))
    return out
