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


def range_scale(valid: tuple[float, float]) -> float:
    """Scale for a channel without training statistics: (valid high - valid low) / 4.

    Reading the valid range as about +-2 standard deviations around the normal value
    over-estimates the spread of a real cohort (the ranges are plausibility bounds), which
    is the safe side: any valid value lands within [-4, 4], never at its raw unit size.
    """
    lo, hi = valid
    return (hi - lo) / 4.0


def train_statistics(values: np.ndarray, train_rows: np.ndarray, names: list[str],
                     fallback: dict[str, tuple[float, float]]) -> dict[str, dict]:
    """Per-channel median, mean and std of the OBSERVED values of training samples.

    Args:
        values: `[N, T, C]` raw (before filling), NaN where unobserved.
        train_rows: indices of the training samples in `values`.
        names: the C channel names.
        fallback: per channel (normal value, scale). A channel never observed in training
            gets median = mean = its normal value and std = its scale (`n_observed` 0,
            `unobserved_in_training` True), so a value seen later in validation or test is
            still scaled, never left in raw units; a channel whose training values are
            all equal keeps its mean and takes the scale as std.
    """
    stats = {}
    train = values[train_rows]
    for k, name in enumerate(names):
        x = train[..., k]
        x = x[~np.isnan(x)]
        normal, scale = fallback[name]
        if x.size == 0:
            stats[name] = {"median": float(normal), "mean": float(normal), "std": float(scale), "n_observed": 0,
                           "unobserved_in_training": True}
            continue
        std = float(x.std())
        stats[name] = {"median": float(np.median(x)), "mean": float(x.mean()),
                       "std": std if std > 1e-8 else float(scale), "n_observed": int(x.size)}
    return stats


def impute_and_scale(filled: np.ndarray, stats: dict[str, dict], names: list[str]) -> np.ndarray:
    """Fill remaining gaps with the training median, then z-score with training mean/std. `[N, T, C]`."""
    out = np.empty_like(filled, dtype=np.float32)
    for k, name in enumerate(names):
        s = stats[name]
        x = np.where(np.isnan(filled[..., k]), s["median"], filled[..., k])
        out[..., k] = (x - s["mean"]) / s["std"]
    return out
