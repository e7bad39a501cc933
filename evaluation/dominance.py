"""Which modality MASAM treated as dominant, epoch by epoch (from a run's history.json).

MASAM picks one dominant modality per step (d = argmax_m APS_m) and logs its index as the
step metric `dominant`; the trainer's per-epoch record keeps the epoch mean `train_dominant`.
With two modalities that mean IS the share of the epoch's steps in which the second modality
was dominant (index 1), so the share of each modality is exact. With more modalities the mean
index does not identify the shares and no series is returned.
"""

from __future__ import annotations

from typing import Any


def dominance_series(history: list[dict[str, Any]], modalities: list[str]) -> list[dict[str, Any]] | None:
    """Per epoch: the share of steps each modality was dominant and its mean APS (None for a run without them).

    Args:
        history: the trainer's per-epoch records ({"epoch", "train_dominant", "train_aps_<m>", ...}).
        modalities: the cohort's modalities, in the model's order (the index `dominant` refers to).
    Returns:
        [{"epoch", "share": {m: fraction of steps}, "aps": {m: mean APS or None}}] or None.
    """
    if len(modalities) != 2 or not history or not any(r.get("train_dominant") is not None for r in history):
        return None
    out = []
    for r in history:
        second = r.get("train_dominant")
        if second is None:
            continue
        second = min(max(float(second), 0.0), 1.0)
        out.append({"epoch": int(r["epoch"]), "share": {modalities[0]: 1.0 - second, modalities[1]: second},
                    "aps": {m: r.get(f"train_aps_{m}") for m in modalities}})
    return out
