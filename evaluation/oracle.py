"""The known ceiling of a synthetic cohort: Bayes-optimal scores from the generator's latent factors.

On a synthetic cohort every label is logistic in factors h ~ N(0, I): P(y = 1 | h) =
sigmoid(a + w . h). An oracle that sees a subset S of the factors (all of them, those the
EHR carries, those the film carries) scores with the posterior

    P(y = 1 | h_S) = E_Z[ sigmoid(a + w_S . h_S + s Z) ],  Z ~ N(0, 1),  s = ||w_unseen||,

since the unseen factors are independent standard normals (w_unseen . h_unseen ~ N(0, s^2)).
The expectation is taken by Gauss-Hermite quadrature. The oracle's scores go through the
same metric code as the models' (metrics.task_metrics), so "distance to the ceiling" compares
like with like on the same test rows. The oracle with all factors is the best any model can
do; its loss from all factors to the EHR-visible ones is what withholding the film must cost
a model that uses the film fully.

Pure functions over arrays and plain dicts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .metrics import task_metrics

# The logistic's poles at +-i*pi slow Gauss-Hermite down as the unseen scale grows: with 160 nodes the
# error is < 1e-11 at scale 3 and < 2e-7 at scale 5 (the generator's unseen scales are below 3.5).
QUADRATURE_NODES = 160
FACTOR_SETS = ("all", "ehr", "cxr")


def expected_sigmoid(mean: np.ndarray, scale: float | np.ndarray, nodes: int = QUADRATURE_NODES) -> np.ndarray:
    """E[sigmoid(mean + scale Z)], Z ~ N(0, 1), elementwise (`[N]` -> `[N]`), by Gauss-Hermite quadrature.

    With x_i, w_i the Hermite nodes and weights: E[f(Z)] = sum_i w_i f(sqrt(2) x_i) / sqrt(pi).
    """
    x, w = np.polynomial.hermite.hermgauss(nodes)
    z = np.sqrt(2.0) * x  # [Q]
    arg = np.asarray(mean, float)[..., None] + np.asarray(scale, float)[..., None] * z
    # 0.5 * (1 + tanh(x / 2)) is the logistic, without overflow for large |x|
    return (0.5 * (1.0 + np.tanh(arg / 2.0))) @ w / np.sqrt(np.pi)


def oracle_probabilities(factors: np.ndarray, biases: np.ndarray, weights: np.ndarray,
                         seen: list[int] | None) -> np.ndarray:
    """Posterior P(y_k = 1 | h_seen) `[N, K]` for logistic labels in standard-normal factors.

    Args:
        factors: `[N, F]` the generator's factors.
        biases: `[K]`; weights: `[K, F]` (label k's logit is biases[k] + weights[k] . h).
        seen: indices of the factors the oracle sees (None: all).
    """
    factors = np.asarray(factors, float)
    weights = np.asarray(weights, float).reshape(len(biases), -1)
    biases = np.asarray(biases, float)
    mask = np.zeros(weights.shape[1], bool)
    mask[list(range(weights.shape[1])) if seen is None else list(seen)] = True
    mean = biases[None, :] + factors[:, mask] @ weights[:, mask].T  # [N, K]
    scale = np.sqrt((weights[:, ~mask] ** 2).sum(axis=1))  # [K]
    return expected_sigmoid(mean, np.broadcast_to(scale, mean.shape))


def check_label_model(model: dict[str, Any], labels: list[str], n_factors: int) -> tuple[np.ndarray, np.ndarray]:
    """Biases `[K]` and weights `[K, F]` of `labels` from a label model dict; ValueError naming what is wrong."""
    if model.get("link", "logistic") != "logistic":
        raise ValueError(f"label model link {model.get('link')!r}: only 'logistic' is supported")
    biases, weights = [], []
    for name in labels:
        entry = model.get("labels", {}).get(name)
        if entry is None:
            raise ValueError(f"label model: no entry for label {name!r}")
        w = np.asarray(entry.get("weights", []), float)
        b = float(entry.get("bias", np.nan))
        if w.shape != (n_factors,) or not np.all(np.isfinite(w)) or not np.isfinite(b):
            raise ValueError(f"label model: label {name!r} needs a finite bias and {n_factors} finite weights")
        biases.append(b)
        weights.append(w)
    return np.asarray(biases), np.vstack(weights)


def oracle_metrics(task_type: str, y_true: np.ndarray, factors: np.ndarray, model: dict[str, Any],
                   labels: list[str]) -> dict[str, Any]:
    """The oracle's test metrics with all factors and with each modality's visible factors.

    Args:
        task_type: "binary" or "multilabel" (multi-class cohorts have no logistic label model).
        y_true: `[N, K]` 0/1 labels of the evaluated rows.
        factors: `[N, F]` their generator factors.
        model: {"labels": {name: {"bias", "weights"}}, "visible": {modality: [factor indices]}}.
        labels: K names.
    Returns:
        {"all" | <modality>: task_metrics output, "seen": {set: [factor names]}, "n": N}.
    """
    if task_type == "multiclass":
        raise ValueError("the oracle covers logistic (binary / multi-label) label models only")
    factors = np.asarray(factors, float)
    if factors.ndim != 2 or len(factors) != len(y_true) or not np.all(np.isfinite(factors)):
        raise ValueError(f"factors must be a finite [N, F] array with N = {len(y_true)} rows")
    biases, weights = check_label_model(model, labels, factors.shape[1])
    names = model.get("factors") or [f"h{k}" for k in range(factors.shape[1])]
    sets: dict[str, list[int] | None] = {"all": None}
    sets.update({m: [int(i) for i in v] for m, v in model.get("visible", {}).items()})
    out: dict[str, Any] = {"n": int(len(y_true)), "seen": {}}
    for key, seen in sets.items():
        p = oracle_probabilities(factors, biases, weights, seen)
        out[key] = task_metrics(task_type, y_true, p, labels)
        out["seen"][key] = list(names) if seen is None else [names[i] for i in seen]
    return out


def ceiling_rows(oracle: dict[str, Any], runs: list[dict[str, Any]], image: str, anchor: str,
                 metric: str = "macro_auprc") -> dict[str, Any]:
    """Each run's distance to the ceiling and its film-withheld loss against the oracle's.

    Args:
        oracle: `oracle_metrics(...)` output (on the same test rows as the runs); its `paired` block,
            when present (stays without the image), is the oracle on the paired rows only, where the
            runs' withheld loss is measured, and gives the oracle's loss.
        runs: [{"method", "seed", "score" (the run's test metric), "withheld" (its metric on the
            paired test rows with the image withheld, or None), "paired" (its metric on those
            rows with the image, or None)}].
        image / anchor: the withheld modality (cxr) and the one kept (ehr).
    Returns:
        {"metric", "oracle_all", "oracle_anchor", "oracle_image", "oracle_withheld_loss",
         "rows": [{"method", "seed", "score", "gap_to_ceiling", "withheld_loss",
                   "share_of_oracle_loss"}]}. The losses are full - withheld (positive: the image helped).
    """
    full = oracle["all"][metric]
    on_paired = oracle.get("paired", oracle)  # the rows where a run's withheld loss is measured
    paired_full, kept = on_paired["all"][metric], on_paired.get(anchor, {}).get(metric)
    oracle_loss = None if paired_full is None or kept is None else paired_full - kept
    rows = []
    for r in runs:
        score = r.get("score")
        loss = None
        if r.get("withheld") is not None and r.get("paired") is not None:
            loss = r["paired"] - r["withheld"]
        rows.append({"method": r["method"], "seed": r.get("seed"), "score": score,
                     "gap_to_ceiling": None if score is None or full is None else full - score,
                     "withheld_loss": loss,
                     "share_of_oracle_loss": (loss / oracle_loss if loss is not None and oracle_loss
                                              and oracle_loss > 0 else None)})
    return {"metric": metric, "oracle_all": full, "oracle_anchor": oracle.get(anchor, {}).get(metric),
            "oracle_image": oracle.get(image, {}).get(metric), "oracle_withheld_loss": oracle_loss,
            "anchor": anchor, "image": image, "n": oracle["n"], "rows": rows}
