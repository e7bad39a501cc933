"""Patient-level train/val/test split.

Rows are assigned by patient, never by row, so a patient's stays (or visits)
all land in one part: a patient in two parts would leak into the test metrics.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def assign_patient_split(
    patient_ids: pd.Series | np.ndarray | list,
    fractions: tuple[float, float, float],
    seed: int,
) -> pd.Series:
    """Return 'train'/'val'/'test' per row, assigned by patient.

    The unique ids are sorted, shuffled with `seed` and cut at the cumulative
    `fractions` (rounded to whole patients), so the same set of patients and
    seed always gives the same split, whatever the row order.

    Args:
        patient_ids: one id per row, `[N]`.
        fractions: train, val, test shares; must be non-negative and sum to 1 (the ETL settings' `split`).
        seed: shuffle seed (the ETL settings' `split_seed`).

    Returns:
        A string Series `[N]` aligned with the input rows.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    ids = pd.Series(np.asarray(patient_ids)).reset_index(drop=True)
    unique = np.sort(ids.unique())
    order = np.random.default_rng(seed).permutation(len(unique))
    shuffled = unique[order]
    n = len(shuffled)
    n_train = int(round(fractions[0] * n))
    n_val = int(round((fractions[0] + fractions[1]) * n)) - n_train
    part = np.empty(n, dtype=object)
    part[:n_train] = "train"
    part[n_train : n_train + n_val] = "val"
    part[n_train + n_val :] = "test"
    lookup = dict(zip(shuffled.tolist(), part.tolist(), strict=True))
    return ids.map(lookup).astype(str).rename("split")
