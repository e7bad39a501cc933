"""Pure helpers for patient-level attributions: variables, cases by rule, the randomisation check.

The attributions themselves are computed by `pipeline.attributions` (Captum, on the model);
this module aggregates them, picks the cases a report shows, and compares maps.
"""

from __future__ import annotations

import numpy as np

CASE_RULES = {
    "top_true_positive": "highest-risk true positive",
    "top_false_positive": "highest-risk false positive",
    "missed_positive": "missed positive (lowest risk among positives below the threshold)",
}


def channel_variables(channels: list[str]) -> list[str]:
    """The variable of each input channel: `<name>_mask` belongs to `<name>` (order of first appearance kept)."""
    return [c[: -len("_mask")] if c.endswith("_mask") else c for c in channels]


def mask_channels(channels: list[str]) -> np.ndarray:
    """`[C]` True for the observation-mask channels (`<name>_mask`): those an IG baseline holds at the input."""
    return np.array([c.endswith("_mask") for c in channels], dtype=bool)


def variable_hour_map(attr: np.ndarray, channels: list[str]) -> tuple[list[str], np.ndarray]:
    """Attributions `[..., T, C]` summed over each variable's channels (value and mask): `[..., V, T]`.

    Returns (variable names, the map).
    """
    names = channel_variables(channels)
    variables = list(dict.fromkeys(names))
    attr = np.asarray(attr, dtype=np.float64)
    out = np.stack([attr[..., [j for j, n in enumerate(names) if n == v]].sum(-1) for v in variables], axis=-2)
    return variables, out


def top_variables(scores: np.ndarray, names: list[str], n: int) -> list[dict]:
    """The `n` variables with the largest |attribution|, with its sign ("raises" / "lowers" the risk)."""
    order = np.argsort(-np.abs(scores), kind="stable")[:n]
    return [{"variable": names[j], "attribution": float(scores[j]),
             "direction": "raises" if scores[j] > 0 else "lowers" if scores[j] < 0 else "no effect"} for j in order]


def select_cases(y: np.ndarray, p: np.ndarray, threshold: float, per_rule: int) -> list[tuple[str, int]]:
    """Test rows shown for one label, by rule: (rule, row index), at most `per_rule` per rule.

    A row is called positive when p >= threshold (the label's operating point).
    top_true_positive: positives called positive, highest risk first; top_false_positive:
    negatives called positive, highest risk first; missed_positive: positives below the
    threshold, lowest risk first. The three sets are disjoint.

    Args:
        y: `[N]` 0/1 labels; p: `[N]` predicted risks.
    """
    y, p = np.asarray(y).astype(bool), np.asarray(p, dtype=np.float64)
    called = p >= threshold
    rows = np.arange(len(p))
    picks = {
        "top_true_positive": rows[y & called][np.argsort(-p[y & called], kind="stable")],
        "top_false_positive": rows[~y & called][np.argsort(-p[~y & called], kind="stable")],
        "missed_positive": rows[y & ~called][np.argsort(p[y & ~called], kind="stable")],
    }
    return [(rule, int(i)) for rule in CASE_RULES for i in picks[rule][:per_rule]]


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman rank correlation of two maps (flattened; average ranks for ties); None when one is constant."""
    a, b = np.ravel(np.asarray(a, np.float64)), np.ravel(np.asarray(b, np.float64))
    ra, rb = _average_ranks(a), _average_ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.zeros(len(counts))
    np.add.at(sums, inverse, ranks)
    return (sums / counts)[inverse]
