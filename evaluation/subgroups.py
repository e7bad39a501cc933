"""Metrics with CIs by subgroup (TRIPOD+AI): sex, age band, race, modality presence.

A subgroup too small for a CI (fewer than `min_patients` patients, or a label
degenerate in it) is reported with the flag `too_small` and no CI: marked, not hidden.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .bootstrap import bootstrap_label_cis
from .metrics import multilabel_metrics

MIMIC_AGE_BANDS = [(18, 45, "18-44"), (45, 65, "45-64"), (65, 80, "65-79"), (80, 200, "80+")]
ADNI_AGE_BANDS = [(0, 65, "<65"), (65, 75, "65-74"), (75, 85, "75-84"), (85, 200, "85+")]


def race_group(race: str) -> str:
    """Collapse MIMIC's ~30 race strings into six groups (prefix match, as MIMIC codes them)."""
    r = str(race).upper()
    if r.startswith("WHITE"):
        return "WHITE"
    if r.startswith("BLACK"):
        return "BLACK"
    if r.startswith("HISPANIC") or r.startswith("SOUTH AMERICAN"):
        return "HISPANIC/LATINO"
    if r.startswith("ASIAN"):
        return "ASIAN"
    if r in ("UNKNOWN", "UNABLE TO OBTAIN", "PATIENT DECLINED TO ANSWER", "NAN", "NONE", ""):
        return "UNKNOWN"
    return "OTHER"


def age_band(age: pd.Series, bands) -> pd.Series:
    out = pd.Series("unknown", index=age.index, dtype=object)
    for lo, hi, name in bands:
        out[(age >= lo) & (age < hi)] = name
    return out


def subgroup_columns(frame: pd.DataFrame, dataset: str, modalities: list[str]) -> dict[str, pd.Series]:
    groups = {"sex": frame["sex"].astype(str),
              "age band": age_band(frame["age"], ADNI_AGE_BANDS if dataset == "adni" else MIMIC_AGE_BANDS)}
    if "race" in frame.columns:
        groups["race"] = frame["race"].map(race_group)
    for m in modalities:
        col = f"has_{m}"
        if col in frame.columns and frame[col].nunique() > 1:
            groups[f"{m} present"] = frame[col].map({True: "yes", False: "no"})
    return groups


def subgroup_metrics(frame: pd.DataFrame, y_true: np.ndarray, y_score: np.ndarray, labels: list[str],
                     dataset: str, modalities: list[str], n_resamples: int = 200, seed: int = 42,
                     min_patients: int = 10) -> list[dict[str, Any]]:
    """One record per (attribute, group): n, macro AUPRC/AUROC with CIs, or the too_small flag.

    `y_true`/`y_score` are `[N, K]` (multi-class tasks pass one-vs-rest indicators).
    """
    records = []
    patients = frame["patient_id"].to_numpy()
    for attribute, values in subgroup_columns(frame, dataset, modalities).items():
        for group in sorted(values.unique()):
            rows = np.flatnonzero(values.to_numpy() == group)
            n_patients = len(np.unique(patients[rows]))
            m = multilabel_metrics(y_true[rows], y_score[rows], labels)
            rec = {"attribute": attribute, "group": group, "n": len(rows), "n_patients": n_patients,
                   "macro_auprc": m["macro_auprc"], "macro_auroc": m["macro_auroc"],
                   "macro_auprc_ci": None, "macro_auroc_ci": None, "too_small": False,
                   "excluded_labels": m["excluded_labels"]}
            if n_patients < min_patients or m["macro_auprc"] is None:
                rec["too_small"] = True
            else:
                ci = bootstrap_label_cis(y_true[rows], y_score[rows], patients[rows], labels, n_resamples, seed,
                                         min_valid=1)
                rec["macro_auprc_ci"], rec["macro_auroc_ci"] = ci["macro_auprc_ci"], ci["macro_auroc_ci"]
            records.append(rec)
    return records
