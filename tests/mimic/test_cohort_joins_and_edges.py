"""Cohort rules at their edges: stays missing their admission or patient row are counted,
not lost; a newborn is a child, not a data error; a zero-length ICU stay is consistent."""

from __future__ import annotations

import pandas as pd

from clinfuse.etl.mimic.cohort import join_stays, select_cohort


def _tables():
    patients = pd.DataFrame({"subject_id": [1, 2], "gender": ["F", "M"], "anchor_age": [60, 0],
                             "anchor_year": [2150, 2150], "dod": [None, None]})
    admissions = pd.DataFrame({"subject_id": [1, 2, 3], "hadm_id": [10, 20, 40],
                               "admittime": ["2150-01-01 00:00", "2150-02-01 00:00", "2150-04-01 00:00"],
                               "dischtime": ["2150-01-09 00:00", "2150-02-09 00:00", "2150-04-09 00:00"],
                               "deathtime": [None, None, None], "race": ["WHITE", "ASIAN", "WHITE"]})
    icustays = pd.DataFrame({
        "subject_id": [1, 2, 1, 3],
        "hadm_id": [10, 20, 30, 40],  # hadm 30 has no admissions row; subject 3 no patients row
        "stay_id": [100, 200, 300, 400],
        "first_careunit": ["MICU"] * 4, "last_careunit": ["MICU"] * 4,
        "intime": ["2150-01-01 02:00", "2150-02-01 02:00", "2150-03-01 02:00", "2150-04-01 02:00"],
        "outtime": ["2150-01-01 02:00", "2150-02-04 02:00", "2150-03-04 02:00", "2150-04-04 02:00"],
    })
    return patients, admissions, icustays


def test_a_stay_without_its_admission_or_patient_row_is_kept_by_the_join_and_counted_under_its_broken_link():
    stays = join_stays(*_tables())
    assert sorted(stays["stay_id"]) == [100, 200, 300, 400]  # left joins: nothing vanishes uncounted
    cohort, steps = select_cohort(stays, "phenotype", min_age=18, min_stay_hours=48.0)
    assert steps[0]["remaining"] == 4
    by_reason = {s["reason"]: s["excluded"] for s in steps}
    assert by_reason["hadm_id matches no row of admissions"] == 1  # stay 300
    assert by_reason["subject_id matches no row of patients"] == 1  # stay 400
    assert next(s for s in steps if s["step"] == "plausible age")["excluded"] == 0  # not "age missing"
    assert 300 not in set(cohort["stay_id"]) and 400 not in set(cohort["stay_id"])


def test_a_newborn_is_excluded_as_a_child_not_as_an_implausible_age():
    stays = join_stays(*_tables())
    _, steps = select_cohort(stays, "phenotype", min_age=18, min_stay_hours=48.0)
    by_name = {s["step"]: s for s in steps}
    assert by_name["plausible age"]["excluded"] == 0  # the stays with no age at all are broken links
    assert by_name["adults"]["excluded"] == 1  # subject 2, aged 0 at admission


def test_an_icu_stay_with_outtime_equal_to_intime_is_consistent_and_kept_for_phenotyping():
    stays = join_stays(*_tables())
    cohort, steps = select_cohort(stays, "phenotype", min_age=18, min_stay_hours=48.0)
    assert next(s for s in steps if s["step"] == "consistent ICU times")["excluded"] == 0
    assert list(cohort["stay_id"]) == [100]  # zero-length stay 100 is the one adult left
