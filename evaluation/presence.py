"""Results by modality presence, and robustness to a withheld image (partially paired cohorts).

For a cohort whose image (chest film, MRI) may be missing, the test stays split
into those with every modality ("paired") and those without the image ("EHR
only", or "tabular only" for ADNI); each gets its own macro AUPRC/AUROC with
patient-bootstrap CIs. The robustness block scores the PAIRED stays a second
time with the image withheld (the model sees them as image-less stays) and
reports the paired bootstrap difference withheld - full on the same resampled
patients: how much the model loses when the film is not there.

Pure functions over arrays and plain dicts: no file, model or MLflow access.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .bootstrap import bootstrap_label_cis, paired_bootstrap_difference
from .metrics import multilabel_metrics


def _block(y: np.ndarray, p: np.ndarray, patients: np.ndarray, rows: np.ndarray, labels: list[str],
           n_resamples: int, seed: int, level: float, min_patients: int, min_events: int) -> dict[str, Any]:
    """Macro AUPRC/AUROC of `rows` with CIs (None when too few patients or every label degenerate)."""
    n_patients = len(np.unique(patients[rows]))
    out = {"n": int(len(rows)), "n_patients": int(n_patients), "macro_auprc": None, "macro_auroc": None,
           "macro_auprc_ci": None, "macro_auroc_ci": None, "excluded_labels": list(labels), "too_small": True}
    if len(rows) == 0:
        return out
    m = multilabel_metrics(y[rows], p[rows], labels)
    out.update(macro_auprc=m["macro_auprc"], macro_auroc=m["macro_auroc"], excluded_labels=m["excluded_labels"])
    if n_patients >= min_patients and m["macro_auprc"] is not None:
        ci = bootstrap_label_cis(y[rows], p[rows], patients[rows], labels, n_resamples, seed, level, min_valid=1,
                                 min_events=min_events)
        out.update(macro_auprc_ci=ci["macro_auprc_ci"], macro_auroc_ci=ci["macro_auroc_ci"], too_small=False)
    return out


def presence_blocks(y_true: np.ndarray, score_full: np.ndarray, score_withheld: np.ndarray, patients: np.ndarray,
                    image_present: np.ndarray, labels: list[str], anchor: str, image: str,
                    n_resamples: int, seed: int, level: float, min_patients: int, min_events: int) -> dict[str, Any]:
    """Paired / image-absent results and the withheld-image robustness block of one run.

    Args:
        y_true: `[N, K]` 0/1 (one-vs-rest indicators for multi-class tasks).
        score_full: `[N, K]` probabilities with every available input.
        score_withheld: `[N, K]` probabilities with the image withheld from every row.
        patients: `[N]` patient ids (the bootstrap resamples patients).
        image_present: `[N]` bool, whether the row has the image.
        labels: K names.
        anchor: the always-present modality's name (e.g. "ehr"); image: the other (e.g. "cxr").
        n_resamples, seed, level: the patient bootstrap (the evaluation settings).
    Returns:
        {"anchor", "image", "paired": block, "image_absent": block, "withheld": block of the
        withheld scores on the paired rows + "difference" (withheld - full, paired bootstrap)}.
    """
    y = np.asarray(y_true).reshape(len(y_true), -1)
    full = np.asarray(score_full, dtype=float).reshape(len(y), -1)
    held = np.asarray(score_withheld, dtype=float).reshape(len(y), -1)
    patients = np.asarray(patients)
    present = np.asarray(image_present, dtype=bool)
    paired, absent = np.flatnonzero(present), np.flatnonzero(~present)
    withheld = _block(y, held, patients, paired, labels, n_resamples, seed, level, min_patients, min_events)
    withheld["difference"] = None
    if not withheld["too_small"]:
        withheld["difference"] = paired_bootstrap_difference(y[paired], held[paired], full[paired], patients[paired],
                                                             n_resamples, seed, level)
    return {"anchor": anchor, "image": image,
            "paired": _block(y, full, patients, paired, labels, n_resamples, seed, level, min_patients, min_events),
            "image_absent": _block(y, full, patients, absent, labels, n_resamples, seed, level, min_patients, min_events),
            "withheld": withheld}


def presence_rows(blocks_by_method: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One report row per method: paired, image-absent, withheld scores and the difference.

    Args:
        blocks_by_method: method -> `presence_blocks(...)` output (methods without one are skipped).
    """
    rows = []
    for method, b in blocks_by_method.items():
        if not b:
            continue
        diff = (b["withheld"].get("difference") or {}).get("macro_auprc") or {}
        rows.append({"method": method, "anchor": b["anchor"], "image": b["image"],
                     "paired_n": b["paired"]["n"], "paired_auprc": b["paired"]["macro_auprc"],
                     "paired_auprc_ci": b["paired"]["macro_auprc_ci"],
                     "paired_auroc": b["paired"]["macro_auroc"], "paired_auroc_ci": b["paired"]["macro_auroc_ci"],
                     "absent_n": b["image_absent"]["n"], "absent_auprc": b["image_absent"]["macro_auprc"],
                     "absent_auprc_ci": b["image_absent"]["macro_auprc_ci"],
                     "absent_auroc": b["image_absent"]["macro_auroc"],
                     "absent_auroc_ci": b["image_absent"]["macro_auroc_ci"],
                     "withheld_auprc": b["withheld"]["macro_auprc"],
                     "withheld_auprc_ci": b["withheld"]["macro_auprc_ci"],
                     "difference": diff.get("difference"), "difference_ci": diff.get("ci"),
                     "p_le_zero": diff.get("p_le_zero")})
    return rows
