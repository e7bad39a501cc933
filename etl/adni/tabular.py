"""ADNIMERGE baseline rows -> a numeric feature matrix, with statistics from training rows only.

Per numeric column: censored assay text (">1700", "<8") becomes the bound plus a
`<col>_censored` flag; columns missing in more than `max_missing` of training rows
are dropped; missing values get the training mean plus a `<col>_missing` indicator;
values are z-scored with training mean/std. Categorical columns are one-hot
encoded with the categories seen in training.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

NUMERIC = ["AGE", "PTEDUCAT", "APOE4", "ABETA", "TAU", "PTAU", "FDG", "PIB", "AV45", "FBB", "CDRSB", "ADAS11",
           "ADAS13", "ADASQ4", "MMSE", "RAVLT_immediate", "RAVLT_learning", "RAVLT_forgetting",
           "RAVLT_perc_forgetting", "FAQ", "MOCA"]
CATEGORICAL = ["PTGENDER", "PTETHCAT", "PTRACCAT", "PTMARRY"]
CENSORED = ["ABETA", "TAU", "PTAU"]


def parse_censored(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """('>1700' -> 1700, flag 1), ('<8' -> 8, flag 1), ('812.5' -> 812.5, flag 0); other text -> NaN."""
    text = values.astype("string").str.strip()
    censored = text.str.match(r"^[<>]").fillna(False)
    number = pd.to_numeric(text.str.lstrip("<>").str.strip(), errors="coerce")
    return number.astype(float), censored.astype(np.float32)


def fit_transform_tabular(base: pd.DataFrame, train: np.ndarray, exclude: list[str], max_missing: float
                          ) -> tuple[np.ndarray, list[str], dict]:
    """Features `[N, F]` float32, their names, and the fitted statistics (for the manifest).

    Args:
        base: one baseline row per sample.
        train: boolean `[N]`, the training rows; every statistic comes from them only.
        exclude: columns not used as features (e.g. those that define the diagnosis).
    """
    cols: dict[str, np.ndarray] = {}
    stats: dict = {"dropped_missing": {}, "numeric": {}, "categories": {}}
    for c in [c for c in NUMERIC if c not in exclude and c in base.columns]:
        x, flag = parse_censored(base[c])
        missing_rate = float(x[train].isna().mean()) if train.any() else 1.0
        if missing_rate > max_missing:
            stats["dropped_missing"][c] = round(missing_rate, 4)
            continue
        mean = float(x[train].mean()) if x[train].notna().any() else 0.0
        std = float(x[train].std(ddof=0)) if x[train].notna().sum() > 1 else 1.0
        std = std if std > 1e-8 else 1.0
        stats["numeric"][c] = {"mean": mean, "std": std, "missing_rate": missing_rate}
        cols[c] = ((x.fillna(mean) - mean) / std).to_numpy()
        cols[f"{c}_missing"] = x.isna().to_numpy().astype(float)
        if c in CENSORED:
            cols[f"{c}_censored"] = flag.to_numpy()
    for c in [c for c in CATEGORICAL if c not in exclude and c in base.columns]:
        values = base[c].astype("string").str.strip().fillna("")
        categories = sorted(v for v in values[train].unique() if v)
        stats["categories"][c] = categories
        for cat in categories:
            cols[f"{c}={cat}"] = (values == cat).to_numpy().astype(float)
    names = list(cols)
    matrix = np.stack([cols[n] for n in names], axis=1).astype(np.float32) if names else np.zeros((len(base), 0), np.float32)
    return matrix, names, stats
