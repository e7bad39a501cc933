"""Results by image presence and with the image withheld, on hand-checkable scores."""

from __future__ import annotations

import numpy as np

from clinfuse.evaluation.presence import presence_blocks, presence_rows

# 8 stays of 8 patients, one label; rows 0-4 have a film, rows 5-7 do not.
Y = np.array([[1], [0], [1], [0], [1], [1], [0], [0]])
FULL = np.array([[0.9], [0.1], [0.8], [0.3], [0.7], [0.4], [0.6], [0.2]])
# withheld: the paired rows lose their ordering (row 1, a negative, now outranks positives 2 and 4)
HELD = np.array([[0.9], [0.75], [0.5], [0.3], [0.7], [0.4], [0.6], [0.2]])
PRESENT = np.array([True] * 5 + [False] * 3)
PATIENTS = np.arange(8)


def blocks(min_patients=3):
    return presence_blocks(Y, FULL, HELD, PATIENTS, PRESENT, ["x"], "ehr", "cxr", n_resamples=200, seed=0,
                           level=0.95, min_patients=min_patients, min_events=5)


def test_paired_and_image_absent_stays_are_scored_separately():
    b = blocks()
    assert (b["paired"]["n"], b["image_absent"]["n"]) == (5, 3)
    assert b["paired"]["macro_auroc"] == 1.0  # positives 0.9, 0.8, 0.7 above negatives 0.1, 0.3
    assert b["image_absent"]["macro_auroc"] == 0.5  # positive 0.4 between negatives 0.6 and 0.2
    assert b["paired"]["macro_auprc_ci"] is not None


def test_withheld_image_scores_only_the_paired_stays_and_reports_the_paired_difference():
    b = blocks()
    # withheld paired rows: positives 0.9, 0.5, 0.7; negatives 0.75, 0.3 -> AUROC 4/6
    assert np.isclose(b["withheld"]["macro_auroc"], 4 / 6)
    d = b["withheld"]["difference"]["macro_auroc"]
    assert np.isclose(d["difference"], 4 / 6 - 1.0)
    lo, hi = d["ci"]
    assert lo <= d["difference"] <= hi <= 0
    assert d["p_le_zero"] == 1.0  # withholding the film never helps in any resample


def test_groups_below_the_patient_minimum_get_no_ci_and_no_difference():
    b = blocks(min_patients=6)
    assert b["paired"]["too_small"] and b["paired"]["macro_auprc_ci"] is None
    assert b["paired"]["macro_auroc"] == 1.0  # the point estimate is still shown
    assert b["withheld"]["difference"] is None


def test_a_cohort_without_image_absent_stays_has_an_empty_block():
    b = presence_blocks(Y, FULL, HELD, PATIENTS, np.ones(8, bool), ["x"], "ehr", "cxr", 50, 0, 0.95, 3, 5)
    assert b["image_absent"]["n"] == 0 and b["image_absent"]["macro_auprc"] is None


def test_report_rows_carry_one_line_per_method_with_a_block():
    rows = presence_rows({"late_fusion": blocks(), "unimodal": None})
    assert [r["method"] for r in rows] == ["late_fusion"]
    assert rows[0]["absent_n"] == 3 and rows[0]["difference"] is not None
