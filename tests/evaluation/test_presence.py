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
    assert b["paired"]["macro_auprc"] == 1.0 and b["paired"]["excluded_labels"] == []
    assert b["paired"]["too_small"] is False
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
    rows = presence_rows({"unimodal": None, "late_fusion": blocks()})  # a method without a block is skipped
    assert [r["method"] for r in rows] == ["late_fusion"]
    assert rows[0]["absent_n"] == 3 and rows[0]["difference"] is not None


def test_a_group_of_exactly_the_minimum_patients_gets_its_ci_and_difference():
    b = blocks(min_patients=5)  # the paired group has 5 patients: enough (>= the minimum)
    assert not b["paired"]["too_small"] and b["paired"]["macro_auprc_ci"] is not None
    assert b["withheld"]["difference"] is not None
    assert b["image_absent"]["too_small"] and b["image_absent"]["macro_auroc_ci"] is None  # 3 patients < 5


def test_block_cis_are_the_patient_bootstraps_with_the_given_seed_and_level():
    from clinfuse.evaluation.bootstrap import bootstrap_label_cis, paired_bootstrap_difference

    # 40 patients with noisy scores: the intervals depend on the resamples, so on the seed
    rng = np.random.default_rng(5)
    y = (rng.random((40, 1)) < 0.5).astype(int)
    full, held = rng.random((40, 1)) + 0.5 * y, rng.random((40, 1)) + 0.2 * y
    present, patients = np.arange(40) % 3 != 0, np.arange(40)
    b = presence_blocks(y, full, held, patients, present, ["x"], "ehr", "cxr", n_resamples=60, seed=7, level=0.8,
                        min_patients=3, min_events=1)
    for block, rows, scores in (("paired", present, full), ("image_absent", ~present, full), ("withheld", present, held)):
        ci = bootstrap_label_cis(y[rows], scores[rows], patients[rows], ["x"], 60, 7, 0.8, min_events=1)
        other = bootstrap_label_cis(y[rows], scores[rows], patients[rows], ["x"], 60, 8, 0.8, min_events=1)
        assert b[block]["macro_auprc_ci"] == ci["macro_auprc_ci"] != other["macro_auprc_ci"], block
        assert b[block]["macro_auroc_ci"] == ci["macro_auroc_ci"], block
    assert b["withheld"]["difference"] == paired_bootstrap_difference(y[present], held[present], full[present],
                                                                      patients[present], 60, 7, 0.8)
    assert (b["paired"]["n_patients"], b["image_absent"]["n_patients"]) == (26, 14)


def test_two_labels_with_presence_as_0_1_integers_are_scored_per_block():
    # a second label copying the first: the macro averages equal the single label's; the presence
    # flag may come as 0/1 integers (a cohort column), not only as booleans
    y2, full2, held2 = (np.hstack([a, a]) for a in (Y, FULL, HELD))
    b = presence_blocks(y2, full2, held2, PATIENTS, PRESENT.astype(int), ["x", "x2"], "ehr", "cxr", n_resamples=50,
                        seed=0, level=0.95, min_patients=3, min_events=1)
    assert (b["paired"]["n"], b["image_absent"]["n"]) == (5, 3)
    assert b["paired"]["macro_auroc"] == 1.0 and b["image_absent"]["macro_auroc"] == 0.5
    assert np.isclose(b["withheld"]["macro_auroc"], 4 / 6)


def test_an_empty_block_counts_no_patient_and_excludes_every_label():
    b = presence_blocks(Y, FULL, HELD, PATIENTS, np.ones(8, bool), ["x"], "ehr", "cxr", 50, 0, 0.95, 3, 5)
    assert b["image_absent"] == {"n": 0, "n_patients": 0, "macro_auprc": None, "macro_auroc": None,
                                 "macro_auprc_ci": None, "macro_auroc_ci": None, "excluded_labels": ["x"],
                                 "too_small": True}
    assert (b["anchor"], b["image"]) == ("ehr", "cxr")


def test_a_report_row_carries_each_block_s_numbers_under_its_own_name():
    b = blocks()
    diff = b["withheld"]["difference"]["macro_auprc"]
    (row,) = presence_rows({"masam": b})
    assert row == {"method": "masam", "anchor": "ehr", "image": "cxr",
                   "paired_n": 5, "paired_auprc": b["paired"]["macro_auprc"],
                   "paired_auprc_ci": b["paired"]["macro_auprc_ci"], "paired_auroc": 1.0,
                   "paired_auroc_ci": b["paired"]["macro_auroc_ci"],
                   "absent_n": 3, "absent_auprc": b["image_absent"]["macro_auprc"],
                   "absent_auprc_ci": b["image_absent"]["macro_auprc_ci"], "absent_auroc": 0.5,
                   "absent_auroc_ci": b["image_absent"]["macro_auroc_ci"],
                   "withheld_auprc": b["withheld"]["macro_auprc"], "withheld_auprc_ci": b["withheld"]["macro_auprc_ci"],
                   "difference": diff["difference"], "difference_ci": diff["ci"], "p_le_zero": diff["p_le_zero"]}
    # a run too small for the difference still gets its row, without one
    (small,) = presence_rows({"masam": blocks(min_patients=6)})
    assert small["difference"] is None and small["difference_ci"] is None and small["p_le_zero"] is None
