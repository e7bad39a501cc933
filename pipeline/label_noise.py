"""Label noise for the robustness analysis (paper Fig. 6): flip a fraction of TRAINING labels.

Only the trainer's training tensors are changed; validation and test labels, the cohort
files and every other split stay clean. The flip is exact, not Bernoulli: with N
training samples and rate r, round(r * N) samples are flipped, so the rate a run
reports is the rate it trained with.

- multilabel / binary: independently for each label column k, round(r * N) samples are
  chosen and their 0/1 value for label k is inverted.
- multiclass: round(r * N) samples are chosen and each is moved to a class drawn
  uniformly from the K - 1 other classes.
"""

from __future__ import annotations

import numpy as np


def flip_labels(y: np.ndarray, rate: float, task_type: str, num_classes: int, seed: int) -> tuple[np.ndarray, int]:
    """A copy of `y` with an exact fraction of labels flipped, and how many entries changed.

    Args:
        y: `[N, K]` 0/1 (multilabel/binary) or `[N]` class indices (multiclass).
        rate: fraction in [0, 1) to flip (per label column for multilabel/binary).
        task_type: "multilabel", "binary" or "multiclass".
        num_classes: K (classes for multiclass; ignored otherwise).
        seed: the run seed (the same seed flips the same entries).
    Returns:
        (noisy labels with y's shape and dtype, number of flipped entries).
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"label_noise must be in [0, 1) (got {rate!r})")
    y = np.array(y, copy=True)
    n = len(y)
    count = int(round(rate * n))
    if count == 0:
        return y, 0
    rng = np.random.default_rng(seed)
    if task_type == "multiclass":
        if num_classes < 2:
            raise ValueError("label noise on a multiclass task needs at least 2 classes")
        rows = rng.choice(n, size=count, replace=False)
        shift = rng.integers(1, num_classes, size=count)  # never 0: always another class
        y[rows] = (y[rows] + shift) % num_classes
        return y, count
    y2 = y.reshape(n, -1)
    for k in range(y2.shape[1]):
        rows = rng.choice(n, size=count, replace=False)
        y2[rows, k] = 1 - y2[rows, k]
    return y2.reshape(y.shape), count * y2.shape[1]
