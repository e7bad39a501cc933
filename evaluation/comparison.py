"""Comparing methods across seeds: mean +- std, average rank over labels (paper Table 6)."""

from __future__ import annotations

import pandas as pd


def mean_std_over_seeds(table: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """`table`: one row per (method, seed) with metric columns -> per method mean, std, n_seeds.

    The std is the sample standard deviation (ddof=1); with a single seed it is NaN
    (undefined), never 0: one seed says nothing about variability between seeds.
    """
    grouped = table.groupby("method", sort=False)
    out = pd.DataFrame({"n_seeds": grouped.size()})
    for m in metrics:
        out[f"{m}_mean"] = grouped[m].mean()
        out[f"{m}_std"] = grouped[m].std(ddof=1)
    return out.reset_index()


def average_rank(per_label: pd.DataFrame, metric: str) -> pd.Series:
    """Average rank of each method over labels (rank 1 = best; ties share the mean rank).

    `per_label`: rows (method, label, <metric>), already averaged over seeds. Labels
    where any method has no value (degenerate) are left out of the ranking.
    """
    wide = per_label.pivot(index="label", columns="method", values=metric).dropna()
    if wide.empty:
        return pd.Series(dtype=float)
    ranks = wide.rank(axis=1, ascending=False, method="average")
    return ranks.mean(axis=0).sort_values()
