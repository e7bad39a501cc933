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


# MASAM and its design alternatives (the MASAM paper's Table 8): config name -> design.
MASAM_DESIGNS = {
    "masam": "APS score, MDPS direction (the paper's design)",
    "masam_score_ogm": "score: OGM-GE's modality score instead of APS",
    "masam_gamma_only": "score: gradient alignment only (alpha = 0)",
    "masam_dir_difference": "direction: g_fuse − g_uni",
    "masam_dir_orthogonal": "direction: part of g_uni orthogonal to g_fuse",
}


def design_alternatives(comparison: list[dict], designs: dict[str, str] = MASAM_DESIGNS) -> list[dict]:
    """A Table 8-style block: MASAM and its design alternatives, picked from the method comparison.

    Args:
        comparison: rows with at least `method` and `headline_mean` (the report's comparison table).
        designs: method name -> description; the first entry is the reference design.
    Returns:
        The rows of the methods in `designs` that are present, in `designs` order, each
        copied with `design` and `delta` (its headline mean minus the reference's); empty
        unless the reference and at least one alternative are present.
    """
    by_method = {row["method"]: row for row in comparison}
    reference = next(iter(designs))
    present = [m for m in designs if m in by_method]
    if reference not in by_method or len(present) < 2:
        return []
    base = by_method[reference]["headline_mean"]
    return [{**by_method[m], "design": designs[m],
             "delta": None if by_method[m]["headline_mean"] is None or base is None
             else by_method[m]["headline_mean"] - base} for m in present]
