"""Method differences that include training variance: a two-level paired bootstrap over seeds and test
patients, the seed-level t-interval, a verdict with the smallest detectable difference, and Holm's
adjustment for per-label comparisons.

A difference between two methods has two sources of variance: training (which seed) and test sampling
(which patients). The patient bootstrap alone measures only the second. The two-level bootstrap draws,
in each resample, the seeds with replacement and then the test patients with replacement, and scores
both methods on the SAME drawn seeds (seed s of one method is paired with seed s of the other) and the
SAME drawn patients. Its interval therefore includes both sources. With one seed it reduces to the
patient bootstrap and training variance is not measured: callers must say so.

The patient draws are those of `bootstrap.patient_weights(patients, R, seed)`; the seed draws come from
a separate generator, so when every seed gives the same predictions the interval is exactly the patient
bootstrap's (`bootstrap.paired_bootstrap_difference`) with the same seed.
"""

from __future__ import annotations

from statistics import NormalDist
from typing import Any

import numpy as np
from scipy import stats

from .bootstrap import _nanmean_rows, patient_weights, percentile_ci, weighted_auroc_auprc

METRICS = ("auroc", "auprc")  # the order of `metric_draws`' first axis


def metric_draws(y: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per-label AUROC and AUPRC of one run under every row of `weights`.

    Args:
        y: `[N, K]` 0/1 indicators.
        scores: `[N, K]` probabilities.
        weights: `[1 + R, N]` row weights; row 0 all ones (the data itself), rows 1..R the resamples.
    Returns:
        `[2, K, 1 + R]`: axis 0 is (AUROC, AUPRC); NaN where a label has one class in a resample.
    """
    y = np.asarray(y).reshape(len(y), -1)
    scores = np.asarray(scores, dtype=float).reshape(len(scores), -1)
    out = np.empty((2, y.shape[1], len(weights)))
    for k in range(y.shape[1]):
        out[0, k], out[1, k] = weighted_auroc_auprc(y[:, k], scores[:, k], weights)
    return out


def bootstrap_weights(patients: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """`[1 + R, N]`: a row of ones (the data) above the patient resamples of `patient_weights`."""
    return np.vstack([np.ones((1, len(patients))), patient_weights(patients, n_resamples, seed)])


def seed_draws(n_seeds: int, n_resamples: int, seed: int) -> np.ndarray:
    """`[R, S]` indices of the seeds drawn (with replacement) in each resample.

    Its own generator (seeded with `[seed, 1]`), so the patient draws do not depend on the number of seeds.
    """
    return np.random.default_rng([seed, 1]).integers(0, n_seeds, size=(n_resamples, n_seeds))


def t_interval(values: np.ndarray, level: float) -> dict[str, Any] | None:
    """Mean of `values` with its Student-t interval, mean ± t_{(1+level)/2, n-1} · sd/√n; None below 3 values.

    `values`: one difference per seed (each computed on the whole test split).
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) < 3:
        return None
    se = float(np.std(v, ddof=1) / np.sqrt(len(v)))
    half = float(stats.t.ppf((1 + level) / 2, len(v) - 1)) * se
    mean = float(np.mean(v))
    return {"difference": mean, "ci": [mean - half, mean + half], "se": se, "n_seeds": int(len(v))}


def minimum_detectable_difference(se: float | None, alpha: float = 0.05, power: float = 0.80) -> float | None:
    """Smallest true difference a two-sided test at `alpha` detects with probability `power`:
    (z_{1-alpha/2} + z_{power}) · SE, e.g. (1.960 + 0.842) · SE ≈ 2.80 · SE at alpha 0.05 and 80 % power."""
    if se is None or not np.isfinite(se):
        return None
    z = NormalDist().inv_cdf
    return float((z(1 - alpha / 2) + z(power)) * se)


def verdict(ci: list | None) -> str:
    """"better" when the whole interval is above 0, "worse" when it is below, else "no difference detectable".

    An interval that touches 0 (a bound exactly 0) includes it; no interval (not computable) detects nothing.
    """
    if not ci or ci[0] is None or ci[1] is None:
        return "no difference detectable"
    if ci[0] > 0:
        return "better"
    if ci[1] < 0:
        return "worse"
    return "no difference detectable"


def wald_p_value(difference: float | None, se: float | None) -> float | None:
    """Two-sided p-value of "the difference is 0" from the bootstrap standard error (normal approximation):
    2 · (1 − Φ(|difference| / SE)). Unlike a share of resamples it is not limited by their number, which
    matters under Holm's adjustment (25 labels with 1000 resamples could never reach 0.05 otherwise)."""
    if difference is None or se is None or not np.isfinite(difference) or not np.isfinite(se):
        return None
    if se == 0:
        return 1.0 if difference == 0 else 0.0
    return float(2 * (1 - NormalDist().cdf(abs(difference) / se)))


def holm_adjust(p_values: list[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (family-wise error), None kept where there is no p-value.

    With the m p-values sorted ascending, p_(1) ≤ ... ≤ p_(m): adjusted p_(i) = max over j ≤ i of
    min(1, (m − j + 1) · p_(j)). A comparison is significant at alpha when its adjusted p < alpha.
    """
    present = [(p, i) for i, p in enumerate(p_values) if p is not None]
    m = len(present)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def _summary(point: float, resampled: np.ndarray, per_seed: np.ndarray, level: float) -> dict[str, Any]:
    """Difference, two-level interval, SE, p-value, smallest detectable difference and verdict of one quantity."""
    lo, hi, n = percentile_ci(resampled, level)
    valid = resampled[np.isfinite(resampled)]
    se = float(np.std(valid, ddof=1)) if n >= 2 else None
    return {"difference": float(point) if np.isfinite(point) else None, "ci": [lo, hi], "se": se,
            "mde": minimum_detectable_difference(se), "verdict": verdict([lo, hi]),
            "p_two_sided": wald_p_value(float(point) if np.isfinite(point) else None, se),
            "p_le_zero": float(np.mean(valid <= 0)) if n else None, "n_valid_resamples": n,
            "per_seed": [float(v) if np.isfinite(v) else None for v in per_seed],
            "t_interval": t_interval(per_seed, level)}


def difference_from_draws(draws_a: np.ndarray, draws_b: np.ndarray, seeds_drawn: np.ndarray,
                          level: float) -> dict[str, Any]:
    """The two-level paired bootstrap from per-run metric draws (`metric_draws`).

    Args:
        draws_a, draws_b: `[S, 2, K, 1 + R]`: seed s of method a is paired with seed s of method b; every
            run scored under the same patient weights.
        seeds_drawn: `[R, S]` seed indices of each resample (`seed_draws`).
    Returns:
        `macro_auroc`, `macro_auprc` and `per_label[k]` (`auroc`, `auprc`), each with `difference` (mean
        over seeds of the whole-test-split difference), `ci` (two-level percentile interval), `se`,
        `mde`, `verdict`, `p_two_sided`, `p_le_zero`, `per_seed` and `t_interval` (None below 3 seeds).
    """
    diff = np.asarray(draws_a) - np.asarray(draws_b)  # [S, 2, K, 1 + R]
    n_seeds, _, n_labels, width = diff.shape
    resamples = np.arange(width - 1)
    out: dict[str, Any] = {"per_label": [{} for _ in range(n_labels)], "n_seeds": int(n_seeds)}
    for m, metric in enumerate(METRICS):
        # [S, K, R] -> the drawn seeds of each resample, averaged: [K, R]
        d = diff[:, m, :, 1:]
        resampled = d[seeds_drawn.T, :, resamples[None, :]].mean(axis=0).T  # [S, R, K] -> mean over S -> [K, R]
        point_per_seed = diff[:, m, :, 0]  # [S, K]
        for k in range(n_labels):
            out["per_label"][k][metric] = _summary(float(np.mean(point_per_seed[:, k])), resampled[k],
                                                   point_per_seed[:, k], level)
        macro_resampled = _nanmean_rows(list(resampled))
        macro_per_seed = _nanmean_rows(list(point_per_seed.T))  # [S]
        point = float(np.nanmean(macro_per_seed)) if np.isfinite(macro_per_seed).any() else np.nan
        out[f"macro_{metric}"] = _summary(point, macro_resampled, macro_per_seed, level)
    return out


def two_level_bootstrap_difference(y: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, patients: np.ndarray,
                                   n_resamples: int, seed: int, level: float) -> dict[str, Any]:
    """Difference (a − b) of macro and per-label AUROC/AUPRC with an interval over seeds and test patients.

    Args:
        y: `[N, K]` 0/1 indicators of the test split (the same rows for every run).
        scores_a, scores_b: `[S, N, K]` probabilities of S seeds; seed s of a is paired with seed s of b.
        patients: `[N]` patient ids (the bootstrap resamples patients with all their rows).
        n_resamples, seed, level: resamples, generator seed, confidence level.
    Returns:
        As `difference_from_draws`.
    """
    scores_a, scores_b = np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)
    if scores_a.ndim != 3 or scores_a.shape != scores_b.shape:
        raise ValueError(f"scores must both be [S, N, K]; got {scores_a.shape} and {scores_b.shape}")
    weights = bootstrap_weights(patients, n_resamples, seed)
    draws_a = np.stack([metric_draws(y, s, weights) for s in scores_a])
    draws_b = np.stack([metric_draws(y, s, weights) for s in scores_b])
    return difference_from_draws(draws_a, draws_b, seed_draws(len(scores_a), n_resamples, seed), level)
