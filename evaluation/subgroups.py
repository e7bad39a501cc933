"""Metrics with CIs by subgroup (TRIPOD+AI): sex, age band, race, modality presence.

A label counts in a subgroup's macro average only when it has at least `min_events`
positives and `min_events` negatives there (fewer events make AUROC/AUPRC and their
bootstrap CIs meaningless: one death ranked first gives 1.000 (1.000 to 1.000)).
A subgroup with fewer than `min_patients` patients, or with no such label, is reported
with the flag `too_small`, a reason, its point estimate over the non-degenerate labels
and no CI: marked, not hidden.
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


def group_order(attribute: str, groups, dataset: str) -> list[str]:
    """Age bands in age order ("<65" before "65-74"), unknown last; other attributes alphabetical."""
    groups = list(groups)
    if attribute == "age band":
        bands = [name for _, _, name in (ADNI_AGE_BANDS if dataset == "adni" else MIMIC_AGE_BANDS)]
        return [b for b in bands if b in groups] + sorted(g for g in groups if g not in bands)
    return sorted(groups)


def subgroup_metrics(frame: pd.DataFrame, y_true: np.ndarray, y_score: np.ndarray, labels: list[str],
                     dataset: str, modalities: list[str], n_resamples: int, seed: int, level: float,
                     min_patients: int, min_events: int) -> list[dict[str, Any]]:
    """One record per (attribute, group): n, macro AUPRC/AUROC with CIs, or the too_small flag.

    Args:
        frame: the prediction frame (patient_id and the subgroup columns), one row per sample.
        y_true, y_score: `[N, K]` (multi-class tasks pass one-vs-rest indicators).
        labels: K names.
        n_resamples, seed, level: the patient bootstrap (the same as the overall CIs').
        min_patients, min_events: the too-small rule (see the module docstring).
    """
    y_true = np.asarray(y_true).reshape(len(y_true), -1)
    y_score = np.asarray(y_score, float).reshape(len(y_score), -1)
    records = []
    patients = frame["patient_id"].to_numpy()
    for attribute, values in subgroup_columns(frame, dataset, modalities).items():
        for group in group_order(attribute, values.unique(), dataset):
            rows = np.flatnonzero(values.to_numpy() == group)
            n_patients = len(np.unique(patients[rows]))
            positives = y_true[rows].sum(axis=0)
            negatives = len(rows) - positives
            enough = (positives >= min_events) & (negatives >= min_events)
            rec = {"attribute": attribute, "group": group, "n": len(rows), "n_patients": n_patients,
                   "n_pos": positives.astype(int).tolist(), "n_neg": negatives.astype(int).tolist(),
                   "labels_averaged": int(enough.sum()), "labels_total": len(labels),
                   "macro_auprc_ci": None, "macro_auroc_ci": None, "too_small": False, "too_small_reason": None}
            if n_patients < min_patients or not enough.any():
                m = multilabel_metrics(y_true[rows], y_score[rows], labels)
                rec.update(too_small=True, macro_auprc=m["macro_auprc"], macro_auroc=m["macro_auroc"],
                           labels_averaged=len(labels) - len(m["excluded_labels"]),
                           too_small_reason=(f"{n_patients} patient{'s' if n_patients != 1 else ''} < {min_patients}"
                                             if n_patients < min_patients
                                             else _events_reason(positives, negatives, min_events)))
            else:
                keep = np.flatnonzero(enough)
                names = [labels[k] for k in keep]
                m = multilabel_metrics(y_true[rows][:, keep], y_score[rows][:, keep], names)
                ci = bootstrap_label_cis(y_true[rows][:, keep], y_score[rows][:, keep], patients[rows], names,
                                         n_resamples, seed, level, min_valid=1, min_events=min_events)
                rec.update(macro_auprc=m["macro_auprc"], macro_auroc=m["macro_auroc"],
                           macro_auprc_ci=ci["macro_auprc_ci"], macro_auroc_ci=ci["macro_auroc_ci"])
            rec["labels_left_out"] = [labels[k] for k in np.flatnonzero(~enough)]
            records.append(rec)
    return records


def _events_reason(positives: np.ndarray, negatives: np.ndarray, min_events: int) -> str:
    if len(positives) == 1:
        pos, neg = int(positives[0]), int(negatives[0])
        return f"{pos} positive{'s' if pos != 1 else ''}, {neg} negative{'s' if neg != 1 else ''} (< {min_events})"
    return f"no label with >= {min_events} positives and >= {min_events} negatives"
