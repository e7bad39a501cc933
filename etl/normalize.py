"""Imputation and scaling for time-series tensors, with statistics from the training split only."""

from __future__ import annotations

import numpy as np


def forward_fill(values: np.ndarray) -> np.ndarray:
    """Carry the last observation forward along time, within each sample.

    `values` `[N, T, C]` with NaN where unobserved; hours before the first
    observation stay NaN.
    """
    n, t, c = values.shape
    observed = ~np.isnan(values)
    idx = np.where(observed, np.arange(t)[None, :, None], 0)
    np.maximum.accumulate(idx, axis=1, out=idx)
    filled = np.take_along_axis(values, idx, axis=1)
    seen = np.maximum.accumulate(observed, axis=1)
    return np.where(seen, filled, np.nan)


def train_statistics(values: np.ndarray, train_rows: np.ndarray, names: list[str]) -> dict[str, dict]:
    """Per-channel median, mean and std of the OBSERVED values of training samples.

    `values` `[N, T, C]` raw (before filling). A channel never observed in training
    gets median 0, mean 0, std 1 (and is reported with n_observed 0).
    """
    stats = {}
    train = values[train_rows]
    for k, name in enumerate(names):
        x = train[..., k]
        x = x[~np.isnan(x)]
        if x.size == 0:
            stats[name] = {"median": 0.0, "mean": 0.0, "std": 1.0, "n_observed": 0}
            continue
        std = float(x.std())
        stats[name] = {"median": float(np.median(x)), "mean": float(x.mean()),
                       "std": std if std > 1e-8 else 1.0, "n_observed": int(x.size)}
    return stats


def impute_and_scale(filled: np.ndarray, stats: dict[str, dict], names: list[str]) -> np.ndarray:
    """Fill remaining gaps with the training median, then z-score with training mean/std. `[N, T, C]`."""
    out = np.empty_like(filled, dtype=np.float32)
    for k, name in enumerate(names):
        s = stats[name]
        x = np.where(np.isnan(filled[..., k]), s["median"], filled[..., k])
        out[..., k] = (x - s["mean"]) / s["std"]
    return out
