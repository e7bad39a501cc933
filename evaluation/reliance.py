"""Modality reliance per label: the share of each modality in the mean |Shapley contribution|.

Pure and vectorised. The input is what `pipeline.modality_shapley` computed for each test
prediction: phi `[N, M, K]`, the contribution of modality m to the predicted probability of
label k (probability scale). The reliance of label k on modality m is

    share[m, k] = mean_i |phi[i, m, k]| / sum_m' mean_i |phi[i, m', k]|

(a ratio of means: a patient whose prediction no modality moves adds nothing rather than
0/0). Its confidence interval resamples PATIENTS (all rows of a drawn patient together, the
same resamples as the metrics' CIs); it covers test-sampling variability of one trained
model, not training (seed) variability.
"""

from __future__ import annotations

import numpy as np

from .bootstrap import patient_weights


def _shares(abs_phi: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """`[R, M, K]` shares for row weights `[R, N]` of |phi| `[N, M, K]` (NaN where nothing moves)."""
    n, m, k = abs_phi.shape
    totals = (weights @ abs_phi.reshape(n, m * k)).reshape(len(weights), m, k)
    denom = totals.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, totals / np.where(denom > 0, denom, 1.0), np.nan)


def _ci(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over axis 0, ignoring NaN resamples (NaN where all are)."""
    alpha = (1 - level) / 2
    ok = np.isfinite(samples).any(axis=0)
    filled = np.where(np.isfinite(samples), samples, np.nanmean(np.where(ok, samples, 0.0), axis=0))
    lo, hi = np.quantile(filled, [alpha, 1 - alpha], axis=0)
    return np.where(ok, lo, np.nan), np.where(ok, hi, np.nan)


def reliance_shares(phi: np.ndarray, patients: np.ndarray, n_resamples: int = 1000, seed: int = 0,
                    level: float = 0.95) -> dict[str, np.ndarray]:
    """Per-label modality shares with patient-bootstrap CIs.

    Args:
        phi: `[N, M, K]` Shapley contributions (probability scale) of N test predictions.
        patients: `[N]` patient of each row.
        n_resamples, seed, level: the bootstrap.
    Returns:
        {"share", "ci_low", "ci_high", "mean_abs"}: each `[M, K]` (mean_abs: mean |phi|).
    """
    abs_phi = np.abs(np.asarray(phi, dtype=np.float64))
    point = _shares(abs_phi, np.ones((1, len(abs_phi))))[0]
    boot = _shares(abs_phi, patient_weights(patients, n_resamples, seed))
    lo, hi = _ci(boot, level)
    return {"share": point, "ci_low": lo, "ci_high": hi, "mean_abs": abs_phi.mean(axis=0)}


def share_difference(phi_a: np.ndarray, phi_b: np.ndarray, patients: np.ndarray, modality: int,
                     n_resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, np.ndarray]:
    """Paired difference of one modality's share per label, a minus b, on the same test patients.

    Both models' contributions are resampled with the same patients in each resample.

    Args:
        phi_a, phi_b: `[N, M, K]` contributions of two models on the same rows.
        modality: index m of the modality compared.
    Returns:
        {"difference", "ci_low", "ci_high"}: each `[K]`.
    """
    weights = patient_weights(patients, n_resamples, seed)
    a, b = np.abs(np.asarray(phi_a, np.float64)), np.abs(np.asarray(phi_b, np.float64))
    point = _shares(a, np.ones((1, len(a))))[0, modality] - _shares(b, np.ones((1, len(b))))[0, modality]
    boot = _shares(a, weights)[:, modality] - _shares(b, weights)[:, modality]
    lo, hi = _ci(boot, level)
    return {"difference": point, "ci_low": lo, "ci_high": hi}


def reliance_rows(shares: dict[str, np.ndarray], modalities: list[str], labels: list[str]) -> list[dict]:
    """The reliance table, one row per (label, modality): share, CI, mean |contribution|."""
    return [{"label": label, "modality": m, "share": _num(shares["share"][j, k]),
             "ci_low": _num(shares["ci_low"][j, k]), "ci_high": _num(shares["ci_high"][j, k]),
             "mean_abs_contribution": _num(shares["mean_abs"][j, k])}
            for k, label in enumerate(labels) for j, m in enumerate(modalities)]


def differing_labels(diffs: dict[str, dict], labels: list[str], modality: str, reference: str,
                     shares: dict[str, dict], level: float) -> list[str]:
    """One sentence per (label, method) whose `modality` share differs from `reference`'s beyond the CI.

    Args:
        diffs: method -> `share_difference` output (method minus reference).
        shares: method -> `reliance_shares` output (for the shares quoted).
        modality: the modality compared (its index is looked up by the caller: here only its name).
    """
    out = []
    for k, label in enumerate(labels):
        for method, d in diffs.items():
            lo, hi = d["ci_low"][k], d["ci_high"][k]
            if not (np.isfinite(lo) and np.isfinite(hi)) or lo <= 0 <= hi:
                continue
            word = "more" if d["difference"][k] > 0 else "less"
            out.append(f"{label}: {method} relies {word} on the {modality.upper()} than {reference} "
                       f"(share {shares[method][k]:.3f} vs {shares[reference][k]:.3f}; difference "
                       f"{d['difference'][k]:+.3f}, {level:.0%} CI {lo:+.3f} to {hi:+.3f}).")
    return out


def _num(x) -> float | None:
    return float(x) if np.isfinite(x) else None
