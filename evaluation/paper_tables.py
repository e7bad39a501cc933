"""The paper's result tables from the project's own evaluated runs.

- Table 1 style (`cross_cohort_table`): methods x cohorts, a metric's mean +- std over
  seeds (std None with one seed), the rank of each method within its cohort (1 = best; ties share the mean rank),
  and the relative gain over the strongest baseline,
  gain = 100 * (mean - best_baseline_mean) / best_baseline_mean  (percent),
  where the strongest baseline is the best mean among methods not in `proposed`. The best
  method of a cohort is flagged `best` (bold) and the strongest baseline `strongest_baseline`
  (underlined).
- Table 6 style (`per_label_table`): per-label AUPRC of each method (mean over seeds) and the
  average rank over labels (labels where any method has no value are left out of the ranks).
- Table 7 style: `cross_cohort_table` for each secondary metric.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .comparison import average_rank


def cross_cohort_table(results: pd.DataFrame, metric: str, proposed: list[str]) -> pd.DataFrame:
    """One row per (cohort, method) with mean, std, n_seeds, rank, gain_pct, best, strongest_baseline.

    Args:
        results: rows (cohort, method, seed, <metric>); NaN/None values are left out.
        metric: the column to summarise (higher is better).
        proposed: method names that are not baselines (e.g. ["masam"]).
    """
    data = results.dropna(subset=[metric])
    rows = []
    for cohort, group in data.groupby("cohort", sort=False):
        stats = group.groupby("method", sort=False)[metric].agg(["mean", "std", "size"])
        ranks = stats["mean"].rank(ascending=False, method="average")
        baselines = stats.loc[[m for m in stats.index if m not in proposed]]
        strongest = baselines["mean"].idxmax() if len(baselines) else None
        reference = float(baselines["mean"].max()) if len(baselines) else None
        best = stats["mean"].max()
        for method, s in stats.iterrows():
            gain = None
            if reference is not None and reference != 0:
                gain = 100.0 * (float(s["mean"]) - reference) / reference
            rows.append({"cohort": cohort, "method": method, "metric": metric, "mean": float(s["mean"]),
                         # one seed has no spread: None, never a std of 0
                         "std": float(s["std"]) if s["size"] >= 2 else None, "n_seeds": int(s["size"]),
                         "rank": float(ranks[method]),
                         "gain_pct": gain, "best": bool(np.isclose(s["mean"], best)),
                         "strongest_baseline": method == strongest})
    return pd.DataFrame(rows, columns=["cohort", "method", "metric", "mean", "std", "n_seeds", "rank", "gain_pct",
                                       "best", "strongest_baseline"])


def per_label_table(per_label: pd.DataFrame, metric: str = "auprc") -> tuple[pd.DataFrame, pd.Series]:
    """(labels x methods table of `metric` averaged over seeds, average rank per method).

    Args:
        per_label: rows (method, seed, label, <metric>).
    """
    means = per_label.groupby(["method", "label"], as_index=False, sort=False)[metric].mean()
    wide = means.pivot(index="label", columns="method", values=metric)
    order = list(dict.fromkeys(per_label["method"]))
    labels = list(dict.fromkeys(per_label["label"]))
    return wide.loc[labels, order], average_rank(means, metric)
